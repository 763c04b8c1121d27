"""Layer by layer for any model probe can rebuild block by block: probe's own plain stacks
(``model.kind: mlp`` or ``conv``), a user model (``model.import``) or a transformers model
(``model.hf``), forward and backward, one block in memory at a time.

The model lives on the meta device, cut into blocks with the init program that fills each
(``probe.model.stack_blocks`` for a spec stack, ``probe.model.blocks`` otherwise). Its own forward
runs unchanged; each block's ``forward`` is swapped for a call through ``BlockFunction``, an
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
from typing import TYPE_CHECKING

from probe.errors import SpecError
from probe.measurement import estimate_layerwise
from probe.measurement.layerwise_runner import BlockProgress, Runner
from probe.measurement.run import resolve_device, run_errors
from probe.measurement.threads import intra_op_threads, threads_for
from probe.model import blocks as bl
from probe.model import replay, stack_blocks, storage
from probe.model.network import Watched
from probe.records import Stats
from probe.spec import Spec

if TYPE_CHECKING:
    import torch

    from probe.measurement.once import MemoryCheck


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
        replay.sweep(meta, storage.Staging())  # each init step's tensors in one reused buffer
        with replay.resident_materialized(meta):
            for module in meta.resident:
                module.to(device=device, dtype=dtype)
            runner = Runner(meta, device, dtype)
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


def _weight_name(w: Watched) -> str | None:
    """The name of the row's weight in its module (``discovery_pass.weight_of``'s choice): the tensor
    itself is replaced each time the block is materialized."""
    if w.weight is None:
        return None
    if w.weight is getattr(w.module, "weight", None):
        return "weight"
    named = list(w.module.named_parameters(recurse=False))
    return next((n for n, p in named if p is w.weight), None) or next(
        (n for n, p in named if p.dim() >= 2 and p.requires_grad), None
    )
