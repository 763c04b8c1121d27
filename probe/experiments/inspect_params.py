"""Parameter inspection (seed 002): per parameter, its shape, fans, mean and std next to the std
its init rule should give, plus a forward-only pass of activation scales.

The expected std comes from the strategy's formula (e.g. He: gain / sqrt(fan_in)); a measured
std further from it than sampling noise allows (``SIGMA_TOLERANCE`` standard errors, with the
standard error of a sample std sigma / sqrt(2 n)) is flagged as a mismatch: the network does not
hold what its spec says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from probe.judge.advice import OFF_RULE_HIGH, OFF_RULE_LOW
from probe.model.build import build_initialized
from probe.model.init_rules import reachable
from probe.records import LayerStats
from probe.spec import Choice, Spec, inits

if TYPE_CHECKING:
    import torch

    from probe.measurement.once import MemoryCheck
    from probe.model.init_rules import InitLog

SIGMA_TOLERANCE = 6.0
# a few percent on top of sampling noise, for uniform/truncated shapes and orthogonal matrices
RELATIVE_TOLERANCE = 0.05


@dataclass(frozen=True)
class ParamRow:
    name: str
    shape: tuple[int, ...]
    fan_in: int
    fan_out: int
    rule: str  # the strategy that initialized it
    mean: float
    std: float
    expected_std: float | None
    mismatch: bool


@dataclass(frozen=True)
class Inspection:
    spec: Spec
    params: tuple[ParamRow, ...]
    activations: tuple[LayerStats, ...]

    @property
    def mismatches(self) -> tuple[ParamRow, ...]:
        return tuple(p for p in self.params if p.mismatch)


fans = inits.fans  # (fan_in, fan_out) as torch.nn.init computes them


def expected_std(choice: Choice, shape: tuple[int, ...], activation: Choice, layer_fan_in: int) -> float | None:
    """The std the strategy's own variance rule gives a tensor of ``shape``; ``None`` without a rule."""
    ctx = inits.InitContext(activation.name, activation.params)
    moments = inits.moments(choice.name, choice.params, ctx, shape, layer_fan_in)
    return None if moments is None else math.sqrt(moments.var)


def _mismatch(std: float, expected: float | None, count: int) -> bool:
    if expected is None:
        return False
    if expected == 0.0:
        return std > 0.0
    noise = expected / math.sqrt(2.0 * max(count - 1, 1))
    return abs(std - expected) > SIGMA_TOLERANCE * noise + RELATIVE_TOLERANCE * expected


def inspect(spec: Spec, activations_pass: bool = True, check: MemoryCheck | None = None) -> Inspection:
    """Build the spec's network once, as ``probe run`` does (same seed; lsuv's rescaling), inspect
    every parameter, and, with ``activations_pass``, probe that model's forward pass where the
    spec puts it (``run.device``, ``run.dtype``). ``check``: given the run's memory estimate before
    the pass (``probe.measurement.once``; a user factory then runs once)."""
    import torch

    from probe.measurement.once import build_checked
    from probe.measurement.run import resolve_device, run_model

    layers: tuple[LayerStats, ...] = ()
    with torch.random.fork_rng(devices=[]):
        built = build_checked(spec, check) if check is not None else build_initialized(spec)
        rows = inspect_module(built.model, spec, built.init_log)
        if activations_pass:
            built.model.to(device=resolve_device(spec.run.device), dtype=getattr(torch, spec.run.dtype))
            layers = run_model(replace(spec, run=replace(spec.run, backward=False)), built).layers
    return Inspection(spec, rows, layers)


def inspect_module(model: torch.nn.Module, spec: Spec, log: InitLog | None = None) -> tuple[ParamRow, ...]:
    """One row per parameter of ``model``, judged against the init that filled it.

    ``log`` (from ``build``) says which strategy filled which parameter; without it every
    Linear/Conv weight and bias is taken to hold ``init.weight``/``init.bias`` (an MLP spec).
    """
    rows = []
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            full = f"{module_name}.{param_name}" if module_name else param_name
            shape = tuple(param.shape)
            rule, expected = _rule(module, param_name, full, param, spec, log)
            row = _row(full, param.detach(), shape, rule, expected)
            if rule == "own" and param_name in reachable(module):
                row = _own(row)
            rows.append(row)
    return tuple(rows)


