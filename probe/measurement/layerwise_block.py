"""One block call of a layer-by-layer run as an autograd function (``BlockFunction``): materialize
the block, run it without gradients, free it, keep its inputs; in the backward pass, materialize
the same weights again, recompute with gradients, back-propagate through it, measure, free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from probe.measurement.layerwise_runner import Runner

SLOT = object()  # where a tensor goes among a call's leaves (None is a leaf of its own)


@dataclass
class Call:
    """What one block call hands its autograd function: the call's structure, non-tensor leaves."""

    args_spec: Any
    leaves: list[Any]  # SLOT where a tensor goes
    out_spec: Any = None
    out_leaves: list[Any] | None = None


def _block_function() -> type:
    import torch
    from torch.utils import _pytree as pytree

    class BlockFunction(torch.autograd.Function):
        """One block call: materialize, run without gradients, free; in backward, materialize the
        same weights again, recompute with gradients, back-propagate, measure, free."""

        @staticmethod
        def forward(ctx: Any, runner: Runner, index: int, own: Any, call: Call, anchor: Any, *tensors: Any) -> Any:
            block = runner.meta.blocks[index]
            runner.materialize(block)
            try:
                if not runner.zeros:
                    runner.record_weight_norms(index)
                args, kwargs = _rebuild(call, tensors)
                out = own(block.module, *args, **kwargs)
            finally:
                runner.release(block)
            leaves, call.out_spec = pytree.tree_flatten(out)
            leaves = [runner.own_memory(x) for x in leaves]
            call.out_leaves = [SLOT if isinstance(x, torch.Tensor) else x for x in leaves]
            outs = tuple(x for x in leaves if isinstance(x, torch.Tensor))
            ctx.runner, ctx.index, ctx.own, ctx.call = runner, index, own, call
            ctx.save_for_backward(*tensors)
            ctx.mark_non_differentiable(*(o for o in outs if not o.is_floating_point()))
            if not runner.zeros:
                runner.tick()
            return outs

        @staticmethod
        def backward(ctx: Any, *grads: Any) -> Any:
            runner: Runner = ctx.runner
            block = runner.meta.blocks[ctx.index]
            saved = ctx.saved_tensors
            inputs = [
                t.detach().requires_grad_(t.is_floating_point() and needs)
                for t, needs in zip(saved, ctx.needs_input_grad[5:], strict=True)
            ]
            runner.materialize(block)
            assert runner.collector is not None
            try:
                with torch.enable_grad():
                    # measured in the forward pass already: attach gradient hooks only, and keep the
                    # attention recorder paused (its calls were recorded in the forward walk)
                    attention = runner.collector.attention
                    runner.collector.recomputing = True
                    if attention is not None:
                        attention.paused = True
                    try:
                        args, kwargs = _rebuild(ctx.call, inputs)
                        out = ctx.own(block.module, *args, **kwargs)
                    finally:
                        runner.collector.recomputing = False
                        if attention is not None:
                            attention.paused = False
                    outs = [x for x in pytree.tree_leaves(out) if isinstance(x, torch.Tensor)]
                    pairs = [(o, g) for o, g in zip(outs, grads, strict=True) if o.requires_grad and g is not None]
                    if pairs:
                        torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
                runner.weight_grads(ctx.index)
                input_grads = tuple(t.grad if t.requires_grad else None for t in inputs)
            finally:
                runner.release(block)
            runner.tick()
            return (None, None, None, None, None, *input_grads)

    return BlockFunction


def _rebuild(call: Call, tensors: Any) -> tuple[Any, Any]:
    from torch.utils import _pytree as pytree

    it = iter(tensors)
    args, kwargs = pytree.tree_unflatten([next(it) if x is SLOT else x for x in call.leaves], call.args_spec)
    return args, kwargs


class _Lazy:
    """``BlockFunction`` defined on first use (torch stays off the import path)."""

    cls: Any = None

    def apply(self, *args: Any) -> Any:
        if _Lazy.cls is None:
            _Lazy.cls = _block_function()
        return _Lazy.cls.apply(*args)


BlockFunction = _Lazy()
