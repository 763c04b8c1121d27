"""The command line: parse -> call the API -> render -> exit code. The only module using typer.

Exit codes: 0 a report was made (``check``: every spec healthy), 1 ``check`` found a broken rule,
2 bad input, 3 runtime failure (device unavailable, out of memory, a failing forward pass).
"""

# No `from __future__ import annotations` here: typer would evaluate every annotation string of
# every command on each start (~13 ms); evaluated once at import they cost ~1 ms.
import os
import sys
import tempfile
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from probe import __version__
from probe.errors import ProbeError, SpecError

EXIT_OK, EXIT_UNHEALTHY, EXIT_BAD_INPUT, EXIT_RUNTIME = 0, 1, 2, 3


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"
    html = "html"


# ---- start-up: keep pydantic off the parse path ------------------------------------------------
# typer 0.29 coerces every parameter of the invoked command, even an absent option, through a
# pydantic TypeAdapter built on first use: importing pydantic and building ~15 adapters cost ~0.1 s,
# a quarter of `probe run missing.yaml`, and no annotation or option avoids it. Values whose coerced
# result is already known (an absent option, a string, a default, a choice, a path) are converted
# here exactly as typer's adapter would; anything else (numbers typed on the command line, bad
# values and their messages) goes to typer's own coercion. typer 0.28 and older have no such layer
# (click converts, no pydantic) and this does nothing there (checked with 0.12.5 and 0.28.0).
try:
    from typer._coercion import RuntimeParam, build_runtime_param
    from typer._param_types import coerce_cli_choice, coerce_cli_path

    _TYPER_COERCES = hasattr(RuntimeParam, "_coerce_value")
except ImportError:
    _TYPER_COERCES = False

_SLOW = object()  # "ask typer": the quick path does not know this value's result


def _quick_value(annotation: Any, info: Any, value: Any, param: Any, ctx: Any) -> Any:
    """``value`` coerced as typer's pydantic adapter would, or ``_SLOW`` when not sure."""
    if info.parser is not None:
        return _SLOW
    if typing.get_origin(annotation) is list:
        if not isinstance(value, (list, tuple)):
            return _SLOW
        (item_type,) = typing.get_args(annotation)
        items = [_quick_value(item_type, info, item, param, ctx) for item in value]
        return _SLOW if any(item is _SLOW for item in items) else items
    if not isinstance(annotation, type):
        return _SLOW
    if annotation is str:
        return value if type(value) is str else _SLOW
    if annotation in (int, float):  # a default; numbers typed by the user go to pydantic
        if type(value) is not annotation:
            return _SLOW
        in_range = (info.min is None or value >= info.min) and (info.max is None or value <= info.max)
        return value if in_range else _SLOW
    if issubclass(annotation, Enum):
        if isinstance(value, annotation):
            return value
        try:
            return coerce_cli_choice(value, choices=tuple(annotation), case_sensitive=info.case_sensitive, ctx=ctx)
        except ValueError:  # typer words the error
            return _SLOW
    if issubclass(annotation, Path) and info.path_type is None and type(value) is str and "\0" not in value:
        # pydantic's part of typer's path coercion is annotation(value); typer's checks follow
        return coerce_cli_path(annotation(value), info, path_type=annotation, param=param, ctx=ctx)
    return _SLOW


if _TYPER_COERCES:

    class _QuickParam(RuntimeParam):
        """typer's runtime coercion, building the pydantic adapter only for values that need it."""

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            try:
                quick = _quick_value(self.annotation, self.parameter_info, value, param, ctx)
            except (TypeError, AttributeError):  # typer's private helpers changed: ask typer itself
                quick = _SLOW
            if quick is not _SLOW:
                return quick
            param._runtime_param = build_runtime_param(param.type_descriptor)
            return param._runtime_param._coerce_value(value, param=param, ctx=ctx)


def _prime(params: list[Any]) -> None:
    """Give typer's parameters the quick coercion before they parse anything."""
    if not _TYPER_COERCES:
        return
    for param in params:
        if getattr(param, "_runtime_param", _SLOW) is None and hasattr(param, "type_descriptor"):
            desc = param.type_descriptor
            try:
                param._runtime_param = _QuickParam(parameter_info=desc.parameter_info, annotation=desc.annotation)
            except (TypeError, AttributeError):  # a typer whose internals differ: its own coercion runs
                return


class _Group(TyperGroup):
    """typer's group, whose parameters (``--debug``, ``--version``, ``--help``) take the quick coercion."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        _prime(self.get_params(ctx))
        return super().parse_args(ctx, args)


class _Command(TyperCommand):
    """typer's command, whose parameters take the quick coercion."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        _prime(self.get_params(ctx))
        return super().parse_args(ctx, args)


