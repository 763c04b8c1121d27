"""The command line: parse -> call the API -> render -> exit code. The only module using typer.

Exit codes: 0 a report was made (``check``: every spec healthy), 1 ``check`` found a broken rule,
2 bad input, 3 runtime failure (device unavailable, out of memory, a failing forward pass), 130
interrupted (Ctrl-C). The guard that maps errors to them lives in ``guard.py``.
"""

# No `from __future__ import annotations` here: typer would evaluate every annotation string of
# every command on each start (~13 ms); evaluated once at import they cost ~1 ms.
import os
import sys
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from probe import __version__
from probe.cli.guard import _err_console, _state, checked_path, err_line, guard, writes_files  # noqa: F401  (re-exported)
from probe.errors import SpecError, echo

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


class Command(TyperCommand):
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
        "Exit codes: 0 report made / healthy, 1 check found a problem, 2 bad input, 3 runtime failure, "
        "130 interrupted (Ctrl-C)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"probe {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    threads: Annotated[
        Optional[int],
        typer.Option(
            "--threads",
            min=1,
            help="Intra-op threads of every run (default: 1 for small work, else torch's count, which "
            "honours OMP_NUM_THREADS). Give it before the command: probe --threads 2 run ...",
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Probe the forward signal and backward gradient of a network at initialization."""
    if debug:
        _state["debug"] = True
    if threads is not None:
        from probe.measure.scale import set_threads

        set_threads(threads)


# ---- shared options --------------------------------------------------------------------------

FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="Output format.", case_sensitive=False)]


OutputOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--output",
        "-o",
        callback=checked_path("--output"),
        help="Write the output to this file instead of stdout ('-': stdout; a regular file is replaced atomically).",
    ),
]
GateOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--gate", "-g", metavar="KEY=VALUE", help="Override a gate threshold, e.g. --gate min_std=1e-3 (repeatable)."
    ),
]
PlotOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--plot",
        metavar="PATH",
        callback=checked_path("--plot"),
        help="Also draw a picture to PATH (.png, .svg or .pdf; needs probe[plot]).",
    ),
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
        help="Refuse (exit 3) any run whose estimated peak memory exceeds this many GiB (default: the memory "
        "available now; inf: no limit).",
    ),
]

# -- issue 13: TensorBoard export --
TensorboardOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--tensorboard",
        metavar="DIR",
        help="Also write TensorBoard event files to DIR, one folder per run (needs probe[tensorboard]).",
    ),
]


def check_tensorboard(path: Path) -> None:
    """Fail on a bad --tensorboard folder or a missing tensorboard before any work is done."""
    from probe.render.tensorboard import check_dir

    check_dir(path)


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


def memory_guard(
    specs: list[Any], max_memory: float | None, jobs: int = 1, *, layerwise: bool = False, offer_layerwise: bool = False
) -> None:
    """Print the estimate of large runs and refuse those over --max-memory, before any run."""
    if max_memory is not None and max_memory != max_memory:  # NaN passes typer's min=0 check
        raise SpecError("expected a number of GiB (inf: no limit), got nan", "--max-memory")
    from probe.measure.scale import guard_memory

    for line in guard_memory(specs, max_memory, jobs, layerwise=layerwise, offer_layerwise=offer_layerwise):
        _err_console().print(line, style="dim", markup=False)


OWN_PROCESS = False  # set by entry(): the process is the command's own


def load_torch() -> None:
    """Import torch now (input has been checked), then move every object alive to the garbage
    collector's permanent generation (``gc.freeze``). torch leaves ~165k long-lived objects, and
    the first full collection after its import walks them all: ~0.1 s, a third of what
    `probe compare` spends beyond importing torch. Frozen, later collections skip them. Done by
    the CLI's own process only (``entry``), which is short-lived and also exits faster for it;
    from Python (a notebook, ``CliRunner``), probe leaves the collector alone."""
    import torch  # noqa: F401

    if OWN_PROCESS:
        import gc

        gc.freeze()


def pairs(items: list[str] | None, prefix: str, option: str) -> dict[str, Any]:
    """``["min_std=1e-3"]`` -> ``{"gate.min_std": 0.001}``; values are read as YAML scalars."""
    if not items:
        return {}  # without importing yaml
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SpecError(f"{option} expects KEY=VALUE, got {echo(item)}")
        if prefix:
            key = f"{prefix}.{key}"
        elif "." not in key and key != "name":
            raise SpecError(f"{option} expects SECTION.KEY=VALUE (e.g. model.depth=20), got {echo(item)}")
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
        out["model.kwargs"] = {k.partition(".")[2]: v for k, v in pairs(model_args, "kwargs", "--model-arg").items()}
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


def load_spec(
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
    from probe.render.output import is_stdout

    if output is None or is_stdout(output):
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    write_atomic(output, text)
    _err_console().print(f"wrote {output}", style="dim")


def write_atomic(path: Path, text: str, option: str = "--output") -> None:
    """Write ``text`` to ``path`` through the one output writer (``probe.render.output``)."""
    if not writes_files():  # torchrun: rank 0 writes
        return
    from probe.render.output import write_text

    write_text(path, text, option)


def _render_text(renderable: Any) -> str:
    """A rich renderable as plain text (for --output with the table format)."""
    from rich.console import Console

    console = Console(record=True, width=120, file=open(os.devnull, "w"), color_system=None)  # noqa: SIM115
    console.print(renderable)
    return console.export_text()


def show(renderable: Any, output: Path | None, soft_wrap: bool = False) -> None:
    if output is not None and str(output) != "-":
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


def render(
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
        show(table(), output, soft_wrap=soft_wrap)
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


class Steps:
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
def batch_progress(total: int) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on stderr for runs of several batches (only on a terminal)."""
    console = _err_console()
    if total < 2 or not console.is_terminal:
        yield None
        return
    from rich.progress import Progress

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("probing batches", total=total)
        yield lambda done, _total: bar.update(task, completed=done)


def check_plot(path: Path) -> None:
    """Fail on a bad --plot path or a missing matplotlib before any work is done."""
    from probe.render.plot import _pyplot, check_path

    check_path(path)
    _pyplot()


def wrote(path: Path) -> None:
    _err_console().print(f"wrote {path}", style="dim")


# ---- commands --------------------------------------------------------------------------------
