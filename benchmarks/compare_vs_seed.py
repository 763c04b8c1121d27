"""`probe compare tiny:relu large:tanh xavier:tanh he:relu` against the seed's Lab 1 script
(seed_lab1.py), each a whole process; target: probe no slower (ratio <= 1.0).

The two commands alternate, and the ratio is the median over repeats of probe / seed time.
Probe does more per network than the script (backward pass, every statistic, rules, a table).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import Result

ROOT = Path(__file__).resolve().parent.parent
PROBE = [sys.executable, "-m", "probe", "compare", "tiny:relu", "large:tanh", "xavier:tanh", "he:relu"]
SEED = [sys.executable, str(Path(__file__).parent / "seed_lab1.py")]


def _run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=True, cwd=ROOT)
    return time.perf_counter() - t0


def results(repeats: int = 5) -> list[Result]:
    _run(PROBE), _run(SEED)  # warm the file cache
    ratios, probe_s, seed_s = [], [], []
    for i in range(repeats):
        first, second = (PROBE, SEED) if i % 2 == 0 else (SEED, PROBE)
        t = {id(first): _run(first), id(second): _run(second)}
        probe_s.append(t[id(PROBE)])
        seed_s.append(t[id(SEED)])
        ratios.append(t[id(PROBE)] / t[id(SEED)])
    note = f"probe {statistics.median(probe_s):.2f} s, seed {statistics.median(seed_s):.2f} s, median of {repeats}"
    return [
        Result("probe compare (4 inits) vs seed Lab 1 script, whole process", statistics.median(ratios), 1.0, note=note)
    ]


if __name__ == "__main__":
    for r in results():
        print(r.line())