app = typer.Typer(
    name="probe",
    cls=_Group,
    help=(
        "Signal-probe diagnostic for neural-network initialization: does the forward signal and "
        "the backward gradient survive the depth of your network, and if not, why?\n\n"
        "Exit codes: 0 report made / healthy, 1 check found a problem, 2 bad input, 3 runtime failure."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state: dict[str, bool] = {"debug": bool(os.environ.get("PROBE_DEBUG"))}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"probe {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Probe the forward signal and backward gradient of a network at initialization."""
    if debug:
        _state["debug"] = True


# ---- shared options --------------------------------------------------------------------------

FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="Output format.", case_sensitive=False)]
OutputOpt = Annotated[
    Optional[Path], typer.Option("--output", "-o", help="Write the output to this file (atomically) instead of stdout.")
]
GateOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--gate", "-g", metavar="KEY=VALUE", help="Override a gate threshold, e.g. --gate min_std=1e-3 (repeatable)."
    ),
]
PlotOpt = Annotated[
    Optional[Path],
    typer.Option("--plot", metavar="PATH", help="Also draw a picture to PATH (.png, .svg or .pdf; needs probe[plot])."),
]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--set", "-s", metavar="KEY=VALUE", help="Override any spec key, e.g. --set model.depth=20 (repeatable)."
    ),
]

# -- issue 6: scale options (--jobs, --max-memory) --
JobsOpt = Annotated[
    int, typer.Option("--jobs", "-j", min=1, help="Worker processes running probes side by side (default 1).")
]
MaxMemoryOpt = Annotated[
    Optional[float],
    typer.Option(
        "--max-memory",
        metavar="GIB",
        min=0.0,
        help="Refuse (exit 3) any run whose estimated peak memory exceeds this many GiB.",
    ),
]


def _memory_guard(
    specs: list[Any], max_memory: float | None, jobs: int = 1, *, layerwise: bool = False, offer_layerwise: bool = False
) -> None:
    """Print the estimate of large runs and refuse those over --max-memory, before any run."""
    from probe.scale import guard_memory

    for line in guard_memory(specs, max_memory, jobs, layerwise=layerwise, offer_layerwise=offer_layerwise):
        _err_console().print(line, style="dim", markup=False)


_OWN_PROCESS = False  # set by entry(): the process is the command's own


def _load_torch() -> None:
    """Import torch now (input has been checked), then move every object alive to the garbage
    collector's permanent generation (``gc.freeze``). torch leaves ~165k long-lived objects, and
    the first full collection after its import walks them all: ~0.1 s, a third of what
    `probe compare` spends beyond importing torch. Frozen, later collections skip them. Done by
    the CLI's own process only (``entry``), which is short-lived and also exits faster for it;
    from Python (a notebook, ``CliRunner``), probe leaves the collector alone."""
    import torch  # noqa: F401

    if _OWN_PROCESS:
        import gc

        gc.freeze()


def _err_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False, emoji=False)  # messages quote user input verbatim


def _pairs(items: list[str] | None, prefix: str, option: str) -> dict[str, Any]:
    """``["min_std=1e-3"]`` -> ``{"gate.min_std": 0.001}``; values are read as YAML scalars."""
    if not items:
        return {}  # without importing yaml
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SpecError(f"{option} expects KEY=VALUE, got '{item}'")
        if prefix:
            key = f"{prefix}.{key}"
        elif "." not in key and key != "name":
            raise SpecError(f"{option} expects SECTION.KEY=VALUE (e.g. model.depth=20), got '{item}'")
        try:
            out[key] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            out[key] = value
    return out


def _model_overrides(
    model: str | None, model_args: list[str] | None, input_shape: str | None, inputs: str | None
) -> dict[str, Any]:
    """``--model`` and friends as spec overrides (``model.import``, ``model.kwargs``, ...)."""
    out: dict[str, Any] = {}
    if model is not None:
        out["model.import"] = model
    if model_args:
        if model is None:
            raise SpecError("--model-arg needs --model")
        out["model.kwargs"] = {k.partition(".")[2]: v for k, v in _pairs(model_args, "kwargs", "--model-arg").items()}
    if input_shape is not None:
        out["model.input_shape"] = input_shape
    if inputs is not None:
        out["model.inputs"] = inputs
    return out


ModelOpt = Annotated[
    Optional[str],
    typer.Option("--model", "-m", metavar="MODULE:FACTORY", help="Probe your own nn.Module factory."),
]
ModelArgOpt = Annotated[
    Optional[list[str]],
    typer.Option("--model-arg", metavar="KEY=VALUE", help="A keyword argument of the factory (repeatable)."),
]
InputShapeOpt = Annotated[
    Optional[str],
    typer.Option("--input-shape", metavar="D,D,...", help="One sample's shape for --model, e.g. 3,32,32."),
]
InputsOpt = Annotated[
    Optional[str],
    typer.Option("--inputs", metavar="MODULE:FN", help="FN(batch_size) returns example inputs for --model."),
]


