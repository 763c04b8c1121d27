"""Init advice: does the weight init fit the activation, and what to try when a run fails.

The activation -> init table is the seeds' (tanh/sigmoid -> Xavier; ReLU and leaky ReLU -> He with
the right slope; SELU -> LeCun normal; GELU/SiLU -> Xavier or a small normal; linear -> Xavier).
Gains are ``torch.nn.init.calculate_gain``'s. Advice is plain data (``Advice``), rendered by the CLI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from probe.records import Stats, Verdict
from probe.spec import Spec, activations

# families of weight strategies (fan-based ones; the rest have a fixed scale)
HE = ("he_normal", "he_uniform")
XAVIER = ("xavier_normal", "xavier_uniform")
LECUN = ("lecun_normal", "lecun_uniform")
FIXED_SCALE = ("tiny", "large", "normal", "uniform", "trunc_normal")
CONSTANT = ("zeros", "ones", "constant")
# a numeric Xavier/orthogonal gain within this factor of the recommended one still fits
GAIN_TOLERANCE = 1.1


@dataclass(frozen=True)
class Recommendation:
    """The init the seeds recommend for an activation."""

    activation: str
    strategy: str  # e.g. he_normal
    gain_name: str  # torch.nn.init.calculate_gain's nonlinearity name
    gain: float
    fits: tuple[str, ...]  # strategies that fit this activation
    reason: str

    def describe(self) -> str:
        slope = ""
        if self.gain_name == "leaky_relu":
            slope = f", param={self._slope:g}"
        return f"{self.strategy} (gain {self.gain:.4g} = torch.nn.init.calculate_gain('{self.gain_name}'{slope}))"

    @property
    def _slope(self) -> float:
        # gain^2 = 2 / (1 + a^2)
        return math.sqrt(max(0.0, 2.0 / self.gain**2 - 1.0))


@dataclass(frozen=True)
class Advice:
    spec_name: str
    recommendation: Recommendation
    mismatch: str | None  # the note when the init does not fit the activation
    suggestion: str | None  # one line when the run failed (None without a verdict or when healthy)
    change: dict[str, Any] = field(default_factory=dict)  # the spec keys the suggestion sets ({}: none)

    def lines(self) -> list[str]:
        out = []
        if self.mismatch:
            out.append(f"mismatch: {self.mismatch}")
        if self.suggestion:
            out.append(f"try: {self.suggestion}")
        if not out:
            out.append(
                f"ok: {self.spec_name}'s init fits its activation (recommended: {self.recommendation.describe()})"
            )
        return out

    def to_dict(self) -> dict[str, object]:
        r = self.recommendation
        return {
            "recommended": {"strategy": r.strategy, "gain": r.gain, "gain_name": r.gain_name, "reason": r.reason},
            "mismatch": self.mismatch,
            "suggestion": self.suggestion,
            "change": self.change,
        }


def calculate_gain(name: str, param: float | None = None) -> float:
    """``torch.nn.init.calculate_gain``'s value, written out for the names advice uses: the parent of an
    isolated run judges without importing torch (tests/test_advice.py holds each to torch's)."""
    slope = 0.01 if param is None else param
    gains = {"linear": 1.0, "sigmoid": 1.0, "tanh": 5.0 / 3, "relu": math.sqrt(2.0), "selu": 3.0 / 4}
    gains["leaky_relu"] = math.sqrt(2.0 / (1 + slope**2))
    if name not in gains:
        raise ValueError(f"calculate_gain: no gain for {name!r}")
    return gains[name]


def recommend(activation: str, params: dict[str, object] | None = None) -> Recommendation:
    """The seeds' init for ``activation``, with torch's gain."""
    params = params or {}
    if activation in ("tanh", "sigmoid"):
        return Recommendation(
            activation,
            "xavier_normal",
            activation,
            calculate_gain(activation),
            (*XAVIER, "orthogonal", "default"),
            f"{activation} is symmetric and near-linear at 0: Xavier keeps the variance of both passes",
        )
    if activation == "leaky_relu":
        slope = float(params.get("negative_slope", 0.01))  # type: ignore[arg-type]
        return Recommendation(
            activation,
            "he_normal",
            "leaky_relu",
            calculate_gain("leaky_relu", slope),
            (*HE, "default"),
            f"He with the slope {slope:g}: leaky ReLU keeps 1/2 (1 + slope^2) of the variance",
        )
    if activation == "selu":
        return Recommendation(
            activation,
            "lecun_normal",
            "selu",
            calculate_gain("selu"),
            LECUN,
            "SELU self-normalizes only from LeCun normal weights (variance 1 / fan_in)",
        )
    if activation in ("gelu", "silu"):
        return Recommendation(
            activation,
            "xavier_normal",
            "linear",
            1.0,
            (*XAVIER, *HE, *LECUN, "normal", "trunc_normal", "orthogonal", "default"),
            f"{activation} is near-linear around 0; Xavier or a small normal (transformers) both work",
        )
    if activation == "identity":
        return Recommendation(
            activation,
            "xavier_normal",
            "linear",
            1.0,
            (*XAVIER, *LECUN, "orthogonal", "default"),
            "a linear network keeps its variance with Xavier (gain 1)",
        )
    # relu and the smooth ReLU-likes (elu, softplus)
    return Recommendation(
        activation,
        "he_normal",
        "relu",
        calculate_gain("relu"),
        (*HE, "default"),
        f"{activation} zeroes about half its inputs: He doubles the variance to make up for it",
    )


def network_activation(spec: Spec) -> tuple[str, dict[str, Any]]:
    """The nonlinearity the init has to suit: the cell's tanh for LSTM and GRU (which ignore
    ``model.activation``), else ``model.activation``."""
    m = spec.model
    if m.kind in ("lstm", "gru"):
        return "tanh", {}
    return m.activation.name, dict(m.activation.params)


def mismatch(spec: Spec) -> str | None:
    """A note when the spec's weight init does not fit its activation, else ``None``.

    Only fan-based strategies are judged here: a fixed-scale init (tiny, large, normal) is judged
    by the health rules, whose failure gets its own suggestion. A user model is not judged.
    """
    if spec.model.own_model:
        return None  # a user model (--model): its nonlinearities are its own modules
    act_name, act_params = network_activation(spec)
    if spec.model.kind in ("lstm", "gru") and any(
        rule.match_type in ("LSTM", "GRU") or rule.match_name is not None for rule in spec.init.rules
    ):
        return None  # init.rules fill the cell's weights (seed 003's recipe): init.weight does not
    weight = spec.init.weight
    rec = recommend(act_name, act_params)
    name = weight.name
    if name in rec.fits:
        return None
    if name in CONSTANT or name in FIXED_SCALE:
        return None
    if name == "lsuv":
        return None  # data-dependent: each layer is rescaled to unit variance, whatever the activation
    if name in XAVIER or name == "orthogonal":
        gain = weight.params.get("gain", 1.0)
        if gain == "auto" or _close(float(gain), rec.gain):
            return None  # scaled for this activation: fits
    better = rec.describe()
    if name in HE:
        why = f"He is derived for ReLU-like activations, not {act_name}"
    elif name in XAVIER:
        why = f"Xavier (gain {weight.params.get('gain', 1.0)}) assumes a linear-like activation, not {act_name}"
    elif name in LECUN:
        why = f"LeCun (variance 1/fan_in) is meant for SELU or linear layers, not {act_name}"
    else:
        why = f"it is not the usual init for {act_name}"
    cell = f" (the {spec.model.kind} cell's)" if spec.model.kind in ("lstm", "gru") else ""
    return f"{name} does not fit {act_name}{cell}: {why}; use {better}"


def _close(a: float, b: float) -> bool:
    return a > 0 and b > 0 and max(a, b) / min(a, b) <= GAIN_TOLERANCE


def _has_norm_key(spec: Spec) -> bool:
    """The spec has a ``model.norm`` to set, and it is not set yet: a spec-built mlp, conv or
    residual network without normalization (a user model's structure is its own code)."""
    return spec.model.factory is None and spec.model.kind in ("mlp", "conv", "residual") and spec.model.norm == "none"


def _has_depth_key(spec: Spec) -> bool:
    return spec.model.factory is None


def _structure_hint(spec: Spec) -> str:
    """What to change besides the init, naming only spec keys this model has."""
    options = []
    if _has_norm_key(spec):
        options.append("add normalization (model.norm: layernorm)")
    if _has_depth_key(spec):
        options.append("reduce model.depth")
    if not options:
        return "the init already fits: rescale the flagged layers with init.rules, or change the model's own code"
    return "the init already fits: " + " or ".join(options)


# a weight whose rms sits outside [LOW, HIGH] x He's sqrt(2 / fan_in) is far from every fan-in rule:
# PyTorch's default (1/sqrt(3 fan_in), 0.41 x He), LeCun (0.71 x) and He (1 x), by a factor of 4
OFF_RULE_LOW = 0.1
OFF_RULE_HIGH = 4.0
# a user model's advice when its own code broke its weights: each module's own init drawn again
# (the library's for a transformers model, PyTorch's default elsewhere), the init its authors chose
OWN_MODEL_INIT = "reset"
HE_CHANGE = {"init.weight": "he_normal"}  # a fading user model at its own init (xavier_normal for tanh)
HELD = "layers in nn.ModuleList or nn.ModuleDict, tensors as nn.Parameter"
OWN_MODEL_REASON = (
    "a user model's activations are its own modules: its modules' own init (reset) is the one its authors chose"
)


@dataclass(frozen=True)
class Fix:
    """A suggestion and the spec change that applies it (``{}`` where the change is to the model's code)."""

    text: str
    change: dict[str, Any]


def off_rule(stats: Stats) -> list[tuple[str, float]]:
    """Rows whose weight sits far from every fan-in rule: (name, rms in units of He's scale)."""
    return [
        (x.name, x.weight_scale)
        for x in stats.layers
        if x.weight_scale is not None and x.role != "embedding" and not OFF_RULE_LOW <= x.weight_scale <= OFF_RULE_HIGH
    ]


def change_text(change: dict[str, Any]) -> str:
    """``init.weight: reset``: a change's spec keys as a spec would write them (YAML's flow style)."""
    return ", ".join(f"{k}: {_yaml(v)}" for k, v in change.items())


def _setting(change: dict[str, Any]) -> str:
    """``init.weight: xavier_normal (--set init.weight=xavier_normal)``: the change as spec keys and as options."""
    keys = change_text(change)
    if not all(isinstance(v, str) for v in change.values()):
        return keys
    return f"{keys} ({' '.join(f'--set {k}={v}' for k, v in change.items())})"


def _yaml(value: Any) -> str:
    """A value in YAML's flow style, as a spec would write it."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    return str(value)


def _init_change(spec: Spec, rec: Recommendation) -> dict[str, Any]:
    if spec.model.factory is not None:  # init.weight set over a user model: its own init was presumably sound
        if spec.init.explicit:
            return {"init.weight": "default", "init.bias": "default"}
        return {"init.weight": OWN_MODEL_INIT}
    if rec.strategy in XAVIER and rec.gain != 1.0:
        return {"init.weight": {"name": rec.strategy, "gain": "auto"}}
    return {"init.weight": rec.strategy}


def fix(spec: Spec, verdict: Verdict, stats: Stats | None = None) -> Fix | None:
    """What to try when the verdict is unhealthy, and the spec change that applies it; ``None`` when
    healthy. ``stats`` lets a user model's own init be judged weight by weight."""
    if verdict.healthy:
        return None
    broken = [p.rule for p in verdict.problems]
    if stats is not None and any(p.layer in stats.unregistered for p in verdict.problems):
        return Fix(f"register the weights the forward uses ({HELD}): no optimizer over the parameters moves them", {})
    act, act_params = network_activation(spec)
    rec = recommend(act, act_params)
    name = spec.init.weight.name
    init = _init_change(spec, rec)
    better = _setting(init)
    if init.get("init.weight") == "default":
        better = f"the model's own init, {better} (or no init keys)"
    if spec.model.factory is not None and not spec.init.explicit and stats is not None:
        off = off_rule(stats)
        if off:
            shown = ", ".join(f"{n} at {v:.3g}x" for n, v in off[:3]) + (", ..." if len(off) > 3 else "")
            weighed = sum(1 for x in stats.layers if x.weight_scale is not None and x.role != "embedding")
            return Fix(
                f"{better}: the model's own code draws {len(off)} of {weighed} weights far from every fan-in "
                f"rule ({shown} He's scale sqrt(2 / fan_in)); reset draws each module's own init again "
                "(PyTorch's default, or the library's for a transformers model)",
                init,
            )
        if "vanishing" in broken:  # PyTorch's default passes 1/3 of the variance per layer (1/6 with ReLU)
            return Fix(f"the model's own init shrinks the signal with depth: use {_setting(HE_CHANGE)}", HE_CHANGE)
    if "nonfinite" in broken:
        return Fix(f"values overflowed: use a variance-scaled init, {better}, or a wider dtype", init)
    if "symmetry" in broken and name in CONSTANT:
        return Fix(f"a constant init makes every unit identical: use a random init, {better}", init)
    if mismatch(spec) is not None:
        return Fix(f"use {better}: the init does not fit {act}", init)
    if broken == ["weight_scale"] or (name not in FIXED_SCALE and "weight_scale" in broken):
        if spec.model.own_model and not spec.init.explicit:  # the model's own init is the problem
            init = {"init.weight": "he_normal"}
            better = _setting(init)
        return Fix(
            "the weights that feed a normalization are far above a variance-rule scale: the forward pass "
            f"cannot see it, but each optimizer step barely turns them: use {better}",
            init,
        )
    if name in FIXED_SCALE or name in CONSTANT:
        too_large = (
            "exploding",
            "saturation",
            "gradient_exploding",
            "weight_scale",
            "attention_saturation",
            "logit_scale",
        )
        direction = "too large" if any(r in broken for r in too_large) else "too small"
        return Fix(f"{name}'s fixed scale is {direction} for this network: use {better}", init)
    if spec.model.kind in ("lstm", "gru") and "gradient_vanishing" in broken:
        # the rows are time steps: the gradient fades back through time, not through depth
        if spec.model.kind == "gru":
            return Fix(
                "the gradient fades back through time: shorten model.seq_len, or try model.kind: lstm with "
                "forget_bias: 1.0 in its init rule (seed 003's recipe)",
                {},
            )
        if any(rule.forget_bias for rule in spec.init.rules):
            return Fix("the gradient fades back through time even with a forget bias: shorten model.seq_len", {})
        return Fix(
            "the gradient fades back through time: give the LSTM's init rule forget_bias: 1.0 (seed 003), "
            "or shorten model.seq_len",
            {},
        )
    norm = _has_norm_key(spec)
    if any(r in broken for r in ("vanishing", "gradient_vanishing", "exploding", "gradient_exploding")):
        return Fix(_structure_hint(spec), {"model.norm": "layernorm"} if norm else {})
    if "dead_units" in broken:
        if act == "relu" and spec.model.factory is None:
            return Fix(
                "many ReLU units are dead at this depth: model.activation: leaky_relu (with he_normal)"
                + (" or model.norm: batchnorm" if norm else ""),
                {"model.activation": "leaky_relu"},
            )
        return Fix("many units output 0: try a smaller init scale" + (" or model.norm: batchnorm" if norm else ""), {})
    if "saturation" in broken:
        return Fix(
            f"{act} saturates: use a smaller scale, {better}" + (", or model.norm: layernorm" if norm else ""), init
        )
    return Fix(f"use {better}", init)


def suggestion(spec: Spec, verdict: Verdict, stats: Stats | None = None) -> str | None:
    """One line of what to try when the verdict is unhealthy, else ``None``."""
    found = fix(spec, verdict, stats)
    return found.text if found else None


def advise(spec: Spec, verdict: Verdict | None = None, stats: Stats | None = None) -> Advice:
    """The mismatch note and, given a failing verdict, the one-line suggestion and its spec change."""
    act, act_params = network_activation(spec)
    found = fix(spec, verdict, stats) if verdict is not None else None
    rec = recommend(act, act_params)
    if spec.model.factory is not None:  # its activations are its own modules: model.activation says nothing
        rec = Recommendation(
            "the model's own", OWN_MODEL_INIT, "linear", 1.0, (*XAVIER, *HE, *LECUN, "default"), OWN_MODEL_REASON
        )
    return Advice(
        spec_name=spec.name,
        recommendation=rec,
        mismatch=mismatch(spec),
        suggestion=found.text if found else None,
        change=found.change if found else {},
    )


def activation_names() -> tuple[str, ...]:
    return tuple(activations.ACTIVATIONS)
