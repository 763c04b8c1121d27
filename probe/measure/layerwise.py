"""Layer-by-layer mode: probe a network's forward signal one block at a time, on the meta device.

The network's structure is built on ``torch.device("meta")`` (shapes, no storage). Each block
(a Linear or Conv with the norm, activation and pooling after it; the head) is then materialized
on the CPU, initialized, moved to the run's device and dtype, given the current activations, and
freed before the next. Peak memory is one block's weights plus one batch's activations, whatever
the depth.

Same weights as a normal run: ``build`` draws every weight from torch's global generator in a fixed
order (each layer's constructor draws, then ``init.weight``/``init.bias`` per Linear/Conv, then
each ``init.rules`` fill). A first sweep runs that program one module at a time, only to record
the generator's state before each step; materializing a block then replays its own steps from
their recorded states, so each block gets exactly the numbers a whole build would have given it.

Forward only: a backward pass needs every block's activations at once, which is what this mode
avoids keeping. Where it applies: probe's own plain stacks (``model.kind: mlp`` and ``conv``, an
``nn.Sequential`` of leaf modules) with any init strategy except ``lsuv`` (data-dependent: it
rescales layers on the probe's batches) and any ``init.rules``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING

from probe.errors import SpecError
from probe.measure.collect import Collector
from probe.measure.run import Progress, resolve_device, run_errors
from probe.measure.scale import intra_op_threads, threads_for
from probe.model.build import build_on_meta, reset_norms
from probe.model.built import Built
from probe.model.init_rules import InitLog, RuleStep, apply_rule, rule_steps
from probe.model.inputs import data_stream, next_batch
from probe.records import Report
from probe.spec import InitSpec, Spec, inits

if TYPE_CHECKING:
    import torch
    from torch import nn

APPLIES = (
    "model.kind: mlp or conv (probe's own plain stacks; not residual, transformer, lstm/gru), --model and --hf models"
)


@dataclass
class Block:
    """Consecutive modules of the network run as one unit, and the init steps that fill them."""

    modules: list[nn.Module]
    steps: list[int] = field(default_factory=list)  # indices into the init program it replays, in order


@dataclass(frozen=True)
class _Step:
    """One generator-drawing (or not) init action on one module, in ``build``'s order."""

    block: int
    module: nn.Module
    fill: Callable[[], None]
    replay: bool = True  # False: a later step overwrites everything this one drew (the sweep still runs it)


def check_applies(spec: Spec, *, weights: bool = False) -> None:
    """A SpecError (exit 2) where the layer-by-layer mode cannot reproduce a normal run."""
    where = f"--layer-by-layer applies to {APPLIES}"
    if spec.model.factory is not None:
        raise SpecError(f"{where}; a --model factory builds and initializes its network in its own code")
    if spec.model.kind not in ("mlp", "conv"):
        raise SpecError(f"{where}; this spec has model.kind: {spec.model.kind}")
    if inits.canonical(spec.init.weight.name) == "lsuv" or inits.canonical(spec.init.bias.name) == "lsuv":
        raise SpecError(f"{where}, with any init except lsuv, which rescales each layer on the whole network's batches")
    if weights:
        raise SpecError(f"{where} from its init; --weights loads a whole state dict at once")


def run_layerwise(spec: Spec, progress: Progress | None = None) -> Report:
    """Probe the forward signal of the spec's MLP or conv stack one block at a time (see the
    module docstring).

    The forward columns equal ``run_probe``'s for the same spec with ``run.backward: false``; the
    gradient columns are None. The returned report's spec has ``run.backward: false``, and a note
    says so when the given spec asked for a backward pass.
    """
    import torch

    check_applies(spec)
    started = time.perf_counter()
    device = resolve_device(spec.run.device)
    dtype: torch.dtype = getattr(torch, spec.run.dtype)
    notes = []
    if spec.run.backward:
        notes.append(
            "layer-by-layer: forward signal only; run.backward: true is not measured in this mode "
            "(run without --layer-by-layer for gradients)"
        )
    forward_spec = replace(spec, run=replace(spec.run, backward=False))
    with run_errors(spec, device), torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.run.seed)
        built = build_on_meta(forward_spec)
        blocks, steps = _program(built, spec)
        storage = _Storage()
        states = _record_states(steps, storage)
        layers = _probe(built, blocks, steps, states, storage, forward_spec, device, dtype, progress)
    notes.append(f"layer-by-layer: {len(blocks)} blocks built, probed and freed one at a time")
    return Report(
        spec=forward_spec,
        layers=tuple(layers),
        device=str(device),
        dtype=spec.run.dtype,
        torch_version=torch.__version__,
        elapsed_s=time.perf_counter() - started,
        notes=tuple(notes),
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
    every allocation of 128 KiB or more in its own mapping, returned to the OS when freed.
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


def _program(built: Built, spec: Spec) -> tuple[list[Block], list[_Step]]:
    """The blocks of the network (an ``nn.Sequential`` of leaf modules), and the init steps
    ``build`` takes, in its order (``build._mlp``; ``arch.conv`` then ``build``'s flat init)."""
    from torch import nn

    weighted = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)  # what init.weight/init.bias fill
    norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)
    children = list(built.model.children())
    blocks: list[Block] = []
    block_of: dict[int, int] = {}
    for module in children:
        if isinstance(module, weighted) or not blocks:  # each Linear/Conv starts a block (norm, act, pool follow)
            blocks.append(Block([]))
        blocks[-1].modules.append(module)
        block_of[id(module)] = len(blocks) - 1

    def step(module: nn.Module, fill: Callable[[], None], replay: bool = True) -> _Step:
        return _Step(block_of[id(module)], module, fill, replay)

    m, init = spec.model, spec.init
    ctx = inits.InitContext(m.activation.name, m.activation.params)
    steps: list[_Step] = []
    # 1. constructors: a Linear/Conv draws its default weight and bias; a norm sets ones and zeros.
    # Every strategy but "default" fills the whole tensor, so then a block need not redraw these.
    kept = {inits.canonical(init.weight.name), inits.canonical(init.bias.name) if m.bias else ""}
    overwritten = "default" not in kept
    for module in children:
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            steps.append(step(module, reset, replay=not (overwritten and isinstance(module, weighted))))
    # 2. init.weight and init.bias on each Linear/Conv
    for module in children:
        if isinstance(module, weighted):
            steps.append(step(module, _flat_fill(module, init, ctx)))
    # 3. norms back to scale 1, shift 0 (no draws)
    for module in children:
        if isinstance(module, norms):
            steps.append(step(module, partial(reset_norms, module)))
    # 4. init.rules, each over every module it matches
    log = InitLog()
    for rule_step in rule_steps(built.model, init.rules):
        steps.append(step(rule_step.module, _rule_fill(rule_step, ctx, m.depth, log)))
    for i, s in enumerate(steps):
        if s.replay:
            blocks[s.block].steps.append(i)
    return blocks, steps