def _load_spec(
    spec_path: Path | None,
    overrides: dict[str, Any],
    model: str | None,
    model_args: list[str] | None,
    input_shape: str | None,
    inputs: str | None,
) -> Any:
    """The spec from SPEC.yaml and/or ``--model`` and friends, with ``overrides`` applied."""
    from probe import spec as spec_mod

    overrides = {**overrides, **_model_overrides(model, model_args, input_shape, inputs)}
    if spec_path is None:
        if model is None:
            raise SpecError("give a SPEC.yaml or --model MODULE:FACTORY")
        return spec_mod.parse({}, overrides, model.rpartition(":")[2] or "model")
    return spec_mod.load(spec_path, overrides)


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    _write_atomic(output, text)
    _err_console().print(f"wrote {output}", style="dim")


def _write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path`` and rename it, so a failure never leaves half a file."""
    path = path.expanduser()
    if path.is_dir():
        raise SpecError(f"--output {path} is a directory; give a file path")
    parent = path.parent
    if not parent.exists():
        raise SpecError(f"--output: folder {parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _render_text(renderable: Any) -> str:
    """A rich renderable as plain text (for --output with the table format)."""
    from rich.console import Console

    console = Console(record=True, width=120, file=open(os.devnull, "w"), color_system=None)  # noqa: SIM115
    console.print(renderable)
    return console.export_text()


def _show(renderable: Any, output: Path | None, soft_wrap: bool = False) -> None:
    if output is not None:
        _emit(_render_text(renderable), output)
        return
    _out_console().print(renderable, soft_wrap=soft_wrap)


def _out_console() -> Any:
    """stdout console; off a terminal (pipes, CI logs) it is 120 columns wide unless COLUMNS says."""
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(highlight=False, width=120)
    return console


def _render(
    fmt: Format,
    output: Path | None,
    *,
    table: Callable[[], Any],
    json: Callable[[], str],
    csv: Callable[[], str],
    markdown: Callable[[], str],
    html: Callable[[], str] | None = None,
    soft_wrap: bool = False,
) -> None:
    """Write one result in the chosen format: ``table`` makes a rich renderable, the others text.
    A command without an ``html`` renderer refuses ``--format html`` instead of writing another format."""
    if fmt is Format.table:
        _show(table(), output, soft_wrap=soft_wrap)
        return
    makers: dict[Format, Callable[[], str] | None] = {
        Format.json: json,
        Format.csv: csv,
        Format.markdown: markdown,
        Format.html: html,
    }
    make = makers[fmt]
    if make is None:
        raise SpecError(f"--format {fmt.value} is not available for this command (use table, json, csv or markdown)")
    _emit(make(), output)


def _guard(fn: Callable[[], int]) -> None:
    """Run a command body; turn expected errors into one red line and an exit code."""
    try:
        code = fn()
    except ProbeError as exc:
        if _state["debug"]:
            raise
        _err_console().print(f"probe: error: {exc}", style="red", markup=False)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        _err_console().print("probe: interrupted", style="red")
        raise typer.Exit(130) from None
    except Exception as exc:  # a bug, not user error: say so and keep the exit code distinct from 1/2
        if _state["debug"]:
            raise
        _err_console().print(
            f"probe: unexpected error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
            style="red",
            markup=False,
        )
        raise typer.Exit(EXIT_RUNTIME) from None
    raise typer.Exit(code)


class _Steps:
    """A progress line on stderr for multi-run commands (only on a terminal)."""

    def __init__(self, total: int, what: str) -> None:
        self.total, self.what, self.done = total, what, 0
        self.console = _err_console()
        self.status: Any = None

    def __call__(self, label: str) -> None:
        self.done += 1
        if not self.console.is_terminal or self.total < 2:
            return
        text = f"{self.what} {self.done}/{self.total}: {label}"
        if self.status is None:
            self.status = self.console.status(text)
            self.status.start()
        else:
            self.status.update(text)

    def close(self) -> None:
        if self.status is not None:
            self.status.stop()


@contextmanager
def _batch_progress(total: int) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on stderr for runs of several batches (only on a terminal)."""
    console = _err_console()
    if total < 2 or not console.is_terminal:
        yield None
        return
    from rich.progress import Progress

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("probing batches", total=total)
        yield lambda done, _total: bar.update(task, completed=done)


def _check_plot(path: Path) -> None:
    """Fail on a bad --plot path or a missing matplotlib before any work is done."""
    from probe.plot import _pyplot, check_path

    check_path(path)
    _pyplot()


def _wrote(path: Path) -> None:
    _err_console().print(f"wrote {path}", style="dim")


# ---- commands --------------------------------------------------------------------------------


