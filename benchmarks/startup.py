"""`probe --help` and bad-input errors: wall time of the whole process (target well under 0.5 s),
and proof that torch is not imported on those paths.

The package is byte-compiled first, as `pip install` leaves it: where PYTHONDONTWRITEBYTECODE is
set (as on the team's machines), every run would otherwise compile probe's source again (~20 ms).
"""

from __future__ import annotations

import compileall
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
# The CLI in-process, then whether torch (or typer's pydantic layer) got imported along the way.
_PROBE_TORCH = "import sys\nfrom probe.cli import app\ntry:\n    app(sys.argv[1:])\nexcept SystemExit:\n    pass\nprint('TORCH', 'torch' in sys.modules, 'PYDANTIC', 'pydantic' in sys.modules)"


def _time(args: list[str], code: int, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "probe", *args], capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - t0)
        if done.returncode != code:
            raise SystemExit(f"probe {' '.join(args)}: exit {done.returncode}, expected {code}")
    return statistics.median(times)


def _imports(args: list[str]) -> str:
    done = subprocess.run([sys.executable, "-c", _PROBE_TORCH, *args], capture_output=True, text=True, cwd=ROOT)
    return done.stdout


def results() -> list[Result]:
    compileall.compile_dir(ROOT / "probe", quiet=1)
    out = []
    for label, args, code in CASES:
        seconds = _time(args, code)
        imported = _imports(args)
        torch_note = "imports torch!" if "TORCH True" in imported else "no torch import"
        torch_note += ", imports pydantic" if "PYDANTIC True" in imported else ", no pydantic"
        out.append(Result(f"startup {label}", seconds, TARGET_S, unit=" s", note=f"median of 5; {torch_note}"))
        if "!" in torch_note:
            out[-1].measured = max(seconds, TARGET_S * 10)  # a torch import on this path is a miss
    return out


if __name__ == "__main__":
    for r in results():
        print(r.line())
