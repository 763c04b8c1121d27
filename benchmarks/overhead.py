"""Probe (forward + backward + every statistic) over a bare forward + backward, same network.

The bare and probed passes run interleaved in one process on the same model and data, and the
ratio is the median over repeats, so load from other processes hits both alike.
Targets (issue 6): <= 1.10x at depth 50 / width 1024 / batch 1024, <= 1.5x at depth 8 / width 128 /
batch 512 (the seed's network), float32. On CUDA the same ratios are measured when a GPU exists.
"""

from __future__ import annotations

import argparse

import torch
from common import Result, bare_pass, built_model, interleaved_ratio, mlp_spec, probed_pass

from probe.measurement.threads import intra_op_threads, threads_for

# (label, depth, width, batch, target ratio, repeats)
CASES = [
    ("small: depth 8, width 128, batch 512", 8, 128, 512, 1.5, 21),
    ("large: depth 50, width 1024, batch 1024", 50, 1024, 1024, 1.10, 9),
]


def measure(
    depth: int, width: int, batch: int, repeats: int, device: str = "cpu", threads: int | None = None
) -> tuple[float, float, float]:
    """(median ratio, median bare seconds, median probed seconds), both passes run with
    ``threads`` intra-op threads (None: torch's default)."""
    spec = mlp_spec(depth, width, batch)
    built = built_model(spec, device)
    dev = torch.device(device)
    with intra_op_threads(threads):
        return interleaved_ratio(lambda: bare_pass(built, spec, dev), lambda: probed_pass(built, spec, dev), repeats)


def results(quick: bool = False) -> list[Result]:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    out = []
    for device in devices:
        for label, depth, width, batch, target, repeats in CASES:
            if quick:
                repeats = max(3, repeats // 3)
            # the thread count probe itself runs this network with (run.py), then torch's default
            chosen = threads_for(mlp_spec(depth, width, batch)) if device == "cpu" else None
            for threads in [chosen] + ([None] if chosen is not None else []):
                ratio, bare_s, probed_s = measure(depth, width, batch, repeats, device, threads)
                where = f"{threads or torch.get_num_threads()} thread(s)" + (
                    ", as probe runs it" if threads == chosen else ", torch default"
                )
                note = f"{where}; bare {bare_s * 1e3:.1f} ms, probed {probed_s * 1e3:.1f} ms, median of {repeats}"
                out.append(Result(f"overhead {device} {label}", ratio, target, note=note))
    if not torch.cuda.is_available():
        out.append(Result("overhead cuda", 0.0, 0.0, skipped=True, note="no CUDA device: skipped"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    for r in results(args.quick):
        print(r.line())


if __name__ == "__main__":
    main()
