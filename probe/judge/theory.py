"""Spec -> mean-field predictions per layer: what the variance rules say each layer should measure.

For a fully connected network with zero-mean i.i.d. weights (variance ``Var(W)``) and biases of
mean ``b`` and variance ``s_b^2``, every pre-activation is, in the wide limit, Gaussian:

    z_l ~ N(b, q_l),   q_l = sigma_w^2 * E[phi(z_{l-1})^2] + s_b^2,   sigma_w^2 = fan_in * Var(W)

(the first layer sees the unit-variance input, ``E[x^2] = 1``). The probe measures the std of
``phi(z_l)`` over all values, mean included, so the prediction is ``sqrt(E[phi^2] - E[phi]^2)``
(ReLU's nonzero mean matters). Backward, the gradient with respect to a layer's output has variance
``fan_out * Var(W) * E[phi'(z)^2]`` times the next one's; ``chi = sigma_w^2 * E[phi'(z)^2]``.

Gaussian expectations are computed by quadrature, never by sampling: Gauss-Legendre on each side of
0 over +-12 standard deviations. Plain Gauss-Hermite converges slowly on ReLU's kink at 0 (an error
of 3e-3 on E|z| with 128 nodes); splitting there gives machine precision for every activation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from probe.judge.gaussian import (
    GaussianMoments,
    centered_cosine2,
    gaussian_moments,
    pair_moments,
    population,
)
from probe.spec import Choice, Spec, inits

if TYPE_CHECKING:
    from probe.records import Stats

DEPARTURE_Z = 3.0  # a measurement departs from theory beyond this many standard errors

# Strategies whose weights are i.i.d. with a known variance rule (orthogonal: not i.i.d., but its
# entries have variance gain^2 / max(fan_in, fan_out), which fixes the second moments exactly).
IID_STRATEGIES = (
    "default",
    "tiny",
    "large",
    "xavier_normal",
    "xavier_uniform",
    "he_normal",
    "he_uniform",
    "lecun_normal",
    "lecun_uniform",
    "orthogonal",
)


# ---- records ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerTheory:
    """The mean-field prediction for one watched layer's output (and its gradient)."""

    name: str
    index: int
    kind: str  # "hidden" or "output"
    sigma_w2: float  # fan_in * Var(W)
    q: float  # pre-activation variance
    expected_mean: float
    expected_std: float  # std over all values of the layer's output
    chi: float  # sigma_w^2 * E[phi'(z)^2] (1 for the linear head)
    expected_grad_std: float | None  # std of d loss / d output, None without a backward pass
    std_error: float  # standard error of the measured std from the probe's random batch
    grad_std_error: float | None
    # mean cosine between two samples' outputs, from the correlation map (``pair_moment``)
    expected_correlation: float | None = None


@dataclass(frozen=True)
class Prediction:
    """Per-layer predictions, or ``reason`` why none is available (``layers`` empty)."""

    layers: tuple[LayerTheory, ...] = ()
    reason: str | None = None

    @property
    def available(self) -> bool:
        return self.reason is None


@dataclass(frozen=True)
class Comparison:
    """Measurement beside prediction for one layer; ``*_z`` = |measured - expected| / standard error."""

    name: str
    std: float
    expected_std: float | None
    std_error: float | None
    std_z: float | None
    grad_std: float | None
    expected_grad_std: float | None
    grad_std_error: float | None
    grad_z: float | None
    correlation: float | None = None  # measured mean cosine between samples
    expected_correlation: float | None = None  # from the correlation map

    @property
    def departs(self) -> bool:
        return any(z is not None and z > DEPARTURE_Z for z in (self.std_z, self.grad_z))


# ---- the prediction --------------------------------------------------------------------------


def network_reason(spec: Spec) -> str | None:
    """Why the spec's network, whatever its init, has no mean-field prediction (``None``: it has one)."""
    m = spec.model
    if m.factory is not None:
        return "no prediction for a user model (model.import): the mean-field theory here covers spec MLPs"
    if m.hf is not None:
        return "no prediction for a transformers model (model.hf): the mean-field theory here covers spec MLPs"
    if m.kind != "mlp":
        return f"no prediction for model.kind '{m.kind}': the mean-field theory here covers fully connected networks"
    if m.norm != "none":
        return f"no prediction with model.norm '{m.norm}': normalization makes the variance map data-dependent"
    if m.parametrization != "sp":
        return "no prediction under model.parametrization: mup (the variance map here has no output multiplier)"
    return None