@app.command(cls=_Command)
def run(
    spec_path: Annotated[
        Optional[Path],
        typer.Argument(metavar="[SPEC.yaml]", help="The spec to probe (see configs/); optional with --model."),
    ] = None,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
    gate: GateOpt = None,
    set_: SetOpt = None,
    model: ModelOpt = None,
    model_arg: ModelArgOpt = None,
    input_shape: InputShapeOpt = None,
    inputs: InputsOpt = None,
    layers: Annotated[
        Optional[str],
        typer.Option("--layers", "-l", metavar="PATTERN", help="Only rows whose name matches (glob or substring)."),
    ] = None,
    all_layers: Annotated[
        bool, typer.Option("--all-layers", help="Show every row (large reports are summarized by default).")
    ] = False,
    theory: Annotated[
        bool,
        typer.Option("--theory", help="Show the mean-field prediction beside each measurement and flag departures."),
    ] = False,
    weights: Annotated[
        Optional[Path],
        typer.Option("--weights", help="Load this saved state dict (e.g. from probe fix) before probing."),
    ] = None,
    plot: PlotOpt = None,
    max_memory: MaxMemoryOpt = None,
    layer_by_layer: Annotated[
        bool,
        typer.Option(
            "--layer-by-layer",
            help="Build and probe one block at a time from the meta device: memory for one block's weights "
            "and one batch, whatever the depth. Forward statistics only; model.kind: mlp or conv.",
        ),
    ] = False,
) -> None:
    """Probe one network: a per-layer table of activation and gradient statistics and a verdict.

    Exits 0 when a report was made, healthy or not (use `probe check` to gate).

    Examples: probe run configs/lab1_tiny_relu.yaml --set model.depth=20;
    probe run --model tests.models_for_tests:awkward --input-shape 3,8,8
    """

    def body() -> int:
        overrides = {**_pairs(set_, "", "--set"), **_pairs(gate, "gate", "--gate")}
        spec = _load_spec(spec_path, overrides, model, model_arg, input_shape, inputs)
        from probe import report as rp  # after the spec: bad input fails without loading these
        from probe.advice import advise
        from probe.rules import evaluate
        from probe.run import run_probe

        if layer_by_layer:
            from probe.layerwise import check_applies

            check_applies(spec, weights=weights is not None)
            if plot is not None:
                raise SpecError("--plot needs the whole network's weights at once; drop it with --layer-by-layer")
        _memory_guard([spec], max_memory, layerwise=layer_by_layer, offer_layerwise=not layer_by_layer)
        _load_torch()
        if plot is not None:
            _check_plot(plot)
        state = None
        if weights is not None:
            from probe.fix import load_weights

            state = load_weights(weights)
        with _batch_progress(spec.data.batches) as progress:
            if layer_by_layer:
                from probe.layerwise import return_large_allocations_to_the_os, run_layerwise

                return_large_allocations_to_the_os()  # this process is ours: freed blocks go back to the OS
                result = run_layerwise(spec, progress)
            else:
                result = run_probe(spec, progress, state_dict=state)
        verdict = evaluate(result)
        if theory:  # the prediction is per layer of the whole network: --layers does not apply
            code = _run_theory(result, verdict, fmt, output, weights is not None)
            _plot_run(spec, result, verdict, plot, state)
            return code
        if layers is not None:
            result = rp.select_layers(result, layers)
        advice = advise(spec, verdict)

        def table() -> Any:
            from rich.console import Group

            from probe.views import advice_renderable

            parts = [rp.run_renderable(result, verdict, None if all_layers else rp.SUMMARY_ROWS)]
            if advice.mismatch or advice.suggestion:
                parts.append(advice_renderable(advice))
            return Group(*parts)

        def html() -> str:
            from probe.html import run_page

            return run_page(result, verdict, advice.lines() if advice.mismatch or advice.suggestion else [])

        _render(
            fmt,
            output,
            table=table,
            json=lambda: rp.dumps({**rp.report_dict(result, verdict), "advice": advice.to_dict()}),
            csv=lambda: rp.layers_csv([rp.Run(spec.name, result, verdict)]),
            markdown=lambda: rp.run_markdown(result, verdict),
            html=html,
        )
        _plot_run(spec, result, verdict, plot, state)
        return EXIT_OK

    _guard(body)


def _plot_run(spec: Any, result: Any, verdict: Any, plot: Path | None, state: Any = None) -> None:
    if plot is None:
        return
    from probe import report as rp
    from probe.histograms import histograms
    from probe.plot import runs_figure

    hist = histograms(spec, state_dict=state, only={x.name for x in result.layers})
    _wrote(runs_figure([rp.Run(spec.name, result, verdict)], plot, [hist]))


