"""What a mechanism explains, so the rules do not judge it as a failure: zero-initialized layers
that the first steps move (``movers``), branches whose skip carries the gradient, and the notes a
verdict carries for them (zero layers, identity blocks). ``rules.py`` asks ``explained`` before
it reports a broken threshold."""

from __future__ import annotations

import math

from probe.judge.gradients import grad_ratios, side_rows
from probe.judge.readings import outgrown, output_row, weighted_median
from probe.records import LayerStats, Problem, Stats
from probe.spec import GateSpec

# dead_units is an error from this fraction of a signal-path layer's units on: a layer with every
# unit dead cuts the path (nothing below it ever receives gradient); with fewer dead it is a
# narrower layer. Measured (benchmarks/backward_mechanisms.py, ReLU MLPs with a negative bias
# shift): 0.85 dead trains (0.72 of the default's gain), 0.97-1.0 does not learn at all. As a
# multiple of gate.max_dead_units (0.25 -> 0.9), so a stricter gate is stricter on errors too
DEAD_CUT = 0.9
# A convolutional network without skips whose gradient grows toward its input through weights that
# all feed a normalization: a warning up to this many times max_grad_ratio, an error past it.
# Measured, not derived: GoogLeNet, Inception-v3, BN-Inception and SelecSLS train at 136-961,
# Inception-v4 (9,403) does not; the line is near the geometric middle. BatchNorm MLPs keep the
# usual line: at width 64, 20 and 30 layers read 195 and 1,500 and do not learn (docs/verdicts.md)
STACK_CHAOS = 20.0
# a residual block whose branch adds less than this fraction of the stream is an identity block
IDENTITY_FRACTION = 0.01
# Adam's first step moves each weight element by about lr: where most of the weights are under
# lr / REDRAW, it replaces the init by lr * sign(gradient) (``redrawn``). SAM's
# initializer_range 1e-10 sits 7 decades under lr 1e-3 and trains; a x 1e-3 default, 1.3e-5 to
# 7e-5 on the zoo, keeps its step-0 verdict
REDRAW = 1e3


def fmt(x: float) -> str:
    return f"{x:.3g}"


def output_layer(report: Stats) -> LayerStats:
    """The row whose weight made the network's output (``readings.output_row``). Where that row has
    no weight of its own or is a table's (the model's own row, holding a position table, a class
    token or a temperature, that scales or returns its head's logits), the last row before it with a
    weight and as many units, a map to the output (``head``, or ``stream`` in a network whose last
    row is the model's own), made them."""
    x = output_row(report)
    if (x.weight_size and x.role != "embedding") or x.role in ("norm", "activation"):
        return x  # (a norm's or an activation's output is features, or probabilities: no head's logits)
    before = [
        h
        for h in report.layers
        if h.index < x.index and h.units == x.units and h.weight_size and h.role in ("head", "stream")
    ]
    return before[-1] if before else x


def nan_statistics(report: Stats, gate: GateSpec) -> Problem | None:
    """The nonfinite rule's floor, which no threshold moves and only the caller (not the spec's
    text) can disable (``gate.nan_accepted``): a row whose std or gradient std is not finite (nan
    or inf values in it) leaves every other rule nothing to judge, and a network that computes nan
    does not train. ``max_nonfinite`` tolerates a count of such values only while the statistics
    stay finite. None when every statistic is finite."""
    if gate.nan_accepted:
        return None
    bad = [x for x in report.layers if _not_finite(x)]
    if not bad:
        return None
    x = bad[0]
    count = x.nonfinite + (x.grad_nonfinite or 0)
    grad = f", gradient std {fmt(x.grad_std)}" if x.grad_std is not None else ""
    msg = (
        f"statistics not finite at {len(bad)} layers, first at {x.name} (std {fmt(x.std)}{grad}; {count} "
        "non-finite values): no rule can judge them and no threshold tolerates them"
    )
    if "nonfinite" in gate.disable:
        msg += "; the spec disables nonfinite, which only the command line can do for nan (--gate disable=nonfinite)"
    return Problem("nonfinite", x.name, float(count), float(gate.max_nonfinite), msg, "max_nonfinite", "error")


