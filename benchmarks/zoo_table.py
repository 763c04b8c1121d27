"""probe's verdict on the zoo's trained cases beside training: the confusion table, overall and by family half.

Reads the ground truth, ``benchmarks/zoo_trainability.json`` (``trainability.py --zoo``), probes each
of its cases again with the ``probe`` on ``PYTHONPATH`` (the zoo itself is loaded from this file's
tree, as ``zoo_check.py`` does), and counts:

- agree: healthy and trains, or unhealthy and does not train;
- false alarm: unhealthy, and it trains;
- miss: healthy, and it does not train (the kind a CI gate must never make).

A case whose seed-0 gain fraction lies within ``LINE_BAND`` of the line (0.3 to 0.7) is trained on
two more seeds (``zoo_trainability_replicates.json``) and judged by the median over its seeds.

Families are split in two halves by a fixed rule written in ``tests/zoo/__init__.py`` (``split``):
the sorted family names alternate, the first is ``tune``, the next ``held-out``. Rules may be tuned
on the ``tune`` half; the ``held-out`` half says whether they hold on architectures nobody tuned for.

``--verdicts PATH`` (a ``zoo_check.py`` JSON) adds the sweep's summary: defaults called healthy,
zeros called unhealthy. ``--output PATH`` writes the markdown there too.

    PYTHONPATH=/work/wt/OTHER /work/main/.venv/bin/python /work/wt/zoo/benchmarks/zoo_table.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import zoo_check  # noqa: E402

TRUTH = HERE / "zoo_trainability.json"
# more seeds for the cases whose seed-0 gain fraction lies near the line of 0.5 (``LINE_BAND``):
# ``trainability.py --zoo --seed N --json ...`` runs, their ``runs`` gathered in one JSON
REPLICATES = HERE / "zoo_trainability_replicates.json"
LINE_BAND = (0.3, 0.7)


def with_replicates(runs: list[dict[str, Any]], replicates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``runs`` (seed 0) where each case with replicate runs of its own and its default's seed
    takes the median gain fraction over its seeds, and trains when that median is at least 0.5
    (a case near the line is a coin flip on one seed: its training noise, not probe, decides)."""
    by_seed: dict[tuple[str, str, int], float] = {}
    for r in replicates:
        if r.get("gain_fraction") is not None:
            by_seed[(r["model"], r["init"], int(r.get("seed", 0)))] = float(r["gain_fraction"])
    out = []
    for run in runs:
        extra = sorted(v for (m, i, _), v in by_seed.items() if m == run["model"] and i == run["init"])
        if not extra or run.get("gain_fraction") is None:
            out.append(run)
            continue
        median = statistics.median([float(run["gain_fraction"]), *extra])
        out.append({**run, "gain_fraction": median, "trains": median >= 0.5, "seeds": len(extra) + 1})
    return out


def counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    c = {"cases": len(rows), "agree": 0, "false_alarm": 0, "miss": 0, "error": 0}
    for r in rows:
        if r["healthy"] is None:
            c["error"] += 1
        elif r["healthy"] == r["trains"]:
            c["agree"] += 1
        elif r["trains"]:
            c["false_alarm"] += 1
        else:
            c["miss"] += 1
    return c


def summary_line(name: str, c: dict[str, int]) -> str:
    rate = f"{100 * c['agree'] / c['cases']:.0f}%" if c["cases"] else "-"
    return f"| {name} | {c['cases']} | {c['agree']} ({rate}) | {c['false_alarm']} | {c['miss']} | {c['error']} |"


def markdown(rows: list[dict[str, Any]], sweep: dict[str, Any] | None) -> str:
    out = ["| cases | n | agree | false alarms | misses | probe errors |", "|---|---|---|---|---|---|"]
    out.append(summary_line("all", counts(rows)))
    for half in ("tune", "held-out"):
        out.append(summary_line(f"{half} families", counts([r for r in rows if r["split"] == half])))
    out += [
        "",
        "| id | family (half) | init | trains (gain of default) | probe | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        frac = f"{r['gain_fraction']:.3g}" if r.get("gain_fraction") is not None else "-"
        if r.get("seeds"):
            frac += f", median of {r['seeds']} seeds"
        trains = "yes" if r["trains"] else "**no**"
        probe = {True: "healthy", False: "unhealthy", None: "error"}[r["healthy"]]
        mark = "" if r["healthy"] == r["trains"] else (" **false alarm**" if r["trains"] else " **MISS**")
        if r["healthy"] is None:
            mark = " error"
        detail = r.get("error") or zoo_check.fmt_problems(r.get("problems", []), limit=2)
        out.append(
            f"| {r['id']} | {r['family']} ({r['split']}) | {r['init']} | {trains} ({frac}) | {probe}{mark} | {detail} |"
        )
    if sweep is not None:
        out += ["", sweep_summary(sweep)]
    return "\n".join(out)


def sweep_summary(doc: dict[str, Any]) -> str:
    res = doc["results"]
    lines = []
    for init, want in (("default", True), ("zeros", False)):
        rs = [r for r in res if r["init"] == init]
        if not rs:
            continue
        ok = sum(1 for r in rs if r["healthy"] is want)
        err = sum(1 for r in rs if r["healthy"] is None)
        what = "called healthy" if want else "called unhealthy"
        lines.append(f"- {init}: {ok} of {len(rs)} {what} ({err} probe errors)")
    return "Sweep (`zoo_check.py`):\n\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--truth", type=Path, default=TRUTH, help=f"the ground truth (default {TRUTH})")
    parser.add_argument(
        "--replicates", type=Path, default=REPLICATES, help=f"more seeds near the line (default {REPLICATES})"
    )
    parser.add_argument("--verdicts", type=Path, default=None, help="a zoo_check.py JSON for the sweep summary")
    parser.add_argument("--output", type=Path, default=None, help="also write the markdown here")
    args = parser.parse_args(argv)

    zoo = zoo_check.quiet_zoo()
    truth = json.loads(args.truth.read_text())
    replicates = json.loads(args.replicates.read_text())["runs"] if args.replicates.exists() else []
    rows: list[dict[str, Any]] = []
    for run in with_replicates(truth["runs"], replicates):
        if run["trains"] is None:
            continue
        r = zoo_check.check_one(zoo, run["model"], run["init"])
        r["trains"], r["gain_fraction"], r["seeds"] = run["trains"], run["gain_fraction"], run.get("seeds")
        rows.append(r)
        print(f"  {run['model']} {run['init']}: healthy={r['healthy']} trains={run['trains']}", file=sys.stderr)
    sweep = json.loads(args.verdicts.read_text()) if args.verdicts else None
    text = markdown(rows, sweep)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
