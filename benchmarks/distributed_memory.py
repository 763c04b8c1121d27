"""Parameter bytes each torchrun rank holds with run.shard none (DDP) and fsdp (FSDP2), and the
rank's peak resident memory, for an MLP of depth 16 / width 1024 (16.8 M parameters, 64 MiB).

    .venv/bin/python benchmarks/distributed_memory.py [--ranks 2] [--width 1024] [--depth 16]

The driver starts torchrun once per mode; each rank measures, right after the engine wraps the
model, the bytes of the parameters it holds (FSDP2: its local shards) and, after the run, its
peak resident memory (VmHWM). Target: with fsdp, parameter bytes per rank <= 1/ranks of the
replicated figure plus one block (FSDP2 shards dim 0 of each block's parameters).
The model is still built whole on each rank before it is sharded (see docs/distributed.md), so
the peak RSS does not shrink with fsdp on the CPU; on a GPU, the device holds the shards.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def rank_main(out: str, width: int, depth: int, shard: str) -> None:
    sys.path.insert(0, str(REPO))
    import torch.distributed as dist

    from probe import spec as spec_mod
    from probe.measure import distributed
    from probe.measure.run import run_probe

    held: list[int] = []
    wrap = distributed.wrap

    def measuring(model, built, share, backward):  # type: ignore[no-untyped-def]
        wrapped = wrap(model, built, share, backward)
        local = [p.to_local() if hasattr(p, "to_local") else p for p in wrapped.parameters()]
        held.append(sum(t.numel() * t.element_size() for t in local))
        return wrapped

    distributed.wrap = measuring  # type: ignore[assignment]
    raw = {
        "model": {"width": width, "depth": depth, "input_dim": width},
        "data": {"batch_size": 64},
        "run": {"device": "cpu", "shard": shard},
    }
    report = run_probe(spec_mod.parse(raw))
    hwm_kib = next(
        int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM")
    )
    rows: list[dict[str, float]] = [{}] * dist.get_world_size()
    dist.all_gather_object(
        rows, {"param_mib": held[0] / 2**20, "peak_rss_mib": hwm_kib / 1024, "elapsed_s": report.elapsed_s}
    )
    if dist.get_rank() == 0:
        Path(out).write_text(json.dumps(rows))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--rank-out")
    parser.add_argument("--shard")
    args = parser.parse_args()
    if args.rank_out:
        rank_main(args.rank_out, args.width, args.depth, args.shard)
        return
    figures = {}
    for shard in ("none", "fsdp"):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "rows.json"
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.ranks),
                   __file__, "--rank-out", str(out), "--width", str(args.width), "--depth", str(args.depth),
                   "--shard", shard]  # fmt: skip
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            subprocess.run(cmd, check=True, env=env, capture_output=True)
            figures[shard] = json.loads(out.read_text())
    whole = args.width * (args.width + 1) * args.depth * 4 / 2**20
    print(f"MLP depth {args.depth} width {args.width}: {whole:.1f} MiB of parameters, {args.ranks} ranks")
    for shard, rows in figures.items():
        params = ", ".join(f"{r['param_mib']:.1f}" for r in rows)
        rss = ", ".join(f"{r['peak_rss_mib']:.0f}" for r in rows)
        print(f"  run.shard {shard:5s} parameter MiB per rank: {params:16s} peak RSS MiB per rank: {rss}")
    largest_block = args.width * (args.width + 1) * 4 / 2**20
    worst = max(r["param_mib"] for r in figures["fsdp"])
    target = whole / args.ranks + largest_block
    verdict = "PASS" if worst <= target else "MISS"
    print(f"  {verdict}  fsdp parameter MiB per rank {worst:.1f}  target <= {target:.1f} (1/{args.ranks} + one block)")


if __name__ == "__main__":
    main()
