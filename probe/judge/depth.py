"""Spec -> depth limits: how deep the network can go, per init strategy, before the mean-field
signal or gradient crosses the gate's thresholds; and, for saturating activations (tanh, sigmoid),
the edge of chaos: the (sigma_w^2, sigma_b^2) points where chi = 1 at the variance map's fixed point.

Uses ``theory.predict`` on the spec's hidden stack (no head), stretched to ``max_depth`` layers:
the forward quantities of layer ``l`` do not depend on the total depth, and a D-layer network's
gradient ratio at layer ``k`` is ``sqrt(chi_{k+1} * ... * chi_D)``, so one pass gives every depth.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from probe.errors import SpecError
from probe.judge import gaussian, theory
from probe.spec import Choice, GateSpec, Spec, inits

EDGE_ACTIVATIONS = ("tanh", "sigmoid")  # bounded: the variance map has a finite fixed point
EDGE_BIAS_VARIANCES = (0.0, 0.01, 0.05, 0.1, 0.5)


@dataclass(frozen=True)
class DepthLimit:
    """For one strategy: the first depth at which the forward signal or the gradient breaks the gate."""

    strategy: str
    sigma_w2: float | None  # fan_in * Var(W) of the hidden layers
    q_deep: float | None  # pre-activation variance at the deepest layer computed
    chi_deep: float | None  # chi there (about the fixed point's)
    forward_depth: int | None  # None: within the gate up to max_depth
    forward_rule: str | None
    gradient_depth: int | None
    gradient_rule: str | None
    reason: str | None = None  # why there is no prediction


@dataclass(frozen=True)
class EdgePoint:
    """The edge of chaos for one bias variance: chi = 1 at the fixed point q*."""

    sigma_b2: float
    sigma_w2: float | None  # None: not found in the search range
    q_star: float | None

    @property
    def gain(self) -> float | None:
        """The gain on LeCun's variance 1 / fan_in (Xavier's with fan_in = fan_out) that reaches it."""
        return None if self.sigma_w2 is None else math.sqrt(self.sigma_w2)


@dataclass(frozen=True)
class DepthReport:
    spec: Spec
    max_depth: int
    limits: tuple[DepthLimit, ...]
    edge: tuple[EdgePoint, ...] = ()
    edge_reason: str | None = None


def depth_limit(spec: Spec, weight: Choice, max_depth: int) -> DepthLimit:
    """Where the spec's network with ``weight`` first breaks vanishing/exploding or the gradient rules."""
    label = weight.label(inits.STRATEGIES[weight.name].params)
    stretched = replace(
        spec,
        model=replace(spec.model, depth=max_depth, output_dim=None),
        init=replace(spec.init, weight=weight),
        run=replace(spec.run, backward=True),
    )
    prediction = theory.predict(stretched, collapse=False)  # the collapse map is not used here
    if not prediction.available:
        return DepthLimit(label, None, None, None, None, None, None, None, prediction.reason)
    layers = prediction.layers
    forward_depth, forward_rule = _forward_limit([t.expected_std for t in layers], spec.gate)
    gradient_depth, gradient_rule = _gradient_limit([t.chi for t in layers], spec.gate)
    deep = layers[-1]
    sigma_w2 = layers[1].sigma_w2 if len(layers) > 1 else layers[0].sigma_w2
    return DepthLimit(label, sigma_w2, deep.q, deep.chi, forward_depth, forward_rule, gradient_depth, gradient_rule)


def _forward_limit(stds: Sequence[float], gate: GateSpec) -> tuple[int | None, str | None]:
    first = stds[0]
    for depth, std in enumerate(stds, start=1):
        ratio = std / first if first > 0 else math.nan
        if "vanishing" not in gate.disable and (
            std < gate.min_std or (math.isfinite(ratio) and ratio < gate.min_std_ratio)
        ):
            return depth, "vanishing"
        if "exploding" not in gate.disable and (
            std > gate.max_std or (math.isfinite(ratio) and ratio > gate.max_std_ratio)
        ):
            return depth, "exploding"
    return None, None


