"""The coordinate check with a verdict (``probe sweep --width ... --steps K``).

muP's coordinate check (Yang et al. 2022, Tensor Programs V; microsoft/mup ``coord_check.py``)
trains a few steps at several widths and reads, per module, how the size of its output's change
grows with width. Here the size is the rms per coordinate of ``y_K - y_0`` after K AdamW steps on
the probe's fixed random target (``StepRow.change_rms``, probe/measurement/steps.py), and the
reading is the least-squares slope of ``log(change)`` against ``log(width)``.

Why a slope, and why 0: a parametrization whose updates transfer across widths moves every
module's coordinates by the same amount at every width (slope 0). A width factor misplaced in an
init variance or a learning rate moves them by a power of width: under Adam with one lr, SP's
hidden and output changes grow like ``width^1`` (each Adam step moves every weight element by
about lr, aligned with its input, so ``dW x`` sums ``width`` same-sign terms); the smallest such
power is ``width^(1/2)`` (a variance off by a factor of width). The check passes when every
module's ``|slope| <= MAX_CHANGE_SLOPE = 1/4``: halfway between 0 and that smallest misplaced
power. Noise, measured (docs/verdicts.md, "The coordinate check"): muP's slopes over widths
64-1024 stay within 0.07 (MLP, lr 1e-4), 0.04 (transformer, lr 1e-5) and 0.17 (MLP, lr 1e-3);
SP's hidden and output slopes read 0.9-1.45 where the steps are small against the outputs, and
less (0.33-0.6) once its outputs move by their own size at the wider widths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from probe.experiments.sweep import SweepResult, log_or_nan, slope

MAX_CHANGE_SLOPE = 0.25  # half the smallest power of width a misplaced width factor gives (1/2)


@dataclass(frozen=True)
class ModuleSlope:
    """One module's output change against width."""

    name: str
    changes: tuple[float | None, ...]  # rms of y_K - y_0 per coordinate, one per width
    slope: float  # d log change / d log width (nan where a change is missing, 0 or not finite)

    @property
    def passes(self) -> bool:
        return math.isfinite(self.slope) and abs(self.slope) <= MAX_CHANGE_SLOPE


@dataclass(frozen=True)
class CoordCheck:
    """One entry and depth of a width sweep with steps."""

    label: str
    depth: int
    widths: tuple[int, ...]
    modules: tuple[ModuleSlope, ...]

    @property
    def passes(self) -> bool:
        return all(m.passes for m in self.modules)

    @property
    def worst(self) -> ModuleSlope | None:
        """The module farthest from 0 (a nan slope first)."""
        if not self.modules:
            return None
        return max(self.modules, key=lambda m: math.inf if not math.isfinite(m.slope) else abs(m.slope))


def coord_checks(result: SweepResult) -> list[CoordCheck]:
    """Per entry and depth, each module's slope of its output change against width; modules
    whose output did not change at any width (nothing upstream trains) are left out. Empty
    without steps or with fewer than 2 widths."""
    if len(result.widths) < 2 or not any(c.layer_changes for c in result.cells):
        return []
    out = []
    for label in result.entries:
        for depth in result.depths:
            cells = result.across_widths(label, depth)
            xs = [math.log(c.width) for c in cells]
            names = [n for n in cells[0].layer_names if all(n in c.layer_names for c in cells)]
            modules = []
            for name in names:
                changes = tuple(c.layer_changes[c.layer_names.index(name)] for c in cells)
                if not any(x for x in changes):
                    continue
                ys = [log_or_nan(x) if x is not None else math.nan for x in changes]
                modules.append(ModuleSlope(name, changes, slope(xs, ys)))
            out.append(CoordCheck(label, depth, tuple(c.width for c in cells), tuple(modules)))
    return out
