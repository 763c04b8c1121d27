"""``--optimizer``: the gate's optimizer hint on run, check and compare (docs/verdicts.md)."""

# No `from __future__ import annotations`: typer reads the annotations at import (see common.py).
from enum import Enum
from typing import Annotated, Any, Optional

import typer


class GateOptimizer(str, Enum):
    any = "any"
    sgd = "sgd"
    adam = "adam"


OptimizerOpt = Annotated[
    Optional[GateOptimizer],
    typer.Option(
        "--optimizer",
        case_sensitive=False,
        help="Sets gate.optimizer: sgd makes moderate vanishing an error, adam only vanishing by 4+ decades.",
    ),
]


def optimizer_override(optimizer: Optional[GateOptimizer]) -> dict[str, Any]:
    """``--optimizer`` as a spec override (``gate.optimizer``)."""
    return {} if optimizer is None else {"gate.optimizer": optimizer.value}
