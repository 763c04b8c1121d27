"""`make bench`: every benchmark, each ratio printed beside its target with PASS or MISS.

Usage: python benchmarks/run.py [--quick]. Figures depend on the machine and its load; the
header says which machine, torch and thread count produced them.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import compare_vs_seed
import cuda_sync
import memory
import overhead
import real_model
import startup
import steps_cost
import torch
import whole_probe


def header() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (
        f"probe benchmarks  {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n"
        f"  machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs "
        f"(load {load:.1f}), GPU {gpu}\n"
        f"  torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, python {platform.python_version()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (noisier)")
    args = parser.parse_args()
    print(header(), flush=True)
    results = []
    for name, fn in [
        ("startup", startup.results),
        ("overhead", lambda: overhead.results(args.quick)),
        ("memory", memory.results),
        ("compare vs seed", lambda: compare_vs_seed.results(3 if args.quick else 9)),
        ("real model", lambda: real_model.results(args.quick)),
        ("steps", lambda: steps_cost.results(args.quick)),
        ("whole probe", lambda: whole_probe.results(args.quick)),
        ("cuda", cuda_sync.results),
    ]:
        print(f"{name}:", flush=True)
        for r in fn():
            print(r.line(), flush=True)
            results.append(r)
    done = [r for r in results if not r.skipped]
    missed = [r for r in done if not r.passed]
    print(f"{len(done) - len(missed)} PASS, {len(missed)} MISS, {len(results) - len(done)} SKIP")


if __name__ == "__main__":
    main()