def _gradient_limit(chis: Sequence[float], gate: GateSpec) -> tuple[int | None, str | None]:
    """A D-layer net's log (grad ratio)^2 at layer k is C_D - C_k, C the prefix sums of log chi from layer 2."""
    low = 2 * math.log(gate.min_grad_ratio) if gate.min_grad_ratio > 0 else -math.inf
    high = 2 * math.log(gate.max_grad_ratio) if gate.max_grad_ratio > 0 else -math.inf
    total, lowest, highest = 0.0, 0.0, 0.0  # C_D, min_k C_k, max_k C_k over k <= D
    for depth in range(2, len(chis) + 1):
        chi = chis[depth - 1]
        total += math.log(chi) if chi > 0 else -math.inf
        if "gradient_vanishing" not in gate.disable and total - highest < low:
            return depth, "gradient_vanishing"
        if "gradient_exploding" not in gate.disable and total - lowest > high:
            return depth, "gradient_exploding"
        lowest, highest = min(lowest, total), max(highest, total)
    return None, None


def fixed_point(act: Choice, sigma_w2: float, sigma_b2: float, iterations: int = 40) -> float:
    """The stable fixed point q* of q -> sigma_w^2 E[phi(z)^2] + sigma_b^2 for a bounded phi (bisection)."""

    def excess(q: float) -> float:
        return sigma_w2 * gaussian.gaussian_moments(act, 0.0, q).second + sigma_b2 - q

    lo, hi = 1e-10, sigma_w2 + sigma_b2 + 1.0  # |phi| <= 1 bounds q* above
    if excess(lo) <= 0:
        return 0.0  # q = 0 is the only (stable) fixed point
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if excess(mid) > 0 else (lo, mid)
    return 0.5 * (lo + hi)


def edge_of_chaos(act: Choice, sigma_b2: float, iterations: int = 30) -> EdgePoint:
    """sigma_w^2 where chi = sigma_w^2 E[phi'(z)^2] = 1 at the fixed point, by bisection in log sigma_w^2."""

    def chi_minus_one(sw: float) -> float:
        q = fixed_point(act, sw, sigma_b2)
        return sw * gaussian.gaussian_moments(act, 0.0, q).grad2 - 1.0

    lo, hi = math.log(1e-2), math.log(1e4)
    if chi_minus_one(math.exp(lo)) > 0 or chi_minus_one(math.exp(hi)) < 0:
        return EdgePoint(sigma_b2, None, None)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if chi_minus_one(math.exp(mid)) < 0 else (lo, mid)
    sw = math.exp(0.5 * (lo + hi))
    return EdgePoint(sigma_b2, sw, fixed_point(act, sw, sigma_b2))


def analyze(spec: Spec, strategies: Sequence[str] | None = None, max_depth: int = 500) -> DepthReport:
    """Depth limits for the spec's own strategy and ``strategies`` (default: every i.i.d. one)."""
    from probe import spec as spec_mod

    reason = theory.network_reason(spec)
    if reason is not None:  # the same for every strategy: one line, not a table of it
        raise SpecError(f"probe depth: {reason}")
    names = list(strategies) if strategies else list(theory.IID_STRATEGIES)
    choices = [spec.init.weight] + [spec_mod.parse({"init": {"weight": n}}).init.weight for n in names]
    seen: set[str] = set()
    limits = []
    for choice in choices:
        key = choice.label()
        if key in seen:
            continue
        seen.add(key)
        limits.append(depth_limit(spec, choice, max_depth))
    act = spec.model.activation
    if act.name not in EDGE_ACTIVATIONS:
        return DepthReport(
            spec,
            max_depth,
            tuple(limits),
            (),
            f"no edge of chaos for '{act.name}': only {', '.join(EDGE_ACTIVATIONS)} saturate on both sides",
        )
    edge = tuple(edge_of_chaos(act, sb) for sb in EDGE_BIAS_VARIANCES)
    return DepthReport(spec, max_depth, tuple(limits), edge)
