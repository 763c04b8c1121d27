"""Peak memory of a probed pass over a bare pass (target: <= 1.2x), each in its own process.

Each child process builds the network, resets its peak-RSS mark (``/proc/self/clear_refs``),
records its resident memory, runs one pass (bare or probed) and reports its peak resident memory
(``VmHWM``; ``ru_maxrss`` would carry over the parent's peak across fork and exec). The ratio of the two peaks is the
target's measure; the ratio of the increments over the pre-pass memory is printed beside it,
since the whole-process peak also counts the interpreter, torch and the weights.

The layer-by-layer lines compare whole runs (``run_probe`` against ``run_layerwise``), each in a
fresh process, from after the imports to the end: there the build is the point. Forward only
(``run.backward: false``), target <= 0.1x of the run's own memory (peak minus the resident memory
before it): a normal run holds all 32 blocks' weights (512 MiB in float32) and layer-by-layer one
(16 MiB), so weights alone give 1/32; a forward pass's activations (a few batch x width
tensors, 2 MiB each) are the same in both, and the generator states and meta structure add well
under 1 MiB. 0.1x leaves room for allocator slack around the block that is allocated and freed
32 times. Forward and backward, target <= 0.25x: a normal run holds every weight and its gradient
(1 GiB) and what autograd keeps (about two activations per block); layer by layer holds one block's
weights and gradients (32 MiB), the activations at block boundaries (one per block, 66 MiB) and one
block recomputed with its gradients, about 0.12x of the normal run's by that count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from common import Result

CASES = [
    ("large: depth 50, width 1024, batch 1024", 50, 1024, 1024),
    ("small: depth 8, width 128, batch 512", 8, 128, 512),
]
TARGET = 1.2
LAYERWISE_CASE = ("depth 32, width 2048, batch 256", 32, 2048, 256)
LAYERWISE_TARGET = 0.1
LAYERWISE_BACKWARD_TARGET = 0.25
# whole-run modes: (layer by layer, backward)
WHOLE_RUNS = {
    "forward": (False, False),
    "layerwise": (True, False),
    "backward": (False, True),
    "layerwise-backward": (True, True),
}


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def child(mode: str, depth: int, width: int, batch: int) -> None:
    import torch
    from common import bare_pass, built_model, mlp_spec, probed_pass

    spec = mlp_spec(depth, width, batch)
    built = built_model(spec)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status_kib("VmRSS")
    (bare_pass if mode == "bare" else probed_pass)(built, spec, torch.device("cpu"))
    peak = _status_kib("VmHWM")
    print(json.dumps({"before_kib": before, "peak_kib": peak}))


def child_whole_run(mode: str, depth: int, width: int, batch: int) -> None:
    """A whole run, build included: ``run_probe`` or ``run_layerwise``, forward only or not (``WHOLE_RUNS``)."""
    import torch  # noqa: F401  (imported before the baseline: both modes pay it)
    from common import mlp_spec

    from probe.measurement.layerwise import return_large_allocations_to_the_os, run_layerwise
    from probe.measurement.run import run_probe

    layered, backward = WHOLE_RUNS[mode]
    if layered:
        return_large_allocations_to_the_os()  # as `probe run --layer-by-layer` does

    spec = mlp_spec(depth, width, batch)
    spec = replace(spec, run=replace(spec.run, backward=backward))
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    (run_layerwise if layered else run_probe)(spec)
    peak = _status_kib("VmHWM")
    print(json.dumps({"before_kib": before, "peak_kib": peak}))


def _run(mode: str, depth: int, width: int, batch: int, env: dict[str, str] | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, str(depth), str(width), str(batch)]
    full_env = {**os.environ, **(env or {})}
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=Path(__file__).parent, env=full_env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _median_run(mode: str, depth: int, width: int, batch: int, runs: list[dict]) -> dict:
    picked = sorted((r for r in runs if r["mode"] == mode), key=lambda r: r["peak_kib"])
    return picked[len(picked) // 2]


# glibc's mmap threshold held at its 128 KiB default (see PINNED_NOTE), through the environment
PINNED = {"MALLOC_MMAP_THRESHOLD_": str(128 << 10)}
PINNED_NOTE = (
    "glibc mmap threshold pinned in both: with the default, glibc raises the threshold as 4 MiB "
    "activations are freed and later ones come from a heap that small allocations fragment"
)


def results(repeats: int = 3) -> list[Result]:
    out = []
    for label, depth, width, batch in CASES:
        out.append(_peak_ratio(label, depth, width, batch, repeats))
    # the large network's peaks under glibc's default are bimodal (heap reuse): the same pair with
    # the allocator held still shows what the probe itself keeps
    label, depth, width, batch = CASES[0]
    out.append(_peak_ratio(label, depth, width, batch, repeats, PINNED))
    out.append(layerwise_result(repeats))
    out.append(layerwise_result(repeats, backward=True))
    return out


def _peak_ratio(label: str, depth: int, width: int, batch: int, repeats: int, env: dict | None = None) -> Result:
    """Median peak of a probed pass over a bare one, fresh processes, alternating."""
    runs = []
    for _ in range(repeats):  # alternate, then take the run with the median peak of each mode
        for mode in ("bare", "probe"):
            runs.append({"mode": mode, **_run(mode, depth, width, batch, env)})
    bare = _median_run("bare", depth, width, batch, runs)
    probed = _median_run("probe", depth, width, batch, runs)
    ratio = probed["peak_kib"] / bare["peak_kib"]
    grow_bare = max(bare["peak_kib"] - bare["before_kib"], 1)
    grow_probed = max(probed["peak_kib"] - probed["before_kib"], 1)
    note = (
        f"peak {bare['peak_kib'] / 1024:.0f} -> {probed['peak_kib'] / 1024:.0f} MiB; "
        f"pass increment {grow_bare / 1024:.0f} -> {grow_probed / 1024:.0f} MiB ({grow_probed / grow_bare:.2f}x)"
    )
    name = f"peak memory {label}" + (", allocator pinned" if env else "")
    return Result(name, ratio, TARGET, note=note + f", median of {repeats}" + (f"; {PINNED_NOTE}" if env else ""))


def layerwise_result(repeats: int = 3, backward: bool = False) -> Result:
    """Peak memory of a whole run layer by layer over a normal one (see the docstring)."""
    label, depth, width, batch = LAYERWISE_CASE
    normal_mode, layered_mode = ("backward", "layerwise-backward") if backward else ("forward", "layerwise")
    runs = []
    for _ in range(repeats):
        for mode in (normal_mode, layered_mode):
            runs.append({"mode": mode, **_run(mode, depth, width, batch)})
    normal = _median_run(normal_mode, depth, width, batch, runs)
    layered = _median_run(layered_mode, depth, width, batch, runs)
    grow_normal = max(normal["peak_kib"] - normal["before_kib"], 1)
    grow_layered = max(layered["peak_kib"] - layered["before_kib"], 1)
    what = "forward+backward" if backward else "forward-only"
    note = (
        f"{what} run increment {grow_normal / 1024:.0f} -> {grow_layered / 1024:.0f} MiB; whole-process peak "
        f"{normal['peak_kib'] / 1024:.0f} -> {layered['peak_kib'] / 1024:.0f} MiB "
        f"({layered['peak_kib'] / normal['peak_kib']:.2f}x), median of {repeats}"
    )
    name = f"layer-by-layer memory{', backward' if backward else ''}: {label}"
    target = LAYERWISE_BACKWARD_TARGET if backward else LAYERWISE_TARGET
    return Result(name, grow_layered / grow_normal, target, note=note)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        mode = sys.argv[2]
        (child_whole_run if mode in WHOLE_RUNS else child)(mode, *map(int, sys.argv[3:6]))
    else:
        for r in results():
            print(r.line())
