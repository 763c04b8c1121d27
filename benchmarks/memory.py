"""Peak memory of a probed pass over a bare pass (target: <= 1.2x), each in its own process.

Each child process builds the network, resets its peak-RSS mark (``/proc/self/clear_refs``),
records its resident memory, runs one pass (bare or probed) and reports its peak resident memory
(``VmHWM``; ``ru_maxrss`` would carry over the parent's peak across fork and exec). The ratio of the two peaks is the
target's measure; the ratio of the increments over the pre-pass memory is printed beside it,
since the whole-process peak also counts the interpreter, torch and the weights.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from common import Result

CASES = [
    ("large: depth 50, width 1024, batch 1024", 50, 1024, 1024),
    ("small: depth 8, width 128, batch 512", 8, 128, 512),
]
TARGET = 1.2


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


def _run(mode: str, depth: int, width: int, batch: int) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, str(depth), str(width), str(batch)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=Path(__file__).parent)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _median_run(mode: str, depth: int, width: int, batch: int, runs: list[dict]) -> dict:
    picked = sorted((r for r in runs if r["mode"] == mode), key=lambda r: r["peak_kib"])
    return picked[len(picked) // 2]


def results(repeats: int = 3) -> list[Result]:
    out = []
    for label, depth, width, batch in CASES:
        runs = []
        for _ in range(repeats):  # alternate, then take the run with the median peak of each mode
            for mode in ("bare", "probe"):
                runs.append({"mode": mode, **_run(mode, depth, width, batch)})
        bare = _median_run("bare", depth, width, batch, runs)
        probed = _median_run("probe", depth, width, batch, runs)
        ratio = probed["peak_kib"] / bare["peak_kib"]
        grow_bare = max(bare["peak_kib"] - bare["before_kib"], 1)
        grow_probed = max(probed["peak_kib"] - probed["before_kib"], 1)
        note = (
            f"peak {bare['peak_kib'] / 1024:.0f} -> {probed['peak_kib'] / 1024:.0f} MiB; "
            f"pass increment {grow_bare / 1024:.0f} -> {grow_probed / 1024:.0f} MiB ({grow_probed / grow_bare:.2f}x)"
        )
        out.append(Result(f"peak memory {label}", ratio, TARGET, note=note + f", median of {repeats}"))
    return out


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], *map(int, sys.argv[3:6]))
    else:
        for r in results():
            print(r.line())