def layer_inits(spec: Spec) -> list[tuple[str, tuple[Choice, float] | None, tuple[Choice, float] | None]]:
    """(layer name, weight strategy and factor, bias strategy and factor) for each watched layer of a
    spec MLP, as ``build`` fills it: ``init.weight``/``init.bias``, then ``init.rules`` on top (the
    rules' own log says which strategy and depth factor filled each parameter; ``None``: no single
    strategy did). Built on the meta device: no storage, no draws."""
    m = spec.model
    names = [(f"layer{i}", f"linear{i}") for i in range(1, m.depth + 1)]
    if m.output_dim is not None:
        names.append(("output", "head"))
    no_bias = (Choice("zeros", {}), 1.0)
    if not spec.init.rules:  # every layer as init.weight/init.bias fill it: no build needed (depth stretches far)
        bias = (spec.init.bias, 1.0) if m.bias else no_bias
        return [(layer, (spec.init.weight, 1.0), bias) for layer, _ in names]
    from probe.model.build import build_on_meta

    log = build_on_meta(spec).init_log
    assert log is not None
    return [
        (layer, log.strategies.get(f"{module}.weight"), log.strategies.get(f"{module}.bias") if m.bias else no_bias)
        for layer, module in names
    ]


def _layer_shapes(spec: Spec) -> list[tuple[str, int, str, int, int]]:
    """(name, index, kind, fan_in, fan_out) for each watched layer of a spec MLP, in order."""
    m = spec.model
    shapes = [(f"layer{i}", i, "hidden", m.input_dim if i == 1 else m.width, m.width) for i in range(1, m.depth + 1)]
    if m.output_dim is not None:
        shapes.append(("output", m.depth + 1, "output", m.width, m.output_dim))
    return shapes


def _layer_moments(
    spec: Spec,
) -> tuple[list[tuple[inits.Moments, inits.Moments]] | None, str | None]:
    """Per watched layer, the (weight, bias) entry moments from the strategy that filled each; or
    the reason there are none."""
    m = spec.model
    ctx = inits.InitContext(m.activation.name, m.activation.params)
    out: list[tuple[inits.Moments, inits.Moments]] = []
    for (layer, weight, bias), (_, _, _, fan_in, fan_out) in zip(layer_inits(spec), _layer_shapes(spec), strict=True):
        pair = []
        for what, filled, shape in (("weight", weight, (fan_out, fan_in)), ("bias", bias, (fan_out,))):
            if filled is None:
                return None, f"no prediction for {layer}'s {what}: no single init strategy filled it"
            choice, factor = filled
            name = inits.canonical(choice.name)
            if name == "lsuv":
                return None, "no prediction for 'lsuv': its scales are fitted to data, not drawn from a variance rule"
            moments = inits.moments(name, choice.params, ctx, shape, fan_in)
            if moments is None:
                return None, f"no variance rule known for init strategy '{name}'"
            if what == "weight" and moments.mean != 0.0:
                return None, f"no prediction for '{name}': its weights have mean {moments.mean:g}, not zero"
            pair.append(inits.Moments(moments.mean * factor, moments.var * factor * factor, moments.iid))
        out.append((pair[0], pair[1]))
    return out, None


def unavailable_reason(spec: Spec) -> str | None:
    """Why no mean-field prediction exists for ``spec``, or ``None`` when one does."""
    reason = network_reason(spec)
    if reason is not None:
        return reason
    return _layer_moments(spec)[1]


