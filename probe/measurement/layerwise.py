"""Layer by layer for any model probe can rebuild block by block: probe's own plain stacks
(``model.kind: mlp`` or ``conv``), a user model (``model.import``) or a transformers model
(``model.hf``), forward and backward, one block in memory at a time.

The model lives on the meta device, cut into blocks with the init program that fills each
(``probe.model.stack_blocks`` for a spec stack, ``probe.model.blocks`` otherwise). Its own forward
runs unchanged; each block's ``forward`` is swapped for a call through ``_BlockFunction``, an
autograd function that materializes the block (its init steps replayed from their recorded
generator states, at the thread count a normal build runs with), runs it
without gradients, frees it, and keeps only its inputs: the activations at block boundaries. The
backward pass walks the blocks in reverse by itself (autograd): each block is materialized again
with the same weights, its forward recomputed with gradients, and the boundary gradient
back-propagated through it; the gradients of its watched outputs and weights are measured there,
then the block is freed. Peak memory: the resident tensors, the boundary activations, and one
block's weights, gradients and activations.

Equal to a normal run of the same spec (``run_probe``): the same weights, inputs and direction,
hence the same statistics up to the order records are merged in (a test compares them).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from probe.errors import RunError, SpecError
from probe.measurement import estimate_layerwise
from probe.measurement.attention import AttentionRecorder
from probe.measurement.collect import Collector
from probe.measurement.run import _DIRECTION_STREAM, _forward, float_outputs, may_attend, resolve_device, run_errors
from probe.measurement.signal_path import weight_norms
from probe.measurement.threads import intra_op_threads, threads_for
from probe.model import blocks as bl
from probe.model import stack_blocks
from probe.model.inputs import data_stream, next_batch
from probe.model.network import Built, Watched
from probe.records import Stats
from probe.spec import Spec

if TYPE_CHECKING:
    import torch
    from torch import nn

    from probe.measurement.once import MemoryCheck

# (block passes done, block passes in all): each block forward and backward, every batch; (0, n) before the sweep
BlockProgress = Callable[[int, int], None]


def check_layerwise(spec: Spec, *, weights: bool = False) -> None:
    """A SpecError (exit 2) where this mode cannot reproduce a normal run of the spec (``weights``:
    the run would load a state dict)."""
    if spec.model.own_model:
        bl.check_replayable(spec)
    else:
        stack_blocks.check_stack(spec)
    if weights:
        raise SpecError("--layer-by-layer builds the model from its init; --weights loads a whole state dict at once")
    if spec.run.steps:
        raise SpecError(
            "--layer-by-layer holds one block at a time; run.steps (--steps) steps every weight at once: drop one",
            "run.steps",
        )
    if spec.run.precision != "none":
        raise SpecError(
            "--layer-by-layer does not count run.precision (--precision) headroom yet: drop one",
            "run.precision",
        )


def run_layerwise(spec: Spec, progress: BlockProgress | None = None, *, check: MemoryCheck | None = None) -> Stats:
    """Probe the spec's model one block at a time (see the module docstring). ``check``: given
    the run's estimate (``probe.measurement.estimate_layerwise``) before any block is materialized, from the
    structure the run builds (a user factory is called once)."""
    import torch

    from probe.measurement.distributed import launched_world_size

    if launched_world_size() > 1:  # each rank would probe the whole batch alone
        raise SpecError("--layer-by-layer runs in one process; start it without torchrun")
    started = time.perf_counter()
    device = resolve_device(spec.run.device)
    dtype: torch.dtype = getattr(torch, spec.run.dtype)
    with run_errors(spec, device), torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.run.seed)  # as build_initialized: the sweep draws what the build would
        if check is not None and not spec.model.own_model:
            check(estimate_layerwise.estimate_layerwise_memory(spec))
        meta = bl.meta_model(spec) if spec.model.own_model else stack_blocks.meta_stack(spec)
        if check is not None and spec.model.own_model:
            check(estimate_layerwise.estimate_blockwise_memory(spec, meta))
        if progress is not None:  # 0 done: the sweep (one pass over every block's init) comes first
            progress(0, (2 if spec.run.backward else 1) * len(meta.blocks) * spec.data.batches)
        bl.sweep(meta)
        with bl.resident_materialized(meta):
            for module in meta.resident:
                module.to(device=device, dtype=dtype)
            runner = _Runner(meta, device, dtype)
            found: list[str] = []
            if meta.watched is None:
                watched, found = runner.discover(spec)
                weights = [(w.module, name) if (name := _weight_name(w)) is not None else None for w in watched]
                for w in watched:  # the wrapper's rows are named without its prefix
                    w.init_rule = "own" if w.weight is not None else None
            else:
                watched, weights = meta.watched, meta.weights
            with intra_op_threads(threads_for(spec, meta.model) if device.type == "cpu" else None):  # as run_probe
                layers = runner.probe(spec, watched, weights, progress)
    notes = [
        *meta.notes,
        *found,
        f"layer-by-layer: {len(meta.blocks)} blocks built, probed and freed one at a time"
        + (", forward and backward" if spec.run.backward else ""),
    ]
    return Stats(
        spec=spec,
        layers=tuple(layers),
        device=str(device),
        dtype=spec.run.dtype,
        torch_version=torch.__version__,
        elapsed_s=time.perf_counter() - started,
        notes=tuple(notes),
        attention=runner.collector.attention_stats if runner.collector is not None else (),
    )


# glibc's M_MMAP_THRESHOLD: requests at least this large get their own mapping, unmapped on free
_M_MMAP_THRESHOLD = -3
_MMAP_BYTES = 128 << 10  # glibc's own starting value, kept from adapting


def return_large_allocations_to_the_os() -> None:
    """Pin glibc's mmap threshold at its starting value (128 KiB) for the rest of the process
    (Linux with glibc; elsewhere nothing). ``probe run --layer-by-layer`` calls it; a library
    call of ``run_layerwise`` does not, since the setting is process-wide and cannot be undone
    (from Python: call this first, or start Python with ``MALLOC_MMAP_THRESHOLD_=131072``).

    By default glibc raises the threshold to the size of each large block freed, so later blocks
    and activations come from the heap, where small long-lived allocations (the collector's
    per-layer records) split the freed holes: measured, a forward pass then grew the heap by about
    two activations per block, which would defeat "whatever the depth". A pinned threshold keeps
    every allocation of 128 KiB or more in its own mapping, returned to the OS when freed (each
    block's tensors are allocated anew each time it is materialized).
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, _MMAP_BYTES)


