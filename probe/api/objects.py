"""``probe.measure``: probe the model the caller holds (or a spec), leaving the model as found."""

from __future__ import annotations

import copy
import random
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from probe.api.pipeline import judge, probe_spec
from probe.api.report import Report
from probe.errors import ProbeError, SpecError
from probe.model.inputs import InputSpec
from probe.records import Stats
from probe.spec import Spec
from probe.spec import load as load_spec
from probe.spec import parse as parse_spec
from probe.spec.schema import unknown
from probe.spec.types import DATA_PARAMS, RUN_PARAMS

if TYPE_CHECKING:
    import torch
    from torch import nn

# what a probe changes while it runs is the process's (random state, threads, the model's modes)
_ONE_AT_A_TIME = threading.RLock()

# measure's keyword options: the spec's keys, in keyword form
OPTIONS = (
    *DATA_PARAMS,  # batch_size, batches, distribution
    *RUN_PARAMS,  # device, dtype, seed, backward
    "gate",
    "theory",
    "layers",
    "name",
    "vocab_size",
)
_RUN_KEYS = ("device", "dtype")  # for a model object these default to where the model lies


def measure(model: Any, inputs: Any = None, **options: Any) -> Report:
    """Probe ``model`` and return its ``Report``.

    ``model``: an ``nn.Module`` (probed where it lies, as it is), or a spec (``Spec``, a path to a
    YAML file). ``inputs`` (model objects only) is what one forward pass takes: a tensor, a tuple of
    positional arguments, a dict of keyword arguments, a callable ``batch_size -> inputs``, or one
    sample's shape without the batch dimension (``(3, 32, 32)``; token ids with ``vocab_size=``).
    A tensor, tuple or dict is the batch itself, reused for every batch.

    ``options`` are the spec's keys in keyword form: ``batch_size``, ``batches``,
    ``distribution``, ``seed``, ``backward``, ``device``, ``dtype`` (for a model object they
    default to its own device and dtype), ``gate={"min_std": 1e-3, "disable": [...]}``,
    ``theory`` (mean-field prediction beside each row; spec MLPs), ``layers`` (keep the rows whose
    name matches, after judging), ``name``, ``steps`` and ``lr`` (K AdamW steps after the step-0
    measurement, the weights restored after; the ``stalled`` rule), ``precision`` (``fp16``, ``bf16``,
    ``fp8``: each row's amax and underflow against the format; the ``headroom`` rule). Errors are ``ProbeError`` values with one-line messages.

    Calls from several threads take turns (one process-wide lock): a probe sets process-wide
    state for its run (torch's random state and thread count, a model's train/eval flags), so two
    at once would see each other's; each result is the one a call alone gives.
    """
    with _ONE_AT_A_TIME:
        return _measure(model, inputs, options)


def _measure(model: Any, inputs: Any, options: dict[str, Any]) -> Report:
    for key in options:
        if key not in OPTIONS:
            raise unknown("option", key, OPTIONS, key, "probe.measure")
    theory = bool(options.pop("theory", False))
    layers = options.pop("layers", None)
    if isinstance(model, (Spec, str, Path)):
        if inputs is not None:
            raise SpecError("inputs: a spec draws its own inputs; pass inputs with a model object only")
        return probe_spec(_spec_of(model, options), theory=theory, layers=layers)
    stats, spec = _measure_object(model, inputs, options)
    return judge(stats, spec, theory=theory, layers=layers)


