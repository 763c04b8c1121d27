"""Spec -> an initialized ``nn.Module`` plus the list of layers to watch.

The network is built and initialized on the CPU in float32 under the run's seed, then moved to
the run's device and dtype, so the same spec and seed give the same weights on every device.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING

from probe.errors import BuildError, first_line
from probe.model.network import Built, Plan, Watched
from probe.spec import Spec, activations, inits

if TYPE_CHECKING:
    import torch
    from torch import nn

    from probe.model.init_rules import InitStep


def build(spec: Spec, tick: Callable[[], None] | None = None) -> Built:
    """Build the spec's network on the CPU (float32) with its init applied; ``tick`` is called
    per layer made and per init step (an MLP's: progress while a deep stack is built)."""
    planned = plan(spec, tick)
    for step in planned.steps:
        step.fill()
        if tick is not None:
            tick()
    return planned.finish()


def build_units(spec: Spec) -> int:
    """How many times ``build`` calls its ``tick`` at most: per layer of an MLP, made and filled."""
    return 2 * spec.model.depth if spec.model.kind == "mlp" and not spec.model.own_model else 0


def plan(spec: Spec, tick: Callable[[], None] | None = None) -> Plan:
    """``build`` up to its init program: the network as its constructors leave it, the init steps
    ``build`` runs next, and what makes the Built after them."""
    if spec.model.hf is not None:
        from probe.model import hf

        return hf.plan(spec)
    if spec.model.factory is not None:
        from probe.model import user_model

        return user_model.plan(spec)
    if spec.model.kind == "mlp":
        return _mlp(spec, tick)
    from probe.model import arch, init_rules, mup

    m = spec.model
    model, watched, inputs = arch.BUILDERS[m.kind](m)
    log = init_rules.InitLog()
    ctx = inits.InitContext(m.activation.name, m.activation.params)
    # probe/model/stack_blocks.py replays these draws one block at a time (conv): keep meta_stack's program in this order
    steps = init_rules.flat_steps(model, spec.init, ctx, log)
    steps += norm_steps(model)
    if m.zero_init == "last_norm":
        steps += arch.zero_last_norm_steps(model)
    steps += mup.readout_steps(getattr(model, "head", None), m, (log, "head"))
    steps += init_rules.rule_fills(model, spec.init.rules, ctx, m.depth, log)

    def finish() -> Built:
        for w in watched:
            w.init_rule = log.for_tensor(model, w.weight) or ("default" if w.weight is not None else None)
        return Built(model, watched, inputs, init_log=log, lr_scale=_lr_scales(model, spec))

    return Plan(model, steps, finish)


def _mlp(spec: Spec, tick: Callable[[], None] | None = None) -> Plan:
    from torch import nn

    from probe.model import init_rules, mup
    from probe.model.nets import Scale

    m = spec.model
    act = m.activation
    saturation = activations.saturation(act.name, act.params)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    watched: list[Watched] = []
    fan_in = m.input_dim
    linears: list[nn.Linear] = []
    for i in range(1, m.depth + 1):
        linear = nn.Linear(fan_in, m.width, bias=m.bias)
        linears.append(linear)
        layers[f"linear{i}"] = linear
        if m.norm == "batchnorm":
            layers[f"norm{i}"] = nn.BatchNorm1d(m.width)
        elif m.norm == "layernorm":
            layers[f"norm{i}"] = nn.LayerNorm(m.width)
        module = activations.make_module(act.name, act.params)
        layers[f"act{i}"] = module
        watched.append(
            Watched(
                f"layer{i}", i, "hidden", module, linear.weight, m.width, -1, saturation, normalized=m.norm != "none"
            )
        )
        fan_in = m.width
        if tick is not None:
            tick()
    if m.output_dim is not None:
        if m.parametrization == "mup":
            layers["readout"] = Scale(mup.readout_multiplier(m))
        head = nn.Linear(fan_in, m.output_dim, bias=m.bias)
        linears.append(head)
        layers["head"] = head
        watched.append(Watched("output", m.depth + 1, "output", head, head.weight, m.output_dim, -1, None, role="head"))
    model = nn.Sequential(layers)
    ctx = inits.InitContext(act.name, act.params)
    # probe/model/stack_blocks.py replays these draws one block at a time: keep meta_stack's program in this order
    steps = [init_rules.InitStep(linear, partial(_mlp_fill, linear, spec, ctx)) for linear in linears]
    steps += mup.readout_steps(linears[-1] if m.output_dim is not None else None, m)
    steps += norm_steps(model)
    log = init_rules.InitLog()
    for qual, module in model.named_modules():
        if isinstance(module, nn.Linear):
            gain = mup.readout_gain(m) if m.output_dim is not None and module is linears[-1] else 1.0
            log.strategies[f"{qual}.weight"] = (spec.init.weight, gain)
            if module.bias is not None:
                log.strategies[f"{qual}.bias"] = (spec.init.bias, gain)
    steps += init_rules.rule_fills(model, spec.init.rules, ctx, m.depth, log)
    return Plan(model, steps, lambda: Built(model, watched, init_log=log, lr_scale=_lr_scales(model, spec)))


def _mlp_fill(linear: nn.Linear, spec: Spec, ctx: inits.InitContext) -> None:
    inits.apply(linear.weight, spec.init.weight.name, spec.init.weight.params, ctx)
    if linear.bias is not None:
        inits.apply(linear.bias, spec.init.bias.name, spec.init.bias.params, ctx)


def _lr_scales(model: nn.Module, spec: Spec) -> dict[str, float]:
    """muP's Adam lr multipliers (probe/model/mup.py), from the network planned at the base width
    on the meta device (no storage, no draws)."""
    import torch

    from probe.model import mup

    base = mup.base_spec(spec)
    if base is None:
        return {}
    with torch.device("meta"):
        base_model = plan(base).model
    return mup.lr_scales(model, base_model)


def build_on_meta(spec: Spec) -> Built:
    """``build``'s network, watched layers and init log with every tensor on the meta device: no
    storage, and no generator draws (meta fills do nothing; ``inits.apply`` skips meta tensors).
    What layer-by-layer runs, the memory estimate and the theory's init log start from."""
    import torch

    with torch.device("meta"):
        return build(spec)


def reset_norms(model: nn.Module) -> None:
    """Normalization layers start at scale 1, shift 0 (identity after normalizing)."""
    for step in norm_steps(model):
        step.fill()


def norm_steps(model: nn.Module) -> list[InitStep]:
    """``reset_norms``, one step per normalization layer."""
    from torch import nn

    from probe.model.init_rules import InitStep

    norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)
    return [InitStep(m, partial(_reset_norm, m)) for m in model.modules() if isinstance(m, norms)]