def _not_finite(x: LayerStats) -> bool:
    """A statistic is nan, or inf from non-finite values (an inf std of finite values, whose squares
    overflow, is the exploding rule's)."""
    stats = [v for v in (x.std, x.grad_std) if v is not None]
    counted = x.nonfinite + (x.grad_nonfinite or 0) > 0
    return any(math.isnan(v) or (counted and math.isinf(v)) for v in stats)


# ---- what a mechanism explains: zero-initialized layers that move, branches the skip bypasses -----


def movers(report: Stats, gate: GateSpec | None = None) -> tuple[LayerStats, ...]:
    """Layers small by design that the first steps move: a parameter exactly 0 whose gradient is
    not (a zero-initialized classifier, projection, LayerScale, last BatchNorm scale, scalar
    gain), or a row whose relative gradient ``step_ratio`` (||d loss / d p|| / ||p||) is
    1 / ``min_grad_ratio`` times the head's (the last row with one: where the loss injects its
    gradient, healthy by construction). A layer k times smaller than its peers, whose own gradient
    is not small, has a relative gradient k times theirs and divides the gradient behind it by k:
    the gradient rule breaks behind it exactly when k > 1 / min_grad_ratio. A chain of uniformly
    small layers (tiny init) has no such layer: its head's relative gradient is as small as the
    rest (docs/verdicts.md)."""
    gate = gate or report.spec.gate
    # (not a row returning another's output: a model's own parameters, a class token or a final
    # affine, act elsewhere, and its row's output is its head's)
    ref = next((x.step_ratio for x in reversed(report.layers) if x.step_ratio and not x.output_of), None)
    factor = 1.0 / gate.min_grad_ratio if gate.min_grad_ratio > 0 else math.inf
    return tuple(
        x
        for x in report.layers
        if x.zero_moving or (ref is not None and x.step_ratio is not None and x.step_ratio >= factor * ref)
    )


def _inside_blocks(report: Stats) -> set[str]:
    """Rows inside a residual block (its qualified name below a block's whose branch was
    measured) that are not on the signal path: the skip carries the gradient around them. None
    when the branches are cut: ``DEAD_CUT`` of the blocks with weights have every weight's
    gradient exactly 0 (dead units at the branch's start, so nothing in it learns: the network is
    its stem and head alone; a squeeze-and-excitation gate whose units are all dead leaves the
    branch's convolutions learning)."""
    blocks = {x.name + ".": x for x in report.layers if x.branch_ratio is not None}
    inside = {b: [x for x in report.layers if x.name.startswith(b)] for b in blocks}
    weighted = [rows for rows in inside.values() if any(x.weight_grad_norm is not None for x in rows)]
    # (a zero-initialized layer in the block, or the block's own zero gain, opens it on the first step)
    opens = {b for b, rows in inside.items() if blocks[b].zero_moving or any(x.zero_moving for x in rows)}
    frozen = [
        rows
        for b, rows in inside.items()
        if rows in weighted and b not in opens and all(not x.weight_grad_norm for x in rows)
    ]
    if weighted and len(frozen) >= DEAD_CUT * len(weighted):
        return set()
    # (and the rows of blocks whose branch was not measured: a downsampling block, whose shortcut
    # is a projection, carries the gradient around its branch too; such a block is a stream row
    # with branch rows under its name)
    streams = {x.name for x in report.layers if x.role == "stream"}
    for x in report.layers:
        if x.role == "branch":
            parts = x.name.split(".")
            owner = next((p for k in range(len(parts) - 1, 0, -1) if (p := ".".join(parts[:k])) in streams), None)
            if owner is not None and owner + "." not in inside:
                inside[owner + "."] = [y for y in report.layers if y.name.startswith(owner + ".")]
    return {x.name for rows in inside.values() for x in rows if x.role not in ("stream", "head")}


