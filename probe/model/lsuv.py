"""LSUV (layer-sequential unit variance, Mishkin & Matas 2015): a data-dependent init.

Each weighted layer, in execution order, has its weight rescaled until the variance of its output on
the probe's batches is 1 within a tolerance, for at most ``max_iter`` passes. A layer whose output is
all zero or not finite cannot be rescaled: it is reported with that status and left as it is.

``lsuv_built`` is the post-build step behind the ``lsuv`` init strategy and ``probe fix``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from probe.errors import BuildError
from probe.spec import Spec

if TYPE_CHECKING:
    from torch import nn

    from probe.model.inputs import Batch
    from probe.model.network import Built


@dataclass(frozen=True)
class LayerScale:
    """What LSUV did to one layer: the total factor applied to its weight and the variances."""

    name: str  # watched layer name
    module: str  # the module whose weight was rescaled, e.g. "linear3"
    scale: float
    variance_before: float
    variance_after: float
    iterations: int
    status: str  # "ok", "capped" (max_iter reached), "zero" or "nonfinite"


@dataclass(frozen=True)
class LsuvResult:
    layers: tuple[LayerScale, ...]
    start: str
    tolerance: float
    max_iter: int


def lsuv_built(built: Built, spec: Spec) -> LsuvResult:
    """Rescale ``built.model`` in place, layer by layer, to unit output variance on the probe's batches.

    The batches are the run's own (``model/inputs.py``'s data stream and the model's inputs), before the
    model moves to the run's device; torch's global random state is left as it was, so a user
    ``--inputs`` function draws the same batches in the probe that follows."""
    import torch

    params = spec.init.weight.params if spec.init.weight.name == "lsuv" else {}
    start = str(params.get("start", "orthogonal"))
    tolerance = float(params.get("tolerance", 0.1))
    max_iter = int(params.get("max_iter", 10))
    if not spec.model.own_model and spec.model.kind in ("lstm", "gru"):
        raise BuildError(
            f"lsuv does not support model.kind '{spec.model.kind}': a recurrent layer has several weights "
            "and a tuple output; use another init (e.g. orthogonal)"
        )
    model = built.model
    owners = _weight_owners(model)
    targets: list[tuple[str, tuple[str, nn.Module]]] = []
    for w in built.watched:
        if (
            w.weight is not None
            and id(w.weight) in owners
            and all(owners[id(w.weight)][1] is not m for _, (_, m) in targets)
        ):
            targets.append((w.name, owners[id(w.weight)]))
    if not targets:
        raise BuildError("lsuv: the network has no weighted layer to rescale")
    was_training = model.training
    if not built.keep_mode:
        model.train()  # as the probe runs it: BatchNorm uses batch statistics
    layers = []
    # the data passes run in train mode (BatchNorm normalizes by batch statistics, as the probe
    # does) but must leave no trace: running means, variances and batch counts are put back
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            batches = _batches(built, spec)
            for name, (module_name, module) in targets:
                layers.append(_rescale(model, batches, name, module_name, module, tolerance, max_iter))
    finally:
        model.train(was_training)
        with torch.no_grad():
            for name, b in model.named_buffers():
                if name in buffers:
                    b.copy_(buffers[name])
    rescaled = {id(m.weight) for _, (_, m) in targets}
    for w in built.watched:  # the report's "init" column says the weights were rescaled
        if w.init_rule is not None and w.weight is not None and id(w.weight) in rescaled:
            w.init_rule += ", lsuv-rescaled"
    return LsuvResult(tuple(layers), start, tolerance, max_iter)


def _batches(built: Built, spec: Spec) -> list[Batch]:
    """The probe's ``data.batches`` batches, on the model's device and dtype (a spec model: the CPU,
    float32); one batch when they can be concatenated."""
    import torch

    from probe.model.inputs import Batch, data_stream, next_batch
    from probe.model.network import placement

    # a user factory may return a model already on a GPU or in float64: feed it there (as discovery
    # does); a spec model is still on the CPU in float32 here
    device, dtype = placement(built.model)
    gen = data_stream(spec)
    batches = [next_batch(spec, built, gen, device, dtype) for _ in range(spec.data.batches)]
    if all(len(b.args) == 1 and not b.kwargs and isinstance(b.args[0], torch.Tensor) for b in batches):
        # a tensor each (features, images, token ids): one forward pass over all of them
        return [Batch((torch.cat([b.args[0].detach() for b in batches]),), {})]
    return batches


def _weight_owners(model: nn.Module) -> dict[int, tuple[str, nn.Module]]:
    """``id(weight) -> (module name, module)`` for every module with a weight tensor."""
    import torch

    return {
        id(m.weight): (n, m) for n, m in model.named_modules() if isinstance(getattr(m, "weight", None), torch.Tensor)
    }


def _output_variance(model: nn.Module, batches: list[Batch], module: nn.Module, module_name: str) -> float:
    """The variance of ``module``'s output over every value it produced on ``batches``."""
    import torch

    seen: list[torch.Tensor] = []

    def hook(_m: Any, _i: Any, out: Any) -> None:
        if not isinstance(out, torch.Tensor) or not out.is_floating_point():
            raise BuildError(
                f"lsuv: module '{module_name}' ({type(module).__name__}) returns a {type(out).__name__}, "
                "not one floating-point tensor; LSUV rescales layers with a single output"
            )
        # a copy: .double() of a float64 output is the output itself, which an in-place activation
        # after this module overwrites before the variance is read
        seen.append(out.detach().to(torch.float64, copy=True).flatten())

    handle = module.register_forward_hook(hook)
    try:
        for b in batches:
            model(*b.args, **b.kwargs)
    finally:
        handle.remove()
    if not seen:
        raise BuildError(f"lsuv: module '{module_name}' did not run in the forward pass")
    return float(torch.cat(seen).var(correction=0))


def _rescale(
    model: nn.Module, batches: list[Batch], name: str, module_name: str, module: Any, tolerance: float, max_iter: int
) -> LayerScale:
    first = var = _output_variance(model, batches, module, module_name)
    scale, iterations, status = 1.0, 0, "ok"
    while True:
        if not math.isfinite(var):
            status = "nonfinite"
            break
        if var == 0.0:
            status = "zero"
            break
        if abs(var - 1.0) <= tolerance:
            break
        if iterations == max_iter:
            status = "capped"
            break
        factor = 1.0 / math.sqrt(var)
        module.weight.mul_(factor)
        scale *= factor
        iterations += 1
        var = _output_variance(model, batches, module, module_name)
    return LayerScale(name, module_name, scale, first, var, iterations, status)
