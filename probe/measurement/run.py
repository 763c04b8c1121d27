"""Spec -> Stats: seed, build, draw batches, run forward and backward, read statistics once."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from probe.errors import ProbeError, RunError, SpecError, first_line, user_code_error
from probe.measurement.collect import Collector
from probe.measurement.correlation import bound_rows
from probe.measurement.outputs import float_outputs, no_gradient, probability_classes
from probe.measurement.threads import intra_op_threads, threads_for
from probe.model.build import build_initialized, build_units
from probe.model.discovery import module_modes, restore_modes
from probe.model.inputs import Batch, data_stream, next_batch
from probe.model.network import Built, placement
from probe.model.registration import unregistered
from probe.records import AttentionStats, HeadroomStats, LayerStats, Stats, StepStats
from probe.spec import Spec

if TYPE_CHECKING:
    import torch

    from probe.measurement.distributed import Share
    from probe.measurement.once import MemoryCheck

Progress = Callable[[int, int], None]  # (row passes done, in total): batches and steps of rows

# Random streams derived from run.seed, so that changing one never shifts another.
_DIRECTION_STREAM = 2


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda, then mps, then cpu; an explicit device that is not there is a RunError."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RunError(
                f"device '{name}' requested but CUDA is not available "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); "
                "use run.device: cpu or auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RunError(f"device '{name}' requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise RunError(f"device '{name}' requested but MPS is not available on this machine")
    return device


def run_probe(
    spec: Spec,
    progress: Progress | None = None,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    *,
    check: MemoryCheck | None = None,
    histograms: bool = False,
) -> Stats:
    """Probe the spec's network and return its per-layer statistics.

    The caller's global random state is left untouched; the run's own randomness comes from
    ``spec.run.seed`` alone, so the same spec gives the same numbers. ``state_dict`` (e.g. saved
    by ``probe fix``) replaces the initialized weights before probing. ``check`` is given the
    run's memory estimate before the measured pass (``probe.measurement.once``: a user or
    transformers model is built once for both); ``histograms``: ``Stats.histograms`` holds each
    row's histogram of the first batch (``probe.measurement.histograms``).
    """
    import torch

    from probe.measurement import distributed, distributed_engine
    from probe.measurement import histograms as hist

    started = time.perf_counter()
    device = resolve_device(spec.run.device)
    dtype: torch.dtype = getattr(torch, spec.run.dtype)
    share = distributed.share_for(device, spec.run.shard, spec.data.batch_size)  # None: one process
    if share is not None:
        device = share.device
        if spec.run.steps:
            raise SpecError(
                "run.steps (--steps) runs in one process: its steps are not synchronized across torchrun "
                "ranks; start it without torchrun",
                "run.steps",
            )
        if spec.run.precision != "none":
            raise SpecError(
                "run.precision (--precision) runs in one process: its counts are not merged across torchrun "
                "ranks; start it without torchrun",
                "run.precision",
            )
    # progress while a deep MLP is built, then per row pass (``later``: the rows guessed from the spec)
    built_units = build_units(spec) if share is None else 0
    guess = spec.model.depth + (spec.model.output_dim is not None)  # an MLP's rows
    later = guess * (2 if spec.run.backward else 1) * (spec.data.batches + spec.run.steps)
    building = _ticker(progress, 0, built_units, built_units + later) if built_units else None
    with run_errors(spec, device), torch.random.fork_rng(devices=[]):
        if check is not None and share is not None:  # before the build: torchrun's ranks build their own way
            from probe.measurement.memory import estimate_any

            check(estimate_any(spec))
        if share is not None:
            model, built = distributed_engine.prepare(spec, share, device, dtype, state_dict)
            built.notes.extend(distributed.notes(built, share))
        else:
            if check is not None:
                from probe.measurement.once import build_checked

                built = build_checked(spec, check, state_dict, building)
            else:
                built = build_initialized(spec, state_dict, building)
            model = built.model.to(device=device, dtype=dtype)
            if spec.run.shard != "none":
                built.notes.append(f"run.shard: {spec.run.shard} applies under torchrun only; this run had one process")
        found: dict[str, tuple[list[float], float]] | None = {} if histograms else None
        with intra_op_threads(threads_for(spec, model) if device.type == "cpu" else None):
            layers, attention, steps, headroom = _probe(
                model, built, spec, device, dtype, progress, share, found, built_units
            )
    return Stats(
        spec=spec,
        layers=tuple(layers),
        device=str(device),
        dtype=spec.run.dtype,
        torch_version=torch.__version__,
        elapsed_s=time.perf_counter() - started,
        notes=tuple(built.notes),
        **built.first_batch(),
        world_size=share.world_size if share is not None else 1,
        attention=attention,
        steps=steps,
        headroom=headroom,
        histograms=None if found is None else hist.made(spec.name, built.watched, found),
    )


def run_model(spec: Spec, built: Built, progress: Progress | None = None) -> Stats:
    """Probe a model the caller built and discovered (``probe.measure``) where it lies: its own
    device and dtype, its own weights. The caller seeds and restores the random state."""
    import torch

    started = time.perf_counter()
    device, dtype = placement(built.model)
    with run_errors(spec, device):
        layers, attention, steps, headroom = _probe(built.model, built, spec, device, dtype, progress)
    return Stats(
        spec=spec,
        layers=tuple(layers),
        device=str(device),
        dtype=spec.run.dtype,
        torch_version=torch.__version__,
        elapsed_s=time.perf_counter() - started,
        notes=tuple(built.notes),
        **built.first_batch(),
        attention=attention,
        steps=steps,
        headroom=headroom,
    )


@contextmanager
def run_errors(spec: Spec, device: torch.device) -> Iterator[None]:
    """Torch's failures inside a run as one-line RunErrors (exit 3); probe's own errors pass."""
    import torch

    try:
        yield
    except ProbeError:
        raise
    except torch.OutOfMemoryError as exc:
        raise RunError(f"out of memory on {device}: {first_line(exc)}; try a smaller data.batch_size") from None
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower():
            raise RunError(f"out of memory on {device}: {first_line(exc)}") from None
        raise RunError(f"the probe failed on {device} ({spec.run.dtype}): {first_line(exc)}") from None
    except Exception:
        raise
    except BaseException as exc:  # SystemExit, KeyboardInterrupt, ... from the model's code
        where = f"{spec.name}: model {spec.model.factory}" if spec.model.factory else spec.name
        raise user_code_error(exc, where) from None


def _probe(
    model: torch.nn.Module,
    built: Built,
    spec: Spec,
    device: torch.device,
    dtype: torch.dtype,
    progress: Progress | None,
    share: Share | None = None,
    found: dict[str, tuple[list[float], float]] | None = None,
    offset: int = 0,
) -> tuple[list[LayerStats], tuple[AttentionStats, ...], StepStats | None, HeadroomStats | None]:
    """Measure ``spec.data.batches`` batches, then ``run.steps`` steps; ``progress`` in row passes
    after ``offset`` units already reported (the build's); ``found``: each row's histogram of the
    first batch, binned in this pass."""
    import torch

    from probe.measurement import distributed, distributed_merge
    from probe.measurement import histograms as hist

    collector = _collector(spec, built, device, model, share)
    data_gen = data_stream(spec)
    dir_gen = torch.Generator().manual_seed(spec.run.seed * 1000 + _DIRECTION_STREAM)
    direction: torch.Tensor | None = None
    directions: list[torch.Tensor] | None = None
    modes = module_modes(model)
    if not built.keep_mode:
        model.train()  # as at the first training step: BatchNorm uses batch statistics
    model.zero_grad(set_to_none=True)  # gradients left on the model would add to ours
    total = spec.data.batches
    rows = max(len(built.watched), 1) * (2 if spec.run.backward else 1)  # row passes per batch
    units = offset + (total + spec.run.steps) * rows  # progress counts row passes: a deep stack moves within a batch
    try:
        with collector.hooks():
            for i in range(total):
                collector.tick = _ticker(progress, offset + i * rows, rows, units)
                batch = next_batch(spec, built, data_gen, device, dtype)
                if share is not None:  # every rank draws the global batch and keeps its rows
                    batch = distributed.slice_batch(batch, share)
                if i == 0:  # the directions each row's samples can differ in (collapse's base)
                    bound_rows(collector.layers, batch.args, batch.kwargs)
                binning = hist.hooks(built.watched, found) if found is not None and i == 0 else nullcontext()
                with binning:  # the first batch's histograms, where asked: from this very pass
                    if spec.run.backward:
                        out = _forward(model, batch, built)
                        if i == 0 and share is None:  # weights the pass used that the model does not register
                            built.unregistered = unregistered(model, float_outputs(out), (batch.args, batch.kwargs))
                            built.probability_classes = probability_classes(out)
                        if isinstance(out, torch.Tensor):
                            if not out.requires_grad:
                                raise RunError(no_gradient(out))
                            if direction is None:
                                # a fixed random direction: d loss / d output = r, unit variance
                                direction = _direction(out.shape, dir_gen, share).to(device=device, dtype=out.dtype)
                            (out * direction).sum().backward()
                            collector.output_scale([out], [direction])
                        else:
                            # tuple/dict outputs: every floating-point output gets its own direction
                            outs = float_outputs(out)
                            if not outs:
                                raise RunError(no_gradient(out))
                            if directions is None:
                                directions = [
                                    _direction(o.shape, dir_gen, share).to(device=device, dtype=o.dtype) for o in outs
                                ]
                            if [d.shape for d in directions] != [o.shape for o in outs]:
                                raise RunError("the model's outputs changed shape between batches")
                            sum((o * d).sum() for o, d in zip(outs, directions, strict=True)).backward()  # type: ignore[union-attr]
                            collector.output_scale(outs, directions)  # type: ignore[arg-type]
                        collector.after_backward()
                        model.zero_grad(set_to_none=True)
                    else:
                        with torch.no_grad():
                            _forward(model, batch, built)
                if progress is not None:
                    progress(offset + (i + 1) * rows, units)
        layers = (
            collector.finish() if share is None else collector.finish(lambda c: distributed_merge.merge_ranks(c, share))
        )
        attends = model if collector.attention_stats else None  # the logits read during the steps too
        steps = _steps(model, built, spec, device, dtype, progress, rows, offset, attends)
    finally:
        restore_modes(modes)
    return layers, collector.attention_stats, steps, _headroom(collector)


def _collector(
    spec: Spec, built: Built, device: torch.device, model: torch.nn.Module, share: Share | None
) -> Collector:
    """The collector (recording a model's attention where it may attend; under torchrun, this rank's
    part of each weight gradient); with ``run.precision``, one that also counts against the format."""
    from probe.spec.precision import precision_format

    attention_of = model if may_attend(spec) else None
    weight_grad_part = share.weight_grad_part if share is not None else None
    fmt = precision_format(spec.run.precision)
    if fmt is None:
        return Collector(built.watched, device, attention_of=attention_of, weight_grad_part=weight_grad_part)
    from probe.measurement.precision import HeadroomCollector

    return HeadroomCollector(built.watched, device, fmt, attention_of=attention_of, weight_grad_part=weight_grad_part)


def _headroom(collector: Collector) -> HeadroomStats | None:
    if type(collector) is Collector:
        return None
    from probe.measurement.precision import HeadroomCollector

    return collector.headroom() if isinstance(collector, HeadroomCollector) else None


def _steps(
    model: torch.nn.Module,
    built: Built,
    spec: Spec,
    device: torch.device,
    dtype: torch.dtype,
    progress: Progress | None,
    rows: int = 1,
    offset: int = 0,
    attention_of: torch.nn.Module | None = None,
) -> StepStats | None:
    """``run.steps`` optimizer steps on the run's first batch (probe/measurement/steps.py); the
    progress callback counts them after the batches (a step as a batch's ``rows`` row passes)."""
    if spec.run.steps == 0 or not spec.run.backward:
        return None
    from probe.measurement.steps import take_steps

    batch = next_batch(spec, built, data_stream(spec), device, dtype)

    def forward() -> list[torch.Tensor]:
        out = _forward(model, batch, built)
        outs = float_outputs(out)
        if not outs:
            raise RunError(no_gradient(out))
        return outs

    units = offset + (spec.data.batches + spec.run.steps) * rows
    tick = None if progress is None else (lambda k, _n: progress(offset + (spec.data.batches + k) * rows, units))
    run = spec.run
    return take_steps(model, built.watched, forward, run.steps, run.lr, run.seed, tick, built.lr_scale, attention_of)


# progress within a batch is reported at most this often (a stack of a million rows ticks 2M times)
TICK_S = 0.2


def _ticker(progress: Progress | None, before: int, rows: int, units: int) -> Callable[[], None] | None:
    """Called per row pass of one batch (or layer built): ``progress(before + passes, units)``, at
    most every ``TICK_S`` seconds and short of the part's end (``rows``, which its caller reports)."""
    if progress is None:
        return None
    passes, last = 0, time.monotonic()

    def tick() -> None:
        nonlocal passes, last
        passes += 1
        now = time.monotonic()
        if now - last >= TICK_S:
            last = now
            progress(before + min(passes, rows - 1), units)

    return tick


def may_attend(spec: Spec) -> bool:
    """Whether the network may compute attention (a transformer, or a model probe did not build):
    only then are the attention functions watched (``measure/attention.py``)."""
    return spec.model.own_model or spec.model.kind == "transformer"


def _direction(shape: torch.Size, generator: torch.Generator, share: Share | None) -> torch.Tensor:
    """The fixed random d loss / d output (unit variance); under torchrun, this rank's rows of
    the direction a single process draws for the whole batch."""
    import torch

    if share is None:
        return torch.randn(shape, generator=generator)
    from probe.measurement.distributed import direction

    return direction(tuple(shape), generator, share)


def _forward(model: torch.nn.Module, batch: Batch, built: Built) -> Any:
    try:
        return model(*batch.args, **batch.kwargs)
    except RuntimeError:
        raise
    except Exception as exc:
        if built.inputs is None:
            raise
        raise RunError(f"the model's forward pass raised {type(exc).__name__}: {first_line(exc)}") from None
