"""probe's verdict on every corpus case beside the training outcome: the agreement table of issue 14.

For each case of ``tests/corpus.py`` (8 models x 3 inits) there is a spec,
``tests/corpus_specs/MODEL_INIT.yaml`` (``--write-specs`` regenerates them). This script runs the
current CLI once over all of them (``python -m probe check SPECS... --format json``), reads each
verdict, and sets it beside the measured ground truth in ``benchmarks/trainability.json``
(``benchmarks/trainability.py``). A verdict *agrees* when probe calls a case healthy exactly when it
trains. Prints a markdown table, the agreement rate and the two kinds of disagreement:

- false alarm: probe says unhealthy, the network trains;
- miss: probe says healthy, the network does not train (the kind a CI gate must never make).

``--output PATH`` also writes the markdown there (``benchmarks/corpus_table.md`` holds the table
of the day it was run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests import corpus  # noqa: E402

SPECS = REPO / "tests" / "corpus_specs"
TRAINABILITY = REPO / "benchmarks" / "trainability.json"
BATCH_SIZE = 16  # samples per probe: 16 sequences of 32 tokens, or 16 images of 32x32


def spec_text(case: corpus.Case, init: str) -> str:
    return (
        f"# {case.name} from tests/corpus.py at init '{init}' (benchmarks/corpus_table.py --write-specs)\n"
        f"name: {case.name}_{init}\n"
        "model:\n"
        f"  import: {case.factory_path}\n"
        f"  kwargs: {{init: {init}}}\n"
        f"  inputs: {case.inputs_path}\n"
        "data:\n"
        f"  batch_size: {BATCH_SIZE}\n"
        "run:\n"
        "  device: cpu\n"
    )


def spec_paths() -> list[tuple[str, str, Path]]:
    return [(name, init, SPECS / f"{name}_{init}.yaml") for name in corpus.CASES for init in corpus.INITS]


def write_specs() -> None:
    SPECS.mkdir(exist_ok=True)
    for name, init, path in spec_paths():
        path.write_text(spec_text(corpus.CASES[name], init))
    print(f"wrote {len(spec_paths())} specs to {SPECS.relative_to(REPO)}/")


def probe_verdicts(extra: list[str]) -> tuple[dict[str, dict[str, Any]], float]:
    """Run ``probe check`` on every corpus spec in one process; the report of each, by spec name."""
    paths = [str(p.relative_to(REPO)) for _, _, p in spec_paths()]
    cmd = [sys.executable, "-m", "probe", "check", *paths, "--format", "json", *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise SystemExit(f"probe check exited {done.returncode}:\n{done.stderr}")
    runs = json.loads(done.stdout)["runs"]
    return {r["spec"]["name"]: r for r in runs}, elapsed


def verdict_text(report: dict[str, Any]) -> str:
    verdict = report["verdict"]
    if verdict["healthy"]:
        text = "healthy"
    else:
        text = "; ".join(f"`{p['rule']}` {_num(p['value'])} at {_short(p['layer'])}" for p in verdict["problems"])
    warnings = len(verdict.get("warnings", []))
    return text + (f" (+{warnings} warning{'s' if warnings > 1 else ''})" if warnings else "")


def _short(layer: str | None) -> str:
    return (layer or "-").removeprefix("model.")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def training_outcomes() -> dict[tuple[str, str], dict[str, Any]]:
    data = json.loads(TRAINABILITY.read_text())
    return {(r["model"], r["init"]): r for r in data["runs"]}


def training_text(run: dict[str, Any] | None) -> str:
    if run is None or run["trains"] is None:
        return "-"
    word = "trains" if run["trains"] else "**fails**"
    final = "nan" if run["final_loss"] is None else f"{run['final_loss']:.2f}"
    return f"{word} ({_num(run['initial_loss'])} -> {final}, {_frac(run['gain_fraction'])})"


def _frac(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(verdicts: dict[str, dict[str, Any]], outcomes: dict[tuple[str, str], dict[str, Any]]) -> tuple[str, dict]:
    lines = [
        "| model | init | probe verdict (today's rules) | training (loss at 0 -> final, gain / default's) | agree? |",
        "|---|---|---|---|---|",
    ]
    counts = {"cases": 0, "agree": 0, "false_alarm": 0, "miss": 0}
    for name, init, _ in spec_paths():
        report = verdicts[f"{name}_{init}"]
        run = outcomes.get((name, init))
        healthy = report["verdict"]["healthy"]
        if run is None or run["trains"] is None:
            agree = "-"
        else:
            counts["cases"] += 1
            if healthy == run["trains"]:
                counts["agree"] += 1
                agree = "yes"
            elif run["trains"]:
                counts["false_alarm"] += 1
                agree = "**no**: false alarm"
            else:
                counts["miss"] += 1
                agree = "**no**: miss"
        lines.append(f"| {name} | {init} | {verdict_text(report)} | {training_text(run)} | {agree} |")
    n = counts["cases"]
    lines.append("")
    lines.append(
        f"Agreement: {counts['agree']}/{n} ({100 * counts['agree'] / max(n, 1):.0f}%); "
        f"false alarms (unhealthy, trains): {counts['false_alarm']}; "
        f"misses (healthy, does not train): {counts['miss']}."
    )
    return "\n".join(lines), counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-specs", action="store_true", help="regenerate tests/corpus_specs/*.yaml and stop")
    parser.add_argument("--output", type=Path, default=None, help="also write the markdown to this file")
    parser.add_argument("probe_args", nargs="*", help="extra arguments for probe check (after --), e.g. --gate ...")
    args = parser.parse_args(argv)
    if args.write_specs:
        write_specs()
        return 0
    verdicts, elapsed = probe_verdicts(args.probe_args)
    text, _ = table(verdicts, training_outcomes())
    trained = json.loads(TRAINABILITY.read_text())
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = (
        f"Corpus verdicts, {stamp}: `probe check` on tests/corpus_specs/*.yaml "
        f"({len(verdicts)} specs, {elapsed:.0f} s in one process), beside benchmarks/trainability.json "
        f"({trained['date']}; torch {trained['environment']['torch']}, "
        f"transformers {trained['environment']['transformers']}).\n"
    )
    print(header)
    print(text)
    if args.output:
        args.output.write_text(f"{header}\n{text}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