def _own(row: ParamRow) -> ParamRow:
    """A weight matrix of the model's own init, held to the band of the standard fan-in rules
    (PyTorch's default, LeCun, Xavier, He; ``judge.advice.OFF_RULE_LOW``..``HIGH`` times He's
    sqrt(2 / fan_in)): outside it, it is flagged, with He's std shown as the reference."""
    he = math.sqrt(2.0 / max(row.fan_in, 1))
    off = not OFF_RULE_LOW <= row.std / he <= OFF_RULE_HIGH
    return replace(row, rule="own: off-rule" if off else "own", expected_std=he, mismatch=off)


def _rule(
    module: Any, param_name: str, full: str, param: torch.Tensor, spec: Spec, log: InitLog | None
) -> tuple[str, float | None]:
    """(what initialized the parameter, the std that gives it or None where none can be derived)."""
    from torch import nn

    act = spec.model.activation
    shape = tuple(param.shape)
    if log is not None and full in log.strategies:
        entry = log.strategies[full]
        label = log.by_param.get(full, "")
        if entry is None:  # e.g. an LSTM bias with its forget-gate quarter set apart
            return label or "?", None
        choice, factor = entry
        rule = choice.name if not label or label.startswith(("init.weight ", "init.bias ")) else label
        if choice.name == "default" and isinstance(module, nn.RNNBase):
            return rule, 1.0 / math.sqrt(3.0 * module.hidden_size)
        expected = expected_std(choice, shape, act, _layer_fan_in(module, shape))
        return rule, None if expected is None else expected * factor
    if log is None and isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        choice = spec.init.weight if param_name == "weight" else spec.init.bias
        return choice.name, expected_std(choice, shape, act, _layer_fan_in(module, shape))
    if spec.model.own_model:
        return "own", None  # the factory's own init: nothing to hold it to
    return _torch_default(module, param_name, param)


def _layer_fan_in(module: Any, shape: tuple[int, ...]) -> int:
    weight = getattr(module, "weight", None)
    if weight is not None and weight.dim() >= 2:
        return fans(tuple(weight.shape))[0]
    return fans(shape)[0]


def _torch_default(module: Any, param_name: str, param: torch.Tensor) -> tuple[str, float | None]:
    """What torch (or the builder) left in a parameter no init of the spec touched."""
    from torch import nn

    from probe.model.nets import ResidualBlock

    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)):
        if param_name == "weight":
            return ("zeros" if not bool(param.detach().any()) else "ones"), 0.0  # zero_init: last_norm
        return "zeros", 0.0
    if isinstance(module, ResidualBlock) and param_name == "alpha":
        return "zeros", 0.0
    if isinstance(module, nn.RNNBase):
        return "default", 1.0 / math.sqrt(3.0 * module.hidden_size)  # U(+-1/sqrt(hidden))
    if isinstance(module, nn.Embedding):
        return "default", 1.0  # N(0, 1)
    if isinstance(module, nn.MultiheadAttention):
        if param_name == "in_proj_weight":
            fan_in, fan_out = fans(tuple(param.shape))
            return "default", math.sqrt(2.0 / (fan_in + fan_out))  # xavier_uniform on (3 E, E)
        if param_name == "in_proj_bias":
            return "zeros", 0.0
    return "?", None


def _row(name: str, t: torch.Tensor, shape: tuple[int, ...], rule: str, expected: float | None) -> ParamRow:
    fan_in, fan_out = fans(shape)
    values = t.float().flatten()
    std = float(values.std()) if values.numel() > 1 else 0.0
    return ParamRow(
        name=name,
        shape=shape,
        fan_in=fan_in,
        fan_out=fan_out,
        rule=rule,
        mean=float(values.mean()),
        std=std,
        expected_std=expected,
        mismatch=_mismatch(std, expected, values.numel()),
    )
