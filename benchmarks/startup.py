"""`probe --help` and bad-input errors: wall time of the whole process (target well under 0.5 s),
and proof that torch is not imported on those paths."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import Result

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 0.5
CASES = [
    ("probe --help", ["--help"], 0),
    ("probe run missing.yaml (bad input)", ["run", "missing.yaml"], 2),
    ("probe compare bogus:relu (bad input)", ["compare", "bogus:relu"], 2),
]
# The CLI in-process, then whether torch got imported along the way.
_PROBE_TORCH = "import sys\nfrom probe.cli import app\ntry:\n    app(sys.argv[1:])\nexcept SystemExit:\n    pass\nprint('TORCH', 'torch' in sys.modules)"


def _time(args: list[str], code: int, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "probe", *args], capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - t0)
        if done.returncode != code:
            raise SystemExit(f"probe {' '.join(args)}: exit {done.returncode}, expected {code}")
    return statistics.median(times)


def _imports_torch(args: list[str]) -> bool:
    done = subprocess.run([sys.executable, "-c", _PROBE_TORCH, *args], capture_output=True, text=True, cwd=ROOT)
    return "TORCH True" in done.stdout


def results() -> list[Result]:
    out = []
    for label, args, code in CASES:
        seconds = _time(args, code)
        torch_note = "imports torch!" if _imports_torch(args) else "no torch import"
        out.append(Result(f"startup {label}", seconds, TARGET_S, unit=" s", note=f"median of 5; {torch_note}"))
        if "!" in torch_note:
            out[-1].measured = max(seconds, TARGET_S * 10)  # a torch import on this path is a miss
    return out


if __name__ == "__main__":
    for r in results():
        print(r.line())
