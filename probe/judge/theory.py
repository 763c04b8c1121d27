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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from probe.spec import Choice, Spec, activations, inits

if TYPE_CHECKING:
    import torch

    from probe.records import Report

QUADRATURE_NODES = 64  # Gauss-Legendre nodes on each side of 0
SPAN_SD = 12.0  # the integral covers mean +- 12 standard deviations (the rest is below 1e-32)
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

    @property
    def departs(self) -> bool:
        return any(z is not None and z > DEPARTURE_Z for z in (self.std_z, self.grad_z))


# ---- Gaussian expectations by quadrature -----------------------------------------------------


@cache
def _legendre(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss-Legendre nodes and weights on [-1, 1] (Golub-Welsch: eigenvalues of the Jacobi matrix).
    Cached: callers must not modify them."""
    import torch

    k = torch.arange(1, n, dtype=torch.float64)
    off = k / torch.sqrt(4 * k * k - 1)
    nodes, vectors = torch.linalg.eigh(torch.diag(off, 1) + torch.diag(off, -1))
    return nodes, 2 * vectors[0] ** 2


def _gauss_points(mean: float, var: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Points z and weights w with sum(w * f(z)) = E[f(z)], z ~ N(mean, var), for piecewise-smooth f."""
    import torch

    sd = math.sqrt(var)
    if sd == 0.0:
        return torch.tensor([mean], dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    nodes, weights = _legendre(QUADRATURE_NODES)
    lo, hi = mean - SPAN_SD * sd, mean + SPAN_SD * sd
    pieces = [(lo, 0.0), (0.0, hi)] if lo < 0.0 < hi else [(lo, hi)]
    zs, ws = [], []
    for a, b in pieces:
        z = (b - a) / 2 * nodes + (a + b) / 2
        density = torch.exp(-0.5 * ((z - mean) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
        zs.append(z)
        ws.append((b - a) / 2 * weights * density)
    return torch.cat(zs), torch.cat(ws)


def activation_fn(act: Choice) -> Callable[[torch.Tensor], torch.Tensor]:
    """The same torch module the network uses (never in place, so autograd can differentiate it)."""
    params = {**act.params, "inplace": False} if "inplace" in act.params else dict(act.params)
    return _module(act.name, tuple(sorted(params.items())))


@cache
def _module(name: str, params: tuple[tuple[str, Any], ...]) -> Callable[[torch.Tensor], torch.Tensor]:
    return activations.make_module(name, dict(params))  # type: ignore[no-any-return]


@dataclass(frozen=True)
class GaussianMoments:
    """E over z ~ N(mean, var) of phi(z), phi(z)^2, (phi - E phi)^4 and phi'(z)^2."""

    mean: float
    second: float
    central4: float
    grad2: float

    @property
    def var(self) -> float:
        return max(self.second - self.mean**2, 0.0)


def gaussian_moments(act: Choice, mean: float, var: float) -> GaussianMoments:
    """Moments of ``phi(z)`` for ``z ~ N(mean, var)``, by quadrature."""
    import torch

    z, w = _gauss_points(mean, max(var, 0.0))
    z = z.clone().requires_grad_(True)
    y = activation_fn(act)(z)
    (dy,) = torch.autograd.grad(y.sum(), z)
    y = y.detach()
    m1 = float((w * y).sum())
    return GaussianMoments(
        mean=m1,
        second=float((w * y * y).sum()),
        central4=float((w * (y - m1) ** 4).sum()),
        grad2=float((w * dy * dy).sum()),
    )


# ---- variance rules --------------------------------------------------------------------------


@dataclass(frozen=True)
class EntryMoments:
    """Mean and variance of one entry of a weight or bias, and whether entries are i.i.d."""

    mean: float
    var: float
    iid: bool = True


def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _normal_pdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _trunc_normal(mean: float, std: float, a: float | None, b: float | None) -> EntryMoments:
    lo = a if a is not None else mean - 2.0 * std
    hi = b if b is not None else mean + 2.0 * std
    alpha, beta = (lo - mean) / std, (hi - mean) / std
    mass = _normal_cdf(beta) - _normal_cdf(alpha)
    if mass <= 0:
        return EntryMoments(min(max(mean, lo), hi), 0.0)
    shift = (_normal_pdf(alpha) - _normal_pdf(beta)) / mass
    spread = 1.0 + (alpha * _normal_pdf(alpha) - beta * _normal_pdf(beta)) / mass - shift * shift
    return EntryMoments(mean + std * shift, std * std * spread)


def entry_moments(choice: Choice, ctx: inits.InitContext, fan_in: int, fan_out: int) -> EntryMoments | None:
    """The variance rule of a strategy for a (fan_out, fan_in) weight or a bias of that layer;
    ``None`` when it has none (data-dependent LSUV)."""
    import torch

    p = choice.params
    name = inits.canonical(choice.name)
    if name == "default":
        # torch's Linear.reset_parameters: weight kaiming_uniform(a=sqrt 5) and bias
        # U(-1/sqrt fan_in, 1/sqrt fan_in): both have variance 1 / (3 fan_in).
        return EntryMoments(0.0, 1.0 / (3.0 * fan_in))
    if name == "zeros":
        return EntryMoments(0.0, 0.0)
    if name == "ones":
        return EntryMoments(1.0, 0.0)
    if name == "constant":
        return EntryMoments(float(p["value"]), 0.0)
    if name == "tiny":
        return EntryMoments(0.0, 0.01**2)
    if name == "large":
        return EntryMoments(0.0, 1.0)
    if name == "normal":
        return EntryMoments(float(p["mean"]), float(p["std"]) ** 2)
    if name == "uniform":
        return EntryMoments(0.0, float(p["a"]) ** 2 / 3.0)
    if name == "trunc_normal":
        return _trunc_normal(float(p["mean"]), float(p["std"]), p["a"], p["b"])
    if name in ("xavier_normal", "xavier_uniform"):
        return EntryMoments(0.0, inits._gain(p, ctx) ** 2 * 2.0 / (fan_in + fan_out))
    if name in ("he_normal", "he_uniform"):
        nonlinearity, slope = activations.kaiming_args(ctx.activation, ctx.activation_params)
        if p["nonlinearity"] is not None:
            nonlinearity = p["nonlinearity"]
        if p["a"] is not None:
            slope = p["a"]
        gain = float(torch.nn.init.calculate_gain(nonlinearity, slope))  # type: ignore[arg-type]
        fan = fan_in if p["mode"] == "fan_in" else fan_out
        return EntryMoments(0.0, gain**2 / fan)
    if name in ("lecun_normal", "lecun_uniform"):
        return EntryMoments(0.0, 1.0 / fan_in)
    if name == "orthogonal":
        return EntryMoments(0.0, inits._gain(p, ctx) ** 2 / max(fan_in, fan_out), iid=False)
    return None


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
    return None


def unavailable_reason(spec: Spec) -> str | None:
    """Why no mean-field prediction exists for ``spec``, or ``None`` when one does."""
    m = spec.model
    reason = network_reason(spec)
    if reason is not None:
        return reason
    weight = inits.canonical(spec.init.weight.name)
    if weight == "lsuv":
        return "no prediction for 'lsuv': its scales are fitted to data, not drawn from a variance rule"
    ctx = inits.InitContext(m.activation.name, m.activation.params)
    moments = entry_moments(spec.init.weight, ctx, m.input_dim, m.width)
    if moments is None:
        return f"no variance rule known for init strategy '{weight}'"
    if moments.mean != 0.0:
        return f"no prediction for '{weight}': its weights have mean {moments.mean:g}, not zero"
    return None


def predict(spec: Spec) -> Prediction:
    """Mean-field predictions for every watched layer of ``spec``; never raises for a valid spec."""
    reason = unavailable_reason(spec)
    if reason is not None:
        return Prediction(reason=reason)
    m = spec.model
    ctx = inits.InitContext(m.activation.name, m.activation.params)
    n_samples = spec.data.batch_size * spec.data.batches
    # (name, index, kind, fan_in, fan_out) for each watched layer, in order
    shapes = [(f"layer{i}", i, "hidden", m.input_dim if i == 1 else m.width, m.width) for i in range(1, m.depth + 1)]
    if m.output_dim is not None:
        shapes.append(("output", m.depth + 1, "output", m.width, m.output_dim))

    forward: list[tuple[float, float, float, GaussianMoments | None, EntryMoments]] = []
    input_second = 1.0  # E[x^2] of the unit-variance input
    for _, _, kind, fan_in, fan_out in shapes:
        w = entry_moments(spec.init.weight, ctx, fan_in, fan_out)
        assert w is not None
        b = entry_moments(spec.init.bias, ctx, fan_in, fan_out) if m.bias else EntryMoments(0.0, 0.0)
        assert b is not None
        sigma_w2 = fan_in * w.var
        q = sigma_w2 * input_second + b.var
        if kind == "hidden":
            g = gaussian_moments(m.activation, b.mean, q)
            forward.append((sigma_w2, q, b.mean, g, w))
            input_second = g.second
        else:
            forward.append((sigma_w2, q, b.mean, None, w))

    # backward: d loss / d (last output) is the probe's unit-variance random direction
    grad_var: list[float] = [0.0] * len(shapes)
    grad_var[-1] = 1.0
    for j in range(len(shapes) - 2, -1, -1):
        _, _, _, g_next, w_next = forward[j + 1]
        fan_out_next = shapes[j + 1][4]
        slope2 = g_next.grad2 if g_next is not None else 1.0
        grad_var[j] = fan_out_next * w_next.var * slope2 * grad_var[j + 1]

    layers = []
    for (name, index, kind, _, _), (sigma_w2, q, b_mean, act, _), gv in zip(shapes, forward, grad_var, strict=True):
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
            )
        )
    return Prediction(layers=tuple(layers))


def std_error(std: float, kurtosis: float, n: int) -> float:
    """Standard error of a std estimated from ``n`` independent draws: std * sqrt((kurtosis - 1) / 4n).

    ``n`` counts the probe's samples, not its values: the values of one sample share its input, so
    they are not independent draws, and counting samples keeps the error on the conservative side.
    """
    return std * math.sqrt(max(kurtosis - 1.0, 0.0) / (4.0 * max(n, 1)))


def compare(report: Report, prediction: Prediction) -> list[Comparison]:
    """Each measured layer beside its prediction (``None`` fields where there is none)."""
    by_name = {t.name: t for t in prediction.layers}
    out = []
    for x in report.layers:
        t = by_name.get(x.name)
        if t is None:
            out.append(Comparison(x.name, x.std, None, None, None, x.grad_std, None, None, None))
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
    ``std_error``, ``grad_std_error``, ``departs`` per layer; ``theory`` at the top)."""

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
        row["departs"] = None if c is None or c.expected_std is None else c.departs
    report_json["theory"] = {
        "available": prediction.available,
        "reason": prediction.reason,
        "departure_z": DEPARTURE_Z,
        "departures": departures(comparisons),
    }
    return report_json
