"""``weight_scale`` in Adam's units, measured beside the rule (issue 18; not a rule of probe's).

Adam moves each element about ``lr`` per step, so within ``T`` steps a weight of rms ``r`` can move
by at most ``lr * T / r`` of its size, whatever its fan-in (He's units read 2.1 for an N(0, 1) 3 x 3
depthwise convolution and 12 for a 3 x 3 x 32 one, though both turn alike). The value printed is
``weight_scale``'s weighted median with ``rms / (lr * T)`` for the normalized weights (0 for the
others), T = 200 (``stalled``'s horizon); above 1, most weights are normalized and cannot move by
their own size within the horizon.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/adam_weight_turn.py normal1    # the judged N(0, 1) cases
    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/adam_weight_turn.py defaults   # every zoo default
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402
import zoo_check  # noqa: E402

LR, HORIZON = 1e-3, 200


def adam_units(report: object) -> float:
    stats = report.stats  # type: ignore[attr-defined]
    rows = [
        x
        for x in stats.layers
        if x.weight_size and x.weight_rms is not None and x.weight_scale is not None and x.role != "embedding"
    ]
    vals = sorted(((x.weight_rms / (LR * HORIZON)) if x.normalized else 0.0, x.weight_size) for x in rows)
    half, seen = sum(n for _, n in vals) / 2, 0
    for v, n in vals:
        seen += n
        if seen >= half:
            return v
    return 0.0


def main() -> int:
    import probe

    warnings.simplefilter("ignore")
    zoo = zoo_check.quiet_zoo()
    truth = json.loads((HERE / "zoo_trainability.json").read_text())["runs"]
    if sys.argv[1:] == ["normal1"]:
        cases = [(r["model"], r["init"], r.get("trains")) for r in truth if r["init"] == "normal1"]
    else:
        cases = [(i, "default", None) for i in zoo.ZOO]
    for c, init, trains in cases:
        torch.manual_seed(0)
        model, inputs, _ = zoo.ZOO[c].build(init)
        report = probe.measure(model, inputs, batch_size=16, seed=0)
        value = adam_units(report)
        old = any(p.rule == "weight_scale" for p in report.verdict.problems)
        print(f"{c:28s} {init:8s} trains={trains} weight_scale={old} adam_units={value:.3g}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
