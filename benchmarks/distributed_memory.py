"""Parameter bytes each torchrun rank holds with run.shard none (DDP) and fsdp (FSDP2), and the
rank's peak resident memory while the model is built and over the whole run, for an MLP of depth
16 / width 1024 (16.8 M parameters, 64 MiB).

    .venv/bin/python benchmarks/distributed_memory.py [--ranks 2] [--width 1024] [--depth 16] [--pin-mmap]

The driver starts torchrun once per mode. Each rank reads its resident memory (VmRSS) just before
the run (torch, probe, DDP and FSDP2 loaded, a tiny model built on the meta device once; nothing
of this model built); right after the model is built and wrapped
(``distributed_engine.prepare``) the bytes of the parameters it holds (FSDP2: its local shards) and its
peak resident memory so far (VmHWM: the build); after the run its peak again (the build, then the
forward and backward passes). ``--pin-mmap`` starts the ranks with ``MALLOC_MMAP_THRESHOLD_=131072``
(glibc then returns every freed allocation of 128 KiB or more to the OS; see
``layerwise.return_large_allocations_to_the_os``).

Targets: with fsdp, parameter bytes per rank <= 1/ranks of the replicated figure plus one block
(FSDP2 shards dim 0 of each block's parameters), and the build's peak above the start below the
whole model's parameters (the model is built on the meta device and each block materialized and
sharded in turn, so a rank holds its shards and one whole block, never the whole model; see
docs/distributed.md).
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
    import torch.distributed.fsdp
    import torch.nn.parallel  # noqa: F401

    from probe import spec as spec_mod
    from probe.measurement import distributed_engine
    from probe.measurement.run import run_probe
    from probe.model import unit_blocks

    # code before the start figure, not the model: FSDP2 and DDP, and what a first meta-device
    # build loads (26 MiB, once, whatever the model)
    unit_blocks.meta_units(
        spec_mod.parse({"model": {"depth": 1, "width": 2, "input_dim": 2}}), distributed_engine.blocks
    )

    held: list[int] = []
    built_kib: list[int] = []
    prepare = distributed_engine.prepare

    def measuring(*args, **kwargs):  # type: ignore[no-untyped-def]
        wrapped, built = prepare(*args, **kwargs)
        built_kib.append(_status_kib("VmHWM"))
        local = [p.to_local() if hasattr(p, "to_local") else p for p in wrapped.parameters()]
        held.append(sum(t.numel() * t.element_size() for t in local))
        return wrapped, built

    distributed_engine.prepare = measuring  # type: ignore[assignment]
    raw = {
        "model": {"width": width, "depth": depth, "input_dim": width},
        "data": {"batch_size": 64},
        "run": {"device": "cpu", "shard": shard},
    }
    spec = spec_mod.parse(raw)
    start_kib = _status_kib("VmRSS")
    report = run_probe(spec)
    peak_kib = _status_kib("VmHWM")
    rows: list[dict[str, float]] = [{}] * dist.get_world_size()
    mib = 1 / 1024
    dist.all_gather_object(
        rows,
        {
            "param_mib": held[0] / 2**20,
            "start_mib": start_kib * mib,
            "build_peak_mib": built_kib[0] * mib,
            "peak_mib": peak_kib * mib,
            "elapsed_s": report.elapsed_s,
        },
    )
    if dist.get_rank() == 0:
        Path(out).write_text(json.dumps(rows))


def _status_kib(key: str) -> int:
    return next(
        int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(key)
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--pin-mmap", action="store_true", help="start the ranks with MALLOC_MMAP_THRESHOLD_=131072")
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
            if args.pin_mmap:
                env["MALLOC_MMAP_THRESHOLD_"] = "131072"
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"torchrun (run.shard {shard}) exited {done.returncode}:\n{done.stderr[-4000:]}")
            figures[shard] = json.loads(out.read_text())
    whole = args.width * (args.width + 1) * args.depth * 4 / 2**20
    malloc = "MALLOC_MMAP_THRESHOLD_=131072" if args.pin_mmap else "glibc's default malloc"
    print(f"MLP depth {args.depth} width {args.width}: {whole:.1f} MiB of parameters, {args.ranks} ranks, {malloc}")
    print("  MiB per rank          parameters held    RSS at start   build peak RSS   run peak RSS   seconds")
    for shard, rows in figures.items():

        def col(key: str, rows: list[dict[str, float]] = rows) -> str:
            return ", ".join(
                f"{r[key]:.0f}" if key.endswith("mib") and key != "param_mib" else f"{r[key]:.1f}" for r in rows
            )

        print(
            f"  run.shard {shard:5s}       {col('param_mib'):18s} {col('start_mib'):14s} {col('build_peak_mib'):16s} "
            f"{col('peak_mib'):14s} {col('elapsed_s')}"
        )
    largest_block = args.width * (args.width + 1) * 4 / 2**20
    worst = max(r["param_mib"] for r in figures["fsdp"])
    target = whole / args.ranks + largest_block
    verdict = "PASS" if worst <= target else "MISS"
    print(f"  {verdict}  fsdp parameter MiB per rank {worst:.1f}  target <= {target:.1f} (1/{args.ranks} + one block)")
    built = max(r["build_peak_mib"] - r["start_mib"] for r in figures["fsdp"])
    verdict = "PASS" if built < whole else "MISS"
    print(f"  {verdict}  fsdp build peak RSS above the start {built:.0f} MiB  target < {whole:.1f} (the whole model)")


if __name__ == "__main__":
    main()