def _overrides(options: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key == "gate":
            if not isinstance(value, Mapping):
                raise SpecError(f"expected a mapping of thresholds, got {type(value).__name__}", "gate")
            out.update({f"gate.{k}": v for k, v in value.items()})
        elif key in DATA_PARAMS:
            out[f"data.{key}"] = value
        elif key in RUN_PARAMS:
            if key in ("device", "dtype") and value is not None and not isinstance(value, str):
                value = str(value).removeprefix("torch.")  # torch.device("cpu"), torch.float64
            out[f"run.{key}"] = value
        elif key == "name":
            out["name"] = value
        elif key == "vocab_size":
            out["model.vocab_size"] = value
    return out


def _spec_of(source: Spec | str | Path, options: dict[str, Any]) -> Spec:
    from probe.spec import to_dict

    overrides = _overrides(options)
    if isinstance(source, Spec):
        spec = parse_spec(to_dict(source), overrides) if overrides else source
        if overrides:
            spec = replace(spec, init=replace(spec.init, explicit=source.init.explicit), trust=source.trust)
    else:
        spec = load_spec(source, overrides)
    return spec


def _measure_object(model: Any, inputs: Any, options: dict[str, Any]) -> tuple[Stats, Spec]:
    import torch

    from probe.model.compiled import eager

    if not isinstance(model, torch.nn.Module):
        raise SpecError(f"model: expected an nn.Module, a Spec or a spec path, got {type(model).__name__}")
    with eager(model) as (module, notes):  # under torch.compile: its eager modules, put back after
        stats, spec = _measure_module(module, inputs, options)
    return (replace(stats, notes=(*notes, *stats.notes)) if notes else stats), spec


def _measure_module(model: nn.Module, inputs: Any, options: dict[str, Any]) -> tuple[Stats, Spec]:
    import torch

    from probe.measurement.run import resolve_device, run_model
    from probe.model.user_model import from_object

    here = _placement(model)
    spec = _object_spec(model, inputs, options, here)
    device = resolve_device(spec.run.device)
    dtype = getattr(torch, spec.run.dtype)
    target = model
    if (device, dtype) != here:
        # probing elsewhere must not move the caller's model: a copy goes there instead
        try:
            target = copy.deepcopy(model)
        except Exception as exc:
            raise SpecError(
                f"the model lies on {here[0]} in {here[1]}; probing it on {device} in {dtype} needs a copy, "
                f"and copying it raised {type(exc).__name__}: {exc}",
                "device",
            ) from None
        target.to(device=device, dtype=dtype)
    input_spec = _input_spec(inputs, spec)
    with as_found(target, device):
        torch.default_generator.manual_seed(spec.run.seed)  # the inputs function and dropout draw here
        if device.type == "cuda":
            torch.cuda.default_generators[device.index or 0].manual_seed(spec.run.seed)
        with torch.enable_grad() if spec.run.backward else torch.no_grad():
            built = from_object(target, input_spec, spec.data.distribution)
            stats = run_model(spec, built)
    return stats, spec


def _placement(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    import torch

    first = next((p for p in model.parameters() if p.is_floating_point()), None)
    if first is None:
        return torch.device("cpu"), torch.float32
    return first.device, first.dtype


def _object_spec(
    model: nn.Module, inputs: Any, options: dict[str, Any], here: tuple[torch.device, torch.dtype]
) -> Spec:

    cls = type(model)
    raw: dict[str, Any] = {
        "model": {"import": f"{cls.__module__}:{cls.__qualname__}"},
        "run": {"device": str(here[0]), "dtype": str(here[1]).removeprefix("torch.")},
    }
    given = _first_tensor(inputs)
    if given is not None and given.dim() >= 1:  # the batch given is the batch measured
        raw["data"] = {"batch_size": given.shape[0]}
    shape = _shape(inputs)
    if shape is not None:
        raw["model"]["input_shape"] = list(shape)
        if "vocab_size" in options:
            raw["model"]["seq_len"] = shape[-1]
    return parse_spec(raw, _overrides(options), default_name=cls.__name__)


def _first_tensor(inputs: Any) -> torch.Tensor | None:
    import torch

    if isinstance(inputs, torch.Tensor):
        return inputs
    items = inputs.values() if isinstance(inputs, Mapping) else inputs if isinstance(inputs, (tuple, list)) else ()
    return next((v for v in items if isinstance(v, torch.Tensor)), None)


def _shape(inputs: Any) -> tuple[int, ...] | None:
    """``inputs`` as one sample's shape, or ``None`` when it is not a shape."""
    if isinstance(inputs, int) and not isinstance(inputs, bool):
        return (inputs,)
    if (
        isinstance(inputs, (tuple, list))
        and inputs
        and all(isinstance(d, int) and not isinstance(d, bool) for d in inputs)
    ):
        return tuple(inputs)
    return None


def _input_spec(inputs: Any, spec: Spec) -> InputSpec:
    import torch

    shape = _shape(inputs)
    if inputs is None:
        raise SpecError(
            "inputs: give a tensor, a tuple of arguments, a dict of keyword arguments, a callable "
            "batch_size -> inputs, or one sample's shape such as (3, 32, 32)"
        )
    if shape is not None:
        if spec.model.vocab_size is not None:
            return InputSpec("tokens", shape, vocab_size=spec.model.vocab_size)
        return InputSpec("shape", shape)
    if spec.model.vocab_size is not None:
        raise SpecError("vocab_size: token ids are drawn for a shape only, e.g. inputs=(16,)", "vocab_size")
    if callable(inputs) and not isinstance(inputs, torch.Tensor):
        return InputSpec("function", function=_guarded(inputs))
    if isinstance(inputs, (torch.Tensor, tuple, list, Mapping)):
        fixed = inputs
        return InputSpec("function", function=_fixed(fixed))
    raise SpecError(f"inputs: cannot feed a {type(inputs).__name__} to a model (see help(probe.measure))")


def _fixed(value: Any) -> Callable[[int], Any]:
    def same(batch_size: int) -> Any:
        return value

    same.__qualname__ = "the given inputs"
    return same


def _guarded(fn: Callable[[int], Any]) -> Callable[[int], Any]:
    def call(batch_size: int) -> Any:
        try:
            return fn(batch_size)
        except ProbeError:
            raise
        except Exception as exc:
            from probe.errors import BuildError, first_line

            name = getattr(fn, "__qualname__", "inputs")
            raise BuildError(f"inputs: {name}({batch_size}) raised {type(exc).__name__}: {first_line(exc)}") from None

    call.__qualname__ = getattr(fn, "__qualname__", "inputs")
    return call


@contextmanager
def as_found(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Run the body, then put back what a probe run changes: buffers (BatchNorm's running
    statistics), gradients, every submodule's train/eval flag, and the global random state of
    torch (CPU and the model's CUDA device), Python and numpy. Parameters are never written;
    hooks are removed by the code that adds them, in ``finally`` blocks."""
    import torch

    from probe.model.discovery import module_modes, restore_modes

    modes = module_modes(model)
    grads = [(p, p.grad) for p in model.parameters()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    py_state = random.getstate()
    np_state = _numpy_state()
    cuda = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda):
            yield
    finally:
        restore_modes(modes)
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        for p, g in grads:
            p.grad = g
        random.setstate(py_state)
        if np_state is not None:
            import numpy

            numpy.random.set_state(np_state)


def _numpy_state() -> Any:
    try:
        import numpy
    except ImportError:
        return None
    return numpy.random.get_state()
