"""Grids of probes: depth and/or width x strategies (x activations), one ``run_probe`` per cell.

A depth sweep answers the seed's exercise "change the depth from 8 to 20: which initialization
fails first?" with the first depth at which each strategy breaks a health rule. A width sweep is
a coordinate check in the manner of muP: for each layer, the slope of log(activation std) against
log(width). A parametrization whose activations keep their scale as the network widens has
slopes near 0; one whose scale drifts with width (e.g. a fixed N(0, 0.01^2) init, whose layer l
scales like width^((l-1)/2)) is flagged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from probe.errors import SpecError
from probe.experiments import batch
from probe.judge.rules import evaluate
from probe.measurement.run import run_probe
from probe.spec import Spec

# a width sweep flags a layer whose |d log std / d log width| exceeds this; each cell is one seed, so
# finite-width noise moves an O(1) layer's slope by ~0.1-0.2 over a 3-octave range, while a fixed-std
# init drifts by 0.5 per layer
MAX_WIDTH_SLOPE = 0.25

Step = Callable[[str], None]


@dataclass(frozen=True)
class Cell:
    """One probe of the grid."""

    label: str  # the STRATEGY[:ACTIVATION] entry
    depth: int
    width: int
    last_std: float
    grad_ratio: float | None
    healthy: bool
    problems: tuple[str, ...]  # broken rule names
    layer_stds: tuple[float, ...]
    layer_grad_stds: tuple[float | None, ...]
    # with run.steps (the coordinate check, coord_check.py): each row's name and rms output change
    layer_names: tuple[str, ...] = ()
    layer_changes: tuple[float | None, ...] = ()


@dataclass(frozen=True)
class WidthSlope:
    """How one entry's per-layer activation std scales with width."""

    label: str
    depth: int
    slopes: tuple[float, ...]  # one per watched layer

    @property
    def worst(self) -> float:
        finite = [s for s in self.slopes if math.isfinite(s)]
        return max(finite, key=abs) if finite else math.nan

    @property
    def drifts(self) -> bool:
        return not math.isfinite(self.worst) or abs(self.worst) > MAX_WIDTH_SLOPE


@dataclass(frozen=True)
class SweepResult:
    entries: tuple[str, ...]
    depths: tuple[int, ...]
    widths: tuple[int, ...]
    cells: tuple[Cell, ...]

    def first_failing_depth(self, label: str, width: int | None = None) -> int | None:
        """The smallest swept depth at which ``label`` breaks a rule (at ``width``, default the first)."""
        width = self.widths[0] if width is None else width
        bad = [c.depth for c in self.cells if c.label == label and c.width == width and not c.healthy]
        return min(bad) if bad else None

    def first_depth_of(self, rule: str, label: str, width: int | None = None) -> int | None:
        """The smallest swept depth at which ``label`` breaks ``rule`` (e.g. where collapse starts)."""
        width = self.widths[0] if width is None else width
        bad = [c.depth for c in self.cells if c.label == label and c.width == width and rule in c.problems]
        return min(bad) if bad else None

    def rules_at(self, label: str, depth: int, width: int | None = None) -> tuple[str, ...]:
        """The rules ``label`` breaks at ``depth`` (and ``width``, default the first)."""
        width = self.widths[0] if width is None else width
        return next((c.problems for c in self.cells if (c.label, c.depth, c.width) == (label, depth, width)), ())

    def across_widths(self, label: str, depth: int) -> list[Cell]:
        """``label``'s cells at ``depth``, narrowest first (what a width sweep compares)."""
        return sorted((c for c in self.cells if c.label == label and c.depth == depth), key=lambda c: c.width)

    def width_slopes(self) -> list[WidthSlope]:
        """Per entry and depth, the log-log slope of each layer's std against width (needs 2+ widths)."""
        if len(self.widths) < 2:
            return []
        out = []
        for label in self.entries:
            for depth in self.depths:
                cells = self.across_widths(label, depth)
                xs = [math.log(c.width) for c in cells]
                n_layers = min(len(c.layer_stds) for c in cells)
                slopes = tuple(slope(xs, [log_or_nan(c.layer_stds[i]) for c in cells]) for i in range(n_layers))
                out.append(WidthSlope(label, depth, slopes))
        return out


def log_or_nan(x: float) -> float:
    return math.log(x) if x > 0 and math.isfinite(x) else math.nan


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys on xs; nan if any point is not finite."""
    if any(not math.isfinite(y) for y in ys):
        return math.nan
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def parse_ints(text: str, option: str) -> tuple[int, ...]:
    """``"4,8,16"`` -> (4, 8, 16); each a positive integer."""
    values = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = int(part)
        except ValueError:
            raise SpecError(f"expected comma-separated integers, got '{part}'", option) from None
        if value < 1:
            raise SpecError(f"must be >= 1, got {value}", option)
        values.append(value)
    if not values:
        raise SpecError("expected at least one value, e.g. 4,8,16", option)
    return tuple(dict.fromkeys(values))


def grid(base: Spec, entries: Sequence[str], depths: Sequence[int] | None, widths: Sequence[int] | None) -> list[Spec]:
    """One spec per (depth, width, entry) cell, depth-major; every bad name fails before any run."""
    parsed = [batch.parse_entry(e) for e in entries]
    specs: list[Spec] = []
    for depth in depths or (base.model.depth,):
        for width in widths or (base.model.width,):
            sized = replace(base, model=replace(base.model, depth=depth, width=width))
            specs.extend(batch.entry_spec(sized, entry) for entry in parsed)
    return specs


def probe_cell(spec: Spec) -> Cell:
    """Probe one cell (module-level, so worker processes can run it)."""
    report = run_probe(spec)
    # a sweep shows where each threshold is first crossed: warnings count, not only errors
    verdict = evaluate(report, replace(spec.gate, fail_on="warning"))
    rows = report.steps.rows if report.steps is not None else ()
    return Cell(
        label=spec.name,  # entry_spec names the spec after its entry
        depth=spec.model.depth,
        width=spec.model.width,
        last_std=report.last.std,
        grad_ratio=report.grad_ratio(),
        healthy=verdict.healthy,
        problems=tuple(dict.fromkeys(p.rule for p in verdict.problems)),
        layer_stds=tuple(x.std for x in report.layers),
        layer_grad_stds=tuple(x.grad_std for x in report.layers),
        layer_names=tuple(r.name for r in rows),
        layer_changes=tuple(r.change_rms for r in rows),
    )


def sweep(
    base: Spec,
    entries: Sequence[str],
    depths: Sequence[int] | None = None,
    widths: Sequence[int] | None = None,
    step: Step | None = None,
    jobs: int = 1,
) -> SweepResult:
    """Probe every (depth, width, entry) cell with the base spec's seed, data and gate, in ``jobs``
    worker processes (the cells are independent; the result is the same for any ``jobs``)."""
    specs = grid(base, entries, depths, widths)
    labels = [f"{s.name} depth {s.model.depth} width {s.model.width}" for s in specs]
    cells = batch.run_each(probe_cell, specs, labels, step, jobs)
    depth_list = tuple(depths or (base.model.depth,))
    width_list = tuple(widths or (base.model.width,))
    return SweepResult(tuple(entries), depth_list, width_list, tuple(cells))
