"""Full-size transformers configs probed layer by layer, forward and backward, on this CPU machine.

Targets (issue 10): a Llama-2-7B-sized config (hidden 4096, intermediate 11008, 32 blocks, 32 heads,
vocab 32000; batch 2 x 32 tokens) in <= 300 s with peak RSS <= 4 GiB; a Llama-3-70B-sized config
(hidden 8192, intermediate 28672, 80 blocks, 64 heads / 8 KV heads, vocab 128256) with peak RSS
<= 12 GiB, its time reported.

Each case runs ``probe run --hf llama ... --layer-by-layer -f json`` in a child process, as a user
would, and reads the child's peak resident memory from ``resource.getrusage(RUSAGE_CHILDREN)``
(the parent imports nothing large, so its own peak stays far below). The machine's load average
is printed before and after, and the child's CPU seconds: the machine is shared, and the wall time
scales with the CPU left to us.

    .venv/bin/python benchmarks/hf_layerwise.py 7b      # or 70b, or a tiny smoke case: tiny
    .venv/bin/python benchmarks/hf_layerwise.py 70b:2    # the 70B widths, 2 of its 80 blocks

A truncated case (``CASE:N``: N decoder blocks of the config's widths) runs in this process instead,
timing every block pass from the progress callback, and reads the peak from ``VmHWM``: the peak
of this mode does not grow with depth (one block in memory; the boundary activations, 2 x 32 x
hidden floats per block, are printed), so a truncation measures it; the full run's time is then
extrapolated from the measured per-block times (printed as an estimate, not a measurement).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GIB = 2**30

CASES = {
    "tiny": dict(
        hidden_size=64,
        intermediate_size=172,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=320,
    ),
    "7b": dict(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
    ),
    "70b": dict(
        hidden_size=8192,
        intermediate_size=28672,
        num_hidden_layers=80,
        num_attention_heads=64,
        num_key_value_heads=8,
        vocab_size=128256,
    ),
}
TARGETS = {"7b": (300.0, 4.0), "70b": (None, 12.0), "tiny": (None, None)}


def run(case: str) -> dict:
    args = [
        sys.executable,
        "-m",
        "probe",
        "run",
        "--hf",
        "llama",
        "--layer-by-layer",
        "-f",
        "json",
        "--set",
        "data.batch_size=2",
        "--set",
        "model.seq_len=32",
        "--set",
        "run.device=cpu",
    ]
    for key, value in CASES[case].items():
        args += ["--model-arg", f"{key}={value}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    load_before = os.getloadavg()
    started = time.perf_counter()
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_gib = usage.ru_maxrss * 1024 / GIB  # KiB on Linux
    if proc.returncode != 0:
        raise SystemExit(f"{case}: exit {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    report = json.loads(proc.stdout)
    return {
        "case": case,
        "elapsed_s": round(elapsed, 1),
        "probe_elapsed_s": round(report["environment"].get("elapsed_s", float("nan")), 1)
        if isinstance(report.get("environment"), dict)
        else None,
        "peak_rss_gib": round(peak_gib, 2),
        # CPU seconds (all threads): on a loaded machine the wall time says more about the others
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "rows": len(report["layers"]),
        "healthy": report["verdict"].get("healthy") if isinstance(report.get("verdict"), dict) else None,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "notes": report.get("notes"),
    }


def run_truncated(case: str, blocks: int) -> dict:
    """The case's widths with ``blocks`` decoder blocks, in this process, with per-block times."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    sys.path.insert(0, str(ROOT))
    from probe import spec as spec_mod
    from probe.measurement.layerwise import return_large_allocations_to_the_os, run_layerwise

    return_large_allocations_to_the_os()  # as `probe run --layer-by-layer` does
    config = {**CASES[case], "num_hidden_layers": blocks}
    spec = spec_mod.parse(
        {
            "model": {"hf": "llama", "kwargs": config, "seq_len": 32},
            "data": {"batch_size": 2},
            "run": {"device": "cpu"},
        }
    )
    ticks: list[float] = []
    load_before = os.getloadavg()
    cpu_before = time.process_time()
    started = time.perf_counter()
    report = run_layerwise(spec, lambda done, total: ticks.append(time.perf_counter()))
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    with open("/proc/self/status") as status:
        hwm_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
    # block passes: forward embed, layers..., norm; backward norm, layers reversed, embed
    n = blocks + 2
    passes = [b - a for a, b in zip([started, *ticks[:-1]], ticks, strict=True)]
    forward_layers = passes[1 : 1 + blocks]
    backward_layers = passes[n + 1 : n + 1 + blocks]
    full_blocks = CASES[case]["num_hidden_layers"]
    before_first = passes[0]  # sweep (every block's init program), discovery, embedding forward
    per_layer = (sum(forward_layers) + sum(backward_layers)) / blocks
    # the time before the first block pass is mostly the sweep, which grows with the block count:
    # charged to the decoder blocks here (the embedding's share makes this an overestimate)
    return {
        "case": f"{case}:{blocks}",
        "elapsed_s": round(elapsed, 1),
        "cpu_s": round(cpu, 1),
        "peak_rss_gib": round(hwm_kib * 1024 / GIB, 2),
        "rows": len(report.layers),
        "until_first_block_s": round(before_first, 1),
        "decoder_block_forward_s": [round(x, 1) for x in forward_layers],
        "decoder_block_backward_s": [round(x, 1) for x in backward_layers],
        "all_passes_s": [round(x, 1) for x in passes],
        "extrapolated_full_s": round(elapsed + (full_blocks - blocks) * (per_layer + before_first / (blocks + 1)), 0),
        "boundary_activations_full_gib": round(full_blocks * 2 * 32 * CASES[case]["hidden_size"] * 4 / GIB, 3),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }


def main() -> int:
    cases = sys.argv[1:] or ["7b"]
    failed = False
    for case in cases:
        name, _, blocks = case.partition(":")
        if blocks:
            result = run_truncated(name, int(blocks))
            rss_target = TARGETS[name][1]
            result["targets"] = {
                "peak_rss_gib": rss_target,
                "met": rss_target is None or result["peak_rss_gib"] <= rss_target,
            }
            print(json.dumps(result), flush=True)
            failed |= not result["targets"]["met"]
            continue
        result = run(case)
        time_target, rss_target = TARGETS[case]
        ok_time = time_target is None or result["elapsed_s"] <= time_target
        ok_rss = rss_target is None or result["peak_rss_gib"] <= rss_target
        result["targets"] = {"time_s": time_target, "peak_rss_gib": rss_target, "met": ok_time and ok_rss}
        print(json.dumps(result), flush=True)
        failed |= not (ok_time and ok_rss)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
