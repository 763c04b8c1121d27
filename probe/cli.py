"""The command line: parse -> call the API -> render -> exit code. The only module using typer.

Exit codes: 0 a report was made (``check``: every spec healthy), 1 ``check`` found a broken rule,
2 bad input, 3 runtime failure (device unavailable, out of memory, a failing forward pass).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from probe import __version__
from probe.errors import ProbeError, SpecError

EXIT_OK, EXIT_UNHEALTHY, EXIT_BAD_INPUT, EXIT_RUNTIME = 0, 1, 2, 3


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"


app = typer.Typer(
    name="probe",
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


def _memory_guard(specs: list[Any], max_memory: float | None, jobs: int = 1) -> None:
    """Print the estimate of large runs and refuse those over --max-memory, before any run."""
    from probe.scale import guard_memory

    for line in guard_memory(specs, max_memory, jobs):
        _err_console().print(line, style="dim", markup=False)


def _err_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _pairs(items: list[str] | None, prefix: str, option: str) -> dict[str, Any]:
    """``["min_std=1e-3"]`` -> ``{"gate.min_std": 0.001}``; values are read as YAML scalars."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
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


# ---- commands --------------------------------------------------------------------------------


@app.command()
def run(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC.yaml", help="The spec to probe (see configs/).")],
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
    gate: GateOpt = None,
    set_: SetOpt = None,
    max_memory: MaxMemoryOpt = None,
) -> None:
    """Probe one network: a per-layer table of activation and gradient statistics and a verdict.

    Exits 0 when a report was made, healthy or not (use `probe check` to gate).

    Example: probe run configs/lab1_tiny_relu.yaml --set model.depth=20
    """

    def body() -> int:
        from probe import report as rp
        from probe import spec as spec_mod
        from probe.rules import evaluate
        from probe.run import run_probe

        overrides = {**_pairs(set_, "", "--set"), **_pairs(gate, "gate", "--gate")}
        spec = spec_mod.load(spec_path, overrides)
        _memory_guard([spec], max_memory)
        result = run_probe(spec)
        verdict = evaluate(result)
        if fmt is Format.table:
            _show(rp.run_renderable(result, verdict), output)
        elif fmt is Format.json:
            _emit(rp.run_json(result, verdict), output)
        elif fmt is Format.csv:
            _emit(rp.layers_csv([rp.Run(spec.name, result, verdict)]), output)
        else:
            _emit(rp.run_markdown(result, verdict), output)
        return EXIT_OK

    _guard(body)


@app.command()
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
    jobs: JobsOpt = 1,
    max_memory: MaxMemoryOpt = None,
) -> None:
    """Probe the same network once per init strategy, same seed, side by side.

    Example (the seed's Lab 1): probe compare tiny:relu large:tanh xavier:tanh he:relu
    """

    def body() -> int:
        from probe import batch
        from probe import report as rp
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
        _memory_guard([batch.entry_spec(base, e) for e in parsed], max_memory, jobs)
        steps = _Steps(len(parsed), "probing")
        try:
            runs = batch.compare(base, parsed, steps, jobs)
        finally:
            steps.close()
        if fmt is Format.table:
            _show(rp.compare_renderable(runs, spec_mod.summary(base)), output)
        elif fmt is Format.json:
            _emit(rp.runs_json(runs), output)
        elif fmt is Format.csv:
            _emit(rp.compare_csv(runs), output)
        else:
            _emit(rp.compare_markdown(runs), output)
        return EXIT_OK

    _guard(body)


@app.command()
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
        from probe import report as rp

        overrides = {**_pairs(set_, "", "--set"), **_pairs(gate, "gate", "--gate")}
        from probe import spec as spec_mod

        _memory_guard([spec_mod.load(p, overrides) for p in spec_paths], max_memory, jobs)
        steps = _Steps(len(spec_paths), "checking")
        try:
            runs = batch.check(spec_paths, overrides, steps, jobs)
        finally:
            steps.close()
        if junit is not None:
            _write_atomic(junit, rp.junit_xml(runs))
        if fmt is Format.table:
            from rich.text import Text

            text = Text()
            for line in rp.check_lines(runs)[:-1]:
                text.append(line + "\n", style="red")
            summary = rp.check_lines(runs)[-1]
            healthy = all(r.verdict.healthy for r in runs)
            text.append(summary, style="bold green" if healthy else "bold red")
            _show(text, output, soft_wrap=True)
        elif fmt is Format.json:
            _emit(rp.runs_json(runs), output)
        elif fmt is Format.csv:
            _emit(rp.compare_csv(runs), output)
        else:
            _emit(rp.compare_markdown(runs), output)
        return EXIT_OK if all(r.verdict.healthy for r in runs) else EXIT_UNHEALTHY

    _guard(body)


@app.command("rules")
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


def entry() -> None:
    """Console-script entry point."""
    app()