def predict(spec: Spec, collapse: bool = True) -> Prediction:
    """Mean-field predictions for every watched layer of ``spec``; never raises for a valid spec.
    Each layer's weights and biases follow the strategy that filled them (``init.rules`` included).
    ``collapse=False`` skips the collapse statistic (``expected_correlation``: ``None``), the one
    part that integrates over pairs of inputs (``probe depth`` stretches the map to 500 layers)."""
    reason = network_reason(spec)
    if reason is not None:
        return Prediction(reason=reason)
    per_layer, reason = _layer_moments(spec)
    if per_layer is None:
        return Prediction(reason=reason)
    m = spec.model
    n_samples = spec.data.batch_size * spec.data.batches
    shapes = _layer_shapes(spec)

    forward: list[tuple[float, float, float, GaussianMoments | None, inits.Moments]] = []
    input_second = 1.0  # E[x^2] of the unit-variance input
    for (_, _, kind, fan_in, _), (w, b) in zip(shapes, per_layer, strict=True):
        sigma_w2 = fan_in * w.var
        q = sigma_w2 * input_second + b.var
        if kind == "hidden":
            g = gaussian_moments(m.activation, b.mean, q)
            forward.append((sigma_w2, q, b.mean, g, w))
            input_second = g.second
        else:
            forward.append((sigma_w2, q, b.mean, None, w))
    correlations = collapse_map(spec, per_layer) if collapse else [None] * len(shapes)

    # backward: d loss / d (last output) is the probe's unit-variance random direction
    grad_var: list[float] = [0.0] * len(shapes)
    grad_var[-1] = 1.0
    for j in range(len(shapes) - 2, -1, -1):
        _, _, _, g_next, w_next = forward[j + 1]
        fan_out_next = shapes[j + 1][4]
        slope2 = g_next.grad2 if g_next is not None else 1.0
        grad_var[j] = fan_out_next * w_next.var * slope2 * grad_var[j + 1]

    layers = []
    for (name, index, kind, _, _), (sigma_w2, q, b_mean, act, _), gv, cos in zip(
        shapes, forward, grad_var, correlations, strict=True
    ):
        if act is not None:
            mean, std, chi = act.mean, math.sqrt(act.var), sigma_w2 * act.grad2
            # divided twice: var**2 underflows for deep vanishing networks
            kurtosis = (act.central4 / act.var) / act.var if act.var > 0 and act.central4 > 0 else 3.0
        else:  # the linear head: Gaussian output
            mean, std, chi, kurtosis = b_mean, math.sqrt(q), sigma_w2, 3.0
        grad_std = math.sqrt(gv) if spec.run.backward else None
        layers.append(
            LayerTheory(
                name=name,
                index=index,
                kind=kind,
                sigma_w2=sigma_w2,
                q=q,
                expected_mean=mean,
                expected_std=std,
                chi=chi,
                expected_grad_std=grad_std,
                std_error=std_error(std, kurtosis, n_samples),
                grad_std_error=None if grad_std is None else std_error(grad_std, 3.0, n_samples),
                expected_correlation=cos,
            )
        )
    return Prediction(layers=tuple(layers))


def collapse_map(spec: Spec, per_layer: Sequence[tuple[inits.Moments, inits.Moments]]) -> list[float | None]:
    """The collapse statistic each watched layer should read in the wide limit (see
    ``centered_cosine2``), as an excess over the ``1 / input_dim`` that independent directions in
    the input's ``input_dim`` give (the measured statistic's base, ``measurement/correlation.py``).
    The kernel of two inputs at scale nodes i, j and input cosine node k is followed layer by layer:
    pre-activations (z_a, z_b) are jointly Gaussian with variances sigma_w^2 E[h_a^2] + s_b^2 and
    covariance sigma_w^2 E[h_a h_b] + s_b^2 (the bias is shared), and a layer's moments are
    ``pair_moments`` of them. A layer whose variance underflows (below
    1e-250) and every layer after it have no prediction."""
    import torch

    m = spec.model
    pop = population(m.input_dim, spec.data.distribution)
    q, rho = pop.q_nodes, pop.rho_nodes
    diag = q.clone()  # E[x^2] per coordinate of a sample at each scale node
    cross = torch.sqrt(q.view(-1, 1, 1) * q.view(1, -1, 1)) * rho.view(1, 1, -1)
    out: list[float | None] = []
    broken = False
    for (_, _, kind, fan_in, _), (w, b) in zip(_layer_shapes(spec), per_layer, strict=True):
        sigma_w2 = fan_in * w.var
        var = sigma_w2 * diag + b.var
        cov = sigma_w2 * cross + b.var
        if broken or not bool(torch.all(torch.isfinite(var))) or float(var.max()) < 1e-250:
            broken = True
            out.append(None)
            continue
        if kind == "hidden":
            n = len(q)
            diag = pair_moments(m.activation, b.mean, var, var, var)
            va = var.view(-1, 1, 1).expand(n, n, n).reshape(-1)
            vb = var.view(1, -1, 1).expand(n, n, n).reshape(-1)
            cross = pair_moments(m.activation, b.mean, va, vb, cov.reshape(-1)).view(n, n, n)
        else:  # the linear head
            diag, cross = var + b.mean**2, cov + b.mean**2
        cos2 = centered_cosine2(diag, cross, pop)
        # as measured: an excess over independent directions, of which the input has input_dim
        base = 1.0 / m.input_dim
        out.append(None if cos2 is None else (cos2 - base) / (1.0 - base) if base < 1.0 else cos2)
    return out


