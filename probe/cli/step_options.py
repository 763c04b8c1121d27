"""``--steps`` and ``--lr``: the first optimizer steps on run and check (docs/verdicts.md, ``stalled``);
``--precision``: low-precision headroom (docs/precision.md, ``headroom``)."""

# No `from __future__ import annotations`: typer reads the annotations at import (see common.py).
from typing import Annotated, Any, Optional

import typer

StepsOpt = Annotated[
    Optional[int],
    typer.Option(
        "--steps",
        metavar="K",
        min=0,
        help="After the step-0 measurement, take K AdamW steps on one batch (weights restored after) and "
        "judge how far they moved it (the stalled rule). Sets run.steps.",
    ),
]
LrOpt = Annotated[
    Optional[float],
    typer.Option(
        "--lr", metavar="LR", min=0.0, help="Learning rate of the --steps AdamW steps (run.lr, default 1e-3)."
    ),
]


def steps_overrides(steps: Optional[int], lr: Optional[float]) -> dict[str, Any]:
    """``--steps`` and ``--lr`` as spec overrides (only those given)."""
    given = {"run.steps": steps, "run.lr": lr}
    return {k: v for k, v in given.items() if v is not None}


PrecisionOpt = Annotated[
    Optional[str],
    typer.Option(
        "--precision",
        metavar="FORMAT",
        help="Also measure each row's amax and underflow against fp16, bf16, fp8 (= fp8_e4m3) or fp8_e5m2 and judge "
        "them (the headroom rule). Sets run.precision.",
    ),
]


def precision_overrides(precision: Optional[str]) -> dict[str, Any]:
    """``--precision`` as a spec override (the spec's choices check it)."""
    return {} if precision is None else {"run.precision": precision}
