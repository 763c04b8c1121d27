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

    from probe.records import Stats

QUADRATURE_NODES = 64  # Gauss-Legendre nodes on each side of 0
SPAN_SD = 12.0  # the integral covers mean +- 12 standard deviations (the rest is below 1e-32)
DEPARTURE_Z = 3.0  # a measurement departs from theory beyond this many standard errors
# The collapse prediction: Gauss-Hermite nodes over each input's scale and over a pair's input
# cosine, and Gauss-Legendre nodes on each side of 0 per axis of the pair integral (the
# integrands are smooth off the activation's kinks, which the split puts on a node boundary).
POPULATION_NODES = 4
PAIR_NODES = 48
# excess kurtosis of one unit-variance input value, E[x^4] - 1, by data.distribution
INPUT_KURTOSIS = {"normal": 2.0, "uniform": 0.8}
# below this fraction of a sample's second moment, its centered part is within the pair
# quadrature's error (deep sigmoid stacks shrink it 16-fold per layer): no prediction
CENTERED_RESOLUTION = 1e-6

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


# ---- the correlation map ---------------------------------------------------------------------


def pair_moment(act: Choice, mean: float, var: float, cov: float) -> float:
    """E[phi(z1) phi(z2)] for (z1, z2) jointly Gaussian, both of mean ``mean`` and variance ``var``,
    with covariance ``cov``: what two samples' outputs share, per unit. ReLU at mean 0 has the
    arc-cosine closed form (Cho & Saul 2009): var / (2 pi) * (sqrt(1 - rho^2) + (pi - arccos rho) rho);
    every other case is integrated: z1 by the split Gauss-Legendre rule, z2 given z1 likewise."""
    import torch

    var = max(var, 0.0)
    if var == 0.0:
        y = activation_fn(act)(torch.tensor([mean], dtype=torch.float64))
        return float(y[0] * y[0])
    rho = min(max(cov / var, -1.0), 1.0)
    if act.name == "relu" and mean == 0.0:
        return var / (2 * math.pi) * (math.sqrt(1.0 - rho * rho) + (math.pi - math.acos(rho)) * rho)
    phi = activation_fn(act)
    z1, w1 = _gauss_points(mean, var)
    centre = mean + rho * (z1 - mean)  # z2 given z1: N(centre, var (1 - rho^2))
    sd = math.sqrt(var * (1.0 - rho * rho))
    with torch.no_grad():
        if sd == 0.0:
            inner = phi(centre)
        else:
            nodes, weights = _legendre(QUADRATURE_NODES)
            lo, hi = centre - SPAN_SD * sd, centre + SPAN_SD * sd
            cut = torch.minimum(torch.maximum(torch.zeros_like(lo), lo), hi)  # split at 0 where 0 is inside
            inner = torch.zeros_like(z1)
            for a, b in ((lo, cut), (cut, hi)):
                half = ((b - a) / 2).unsqueeze(1)
                z2 = half * nodes + ((a + b) / 2).unsqueeze(1)
                density = torch.exp(-0.5 * ((z2 - centre.unsqueeze(1)) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
                inner = inner + (half * weights * density * phi(z2)).sum(dim=1)
        return float((w1 * phi(z1) * inner).sum())


def pair_moments(act: Choice, mean: float, var1: torch.Tensor, var2: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """E[phi(z1) phi(z2)] for each (var1, var2, cov): (z1, z2) jointly Gaussian, both of mean
    ``mean``. ReLU at mean 0 has the arc-cosine closed form; otherwise z1 by the split Gauss-Legendre
    rule (``PAIR_NODES`` a side) and z2 given z1 likewise, vectorized over the pairs."""
    import torch

    var1, var2 = var1.clamp_min(0.0), var2.clamp_min(0.0)
    scale = torch.sqrt(var1 * var2)
    rho = torch.where(scale > 0, cov / scale, torch.zeros_like(scale)).clamp(-1.0, 1.0)
    if act.name == "relu" and mean == 0.0:
        return scale / (2 * math.pi) * (torch.sqrt(1.0 - rho * rho) + (math.pi - torch.acos(rho)) * rho)
    phi = activation_fn(act)
    nodes, weights = _legendre(PAIR_NODES)

    def split(centre: torch.Tensor, sd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nodes (..., 2 n) and weights of E over N(centre, sd^2) per entry, split at 0."""
        safe = sd.clamp_min(1e-300)
        lo, hi = centre - SPAN_SD * sd, centre + SPAN_SD * sd
        cut = torch.minimum(torch.maximum(torch.zeros_like(lo), lo), hi)
        zs, ws = [], []
        for a, b in ((lo, cut), (cut, hi)):
            half = ((b - a) / 2).unsqueeze(-1)
            z = half * nodes + ((a + b) / 2).unsqueeze(-1)
            density = torch.exp(-0.5 * ((z - centre.unsqueeze(-1)) / safe.unsqueeze(-1)) ** 2) / (
                safe.unsqueeze(-1) * math.sqrt(2 * math.pi)
            )
            zs.append(z)
            ws.append(half * weights * density)
        z, w = torch.cat(zs, dim=-1), torch.cat(ws, dim=-1)
        point = (sd == 0).unsqueeze(-1)  # no spread: all the mass on the centre
        z = torch.where(point, centre.unsqueeze(-1).expand_as(z), z)
        w = torch.where(point, torch.full_like(w, 1.0 / w.shape[-1]), w)
        return z, w

    with torch.no_grad():
        sd1 = torch.sqrt(var1)
        z1, w1 = split(torch.full_like(var1, mean), sd1)
        slope = torch.where(var1 > 0, cov / var1.clamp_min(1e-300), torch.zeros_like(var1))
        centre = mean + slope.unsqueeze(-1) * (z1 - mean)
        sd2 = torch.sqrt((var2 - slope * cov).clamp_min(0.0)).unsqueeze(-1).expand_as(centre)
        z2, w2 = split(centre, sd2)
        inner = (w2 * phi(z2)).sum(dim=-1)
        return (w1 * phi(z1) * inner).sum(dim=-1)


@dataclass(frozen=True)
class Population:
    """The inputs as the collapse prediction sees them: each sample's scale ``q = |x|^2 / d``
    (``q_nodes`` with weights ``q_weights``) and a pair's input cosine (``rho_nodes``), both
    Gaussian to first order in 1/d for i.i.d. unit-variance values in ``d`` dimensions."""

    q_nodes: torch.Tensor
    q_weights: torch.Tensor
    rho_nodes: torch.Tensor
    rho_weights: torch.Tensor


def population(input_dim: int, distribution: str) -> Population:
    """Gauss-Hermite nodes for the scale q ~ N(1, kurtosis / d) (clipped at 0) and the cosine
    rho ~ N(0, 1 / d) of two independent inputs."""
    import numpy as np
    import torch

    z, w = np.polynomial.hermite_e.hermegauss(POPULATION_NODES)
    z_t = torch.tensor(z, dtype=torch.float64)
    w_t = torch.tensor(w / w.sum(), dtype=torch.float64)
    kurtosis = INPUT_KURTOSIS.get(distribution, 2.0)
    q = (1.0 + z_t * math.sqrt(kurtosis / input_dim)).clamp_min(0.0)
    rho = (z_t / math.sqrt(input_dim)).clamp(-1.0, 1.0)
    return Population(q, w_t, rho, w_t)


def centered_cosine2(diag: torch.Tensor, cross: torch.Tensor, pop: Population) -> float | None:
    """The wide-network value of the measured collapse statistic: the mean over pairs of
    independent samples of the squared cosine between their centered outputs. ``diag[i]``: a
    sample's second moment per unit at scale node i; ``cross[i, j, k]``: two samples' shared
    moment at scale nodes i, j and input-cosine node k. The batch mean is the population's:
    m(i) = E_(j,k) cross, M = E_i m(i). ``None`` where the centered part is below
    ``CENTERED_RESOLUTION`` of the second moment."""
    import torch

    wq, wr = pop.q_weights, pop.rho_weights
    m = (cross * wq.view(1, -1, 1) * wr.view(1, 1, -1)).sum(dim=(1, 2))
    big_m = float((m * wq).sum())
    centered = cross - m.view(-1, 1, 1) - m.view(1, -1, 1) + big_m
    own = diag - 2 * m + big_m
    # what varies between samples must stand above the quadrature's error on what they share
    if not bool(torch.all(own > CENTERED_RESOLUTION * diag)):
        return None
    cos2 = centered**2 / (own.view(-1, 1, 1) * own.view(1, -1, 1))
    return float((cos2 * wq.view(-1, 1, 1) * wq.view(1, -1, 1) * wr.view(1, 1, -1)).sum())


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
    ``centered_cosine2``). The kernel of two inputs at scale nodes i, j and input cosine node k is
    followed layer by layer: pre-activations (z_a, z_b) are jointly Gaussian with variances
    sigma_w^2 E[h_a^2] + s_b^2 and covariance sigma_w^2 E[h_a h_b] + s_b^2 (the bias is shared),
    and a layer's moments are ``pair_moments`` of them. A layer whose variance underflows (below
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
        out.append(centered_cosine2(diag, cross, pop))
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