def _run_theory(result: Any, verdict: Any, fmt: Format, output: Path | None, loaded: bool) -> int:
    """``probe run --theory``: the measurement beside the mean-field prediction."""
    from probe import report as rp
    from probe import report_theory as rt
    from probe import theory as th

    if fmt is Format.html:
        raise SpecError("--theory does not support --format html yet; use table, json, csv or markdown")
    prediction = th.predict(result.spec)
    if loaded and prediction.available:
        prediction = th.Prediction(reason="no prediction for loaded weights: they need not follow the spec's init")
    comparisons = th.compare(result, prediction)

    def rows() -> str:
        table_rows = th.annotate(rp.report_dict(result, verdict), prediction, comparisons)["layers"]
        columns = list(dict.fromkeys(k for row in table_rows for k in row))  # a row may lack init_rule (no weight)
        return rp.csv_text(table_rows, columns)

    _render(
        fmt,
        output,
        table=lambda: rt.theory_renderable(result, verdict, prediction, comparisons),
        json=lambda: rp.dumps(th.annotate(rp.report_dict(result, verdict), prediction, comparisons)),
        csv=rows,
        markdown=lambda: rt.theory_markdown(result, verdict, prediction, comparisons),
    )
    return EXIT_OK


@app.command(cls=_Command)
def compare(
    entries: Annotated[
        list[str],
        typer.Argument(
            metavar="STRATEGY[:ACTIVATION]...",
            help="Init strategies to compare, each optionally with an activation, e.g. tiny:relu xavier:tanh.",
        ),
    ],
    config: Annotated[
        Optional[Path], typer.Option("--config", "-c", help="Base spec (default: the built-in 8-layer ReLU MLP).")
    ] = None,
    depth: Annotated[Optional[int], typer.Option(help="Override model.depth.")] = None,
    width: Annotated[Optional[int], typer.Option(help="Override model.width.")] = None,
    activation: Annotated[
        Optional[str], typer.Option(help="Override model.activation for entries without one.")
    ] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Override data.batch_size.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Override run.seed.")] = None,
    device: Annotated[Optional[str], typer.Option(help="Override run.device (auto, cpu, cuda, cuda:N, mps).")] = None,
    dtype: Annotated[
        Optional[str], typer.Option(help="Override run.dtype (float32, float64, bfloat16, float16).")
    ] = None,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
    gate: GateOpt = None,
    plot: PlotOpt = None,
    jobs: JobsOpt = 1,
    max_memory: MaxMemoryOpt = None,
) -> None:
    """Probe the same network once per init strategy, same seed, side by side.

    Example (the seed's Lab 1): probe compare tiny:relu large:tanh xavier:tanh he:relu
    """

    def body() -> int:
        from probe import batch
        from probe import spec as spec_mod

        parsed = [batch.parse_entry(e) for e in entries]
        flags = {
            "model.depth": depth,
            "model.width": width,
            "model.activation": activation,
            "data.batch_size": batch_size,
            "run.seed": seed,
            "run.device": device,
            "run.dtype": dtype,
        }
        overrides = {k: v for k, v in flags.items() if v is not None}
        overrides.update(_pairs(gate, "gate", "--gate"))
        base = spec_mod.load(config, overrides) if config else spec_mod.parse({}, overrides, "compare")
        if plot is not None:
            _check_plot(plot)
        _memory_guard([batch.entry_spec(base, e) for e in parsed], max_memory, jobs)
        _load_torch()
        from probe import report as rp  # after the input checks: bad input fails without loading it

        steps = _Steps(len(parsed), "probing")
        try:
            runs = batch.compare(base, parsed, steps, jobs)
        finally:
            steps.close()

        def html() -> str:
            from probe.html import runs_page

            return runs_page(runs, spec_mod.summary(base))

        _render(
            fmt,
            output,
            table=lambda: rp.compare_renderable(runs, spec_mod.summary(base)),
            json=lambda: rp.runs_json(runs),
            csv=lambda: rp.compare_csv(runs),
            markdown=lambda: rp.compare_markdown(runs),
            html=html,
        )
        if plot is not None:
            from probe.histograms import histograms
            from probe.plot import runs_figure

            hists = [histograms(batch.entry_spec(base, e), e.text) for e in parsed]
            _wrote(runs_figure(runs, plot, hists))
        return EXIT_OK

    _guard(body)


@app.command(cls=_Command)
def check(
    spec_paths: Annotated[list[Path], typer.Argument(metavar="SPEC.yaml...", help="Specs that must be healthy.")],
    junit: Annotated[Optional[Path], typer.Option(help="Also write a JUnit XML file (one test case per spec).")] = None,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
    gate: GateOpt = None,
    set_: SetOpt = None,
    jobs: JobsOpt = 1,
    max_memory: MaxMemoryOpt = None,
) -> None:
    """The CI gate: exit 1 if any spec breaks a health rule, 0 if all are healthy, 2 on bad input.

    Prints one line per problem. Example: probe check configs/*.yaml --junit probe.xml
    """

    def body() -> int:
        from probe import batch
        from probe import spec as spec_mod

        overrides = {**_pairs(set_, "", "--set"), **_pairs(gate, "gate", "--gate")}
        _memory_guard([spec_mod.load(p, overrides) for p in spec_paths], max_memory, jobs)
        _load_torch()
        from probe import report as rp  # after the specs: bad input fails without loading it

        steps = _Steps(len(spec_paths), "checking")
        try:
            runs = batch.check(spec_paths, overrides, steps, jobs)
        finally:
            steps.close()
        if junit is not None:
            _write_atomic(junit, rp.junit_xml(runs))

        def table() -> Any:
            from rich.text import Text

            lines = rp.check_lines(runs)
            text = Text()
            for line in lines[:-1]:
                text.append(line + "\n", style="red")
            healthy = all(r.verdict.healthy for r in runs)
            text.append(lines[-1], style="bold green" if healthy else "bold red")
            return text

        def html() -> str:
            from probe.html import runs_page

            return runs_page(runs, "probe check")

        _render(
            fmt,
            output,
            table=table,
            json=lambda: rp.runs_json(runs),
            csv=lambda: rp.compare_csv(runs),
            markdown=lambda: rp.compare_markdown(runs),
            html=html,
            soft_wrap=True,
        )
        return EXIT_OK if all(r.verdict.healthy for r in runs) else EXIT_UNHEALTHY

    _guard(body)