def explained(rule: str, report: Stats, gate: GateSpec | None = None) -> tuple[set[str], set[str], str]:
    """For ``rule``: the rows not judged, the rows whose problem is at most a warning, and why.

    - vanishing: a mover's (``movers``) own output is small by design: at most a warning, not
      judged when exactly 0.
    - gradient_vanishing: a row before a mover gets its gradient through it: exactly 0 (a zero
      weight) is not judged, small behind a small mover (not 0) is slower, not stuck. Side rows (``gradients.side_rows``: under the threshold
      after a row that is not) are at most a warning. (Not gradient_exploding: exploding
      gradients make every relative gradient large, which is that problem, not a small layer.)
    - symmetry: a weight behind a zero-initialized layer has gradient rows all 0 at step 0 (alike
      until that layer moves): not judged.
    - dead_units: a unit inside a residual block's branch or gate cuts that branch only; the skip
      carries the gradient on (squeeze-and-excitation's ReLU on pooled features).
    - gradient_exploding: in a residual network, a row whose gradient reaches only weights that
      feed a normalization (``_scale_invariant_behind``) is at most a warning.
    """
    if rule in ("vanishing", "gradient_vanishing") and (redraw := redrawn(report, gate)):
        return set(), {x.name for x in report.layers}, redraw
    if rule == "gradient_vanishing":
        side = side_rows(report, gate or report.spec.gate)
        if side:  # at most a warning: a row that ran before them receives its gradient
            skip, capped, why = _behind_movers(rule, report, gate)
            own = "small where the row's own effect on the loss is small: a row that ran before it receives gradient"
            return skip, capped | side, f"{why}; {own}" if why else own
    return _behind_movers(rule, report, gate)


def redrawn(report: Stats, gate: GateSpec | None = None) -> str:
    """Why the step-0 signal's size says nothing about training, or "": most of the weight
    elements (weighted median of the rms of the rows below) are under ``run.lr / REDRAW``, so
    Adam's first step, about ``lr`` per element, replaces them by ``lr * sign(gradient)``: a
    network that exists for one step. Exactly-0 weights are not redrawn (a tied zero weight stays
    tied: ``symmetry`` judges it); whether the redraw is one outer product is ``rank_one_step``'s.
    Not with ``gate.optimizer: sgd``, whose steps scale with the vanishing gradient."""
    found = outgrown(report, gate or report.spec.gate, REDRAW)
    if found is None:
        return ""
    return f"most weights (rms {fmt(found[0])}) are under lr / {REDRAW:g}: Adam's first step redraws them"


