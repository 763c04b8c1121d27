"""The ``--steps`` check (``stalled``) on the zoo: its statistic beside training, agreement with and
without it, the defaults it would fail, and what the steps cost.

For each of the judged cases of ``benchmarks/zoo_trainability.json`` (built as ``zoo_table.py``
builds them: ``zoo_check.load_zoo``, ``entry.build(init)``, ``probe.measure(model, inputs,
batch_size=16, seed=0)``) it probes once with ``steps=K`` and prints the share of the target
distance closed per step (``stalled``'s value) beside ``trains``. The step-0 statistics do not
depend on the steps (they come first, and the weights are restored after), so the verdict without
the steps is the same report judged with ``stalled`` disabled. Agreement is counted as in
``zoo_table.py``, overall and on the ``tune`` / ``held-out`` family halves (``tests/zoo``'s
``split``): the threshold is chosen on ``tune`` only.

``--defaults`` also probes every zoo architecture's default init with the steps and lists those
``stalled`` fails (none may). ``--cost ID,ID`` times ``probe.measure`` without and with the steps
(best of 3 each).

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 /work/main/.venv/bin/python benchmarks/zoo_steps.py --defaults
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import zoo_check  # noqa: E402
import zoo_table  # noqa: E402

SEED, BATCH = 0, 16


def probe_case(zoo: Any, entry_id: str, init: str, steps: int) -> dict[str, Any]:
    """One case probed with ``steps``: the verdict with and without ``stalled`` and its value."""
    import torch

    import probe
    from probe.judge.rules import evaluate
    from probe.judge.stalled import step_progress, weights_turn

    entry = zoo.ZOO[entry_id]
    torch.manual_seed(SEED)
    out: dict[str, Any] = {"id": entry_id, "init": init, "family": entry.family, "split": zoo.split(entry.family)}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, inputs, _ = entry.build(init)
            report = probe.measure(model, inputs, batch_size=BATCH, seed=SEED, name=entry_id, steps=steps)
        stats = report.stats
        gate = stats.spec.gate
        without = evaluate(stats, replace(gate, disable=(*gate.disable, "stalled")))
        value = step_progress(stats)
        out.update(
            healthy=bool(report.verdict.healthy),
            healthy_step0=bool(without.healthy),
            stalled=any(p.rule == "stalled" for p in report.verdict.problems),
            value=value[0][1] if value else None,
            progress=stats.steps.progress if stats.steps else None,
            turn=weights_turn(stats),
            problems=[zoo_check.problem_dict(p) for p in report.verdict.problems],
            seconds=stats.elapsed_s,
            step_seconds=stats.steps.elapsed_s if stats.steps else None,
            **signals(stats.steps),
        )
    except Exception as e:
        out.update(healthy=None, healthy_step0=None, error=f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
    return out


def signals(steps: Any) -> dict[str, Any]:
    """The steps' other measurements (probe/measurement/step_signals.py): losses, the constant
    prediction's, log Z, Adam's largest update RMS and the largest attention logit per step."""
    if steps is None:
        return {}
    rows = [(r.adam_rms, r.name) for r in steps.rows if r.adam_rms is not None]
    return {
        "losses": list(steps.losses),
        "baseline": steps.baseline,
        "log_z": list(steps.log_z),
        "adam_rms": list(steps.adam_rms),
        "attention_max": list(steps.attention_max),
        "adam_rms_row": max(rows)[1] if rows else None,
    }


def agreement(rows: list[dict[str, Any]], key: str) -> str:
    parts = []
    for half in ("all", "tune", "held-out"):
        rs = [{**r, "healthy": r[key]} for r in rows if half == "all" or r["split"] == half]
        c = zoo_table.counts(rs)
        parts.append(f"{half} {c['agree']}/{c['cases']} ({c['false_alarm']} false alarms, {c['miss']} misses)")
    return "; ".join(parts)


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--defaults", action="store_true", help="also every default init with the steps")
    parser.add_argument("--cost", default="", help="comma-separated ids to time without and with the steps")
    parser.add_argument("--no-truth", action="store_true", help="skip the judged cases")
    parser.add_argument("--json", type=Path, default=None, help="write every row here")
    parser.add_argument("--output", type=Path, default=None, help="write the agreement lines (markdown) here too")
    args = parser.parse_args(argv)

    import torch

    zoo = zoo_check.quiet_zoo()
    doc: dict[str, Any] = {"steps": args.steps}
    if not args.no_truth:
        truth = json.loads(zoo_table.TRUTH.read_text())
        replicates = json.loads(zoo_table.REPLICATES.read_text())["runs"] if zoo_table.REPLICATES.exists() else []
        rows = []
        print("| id | init | half | trains (gain) | progress | per step | weights turn/step | step 0 | with steps |")
        print("|---|---|---|---|---|---|---|---|---|")
        for run in zoo_table.with_replicates(truth["runs"], replicates):
            if run["trains"] is None:
                continue
            r = probe_case(zoo, run["model"], run["init"], args.steps)
            r["trains"], r["gain_fraction"] = run["trains"], run["gain_fraction"]
            rows.append(r)
            verdict = {True: "healthy", False: "unhealthy", None: "error"}
            print(
                f"| {r['id']} | {r['init']} | {r['split']} | {r['trains']} ({fmt(r['gain_fraction'])}) | "
                f"{fmt(r.get('progress'))} | {fmt(r.get('value'))} | {fmt(r.get('turn'))} | {verdict[r['healthy_step0']]} | "
                f"{verdict[r['healthy']]}{' (stalled)' if r.get('stalled') else ''} |",
                flush=True,
            )
        summary = [
            f"- step 0 only: {agreement(rows, 'healthy_step0')}",
            f"- with `--steps {args.steps}`: {agreement(rows, 'healthy')}",
        ]
        print("\n" + "\n".join(summary))
        if args.output is not None:
            args.output.write_text("\n".join(summary) + "\n")
        doc["truth"] = rows
    if args.defaults:
        defaults = []
        for k, entry_id in enumerate(zoo.ZOO, 1):
            r = probe_case(zoo, entry_id, "default", args.steps)
            defaults.append(r)
            if r.get("stalled") or r["healthy"] is None:
                print(
                    f"  default {entry_id}: stalled={r.get('stalled')} value={fmt(r.get('value'))} {r.get('error', '')}"
                )
            if k % 50 == 0:
                print(f"  ... {k}/{len(zoo.ZOO)} defaults", file=sys.stderr, flush=True)
        stalled = [r["id"] for r in defaults if r.get("stalled")]
        values = sorted((r["value"], r["id"]) for r in defaults if r.get("value") is not None)
        print(f"\ndefaults: {len(defaults)}; stalled fails {len(stalled)}: {', '.join(stalled) or 'none'}")
        print("lowest per-step values: " + ", ".join(f"{i} {v:.3g}" for v, i in values[:6]))
        doc["defaults"] = defaults
    if args.cost:
        import probe

        print("\n| id | without steps (s) | with --steps (s) | ratio |\n|---|---|---|---|")
        for entry_id in args.cost.split(","):
            times = []
            for steps in (0, args.steps):
                best = float("inf")
                for _ in range(3):
                    torch.manual_seed(SEED)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        model, inputs, _ = zoo.ZOO[entry_id].build("default")
                        t = time.perf_counter()
                        probe.measure(model, inputs, batch_size=BATCH, seed=SEED, steps=steps)
                        best = min(best, time.perf_counter() - t)
                times.append(best)
            print(f"| {entry_id} | {times[0]:.2f} | {times[1]:.2f} | {times[1] / times[0]:.2f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