@app.command("fix", cls=_Command)
def fix_cmd(
    spec_path: Annotated[
        Optional[Path],
        typer.Argument(metavar="[SPEC.yaml]", help="The spec whose init to fix; optional with --model."),
    ] = None,
    save: Annotated[
        Optional[Path],
        typer.Option("--save", help="Write the fixed state dict here (torch.save of model.state_dict())."),
    ] = None,
    start: Annotated[
        Optional[str], typer.Option("--start", help="Init drawn before rescaling (default: orthogonal).")
    ] = None,
    tolerance: Annotated[float, typer.Option(help="Accept a layer when |output variance - 1| is below this.")] = 0.1,
    max_iter: Annotated[int, typer.Option("--max-iter", help="Rescaling passes per layer at most.")] = 10,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
    gate: GateOpt = None,
    set_: SetOpt = None,
    model: ModelOpt = None,
    model_arg: ModelArgOpt = None,
    input_shape: InputShapeOpt = None,
    inputs: InputsOpt = None,
) -> None:
    """LSUV: rescale each layer to unit output variance, then probe before and after side by side.

    Exits 0 when the fixed network is healthy, 1 when it still breaks a rule.

    Examples: probe fix configs/lab1_tiny_relu.yaml --save fixed.pt;
    probe fix --model tests.models_for_tests:deep_tanh_mlp --input-shape 16
    """

    def body() -> int:
        from probe import fix
        from probe import report as rp
        from probe import report_theory as rt

        overrides = {**_pairs(set_, "", "--set"), **_pairs(gate, "gate", "--gate")}
        spec = _load_spec(spec_path, overrides, model, model_arg, input_shape, inputs)
        _load_torch()
        fixed = fix.fix(spec, start, tolerance, max_iter)
        if save is not None:
            fix.save_weights(fixed.state_dict, save)
        saved = str(save) if save is not None else None
        scales = rt.scale_rows(fixed)
        _render(
            fmt,
            output,
            table=lambda: rt.fix_renderable(fixed, saved),
            json=lambda: rp.dumps(rt.fix_dict(fixed, saved)),
            csv=lambda: rp.csv_text(scales, list(scales[0])),
            markdown=lambda: rp.compare_markdown(rt.fix_runs(fixed)),
        )
        return EXIT_OK if fixed.after_verdict.healthy else EXIT_UNHEALTHY

    _guard(body)


@app.command("depth", cls=_Command)
def depth_cmd(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC.yaml", help="The spec (activation, widths, gate).")],
    strategy: Annotated[
        Optional[list[str]],
        typer.Option("--strategy", help="Strategies to compare with the spec's own (default: every i.i.d. one)."),
    ] = None,
    max_depth: Annotated[int, typer.Option("--max-depth", min=2, help="Deepest network considered.")] = 500,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
    gate: GateOpt = None,
    set_: SetOpt = None,
) -> None:
    """Mean-field depth limits: where the signal or the gradient crosses the gate, per strategy;
    and for tanh/sigmoid the edge of chaos (chi = 1).

    Example: probe depth configs/lab1_xavier_tanh.yaml
    """

    def body() -> int:
        from probe import depth
        from probe import report as rp
        from probe import report_theory as rt
        from probe import spec as spec_mod

        overrides = {**_pairs(set_, "", "--set"), **_pairs(gate, "gate", "--gate")}
        spec = spec_mod.load(spec_path, overrides)
        for name in strategy or []:
            spec_mod.parse({"init": {"weight": name}})  # unknown names fail before the analysis
        result = depth.analyze(spec, strategy, max_depth)
        rows = rt.depth_rows(result)
        cells = [[rp.fmt(v) if not isinstance(v, str) else v for v in r.values()] for r in rows]
        _render(
            fmt,
            output,
            table=lambda: rt.depth_renderable(result),
            json=lambda: rp.dumps(rt.depth_dict(result)),
            csv=lambda: rp.csv_text(rows, list(rows[0])),
            markdown=lambda: rp.md_table(list(rows[0]), cells),
        )
        return EXIT_OK

    _guard(body)