def _reset_norm(module: nn.Module) -> None:
    from torch import nn

    if module.weight is not None:
        nn.init.ones_(module.weight)  # type: ignore[arg-type]
    if module.bias is not None:
        nn.init.zeros_(module.bias)  # type: ignore[arg-type]


def build_initialized(
    spec: Spec, state_dict: Mapping[str, torch.Tensor] | None = None, tick: Callable[[], None] | None = None
) -> Built:
    """The spec's network as a run probes it: built under ``run.seed``, then given the saved
    weights or, for the data-dependent ``lsuv`` strategy, rescaled. Seeds torch's global
    generator: callers fork it first. ``tick``: as for ``build``."""
    import torch

    torch.manual_seed(spec.run.seed)
    return initialized(build(spec, tick), spec, state_dict)


def initialized(built: Built, spec: Spec, state_dict: Mapping[str, torch.Tensor] | None = None) -> Built:
    """``build_initialized`` after the build: the saved weights loaded, or ``lsuv``'s rescaling."""
    if state_dict is not None:
        _load_state(built.model, state_dict)
        for w in built.watched:  # the report's "init" column: not the spec's init any more
            w.init_rule = "loaded weights" if w.init_rule is not None else None
    elif spec.init.weight.name == "lsuv":
        from probe.model.lsuv import lsuv_built

        lsuv_built(built, spec)
    return built


def _load_state(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as exc:
        raise BuildError(f"the saved weights do not fit this spec's network: {first_line(exc)}") from None