def _flat_fill(module: nn.Module, init: InitSpec, ctx: inits.InitContext) -> Callable[[], None]:
    def fill() -> None:  # reads the module's parameters when run: materializing replaces them
        inits.apply(module.weight, init.weight.name, init.weight.params, ctx)  # type: ignore[arg-type]
        if module.bias is not None:
            inits.apply(module.bias, init.bias.name, init.bias.params, ctx)  # type: ignore[arg-type]

    return fill


def _rule_fill(rule_step: RuleStep, ctx: inits.InitContext, depth: int, log: InitLog) -> Callable[[], None]:
    return lambda: apply_rule(rule_step, ctx, depth, log)


class _Storage:
    """The CPU memory blocks are materialized in: one float32 buffer, grown to the largest block
    once and reused. Allocating and freeing a block's worth per block instead lets glibc's heap
    keep what was freed (its mmap threshold adapts upwards): peaks of several times the whole
    network were measured that way (benchmarks/memory.py)."""

    def __init__(self) -> None:
        self.buffer: torch.Tensor | None = None

    def take(self, modules: list[nn.Module]) -> None:
        """Give the modules' parameters (views of the buffer) and buffers real, uninitialized storage."""
        import torch
        from torch import nn

        owners = [m for module in modules for m in module.modules()]
        params = [(m, n, p) for m in owners for n, p in m.named_parameters(recurse=False)]
        need = sum(p.numel() for _, _, p in params)
        if self.buffer is None or self.buffer.numel() < need:
            self.buffer = None  # free the smaller one first
            self.buffer = torch.empty(need, dtype=torch.float32)
        offset = 0
        for m, name, p in params:
            view = self.buffer[offset : offset + p.numel()].view(p.shape)
            setattr(m, name, nn.Parameter(view, requires_grad=p.requires_grad))
            offset += p.numel()
        for m in owners:
            for name, buf in list(m.named_buffers(recurse=False)):
                setattr(m, name, torch.empty_like(buf, device="cpu"))  # stays a buffer (persistent or not)

    @staticmethod
    def release(modules: list[nn.Module]) -> None:
        """Back to the meta device in float32, as built: nothing of the block stays in memory."""
        import torch

        for module in modules:
            module.to(device="meta", dtype=torch.float32)


def _record_states(steps: list[_Step], storage: _Storage) -> list[torch.Tensor]:
    """The global generator's state before each step: the steps run once, one module at a time
    (on uninitialized storage: how many numbers a fill draws never depends on the values)."""
    import torch

    states = []
    for s in steps:
        states.append(torch.get_rng_state())
        storage.take([s.module])
        s.fill()
        storage.release([s.module])
    return states


def _materialize(
    block: Block,
    steps: list[_Step],
    states: list[torch.Tensor],
    storage: _Storage,
    device: torch.device,
    dtype: torch.dtype,
) -> None:
    """Give the block real storage and replay its init steps from their recorded states: the
    weights ``build`` would have drawn, on the CPU in float32, then moved like ``run_probe`` does."""
    import torch

    storage.take(block.modules)
    for i in block.steps:
        torch.set_rng_state(states[i])
        steps[i].fill()
    for module in block.modules:
        module.to(device=device, dtype=dtype)


def _forward_block(block: Block, x: torch.Tensor) -> torch.Tensor:
    for module in block.modules:
        x = module(x)
    return x


def _probe(
    built: Built,
    blocks: list[Block],
    steps: list[_Step],
    states: list[torch.Tensor],
    storage: _Storage,
    spec: Spec,
    device: torch.device,
    dtype: torch.dtype,
    progress: Progress | None,
) -> list:
    """``run._probe``'s forward-only loop, with each batch walked through the blocks in turn."""
    import torch

    collector = Collector(built.watched, device)
    data_gen = data_stream(spec)
    built.model.train()  # as run._probe: BatchNorm uses batch statistics
    total = spec.data.batches
    # run_probe's thread count for the passes only: a normal build runs with torch's default, and
    # some fills (orthogonal's QR) round differently with another count
    threads = threads_for(spec) if device.type == "cpu" else None
    with collector.hooks(), torch.no_grad():
        for i in range(total):
            x = next_batch(spec, built, data_gen, device, dtype).args[0]
            for block in blocks:
                _materialize(block, steps, states, storage, device, dtype)
                try:
                    with intra_op_threads(threads):
                        x = _forward_block(block, x)
                finally:
                    storage.release(block.modules)
            del x
            if progress is not None:
                progress(i + 1, total)
        return collector.finish()