@app.command("rules", cls=_Command)
def rules_cmd() -> None:
    """List the health rules, their gate thresholds and defaults."""
    from rich.table import Table

    from probe.rules import RULES
    from probe.spec import GATE_PARAMS

    table = Table(show_edge=False, header_style="bold", pad_edge=False)
    for col in ("rule", "gate key", "default", "meaning"):
        table.add_column(col)
    for rule in RULES.values():
        for i, key in enumerate(rule.thresholds):
            p = GATE_PARAMS[key]
            table.add_row(rule.name if i == 0 else "", key, f"{p.default:g}", p.help.split(": ", 1)[-1])
    _show(table, None)


# ---- the seeds' experiments: train, sweep, inspect, advise (issue 4) -------------------------

EntriesArg = Annotated[
    list[str],
    typer.Argument(
        metavar="STRATEGY[:ACTIVATION]...",
        help="Init strategies, each optionally with an activation, e.g. he xavier:tanh.",
    ),
]
ConfigOpt = Annotated[
    Optional[Path], typer.Option("--config", "-c", help="Base spec (default: see the command's help).")
]


class Optimizer(str, Enum):
    adam = "adam"
    sgd = "sgd"


@app.command(cls=_Command)
def train(
    entries: EntriesArg,
    config: ConfigOpt = None,
    optimizer: Annotated[Optimizer, typer.Option(help="Optimizer.", case_sensitive=False)] = Optimizer.adam,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 0.01,
    steps: Annotated[int, typer.Option(help="Full-batch training steps.")] = 120,
    samples: Annotated[int, typer.Option(help="Two-moons samples (train + validation).")] = 600,
    noise: Annotated[float, typer.Option(help="Std of the Gaussian noise on the moons.")] = 0.22,
    seed: Annotated[int, typer.Option(help="Seed of the data, the split and the weights.")] = 9,
    activation: Annotated[
        Optional[str], typer.Option(help="Override model.activation for entries without one.")
    ] = None,
    set_: SetOpt = None,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
    plot: PlotOpt = None,
) -> None:
    """Train the same network briefly once per init strategy (the seed's Lab 2, two moons).

    Reports start loss, end loss, validation accuracy and a loss curve; flags `stuck` (the loss
    does not improve) and `warning start` (start loss far above ln 2). The default network is the
    seed's 2 -> 64 -> 64 -> 2 ReLU MLP; --config trains any spec (its input/output sizes are set to 2).

    Example: probe train default zeros tiny large xavier he
    """

    def body() -> int:
        from probe import spec as spec_mod
        from probe import train as tr
        from probe import views

        overrides = _pairs(set_, "", "--set")
        if activation is not None:
            overrides["model.activation"] = activation
        base = (
            spec_mod.load(config, overrides)
            if config
            else spec_mod.parse(spec_mod.to_dict(tr.lab2_spec()), overrides, "lab2")
        )
        settings = tr.TrainSettings(samples, noise, 0.25, optimizer.value, lr, steps, seed)
        settings.check()
        _load_torch()
        if plot is not None:
            _check_plot(plot)
        progress = _Steps(len(entries), "training")
        try:
            results = tr.train_many(base, entries, settings, progress)
        finally:
            progress.close()
        network = views.train_network_line(tr.train_spec(base, base.init.weight.name))

        def html() -> str:
            from probe.html import train_page

            return train_page(results, views.train_settings_line(settings), network)

        _render(
            fmt,
            output,
            table=lambda: views.train_renderable(results, settings, network),
            json=lambda: views.train_json(results, settings),
            csv=lambda: views.train_csv(results),
            markdown=lambda: views.train_markdown(results),
            html=html,
        )
        if plot is not None:
            from probe.plot import train_figure

            _wrote(train_figure(results, plot))
        return EXIT_OK

    _guard(body)


