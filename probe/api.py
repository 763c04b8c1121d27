"""The Python face of probe: ``measure(model, inputs)`` on the model you already have.

::

    import probe, torch
    report = probe.measure(model, torch.randn(64, 3, 32, 32))
    report.verdict.healthy          # False when a health rule breaks
    report.verdict.problems         # (rule, layer, value, threshold, message) each
    report.to_json()                # the probe.report/1 document ``probe run --format json`` writes
    report                          # in a notebook: the colored table; print(report) in a terminal

``measure`` reuses the CLI's user-model path: one discovery pass finds the rows to watch
(``model/user_model.py``) and the run's batch loop (``measure/run.py``) measures them. The caller's
model is left as found: same parameters and buffers, same gradients, the same train/eval flag on
every submodule, no hooks, the global random state (torch, Python, numpy) restored.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from probe.errors import ProbeError, SpecError
from probe.model.inputs import InputSpec
from probe.records import LayerStats, Problem, Stats, Verdict
from probe.spec import Spec
from probe.spec import load as load_spec
from probe.spec import parse as parse_spec
from probe.spec.schema import unknown
from probe.spec.types import DATA_PARAMS, RUN_PARAMS

if TYPE_CHECKING:
    import torch
    from torch import nn

    from probe.judge.advice import Advice
    from probe.judge.theory import Comparison, Prediction

__all__ = ["OPTIONS", "Image", "Report", "measure"]

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


@dataclass(frozen=True, repr=False)
class Report:
    """A probe result: the per-layer statistics (``stats``) and the health ``verdict``.

    ``layers`` holds one ``LayerStats`` per watched row with every field of the JSON rows
    (``name``, ``mean``, ``std``, ``zero_ratio``, ``dead_units``, ``saturation_ratio``,
    ``nonfinite``, ``unit_spread``, ``grad_std``, ``weight_grad_norm``, ...); ``verdict.problems``
    holds the broken rules as ``Problem(rule, layer, value, threshold, message)``.
    """

    stats: Stats
    verdict: Verdict
    advice: Advice | None = None
    prediction: Prediction | None = None  # with theory=True
    comparisons: tuple[Comparison, ...] = field(default=())

    @property
    def healthy(self) -> bool:
        return self.verdict.healthy

    @property
    def problems(self) -> tuple[Problem, ...]:
        return self.verdict.problems

    @property
    def layers(self) -> tuple[LayerStats, ...]:
        return self.stats.layers

    @property
    def spec(self) -> Spec:
        return self.stats.spec

    @property
    def notes(self) -> tuple[str, ...]:
        return self.stats.notes

    def layer(self, name: str) -> LayerStats:
        """The row called ``name``; ``KeyError`` naming the rows there are."""
        for x in self.layers:
            if x.name == name:
                return x
        raise KeyError(f"no layer '{name}' (layers: {', '.join(x.name for x in self.layers)})")

    def to_dict(self) -> dict[str, Any]:
        """The ``probe.report/1`` document, as ``probe run --format json`` writes it."""
        from probe.render import report as rp

        out = rp.report_dict(self.stats, self.verdict)
        if self.advice is not None:
            out["advice"] = self.advice.to_dict()
        if self.prediction is not None:
            from probe.judge import theory as th

            out = th.annotate(out, self.prediction, self.comparisons)
        return out

    def to_json(self) -> str:
        from probe.render.report import dumps

        return dumps(self.to_dict())

    def verdict_lines(self) -> list[str]:
        """One line per broken rule: ``rule at layer: value ... threshold ...: message``."""
        return [problem_line(p) for p in self.verdict.problems]

    def doc(self) -> Any:
        """The output as data (``probe.render.doc.Doc``): what every format is written from."""
        if self.prediction is not None:
            from probe.render.theory import theory_doc

            return theory_doc(self.stats, self.verdict, self.prediction, list(self.comparisons))
        from probe.render.run_view import run_doc

        return run_doc(self.stats, self.verdict)

    def __rich__(self) -> Any:
        from probe.render.writers import rich_renderable

        return rich_renderable(self.doc(), None)[0]

    def text(self, width: int | None = None, color: bool = False) -> str:
        """The table as ``probe run`` prints it, fitted to ``width`` columns (default: the
        terminal's, else 120; nothing is cut), with ANSI colors if ``color``."""
        import shutil

        from probe.render.writers import rich_renderable

        renderable, used = rich_renderable(self.doc(), width or shutil.get_terminal_size((120, 24)).columns)
        console = _console(used, color)
        console.print(renderable)
        return str(console.file.getvalue())

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:
        state = "healthy" if self.healthy else "UNHEALTHY: " + ", ".join(dict.fromkeys(p.rule for p in self.problems))
        return f"<probe.Report {self.spec.name}: {len(self.layers)} layers, {state}>"

    def _repr_html_(self) -> str:
        """The terminal table in HTML for Jupyter, colored as rich colors it in a terminal."""
        console = _console(120, True, record=True)
        console.print(self)
        return str(console.export_html(inline_styles=True, code_format=_HTML_PRE))

    def plot(self, path: str | Path | None = None) -> Path | Image:
        """Activation and gradient std per layer (log scale). With ``path`` (.png, .svg, .pdf) the
        picture is written there and its path returned; without, an ``Image`` a notebook shows.
        Needs matplotlib (``pip install 'probe[plot]'``)."""
        from probe.records import Run
        from probe.render.plot import _pyplot, runs_figure, svg_text

        runs = [Run(self.spec.name, self.stats, self.verdict)]
        if path is not None:
            return runs_figure(runs, Path(path))
        _pyplot()  # the install hint as a SpecError, not None
        svg = svg_text(runs_figure, runs)
        assert svg is not None
        return Image(svg)


@dataclass(frozen=True)
class Image:
    """An SVG picture; Jupyter shows it, ``save`` writes it."""

    svg: str

    def _repr_svg_(self) -> str:
        return self.svg

    def save(self, path: str | Path) -> Path:
        from probe.render.output import write_text

        return write_text(Path(path), self.svg, "save")  # the one output writer (atomic, devices, links)


_HTML_PRE = "<pre style=\"font-family:Menlo,'DejaVu Sans Mono',consolas,monospace;line-height:1.3\">{code}</pre>"


def _console(width: int, color: bool, record: bool = False) -> Any:
    import io

    from rich.console import Console

    return Console(
        file=io.StringIO(),
        width=width,
        record=record,
        force_terminal=color,
        color_system="truecolor" if color else None,
        highlight=False,
        emoji=False,
    )


def problem_line(p: Problem) -> str:
    """``vanishing at layer7: value 0.0031, threshold 0.01: <message>``."""
    from probe.render.report import fmt

    return f"{p.rule} at {p.layer}: value {fmt(p.value)}, threshold {fmt(p.threshold)}: {p.message}"


# ---- measure ---------------------------------------------------------------------------------


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
    name matches, after judging), ``name``. Errors are ``ProbeError`` values with one-line messages.
    """
    for key in options:
        if key not in OPTIONS:
            raise unknown("option", key, OPTIONS, key, "probe.measure")
    theory = bool(options.pop("theory", False))
    layers = options.pop("layers", None)
    if isinstance(model, (Spec, str, Path)):
        if inputs is not None:
            raise SpecError("inputs: a spec draws its own inputs; pass inputs with a model object only")
        stats, spec = _measure_spec(model, options)
    else:
        stats, spec = _measure_object(model, inputs, options)
    return _judge(stats, spec, theory, layers)


def _judge(stats: Stats, spec: Spec, theory: bool, layers: str | None) -> Report:
    from probe.judge.advice import advise
    from probe.judge.rules import evaluate

    verdict = evaluate(stats)
    prediction: Prediction | None = None
    comparisons: tuple[Comparison, ...] = ()
    if theory:
        from probe.judge import theory as th

        prediction = th.predict(spec)
        comparisons = tuple(th.compare(stats, prediction))
    elif layers is not None:  # the prediction is per layer of the whole network, as on the CLI
        from probe.render.report import select_layers

        stats = select_layers(stats, str(layers))
    return Report(stats, verdict, advise(spec, verdict), prediction, comparisons)


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


def _measure_spec(source: Spec | str | Path, options: dict[str, Any]) -> tuple[Stats, Spec]:
    from probe.measurement.run import run_probe
    from probe.spec import to_dict

    overrides = _overrides(options)
    if isinstance(source, Spec):
        spec = parse_spec(to_dict(source), overrides) if overrides else source
        if overrides:
            spec = replace(spec, init=replace(spec.init, explicit=source.init.explicit))
    else:
        spec = load_spec(source, overrides)
    return run_probe(spec), spec


def _measure_object(model: Any, inputs: Any, options: dict[str, Any]) -> tuple[Stats, Spec]:
    import torch

    from probe.measurement.run import resolve_device, run_model
    from probe.model.user_model import from_object

    if not isinstance(model, torch.nn.Module):
        raise SpecError(f"model: expected an nn.Module, a Spec or a spec path, got {type(model).__name__}")
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

    from probe.model.user_model import module_modes, restore_modes

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