def std_error(std: float, kurtosis: float, n: int) -> float:
    """Standard error of a std estimated from ``n`` independent draws: std * sqrt((kurtosis - 1) / 4n).

    ``n`` counts the probe's samples, not its values: the values of one sample share its input, so
    they are not independent draws, and counting samples keeps the error on the conservative side.
    """
    return std * math.sqrt(max(kurtosis - 1.0, 0.0) / (4.0 * max(n, 1)))


def compare(report: Stats, prediction: Prediction) -> list[Comparison]:
    """Each measured layer beside its prediction (``None`` fields where there is none)."""
    by_name = {t.name: t for t in prediction.layers}
    out = []
    for x in report.layers:
        t = by_name.get(x.name)
        if t is None:
            out.append(
                Comparison(x.name, x.std, None, None, None, x.grad_std, None, None, None, correlation=x.correlation)
            )
            continue
        out.append(
            Comparison(
                name=x.name,
                std=x.std,
                expected_std=t.expected_std,
                std_error=t.std_error,
                std_z=_z(x.std, t.expected_std, t.std_error),
                grad_std=x.grad_std,
                expected_grad_std=t.expected_grad_std,
                grad_std_error=t.grad_std_error,
                grad_z=_z(x.grad_std, t.expected_grad_std, t.grad_std_error),
                correlation=x.correlation,
                expected_correlation=t.expected_correlation,
            )
        )
    return out


def _z(measured: float | None, expected: float | None, error: float | None) -> float | None:
    if measured is None or expected is None or error is None or not math.isfinite(measured):
        return None
    if error == 0.0:
        return 0.0 if measured == expected else math.inf
    return abs(measured - expected) / error


def departures(comparisons: Sequence[Comparison]) -> list[str]:
    """Names of the layers whose measurement departs from the prediction."""
    return [c.name for c in comparisons if c.departs]


def annotate(report_json: dict[str, Any], prediction: Prediction, comparisons: Sequence[Comparison]) -> dict[str, Any]:
    """Add the theory keys to a ``probe.report/1`` dict (``expected_std``, ``expected_grad_std``,
    ``std_error``, ``grad_std_error``, ``chi``, ``expected_correlation``, ``departs`` per layer;
    ``theory`` at the top)."""

    def clean(v: float | None) -> float | None:
        return v if v is None or math.isfinite(v) else None

    by_name = {c.name: c for c in comparisons}
    theory_by_name = {t.name: t for t in prediction.layers}
    for row in report_json["layers"]:
        c = by_name.get(row["name"])
        t = theory_by_name.get(row["name"])
        row["expected_std"] = None if c is None else clean(c.expected_std)
        row["expected_grad_std"] = None if c is None else clean(c.expected_grad_std)
        row["std_error"] = None if c is None else clean(c.std_error)
        row["grad_std_error"] = None if c is None else clean(c.grad_std_error)
        row["chi"] = None if t is None else clean(t.chi)
        row["expected_correlation"] = None if t is None else clean(t.expected_correlation)
        row["departs"] = None if c is None or c.expected_std is None else c.departs
    report_json["theory"] = {
        "available": prediction.available,
        "reason": prediction.reason,
        "departure_z": DEPARTURE_Z,
        "departures": departures(comparisons),
    }
    return report_json
