"""Gaussian expectations for the mean-field theory, by quadrature (never by sampling): one
variable's moments under an activation (``gaussian_moments``), two correlated variables' joint
moment (``pair_moment(s)``), and the input population's spread that the centered collapse map
averages over; and the expected cross-entropy of Gaussian logits (``start_loss_ratio``, the
``logit_scale`` rule's value). Gauss-Legendre on each side of 0 over +-12 standard deviations: plain Gauss-Hermite
converges slowly on ReLU's kink at 0; splitting there gives machine precision for every activation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from probe.spec import Choice, activations

if TYPE_CHECKING:
    import torch

QUADRATURE_NODES = 64  # Gauss-Legendre nodes on each side of 0
SPAN_SD = 12.0  # the integral covers mean +- 12 standard deviations (the rest is below 1e-32)
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


# above this logit spread the expected loss is the expected largest logit to within 2% (log-sum-exp
# less the max averages under 0.2 nats), and the integral below would need a finer grid
ASYMPTOTIC_SPREAD = 10.0


@cache
def expected_max(classes: int) -> float:
    """E[max of ``classes`` independent N(0, 1) values]: the integral of
    x * C * pdf(x) * cdf(x)^(C - 1), by the trapezoid rule on [-12, 12]."""
    import numpy as np

    x = np.linspace(-12.0, 12.0, 4801)
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    cdf = 0.5 * np.array([math.erfc(-v / math.sqrt(2)) for v in x])
    y = x * classes * pdf * cdf ** (classes - 1)
    return float((y[1:] + y[:-1]).sum() / 2 * (x[1] - x[0]))


@cache
def expected_log_sum_exp(spread: float, classes: int) -> float:
    """E[log sum_k exp(z_k)] for ``classes`` independent N(0, spread^2) logits: the expected
    cross-entropy of such logits against a uniformly random label. Exact up to quadrature error
    (under 0.01 nats): log S = int_0^inf (e^-t - e^(-t S)) dt / t, and by independence
    E[e^(-t S)] = E[exp(-t e^(spread Z))]^C, a one-dimensional Gaussian integral."""
    import numpy as np

    if spread <= 0.0:
        return math.log(classes)
    if spread > ASYMPTOTIC_SPREAD:
        return spread * expected_max(classes)
    z = np.linspace(-10.0, 10.0, 801)
    weights = np.exp(-0.5 * z * z)
    weights /= weights.sum()
    # in u = log t the integrand is negligible below -(s^2/2 + log C + 30) (e^-t - E[e^(-tS)] ~
    # t E[S]) and above 8 s + 5 (both terms vanish once t e^(s z) >> 1 for all but P(Z < -8))
    step = 0.05
    u = np.arange(-(spread * spread / 2 + math.log(classes) + 30.0), 8.0 * spread + 5.0, step)
    laplace = np.exp(-np.exp(u)[:, None] * np.exp(spread * z)[None, :]) @ weights
    return float((np.exp(-np.exp(u)) - laplace**classes).sum() * step)


def start_loss_ratio(spread: float, classes: int) -> float:
    """The expected starting cross-entropy of ``classes`` logits with ``spread`` (their std
    across one sample's classes, taken as independent Gaussians), against a uniformly random label,
    over ``log(classes)``: the loss of the best constant guess. About 1 + spread^2 / (2 log C)
    for a small spread, spread * E[max of C normals] / log C for a large one."""
    key = float(f"{spread:.3g}")  # three digits: what the gate can tell apart, and a cache key
    return expected_log_sum_exp(key, classes) / math.log(classes)
