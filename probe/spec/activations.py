"""Activation functions probe knows: their parameters, torch modules, and where they saturate.

Saturation follows one definition for every activation: a value is saturated where the
activation's derivative has fallen below ``SATURATION_FRACTION`` (1 - 0.98**2, about 4%) of its
peak on a flat tail. For tanh this is exactly ``|y| > 0.98``, the seed lab's test. Piecewise-linear
activations (relu, leaky_relu, identity) have no saturating tail: their ratio is ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from probe.spec.schema import Param

if TYPE_CHECKING:
    from torch import nn

SATURATION_FRACTION = 1.0 - 0.98**2

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


_FLOAT32_TINY = 1.1754943508222875e-38  # the smallest normal float32: "y <= 0" as a strict bound


@dataclass(frozen=True)
class Saturation:
    """Saturated where ``value < low`` or ``value > high``; ``space`` says which value is tested:
    the activation's ``output`` (monotone activations) or its ``input`` (GELU, SiLU)."""

    space: str
    low: float | None
    high: float | None


@dataclass(frozen=True)
class ActivationDef:
    name: str
    params: dict[str, Param] = field(default_factory=dict)
    # torch.nn.init.calculate_gain's name for this activation (He/Xavier "auto" gains).
    gain_name: str = "relu"
    summary: str = ""


_INPLACE = Param("bool", False, help="use the in-place torch module")

ACTIVATIONS: dict[str, ActivationDef] = {
    a.name: a
    for a in [
        ActivationDef("relu", {"inplace": _INPLACE}, "relu", "max(0, x)"),
        ActivationDef(
            "leaky_relu",
            {"negative_slope": Param("float", 0.01, minimum=0.0), "inplace": _INPLACE},
            "leaky_relu",
            "x if x > 0 else slope * x",
        ),
        ActivationDef(
            "elu", {"alpha": Param("float", 1.0, minimum=0.0), "inplace": _INPLACE}, "relu", "exponential linear unit"
        ),
        ActivationDef("selu", {"inplace": _INPLACE}, "selu", "self-normalizing ELU"),
        ActivationDef("gelu", {"approximate": Param("str", "none", choices=("none", "tanh"))}, "relu", "x * Phi(x)"),
        ActivationDef("silu", {}, "relu", "x * sigmoid(x), a.k.a. swish"),
        ActivationDef("tanh", {}, "tanh", "hyperbolic tangent"),
        ActivationDef("sigmoid", {}, "sigmoid", "logistic function"),
        ActivationDef(
            "softplus",
            {"beta": Param("float", 1.0, minimum=0.0, exclusive_minimum=True)},
            "relu",
            "log(1 + exp(beta x)) / beta",
        ),
        ActivationDef("identity", {}, "linear", "no nonlinearity (a linear network)"),
    ]
}


def make_module(name: str, params: dict[str, Any]) -> nn.Module:
    """The torch module for an activation, e.g. ``nn.LeakyReLU(0.2)``."""
    from torch import nn

    factories: dict[str, Callable[[], nn.Module]] = {
        "relu": lambda: nn.ReLU(inplace=params["inplace"]),
        "leaky_relu": lambda: nn.LeakyReLU(params["negative_slope"], inplace=params["inplace"]),
        "elu": lambda: nn.ELU(params["alpha"], inplace=params["inplace"]),
        "selu": lambda: nn.SELU(inplace=params["inplace"]),
        "gelu": lambda: nn.GELU(approximate=params["approximate"]),
        "silu": lambda: nn.SiLU(),
        "tanh": lambda: nn.Tanh(),
        "sigmoid": lambda: nn.Sigmoid(),
        "softplus": lambda: nn.Softplus(beta=params["beta"]),
        "identity": lambda: nn.Identity(),
    }
    return factories[name]()


def kaiming_args(name: str, params: dict[str, Any]) -> tuple[str, float]:
    """(nonlinearity, negative slope) for ``kaiming_*_`` matching this activation.

    torch's ``calculate_gain`` knows relu, leaky_relu, tanh, sigmoid, selu and linear; smooth
    ReLU-like activations (elu, gelu, silu, softplus) use the ReLU gain, the usual practice.
    """
    gain_name = ACTIVATIONS[name].gain_name
    slope = float(params.get("negative_slope", 0.0)) if gain_name == "leaky_relu" else 0.0
    return gain_name, slope


def saturation(name: str, params: dict[str, Any]) -> Saturation | None:
    """Where this activation counts as saturated, or ``None`` if it has no saturating tail."""
    c = SATURATION_FRACTION
    if name == "tanh":
        # tanh' = 1 - y^2 < c  <=>  |y| > sqrt(1 - c) = 0.98
        bound = math.sqrt(1.0 - c)
        return Saturation("output", -bound, bound)
    if name == "sigmoid":
        # sigmoid' = y (1 - y), peak 1/4; y (1 - y) < c/4  <=>  |2y - 1| > sqrt(1 - c)
        half = math.sqrt(1.0 - c) / 2.0
        return Saturation("output", 0.5 - half, 0.5 + half)
    if name == "elu":
        # x < 0: derivative alpha e^x = y + alpha; peak max(1, alpha).
        # Only x < 0 (y < 0) can saturate: with alpha <= c the whole negative side is flat, and the
        # bound stops at 0 (just above it, so alpha = 0's y = -0.0 counts; no x > 0 does).
        alpha = float(params["alpha"])
        return Saturation("output", min(c * max(1.0, alpha) - alpha, _FLOAT32_TINY), None)
    if name == "selu":
        # x < 0: derivative scale alpha e^x = y + scale alpha, which is also the peak.
        la = SELU_SCALE * SELU_ALPHA
        return Saturation("output", la * (c - 1.0), None)
    if name == "softplus":
        # derivative sigmoid(beta x) = 1 - exp(-beta y), peak 1.
        return Saturation("output", -math.log(1.0 - c) / float(params["beta"]), None)
    if name in ("gelu", "silu"):
        return Saturation("input", _smooth_tail_cutoff(name, params.get("approximate", "none")), None)
    return None


def _gelu_grad(x: float, approximate: str) -> float:
    if approximate == "tanh":
        k = math.sqrt(2.0 / math.pi)
        u = k * (x + 0.044715 * x**3)
        t = math.tanh(u)
        return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3 * 0.044715 * x * x)
    pdf = math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0))) + x * pdf


def _silu_grad(x: float) -> float:
    s = 1.0 / (1.0 + math.exp(-x))
    return s * (1.0 + x * (1.0 - s))


@cache
def _smooth_tail_cutoff(name: str, approximate: str) -> float:
    """The input below which |derivative| stays under c * peak (GELU/SiLU's flat negative tail).

    Found on a fine grid: these derivatives are not monotone (they dip below zero), so the cutoff
    is the first grid point, scanning up from the far tail, where |derivative| reaches c * peak.
    """

    def grad(x: float) -> float:
        return _gelu_grad(x, approximate) if name == "gelu" else _silu_grad(x)

    grid = [i / 1000.0 for i in range(-20000, 10001)]
    peak = max(grad(x) for x in grid)
    limit = SATURATION_FRACTION * peak
    for x in grid:
        if abs(grad(x)) >= limit:
            return x
    return grid[-1]
