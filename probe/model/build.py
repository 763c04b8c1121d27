"""Spec -> an initialized ``nn.Module`` plus the list of layers to watch.

The network is built and initialized on the CPU in float32 under the run's seed, then moved to
the run's device and dtype, so the same spec and seed give the same weights on every device.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING

from probe.errors import BuildError, first_line
from probe.model.built import Built, Watched
from probe.spec import Spec, activations, inits

if TYPE_CHECKING:
    import torch
    from torch import nn


def build(spec: Spec) -> Built:
    """Build the spec's network on the CPU (float32) with its init applied."""
    if spec.model.hf is not None:
        from probe.model import hf

        return hf.build(spec)
    if spec.model.factory is not None:
        from probe.model import user_model

        return user_model.build(spec)
    if spec.model.kind == "mlp":
        return _mlp(spec)
    from probe.model import arch, init_rules

    m = spec.model
    model, watched, inputs = arch.BUILDERS[m.kind](m)
    log = init_rules.InitLog()
    ctx = inits.InitContext(m.activation.name, m.activation.params)
    # probe/model/stack_blocks.py replays these draws one block at a time (conv): keep meta_stack's program in this order
    init_rules.apply_flat(model, spec.init, ctx, log)
    reset_norms(model)
    if m.zero_init == "last_norm":
        arch.zero_last_norms(model)
    init_rules.apply_rules(model, spec.init.rules, ctx, m.depth, log)
    for w in watched:
        w.init_rule = log.for_tensor(model, w.weight) or ("default" if w.weight is not None else None)
    return Built(model, watched, inputs, init_log=log)


def _mlp(spec: Spec) -> Built:
    from torch import nn

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
    if m.output_dim is not None:
        head = nn.Linear(fan_in, m.output_dim, bias=m.bias)
        linears.append(head)
        layers["head"] = head
        watched.append(Watched("output", m.depth + 1, "output", head, head.weight, m.output_dim, -1, None, role="head"))
    model = nn.Sequential(layers)
    ctx = inits.InitContext(act.name, act.params)
    # probe/model/stack_blocks.py replays these draws one block at a time: keep meta_stack's program in this order
    for linear in linears:
        inits.apply(linear.weight, spec.init.weight.name, spec.init.weight.params, ctx)
        if linear.bias is not None:
            inits.apply(linear.bias, spec.init.bias.name, spec.init.bias.params, ctx)
    reset_norms(model)
    from probe.model import init_rules

    log = init_rules.InitLog()
    for qual, module in model.named_modules():
        if isinstance(module, nn.Linear):
            log.strategies[f"{qual}.weight"] = (spec.init.weight, 1.0)
            if module.bias is not None:
                log.strategies[f"{qual}.bias"] = (spec.init.bias, 1.0)
    if spec.init.rules:
        init_rules.apply_rules(model, spec.init.rules, ctx, m.depth, log)
    return Built(model, watched, init_log=log)


def build_on_meta(spec: Spec) -> Built:
    """``build``'s network, watched layers and init log with every tensor on the meta device: no
    storage, and no generator draws (meta fills do nothing; ``inits.apply`` skips meta tensors).
    What layer-by-layer runs, the memory estimate and the theory's init log start from."""
    import torch

    with torch.device("meta"):
        return build(spec)


def reset_norms(model: nn.Module) -> None:
    """Normalization layers start at scale 1, shift 0 (identity after normalizing)."""
    from torch import nn

    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)):
            if module.weight is not None:
                nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def build_initialized(spec: Spec, state_dict: Mapping[str, torch.Tensor] | None = None) -> Built:
    """The spec's network as a run probes it: built under ``run.seed``, then given the saved
    weights or, for the data-dependent ``lsuv`` strategy, rescaled. Seeds torch's global
    generator: callers fork it first."""
    import torch

    torch.manual_seed(spec.run.seed)
    built = build(spec)
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
