"""`probe compare tiny:relu large:tanh xavier:tanh he:relu` against the seed's Lab 1 script
(seed_lab1.py), each a whole process; target: probe no slower (ratio <= 1.0).

The commands take turns (in a rotating order), and the ratio is the median over rounds of probe
time / seed time. A third process that only imports torch runs in the same rotation: both
commands are mostly that import, so the note also gives each one's time beyond it (the median
of its time minus the import's, round by round), which is where the two differ. Probe does more
per network than the script (a backward pass, every statistic, the rules, a table) and imports
its CLI (typer, rich) besides torch.
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
IMPORT = [sys.executable, "-c", "import torch"]


def _run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=True, cwd=ROOT)
    return time.perf_counter() - t0


def results(repeats: int = 5) -> list[Result]:
    commands = [PROBE, SEED, IMPORT]
    for cmd in commands:
        _run(cmd)  # warm the file cache
    rounds = []
    for i in range(repeats):
        order = commands[i % 3 :] + commands[: i % 3]
        t = {id(cmd): _run(cmd) for cmd in order}
        rounds.append((t[id(PROBE)], t[id(SEED)], t[id(IMPORT)]))
    ratio = statistics.median(p / s for p, s, _ in rounds)
    probe_s, seed_s, import_s = (statistics.median(r[k] for r in rounds) for k in range(3))
    probe_extra = statistics.median(p - i for p, _, i in rounds)
    seed_extra = statistics.median(s - i for _, s, i in rounds)
    note = (
        f"probe {probe_s:.2f} s, seed {seed_s:.2f} s, import torch alone {import_s:.2f} s; beyond that import: "
        f"probe {probe_extra:+.2f} s, seed {seed_extra:+.2f} s; median of {repeats}"
    )
    return [Result("probe compare (4 inits) vs seed Lab 1 script, whole process", ratio, 1.0, note=note)]


if __name__ == "__main__":
    for r in results():
        print(r.line())
