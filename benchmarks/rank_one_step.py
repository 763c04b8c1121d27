"""``rank_one_step``'s mechanism model trained: ``tests/mechanism_models.EulerMLP`` on the zoo's vector
task (``trainability.train_zoo_case``: 200 AdamW steps, lr 1e-3, the constant-guess baseline) at the
scales ``tests/test_mechanisms_rank_one.py`` probes, beside probe's value for the output layer.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/rank_one_step.py
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402
import trainability as tr  # noqa: E402

CASES = {  # label: EulerMLP keywords
    "default": {},
    "weights x 0.1": {"scale": 0.1},
    "weights x 1e-2": {"scale": 1e-2},
    "weights x 1e-3": {"scale": 1e-3},
    "weights x 1e-3, biases 0": {"scale": 1e-3, "bias_scale": 0.0},
}


def main() -> int:
    import probe
    from probe.judge.rank_one import rank_one_rows
    from tests import mechanism_models as mm
    from tests import zoo

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    for label, kw in CASES.items():
        id_ = f"mech/euler_mlp {label}"
        zoo.ZOO[id_] = zoo.Entry(
            id_, "mechanism", "handwritten", "vector", True, lambda kw=kw: mm.EulerMLP(**kw), zoo.INPUTS["vector"]
        )
        run = tr.train_zoo_case(id_, "default")
        torch.manual_seed(0)
        report = probe.measure(mm.EulerMLP(**kw), torch.randn(64, 32), seed=0)
        value = rank_one_rows(report.stats)
        rules = ",".join(sorted({p.rule for p in report.verdict.problems})) or "healthy"
        shown = f"{value[0][1]:.3f}" if value and value[0][1] is not None else "-"
        print(
            f"{label:28s} gain {run.baseline - run.final_loss:+.3f}  rank_one_step {shown}  probe: {rules}", flush=True
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
