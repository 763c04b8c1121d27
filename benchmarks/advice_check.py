"""Advice checked by applying it (issue 22): for each broken zoo case (zeros, N(0, 1), x 1e-3) that
probe calls unhealthy, take the advice's ``change`` literally, apply it to a fresh build of the same
case as ``probe advise --apply`` would (``init.weight``/``init.bias`` through probe's own init, which
reaches every weight matrix), probe again, and count:

- applicable: the advice carries a spec change (not only a change to the model's code);
- healthy after one application;
- worse: a rule fails after that did not fail before (must be 0).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/advice_check.py              # a stratified sample (minutes)
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/advice_check.py --only hw/   # one family or prefix

The zoo is loaded from this tree (``zoo_check.py``); ``probe`` from ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from zoo_check import BATCH_SIZE, SEED, load_zoo, select

BROKEN = ("zeros", "normal1", "tiny")


def sample(zoo: Any) -> list[str]:
    """Every hand-written, torch and diffusers entry, and every fifth transformers one (sorted ids)."""
    ids = sorted(zoo.ZOO)
    hf = [i for i in ids if i.startswith("hf/")]
    return [i for i in ids if not i.startswith("hf/")] + hf[::5]


def apply_change(model: Any, change: dict[str, Any]) -> None:
    """``change``'s init keys on a model object, as a spec's init fills a user model."""
    from probe import spec as spec_mod
    from probe.model import init_rules
    from probe.spec import inits

    init = spec_mod.parse({"init": {k.removeprefix("init."): v for k, v in change.items()}}).init
    ctx, log = inits.InitContext("relu", {}), init_rules.InitLog()
    steps = init_rules.flat_steps(model, init, ctx, log, every_weight=True) if init.explicit else []
    for step in steps + init_rules.rule_fills(model, init.rules, ctx, None, log):
        step.fill()


def probe_case(zoo: Any, entry_id: str, init: str, change: dict[str, Any] | None = None) -> Any:
    import torch

    import probe

    torch.manual_seed(SEED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, inputs, _ = zoo.ZOO[entry_id].build(init)
        if change:
            apply_change(model, change)
        return probe.measure(model, inputs, batch_size=BATCH_SIZE, seed=SEED, name=entry_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="ids, families or prefixes ending in '/' (default: a sample)")
    args = parser.parse_args()
    zoo = load_zoo()
    ids = select(zoo, args.only) if args.only else sample(zoo)
    counts = {"broken": 0, "applicable": 0, "healthy": 0, "worse": 0, "errors": 0}
    left: list[str] = []
    start = time.perf_counter()
    for entry_id in ids:
        for init in BROKEN:
            try:
                before = probe_case(zoo, entry_id, init)
                if before.verdict.healthy:
                    continue
                counts["broken"] += 1
                change = before.advice.change if before.advice else {}
                if not change or any(not k.startswith("init.") for k in change):
                    left.append(
                        f"{entry_id} {init}: no spec change ({before.advice.suggestion if before.advice else ''})"
                    )
                    continue
                counts["applicable"] += 1
                after = probe_case(zoo, entry_id, init, change)
            except Exception as exc:  # a probe error is counted, not hidden
                counts["errors"] += 1
                left.append(f"{entry_id} {init}: {type(exc).__name__}: {str(exc)[:120]}")
                continue
            failed_before = {p.rule for p in before.verdict.problems}
            failed_after = {p.rule for p in after.verdict.problems}
            counts["healthy"] += after.verdict.healthy
            new = failed_after - failed_before
            counts["worse"] += bool(new)
            if not after.verdict.healthy:
                worse = f" (worse: {', '.join(sorted(new))} newly fails)" if new else ""
                left.append(f"{entry_id} {init}: {change} -> still {', '.join(sorted(failed_after))}{worse}")
            print(f"{entry_id:40s} {init:8s} {'healthy' if after.verdict.healthy else 'UNHEALTHY'}", flush=True)
    b = max(counts["broken"], 1)
    print(f"\n{len(ids)} architectures x {len(BROKEN)} broken inits, {time.perf_counter() - start:.0f} s")
    print(
        f"broken (unhealthy) {counts['broken']}; advice with a spec change {counts['applicable']} "
        f"({counts['applicable'] / b:.0%}); healthy after one application {counts['healthy']} "
        f"({counts['healthy'] / b:.0%}); worse on some rule {counts['worse']}; probe errors {counts['errors']}"
    )
    for line in left:
        print("  left:", line)


if __name__ == "__main__":
    main()