@app.command(cls=_Command)
def sweep(
    entries: EntriesArg,
    depth: Annotated[
        Optional[str], typer.Option(metavar="D1,D2,...", help="Depths to sweep, e.g. 4,8,16,32,64.")
    ] = None,
    width: Annotated[
        Optional[str], typer.Option(metavar="W1,W2,...", help="Widths to sweep, e.g. 64,128,256,512.")
    ] = None,
    config: ConfigOpt = None,
    activation: Annotated[
        Optional[str], typer.Option(help="Override model.activation for entries without one.")
    ] = None,
    set_: SetOpt = None,
    gate: GateOpt = None,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
    plot: PlotOpt = None,
    jobs: JobsOpt = 1,
    max_memory: MaxMemoryOpt = None,
) -> None:
    """Probe a grid of depths and/or widths for each init strategy.

    A depth sweep names, per strategy, the first depth that breaks a health rule; a width sweep
    reports each layer's log-log slope of activation std against width (a muP-style coordinate
    check: near 0 means the scale does not drift with width).

    Example: probe sweep --depth 4,8,16,32,64 tiny xavier he
    """

    def body() -> int:
        from probe import spec as spec_mod
        from probe import sweep as sw
        from probe import views

        depths = sw.parse_ints(depth, "--depth") if depth else None
        widths = sw.parse_ints(width, "--width") if width else None
        if depths is None and widths is None:
            raise SpecError("give --depth D1,D2,... and/or --width W1,W2,...")
        overrides = {**_pairs(set_, "", "--set"), **_pairs(gate, "gate", "--gate")}
        if activation is not None:
            overrides["model.activation"] = activation
        base = spec_mod.load(config, overrides) if config else spec_mod.parse({}, overrides, "sweep")
        if plot is not None:
            _check_plot(plot)
        _memory_guard(sw.grid(base, entries, depths, widths), max_memory, jobs)
        _load_torch()
        total = len(entries) * len(depths or (1,)) * len(widths or (1,))
        progress = _Steps(total, "probing")
        try:
            result = sw.sweep(base, entries, depths, widths, progress, jobs)
        finally:
            progress.close()

        def html() -> str:
            from probe.html import sweep_page

            notes = (views.first_failing_lines(result) if len(result.depths) > 1 else []) + views.slope_lines(result)
            return sweep_page(result, spec_mod.summary(base), notes)

        _render(
            fmt,
            output,
            table=lambda: views.sweep_renderable(result, spec_mod.summary(base)),
            json=lambda: views.sweep_json(result),
            csv=lambda: views.sweep_csv(result),
            markdown=lambda: views.sweep_markdown(result),
            html=html,
        )
        if plot is not None:
            from probe.plot import sweep_figure

            _wrote(sweep_figure(result, plot))
        return EXIT_OK

    _guard(body)


@app.command(cls=_Command)
def inspect(
    spec_path: Annotated[
        Optional[Path],
        typer.Argument(metavar="[SPEC.yaml]", help="The spec whose network to inspect; optional with --model."),
    ] = None,
    set_: SetOpt = None,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
    model: ModelOpt = None,
    model_arg: ModelArgOpt = None,
    input_shape: InputShapeOpt = None,
    inputs: InputsOpt = None,
) -> None:
    """Per parameter: shape, fan_in, fan_out, mean, std and the std its init rule should give.

    Exits 1 if a parameter differs from its rule. Also shows a forward-only pass of activation scales.

    Examples: probe inspect configs/lab1_he_relu.yaml;
    probe inspect --model tests.models_for_tests:awkward --input-shape 3,8,8
    """

    def body() -> int:
        from probe import spec as spec_mod
        from probe import views
        from probe.inspect_params import inspect as inspect_spec

        spec = _load_spec(spec_path, _pairs(set_, "", "--set"), model, model_arg, input_shape, inputs)
        ins = inspect_spec(spec)

        def html() -> str:
            from probe.html import inspect_page

            return inspect_page(ins, spec_mod.summary(spec))

        _render(
            fmt,
            output,
            table=lambda: views.inspect_renderable(ins, spec_mod.summary(spec)),
            json=lambda: views.inspect_json(ins),
            csv=lambda: views.inspect_csv(ins),
            markdown=lambda: views.inspect_markdown(ins),
            html=html,
        )
        return EXIT_UNHEALTHY if ins.mismatches else EXIT_OK

    _guard(body)


@app.command(cls=_Command)
def advise(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC.yaml", help="The spec to advise on.")],
    set_: SetOpt = None,
    probe_run: Annotated[
        bool, typer.Option("--run/--no-run", help="Also probe the network and suggest a fix if it fails.")
    ] = True,
) -> None:
    """Does the init fit the activation? Init advice alone, with a fix to try if the probe fails.

    Prints a `mismatch` note naming the better init and its gain (torch.nn.init.calculate_gain)
    when the spec's init does not fit its activation, and a one-line suggestion when it fails.

    Exits 0 (advice is never a failure; use `probe check` to gate). Example: probe advise configs/lab1_tiny_relu.yaml
    """

    def body() -> int:
        from probe import spec as spec_mod
        from probe import views
        from probe.advice import advise as advise_spec

        spec = spec_mod.load(spec_path, _pairs(set_, "", "--set"))
        verdict = None
        if probe_run:
            from probe.rules import evaluate
            from probe.run import run_probe

            verdict = evaluate(run_probe(spec))
        _show(views.advice_renderable(advise_spec(spec, verdict)), None, soft_wrap=True)
        return EXIT_OK

    _guard(body)


def entry() -> None:
    """Console-script entry point (``probe`` and ``python -m probe``): this process is the CLI's
    own, so it may freeze the garbage collector's view of torch (``_load_torch``)."""
    global _OWN_PROCESS
    _OWN_PROCESS = True
    app()