_SLOT = object()  # where a tensor goes among a call's leaves (None is a leaf of its own)


@dataclass
class _Call:
    """What one block call hands its autograd function: the call's structure, non-tensor leaves."""

    args_spec: Any
    leaves: list[Any]  # _SLOT where a tensor goes
    out_spec: Any = None
    out_leaves: list[Any] | None = None


class _Runner:
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

    # -- blocks in and out of memory --
    def materialize(self, block: bl.Block) -> None:
        import torch

        if self.zeros:
            bl.take(block.module, recurse=True, fill=0.0)
        else:
            with intra_op_threads(self.build_threads if torch.get_num_threads() != self.build_threads else None):
                bl.materialize(self.meta, block.module, block.steps)
        block.module.to(device=self.device, dtype=self.dtype)

    def release(self, block: bl.Block) -> None:
        bl.release(block.module, dtypes=self.meta.built_dtypes)  # as built: run.dtype is a cast

    def tick(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """Every block's forward goes through ``_BlockFunction`` for the body."""
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
            call = _Call(args_spec, [_SLOT if isinstance(x, torch.Tensor) else x for x in leaves])
            anchor = runner.anchor if torch.is_grad_enabled() else runner.no_anchor
            outs = _BlockFunction.apply(runner, index, own, call, anchor, *tensors)
            if isinstance(outs, torch.Tensor):  # a function with one output returns it bare
                outs = (outs,)
            out_leaves = list(call.out_leaves or [])
            it = iter(outs)
            return pytree.tree_unflatten([next(it) if x is _SLOT else x for x in out_leaves], call.out_spec)

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
        collector = self.collector = Collector(watched, self.device)
        if may_attend(spec):
            collector.attention = AttentionRecorder(model, collector.acc_dtype)
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
                if not spec.run.backward:
                    with torch.no_grad():
                        _forward(model, batch, built)
                    continue
                out = _forward(model, batch, built)
                outs = float_outputs(out)
                if not outs:
                    raise RunError("the model's output holds no floating-point tensor with a gradient")
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


def _weight_name(w: Watched) -> str | None:
    """The name of the row's weight in its module (``discovery._weight``'s choice): the tensor
    itself is replaced each time the block is materialized."""
    if w.weight is None:
        return None
    if w.weight is getattr(w.module, "weight", None):
        return "weight"
    named = list(w.module.named_parameters(recurse=False))
    return next((n for n, p in named if p is w.weight), None) or next(
        (n for n, p in named if p.dim() >= 2 and p.requires_grad), None
    )


def _block_function() -> type:
    import torch
    from torch.utils import _pytree as pytree

    class BlockFunction(torch.autograd.Function):
        """One block call: materialize, run without gradients, free; in backward, materialize the
        same weights again, recompute with gradients, back-propagate, measure, free."""

        @staticmethod
        def forward(ctx: Any, runner: _Runner, index: int, own: Any, call: _Call, anchor: Any, *tensors: Any) -> Any:
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
            call.out_leaves = [_SLOT if isinstance(x, torch.Tensor) else x for x in leaves]
            outs = tuple(x for x in leaves if isinstance(x, torch.Tensor))
            ctx.runner, ctx.index, ctx.own, ctx.call = runner, index, own, call
            ctx.save_for_backward(*tensors)
            ctx.mark_non_differentiable(*(o for o in outs if not o.is_floating_point()))
            if not runner.zeros:
                runner.tick()
            return outs

        @staticmethod
        def backward(ctx: Any, *grads: Any) -> Any:
            runner: _Runner = ctx.runner
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


def _rebuild(call: _Call, tensors: Any) -> tuple[Any, Any]:
    from torch.utils import _pytree as pytree

    it = iter(tensors)
    args, kwargs = pytree.tree_unflatten([next(it) if x is _SLOT else x for x in call.leaves], call.args_spec)
    return args, kwargs


class _Lazy:
    """``_BlockFunction`` defined on first use (torch stays off the import path)."""

    cls: Any = None

    def apply(self, *args: Any) -> Any:
        if _Lazy.cls is None:
            _Lazy.cls = _block_function()
        return _Lazy.cls.apply(*args)


_BlockFunction = _Lazy()


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
