"""One layer-by-layer run (``probe.measurement.layerwise``): the ``Runner`` swaps each block's
forward for a call through ``BlockFunction`` (``probe.measurement.layerwise_block``), materializes
and frees blocks, discovers the rows on blocks of zeros, probes the batches and measures each
block's watched weights while it is in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from probe.errors import BuildError, RunError
from probe.measurement.collect import Collector
from probe.measurement.correlation import bound_rows
from probe.measurement.layerwise_block import SLOT, BlockFunction, Call
from probe.measurement.outputs import float_outputs, no_gradient
from probe.measurement.run import _DIRECTION_STREAM, _forward, may_attend
from probe.measurement.signal_path import weight_norms
from probe.measurement.threads import intra_op_threads
from probe.model import blocks as bl
from probe.model import replay, storage
from probe.model.inputs import data_stream, next_batch
from probe.model.network import Built, Watched, under_transform
from probe.spec import Spec

if TYPE_CHECKING:
    import torch
    from torch import nn

# (block passes done, block passes in all): each block forward and backward, every batch; (0, n) before the sweep
BlockProgress = Callable[[int, int], None]


class Runner:
    """One layer-by-layer run: swaps the blocks' forwards, discovers the rows, probes the batches."""

    def __init__(self, meta: bl.MetaModel, device: torch.device, dtype: torch.dtype) -> None:
        import torch

        self.meta = meta
        self.device = device
        self.dtype = dtype
        self.collector: Collector | None = None
        self.rows: dict[int, list[tuple[int, nn.Module, str]]] = {}  # block -> (row, owner, weight name)
        self.done = 0
        self.total = 0
        self.progress: BlockProgress | None = None
        self.zeros = False  # discovery: blocks hold zeros, not their init
        self.weight_norms: dict[int, torch.Tensor] = {}  # row -> its weight's norm
        self.build_threads = torch.get_num_threads()  # a normal build's (some fills round by it: QR)
        # one block's parameters at a time live in this reused buffer: a block allocated anew each
        # time (twice per block and batch) page-faults its whole size in again (storage.Staging)
        self.staging = storage.Staging()
        self.live = 0  # blocks materialized now: a block called from another's forward gets its own memory

    # -- blocks in and out of memory --
    def materialize(self, block: bl.Block) -> None:
        import torch

        staging = self.staging if self.live == 0 else None
        if self.zeros:
            storage.take(block.module, recurse=True, fill=0.0, staging=staging)
        else:
            with intra_op_threads(self.build_threads if torch.get_num_threads() != self.build_threads else None):
                replay.materialize(self.meta, block.module, block.steps, staging=staging)
        self.live += 1
        block.module.to(device=self.device, dtype=self.dtype)

    def release(self, block: bl.Block) -> None:
        storage.release(block.module, dtypes=self.meta.built_dtypes)  # as built: run.dtype is a cast
        self.live -= 1

    def own_memory(self, x: Any) -> Any:
        """``x``, copied if it is a tensor in the staging buffer (a block that returns a view of its
        own weight): the next block's weights overwrite that memory."""
        import torch

        buffer = self.staging.buffer
        if (
            buffer is not None
            and isinstance(x, torch.Tensor)
            and x.device.type == "cpu"
            and x.untyped_storage().data_ptr() == buffer.untyped_storage().data_ptr()
        ):
            return x.clone()
        return x

    def tick(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """Every block's forward goes through ``BlockFunction`` for the body."""
        for index, block in enumerate(self.meta.blocks):
            block.module.forward = self._forward_of(index, block)  # type: ignore[method-assign]
        try:
            yield
        finally:
            for block in self.meta.blocks:
                del block.module.forward

    def _forward_of(self, index: int, block: bl.Block) -> Callable[..., Any]:
        import torch
        from torch.utils import _pytree as pytree

        own = type(block.module).forward
        runner = self

        def forward(*args: Any, **kwargs: Any) -> Any:
            leaves, args_spec = pytree.tree_flatten((args, kwargs))
            tensors = [x for x in leaves if isinstance(x, torch.Tensor)]
            if any(under_transform(t) for t in tensors):
                raise BuildError(
                    f"--layer-by-layer: the model calls block {block.name} inside torch.vmap (or another "
                    "torch.func transform), where a block cannot be built and freed; run without --layer-by-layer"
                )
            call = Call(args_spec, [SLOT if isinstance(x, torch.Tensor) else x for x in leaves])
            anchor = runner.anchor if torch.is_grad_enabled() else runner.no_anchor
            outs = BlockFunction.apply(runner, index, own, call, anchor, *tensors)
            if isinstance(outs, torch.Tensor):  # a function with one output returns it bare
                outs = (outs,)
            out_leaves = list(call.out_leaves or [])
            it = iter(outs)
            return pytree.tree_unflatten([next(it) if x is SLOT else x for x in out_leaves], call.out_spec)

        return forward

    # -- discovery: which rows, with blocks of zeros on a short input --
    def discover(self, spec: Spec) -> tuple[list[Watched], list[str]]:
        import torch

        from probe.model import discovery

        inputs = self.meta.inputs
        assert inputs is not None  # a user or transformers model's
        if inputs.kind == "tokens" and inputs.shape:
            # the rows' shapes need any sequence length: a short one costs a fraction of a forward
            inputs = replace(inputs, shape=(min(inputs.shape[0], 4), *inputs.shape[1:]))
        self.zeros = True
        self.anchor = self.no_anchor = torch.zeros((), device=self.device)
        try:
            with self.swapped():
                on_device: Any = _OnDevice(self.meta.model, self.device, self.dtype)
                return discovery.discover(on_device, inputs, "normal")
        finally:
            self.zeros = False

    # -- the probe --
    def probe(
        self,
        spec: Spec,
        watched: list[Watched],
        weights: list[tuple[nn.Module, str] | None],
        progress: BlockProgress | None,
    ) -> list:
        """The run's batches; ``weights``: each row's weight as its owner and name, or None."""
        import torch

        model = self.meta.model
        block_of = {id(m): i for i, b in enumerate(self.meta.blocks) for m in b.module.modules()}
        self.rows = {}
        resident_rows: list[tuple[int, nn.Module, str]] = []
        for i, weight in enumerate(weights):
            if weight is None:
                continue
            owner, name = weight
            b = block_of.get(id(owner), -1)  # measured in the backward pass of the block that holds it
            (self.rows.setdefault(b, []) if b >= 0 else resident_rows).append((i, owner, name))
        collector = self.collector = Collector(watched, self.device, attention_of=model if may_attend(spec) else None)
        built = Built(model, watched, self.meta.inputs)  # what next_batch reads
        data_gen = data_stream(spec)
        dir_gen = torch.Generator().manual_seed(spec.run.seed * 1000 + _DIRECTION_STREAM)
        directions: list[torch.Tensor] | None = None
        passes = 2 if spec.run.backward else 1
        self.done, self.total, self.progress = 0, passes * len(self.meta.blocks) * spec.data.batches, progress
        self.anchor = torch.zeros((), device=self.device, requires_grad=True)
        self.no_anchor = torch.zeros((), device=self.device)
        model.train()  # as run._probe (dropout is off in a transformers config; BatchNorm uses batch statistics)
        with collector.hooks(), self.swapped():
            for b in range(spec.data.batches):
                batch = next_batch(spec, built, data_gen, self.device, self.dtype)
                if b == 0:  # the directions each row's samples can differ in (collapse's base)
                    bound_rows(collector.layers, batch.args, batch.kwargs)
                if not spec.run.backward:
                    with torch.no_grad():
                        _forward(model, batch, built)
                    continue
                out = _forward(model, batch, built)
                outs = float_outputs(out)
                if not outs:
                    raise RunError(no_gradient(out))
                if directions is None:
                    directions = [
                        torch.randn(o.shape, generator=dir_gen).to(device=self.device, dtype=o.dtype) for o in outs
                    ]
                sum((o * d).sum() for o, d in zip(outs, directions, strict=True)).backward()  # type: ignore[union-attr]
                collector.output_scale(outs, directions)  # type: ignore[arg-type]
                del out, outs
                if self.done < (b + 1) * passes * len(self.meta.blocks):
                    # blocks off the gradient's path (a pooler) have no backward pass: done too
                    self.done = (b + 1) * passes * len(self.meta.blocks) - 1
                    self.tick()
                self.fold_weight_grads(resident_rows)
                model.zero_grad(set_to_none=True)
        # finish reads each measured weight's norm from Watched.weight; the blocks are out of
        # memory, so each stands in as its norm recorded in the backward pass (a 1-element tensor,
        # whose norm is that value exactly)
        for i, norm in self.weight_norms.items():
            watched[i].weight = norm
        return collector.finish()

    def record_weight_norms(self, index: int) -> None:
        """The norms of a just-materialized block's watched weights, once: ``finish`` reads them
        (the weights' scale) when the block is out of memory, with or without a backward pass."""
        assert self.collector is not None
        for i, owner, name in self.rows.get(index, []):
            if i not in self.weight_norms:
                self.weight_norms[i] = weight_norms([getattr(owner, name).detach()], self.collector.acc_dtype)[0]

    def weight_grads(self, index: int) -> None:
        """The watched weights' gradients of a block whose backward just ran."""
        self.fold_weight_grads(self.rows.get(index, []))

    def fold_weight_grads(self, rows: list[tuple[int, nn.Module, str]]) -> None:
        """``Collector.after_backward`` for these rows alone: their weights are the block's current
        tensors, the other rows' are out of memory (or measured at another block)."""
        assert self.collector is not None
        layers = self.collector.layers
        saved = [layer.watched.weight for layer in layers]
        try:
            for layer in layers:
                layer.watched.weight = None
            for i, owner, name in rows:
                weight = layers[i].watched.weight = getattr(owner, name)
                if i not in self.weight_norms:  # finish reads the weights' norms: they will be gone
                    self.weight_norms[i] = weight_norms([weight.detach()], self.collector.acc_dtype)[0]
            self.collector.after_backward()
        finally:
            for layer, weight in zip(layers, saved, strict=True):
                layer.watched.weight = weight


class _OnDevice:
    """The meta model as discovery sees it: its parameters (first one) claim the run's device."""

    def __init__(self, model: nn.Module, device: torch.device, dtype: torch.dtype) -> None:
        self.model, self.device, self.dtype = model, device, dtype

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def parameters(self, recurse: bool = True) -> Iterator[Any]:
        import torch

        if not recurse:  # the model's own (a wrapper's: none)
            yield from self.model.parameters(recurse=False)
            return
        yield torch.empty(0, device=self.device, dtype=self.dtype)