def _behind_movers(rule: str, report: Stats, gate: GateSpec | None) -> tuple[set[str], set[str], str]:
    if rule in ("vanishing", "gradient_vanishing"):
        moving = movers(report, gate)
        if not moving:
            return set(), set(), ""
        last = max(x.index for x in moving)
        names = ", ".join(x.name for x in moving[:3]) + (f" and {len(moving) - 3} more" if len(moving) > 3 else "")
        why = f"small by design behind a layer the first steps move ({names})"
        if rule == "vanishing":
            # the mover's own output only: what follows it is the stream (a skip adds the mover's
            # output to it); a signal that fades after a zero layer that does not move (an all-zero
            # block is a saddle) is vanishing. A zero layer behind a zero mover moves once the mover
            # has (``_waiting``): its 0 is by design too
            zero = {x.name for x in moving if x.zero_moving} | {x.name for x in _waiting(report, gate) if x.std == 0}
            # a row returning a mover's output as its own (a block without a skip whose last layer
            # is a LayerScale of 1e-5: timm's MobileNetV4 hybrid) is that output
            zero |= {x.name for x in report.layers if x.returns in zero}
            nonzero = {x.name for x in moving if not x.zero_moving}
            return zero, {x.name for x in moving} | _carried(report, nonzero) | _mixed_in(report, gate, moving), why
        blocked = {x.name for x in report.layers if x.index < last and x.gradient_blocked}
        # a zero layer's own output is 0, so its ||output|| * ||gradient|| is too
        blocked |= {x.name for x in moving if x.zero_moving}
        # a zero layer passes exactly 0 gradient back (those rows are ``blocked``): a row behind it
        # whose gradient is small but not 0 gets it through another path (a skip), so the zero
        # layer does not explain it; only a small layer that is not 0 divides what passes through
        small = max((x.index for x in moving if not x.zero_moving), default=0)
        return blocked, {x.name for x in report.layers if x.index < small}, why
    if rule == "symmetry":
        front = max((x.index for x in movers(report, gate) if x.zero_moving), default=0)
        # no gradient reached these weights at step 0: their gradient rows are all 0 (alike) until
        # the zero layer in front of them moves
        return {x.name for x in report.layers if x.index < front and not x.weight_grad_norm}, set(), ""
    if rule == "dead_units":
        # no gradient at step 0 because a zero layer in front of them passes none: it moves on the
        # first step, and they receive gradient from the second (adaLN-Zero's modulations behind
        # DiT's zero final layer)
        waiting = {x.name for x in _waiting(report, gate)}
        return waiting, _inside_blocks(report), "in a residual block's branch or gate: the skip carries the gradient on"
    if rule == "gradient_exploding":
        if any(x.branch_ratio is not None for x in report.layers):
            why = "a residual network whose every weight it reaches feeds a normalization (scale-invariant)"
            return set(), _scale_invariant_behind(report), why
        gate = gate or report.spec.gate
        line = STACK_CHAOS * gate.max_grad_ratio
        if _normalized_rms(report) < report.spec.run.lr:  # each Adam step outgrows them: no calm
            return set(), set(), ""
        calm = {
            x.name
            for x, v in grad_ratios(report, coherent=True)
            if v is not None and v <= line and _positions(report, x) > 1
        }
        why = f"every weight it reaches feeds a normalization (scale-invariant), under {fmt(line)} in a convnet"
        return set(), _normalized_behind(report) & calm, why
    return set(), set(), ""


def _carried(report: Stats, small: set[str]) -> set[str]:
    """The rows whose output is a mover's (``returns``: a block without a skip ending in a
    LayerScale of 1e-5, timm's MobileNetV4 hybrid), and the residual blocks after one that carry its
    output on (their skips add their small branches to it), up to the next stream row that is no
    residual block: their smallness is the mover's, which the first steps grow."""
    carried: set[str] = set()
    on = False
    for x in report.layers:
        if x.returns in small:
            on = True
        elif x.role == "stream" and x.branch_ratio is None:
            on = False
        if on and x.role in ("stream", "head"):
            carried.add(x.name)
    return carried


def _mixed_in(report: Stats, gate: GateSpec | None, moving: tuple[LayerStats, ...]) -> set[str]:
    """The rows after a mover whose own std is not small and whose part that varies between
    samples (``sample_std``, what ``vanishing`` reads) is: the input reaches them only through the
    mover (a class token that the attention of blocks with a LayerScale of 1e-5 barely changes),
    and grows as the first steps grow it."""
    gate = gate or report.spec.gate
    first = min(x.index for x in moving)
    return {
        x.name
        for x in report.layers
        if x.index > first and x.sample_std is not None and x.std is not None and x.std >= gate.min_std
    }


def _waiting(report: Stats, gate: GateSpec | None) -> list[LayerStats]:
    """Rows whose gradient is exactly 0 at step 0 (``gradient_blocked``) behind a zero-initialized
    layer the first step moves (a zero mover): the rows before the last one that is not a table
    (a model's own position table or class token acts at its input, whatever its row's place)."""
    front = max((x.index for x in movers(report, gate) if x.zero_moving and x.role != "embedding"), default=0)
    return [x for x in report.layers if x.index < front and x.gradient_blocked]


