"""A spec in one line of words, as the top of every report reads it."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from probe.spec import activations, inits
from probe.spec.gate_params import GATE_PARAMS
from probe.spec.schema import Param
from probe.spec.types import GateSpec, Spec


def summary(spec: Spec, per_row: Collection[str] = ()) -> str:
    """The spec in one line, e.g. for the top of a report. ``per_row`` names what the rows below
    vary ("init", "activation", "depth", "width": compare's entries, sweep's grid), said as such
    instead of the base spec's value, which no row may have."""
    m, d, r = spec.model, spec.data, spec.run
    head = f" -> {m.output_dim}" if m.output_dim else ""
    norm = f" +{m.norm}" if m.norm != "none" else ""
    rules = f" + {len(spec.init.rules)} rule(s)" if spec.init.rules else ""
    init = (
        f"init {spec.init.weight.label(inits.STRATEGIES[spec.init.weight.name].params)}, "
        f"bias {spec.init.bias.label(inits.STRATEGIES[spec.init.bias.name].params)}"
    )
    if "init" in per_row:
        init = "init per row"
    if m.hf is not None:
        shape = f"transformers {m.hf}"
        init = "init: the model's own" if not spec.init.explicit else init
    elif m.factory is not None:
        shape = f"model {m.factory}"
        init = "init: the model's own" if not spec.init.explicit else init
    elif m.kind == "conv":
        shape = f"conv {m.in_channels}x{m.image_size}x{m.image_size} -> {m.width} ch x {m.depth}{head} k{m.kernel_size}"
    elif m.kind == "residual":
        shape = (
            f"residual {m.block} {m.width} x {m.depth} blocks{head} branch_scale {m.branch_scale} "
            f"zero_init {m.zero_init}"
        )
    elif m.kind == "transformer":
        shape = f"transformer d_model {m.width} x {m.depth} blocks, {m.heads} heads, {m.seq_len} tokens{head}"
    elif m.kind in ("lstm", "gru"):
        shape = f"{m.kind} {m.input_dim} -> {m.width} x {m.depth} layers, {m.seq_len} steps{head}"
    else:
        width = "width per row" if "width" in per_row else str(m.width)
        depth = "depth per row" if "depth" in per_row else str(m.depth)
        shape = f"{m.kind} {m.input_dim} -> {width} x {depth}{head}"
    if m.parametrization == "mup" and not m.own_model:
        shape += f" muP (base width {m.base_width})"
    # recurrent cells have their own nonlinearities; a user model its own modules
    act = (
        ""
        if m.kind in ("lstm", "gru") or m.own_model or "activation" in per_row
        else " " + m.activation.label(activations.ACTIVATIONS[m.activation.name].params)
    )
    return (
        f"{spec.name}: {shape}{act}{norm}; "
        f"{init}{rules}; "
        f"data {d.batches} x {d.batch_size} {d.distribution}; {r.device} {r.dtype} seed {r.seed}"
    )


def gate_changes(gate: GateSpec, except_keys: Collection[str] = (), backward: bool = True) -> list[str]:
    """Each gate value that differs from its default (``max_nonfinite 2147483647 (default 0)``)
    and each disabled rule (``disabled: saturation``): what a verdict was judged under, said
    wherever the verdict is, so a gate switched off by its own spec is never silent; and, for a run
    without ``backward``, that the gradient rules had nothing to judge. Keys in ``except_keys``
    are left out (those the command line set; ``run.backward`` among them)."""
    out = []
    for key, param in GATE_PARAMS.items():
        value = getattr(gate, key)
        if value != param.default and key not in except_keys:
            never = "; never breaks" if _never_breaks(key, value, param) else ""
            out.append(f"{key} {_number(value)} (default {_number(param.default)}{never})")
    if gate.disable and "disable" not in except_keys:
        out.append("disabled: " + ", ".join(gate.disable))
    if not backward and "run.backward" not in except_keys:  # the gradient rules have nothing to read
        out.append("run.backward false: gradients not measured (gradient rules and nan gradients not judged)")
    return out


def _never_breaks(key: str, value: Any, param: Param) -> bool:
    """A threshold no value can cross: a lower bound at its minimum (a std, ratio, spread or
    entropy is never below 0), an upper bound at infinity or at the top of a fraction's range."""
    if key.startswith("min_"):
        return param.minimum is not None and value <= param.minimum
    if key.startswith("max_") and isinstance(value, float):
        return value == float("inf") or (param.maximum is not None and value >= param.maximum)
    return False


def _number(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