def _scale_invariant_behind(report: Stats) -> set[str]:
    """In a residual network, the rows whose gradient reaches only weights that feed a
    normalization: every row with a weight on the stream (not inside a residual branch) up to and
    including them is ``normalized``. A large
    gradient there cannot blow the forward pass up (the norm divides any scale out), its step
    mostly grows the weight's norm, which shrinks every later step (the auto rate-tuning of
    scale-invariant weights), and the skips keep each block near the identity: a BatchNorm
    ResNet's gradient grows toward its input at init (transformers' ResNet-50 reads 400-8,000 at
    its stem) and it trains. A BatchNorm convnet without skips (a plain or a concatenating one) is
    judged by ``explained`` against ``STACK_CHAOS``, an MLP against the usual line: past it, its
    gradient explosion is the chaos that makes it untrainable (Yang et al. 2019; 40 layers read
    5,500 and learn nothing here)."""
    if not any(x.branch_ratio is not None for x in report.layers):
        return set()
    return _normalized_behind(report)


def _normalized_rms(report: Stats) -> float:
    """The median rms, weighted by size, of the weights that feed a normalization (inf: none)."""
    found = weighted_median(
        (x.weight_rms, x.weight_size or 0, x) for x in report.layers if x.normalized and x.weight_rms
    )
    return found[0] if found is not None else math.inf


def _positions(report: Stats, x: LayerStats) -> float:
    """Positions per sample of a row's output (1: an MLP's; a feature map's pixels, a sequence's tokens)."""
    samples = report.spec.data.batch_size * report.spec.data.batches
    return x.count / (x.units * samples) if x.units and samples else 1.0


def _normalized_behind(report: Stats) -> set[str]:
    """The rows up to the first weight on the stream that feeds no normalization (``normalized``)."""
    rows: set[str] = set()
    for x in report.layers:
        # (a weight inside a residual branch is the block's: the skip carries the stream's gradient
        # around it; a squeeze-excitation's convolutions feed a bounded sigmoid gate, not the stream)
        if x.weight_size and not x.normalized and x.role != "branch":
            break
        rows.add(x.name)
    return rows


def zero_layers(report: Stats) -> tuple[Problem, ...]:
    """A note for zero-initialized layers whose weight gradient is not 0 (the first step moves
    them), and the rows whose gradient they block exactly at step 0."""
    zero = [x for x in movers(report) if x.zero_moving]
    if not zero:
        return ()
    last = max(x.index for x in zero)
    blocked = [x for x in report.layers if x.gradient_blocked and x.index < last]
    msg = f"{len(zero)} zero-initialized layer(s) ({zero[0].name}{', ...' if len(zero) > 1 else ''}): their weight gradient is not 0, so the first step moves them"
    if blocked:
        msg += (
            f"; gradient blocked by a zero-initialized layer that will move: {len(blocked)} row(s) behind them "
            f"receive exactly 0 gradient at step 0 (first {blocked[0].name})"
        )
    return (Problem("zero_layer", zero[0].name, 0.0, 0.0, msg + "; by design, not a failure", "", "note"),)


def identity_blocks(report: Stats) -> tuple[Problem, ...]:
    """A note for residual blocks whose branch adds less than ``IDENTITY_FRACTION`` of the stream
    at init (ReZero, Fixup, LayerScale, depth-scaled projections): small by design, not vanishing."""
    quiet = [x for x in report.layers if x.branch_ratio is not None and x.branch_ratio < IDENTITY_FRACTION]
    if not quiet:
        return ()
    first = quiet[0]
    worst = min(quiet, key=lambda x: x.branch_ratio or 0.0)
    msg = (
        f"{len(quiet)} identity block(s) at init: the branch adds {fmt(first.branch_ratio or 0.0)} of the stream "
        f"at {first.name}"
        + (f" (least {fmt(worst.branch_ratio or 0.0)} at {worst.name})" if worst is not first else "")
        + "; by design (ReZero, Fixup, LayerScale), not a failure"
    )
    return (
        Problem("identity_block", first.name, float(first.branch_ratio or 0.0), IDENTITY_FRACTION, msg, "", "note"),
    )
