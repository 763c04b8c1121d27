"""The command line's app and what its commands share (the spec from the command line, the lines
said before a run, the pictures, runs side by side). Each command parses (its options declared once,
in ``options.py``), calls ``probe.api``, renders and returns an exit code.

Exit codes: 0 a report was made (``check``: every spec healthy), 1 ``check`` found a broken rule,
2 bad input, 3 runtime failure (device unavailable, out of memory, a failing forward pass), 130
interrupted (Ctrl-C). The guard that maps errors to them lives in ``guard.py``.
"""

# No `from __future__ import annotations` here: typer would evaluate every annotation string of
# every command on each start (~13 ms); evaluated once at import they cost ~1 ms.
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from probe import __version__
from probe.cli.formats import _err_console
from probe.cli.session import Session, begin, current

EXIT_OK, EXIT_UNHEALTHY, EXIT_BAD_INPUT, EXIT_RUNTIME = 0, 1, 2, 3


# ---- start-up: keep pydantic off the parse path ------------------------------------------------
# typer 0.29 converts every parameter through a pydantic TypeAdapter built on first use (~0.1 s of
# imports and adapter building on each start, whatever the command line) and shows bool flags as
# `--debug <bool>`. Up to 0.28 click converts the values and pydantic is never imported. probe
# pins the tested 0.28 in pyproject.toml (`typer>=0.28,<0.29`) instead of patching typer's private
# coercion; tests/test_cli.py checks the installed typer against the pin and the import cost.


# `probe --help` groups the commands in these panels (typer's rich_help_panel), in this order
PANEL_PROBE, PANEL_EXPERIMENTS, PANEL_THEORY, PANEL_REFERENCE = "probe", "experiments", "theory and fix", "reference"
_PANELS = (PANEL_PROBE, PANEL_EXPERIMENTS, PANEL_THEORY, PANEL_REFERENCE)
_FIRST = ("run", "compare", "check")  # then each panel's commands alphabetically


# the output formats people reach for as flags: `--html out.html` is `-f html -o out.html`
_FORMAT_FLAGS = {"--html": "html", "--json": "json", "--csv": "csv", "--markdown": "markdown", "--md": "markdown"}
_OWN_MODEL_COMMANDS = ("run", "fix", "inspect")


def usage_hint(option: str, command: str | None) -> str:
    """The way to say what an unknown ``option`` of ``command`` was probably meant to do ("" if none)."""
    if option in _FORMAT_FLAGS:
        fmt = _FORMAT_FLAGS[option]
        return f"write {fmt} with -f {fmt} (to a file: -f {fmt} -o FILE)"
    if option in ("--allow-import", "--threads", "--debug"):
        value = "" if option == "--debug" else " " + {"--threads": "N"}.get(option, "MODULE")
        return f"{option} is an option of probe itself: give it before the command, probe {option}{value} {command or 'COMMAND'} ..."
    if option in ("--model", "--hf") and command not in _OWN_MODEL_COMMANDS:
        return (
            f"{command or 'this command'} works on specs; probe a model of your own with "
            f"probe run {option} ... (or put model.import / model.hf in a spec and pass the spec)"
        )
    return ""


class _Group(TyperGroup):
    """typer's group; ``probe`` with no arguments prints the help and exits 0 (click's
    ``no_args_is_help`` exits 2, as for a usage error); commands listed panel by panel."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, args or ["--help"])

    def main(  # type: ignore[override]
        self,
        args: Any = None,
        prog_name: Any = None,
        complete_var: Any = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """click's standalone handling, with a usage error as click prints it: one line that the
        terminal wraps (typer's rich panel hard-wraps it at 80 columns)."""
        call = {"args": args, "prog_name": prog_name, "complete_var": complete_var, **extra}
        if not standalone_mode:
            return super().main(**call, standalone_mode=False)
        try:
            code = super().main(**call, standalone_mode=False)
        except typer.Abort:
            typer.echo("Aborted!", err=True)
            sys.exit(1)
        except Exception as exc:  # click's ClickException: typer 0.28 vendors click and exports no name for it
            exit_code = getattr(exc, "exit_code", None)
            if not (hasattr(exc, "show") and isinstance(exit_code, int)):
                raise
            exc.show()  # type: ignore[attr-defined]
            hint = usage_hint(
                str(getattr(exc, "option_name", "") or ""), getattr(getattr(exc, "ctx", None), "info_name", "")
            )
            if hint:
                typer.echo(f"Hint: {hint}", err=True)
            sys.exit(exit_code)
        sys.exit(code if isinstance(code, int) else 0)

    def list_commands(self, ctx: Any) -> list[str]:
        def order(name: str) -> tuple[int, int, str]:
            panel = getattr(self.commands[name], "rich_help_panel", None)
            first = _FIRST.index(name) if name in _FIRST else len(_FIRST)
            return (_PANELS.index(panel) if panel in _PANELS else len(_PANELS), first, name)

        return sorted(super().list_commands(ctx), key=order)


class Command(TyperCommand):
    """typer's command (kept as probe's own name so that every command is declared alike)."""


app = typer.Typer(
    name="probe",
    cls=_Group,
    help=(
        "Signal-probe diagnostic for neural-network initialization: does the forward signal and "
        "the backward gradient survive the depth of your network, and if not, why?\n\n"
        "Exit codes: 0 report made / healthy, 1 check found a problem, 2 bad input, 3 runtime failure, "
        "130 interrupted (Ctrl-C)."
    ),
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
            metavar="N",
            help="Intra-op threads of every run (default: 1 for small work, else torch's count, which "
            "honours OMP_NUM_THREADS). Give it before the command: probe --threads 2 run ...",
        ),
    ] = None,
    allow_import: Annotated[
        Optional[list[str]],
        typer.Option(
            "--allow-import",
            metavar="MODULE",
            help="Let model.import/model.inputs name this installed module and its submodules (repeatable; "
            "also PROBE_ALLOW_IMPORT=A,B). Without it a spec may name only your project's code and model "
            "classes of torch.nn/transformers/diffusers. Give it before the command.",
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Probe the forward signal and backward gradient of a network at initialization."""
    # a fresh session for this invocation; only the process's own fact (entry's) carries over
    allowed = tuple(a.strip() for a in allow_import or () if a.strip())
    cores = os.cpu_count() or 1
    if (
        threads is not None and threads > cores
    ):  # more threads than cores only contend; OpenMP fails to start tens of thousands
        raise typer.BadParameter(f"at most {cores} (this machine's cores), got {threads}", param_hint="'--threads'")
    debug = debug or Session().debug
    begin(Session(debug=debug, own_process=current().own_process, allow_import=allowed, threads=threads))


def say(line: str) -> None:
    """A line worth printing before a run (a large run's memory estimate), dim, on stderr."""
    _err_console().print(line, style="dim", markup=False, soft_wrap=True)


def isolates() -> bool:
    """Whether ``check`` and ``run`` probe in a child process (``probe.experiments.isolated``): in
    the ``probe`` command's own process, whose exit code is the gate; not from Python (a test's
    ``CliRunner``, a notebook: the user's code already shares that process) nor under torchrun
    (the ranks already share each run). POSIX only (the child's report comes on an inherited pipe)."""
    from probe.api import world_size

    return current().own_process and world_size() == 1 and os.name == "posix"


def load_torch() -> None:
    """Import torch now (input has been checked), then move every object alive to the garbage
    collector's permanent generation (``gc.freeze``). torch leaves ~165k long-lived objects, and
    the first full collection after its import walks them all: ~0.1 s, a third of what
    `probe compare` spends beyond importing torch. Frozen, later collections skip them. Done by
    the CLI's own process only (``entry``), which is short-lived and also exits faster for it;
    from Python (a notebook, ``CliRunner``), probe leaves the collector alone."""
    import torch  # noqa: F401

    if current().own_process:
        import gc

        gc.freeze()


def spec_from(path: Optional[Path], keys: dict[str, Any], own: Any = None) -> Any:
    """The command's spec: SPEC.yaml and/or ``--model``/``--hf`` (``own``: an ``OwnModel``), with the
    command line's overrides and the modules ``--allow-import`` allows."""
    from probe import api

    given = {} if own is None else api.model_overrides(own.model, own.model_arg, own.input_shape, own.inputs, own.hf)
    return api.spec_for(path, keys, given, current().allow_import)


def base_from(path: Optional[Path], keys: dict[str, Any], name: str) -> Any:
    """The base network of compare and sweep: SPEC.yaml's, or the built-in one called ``name``."""
    from probe import api

    return api.base_spec(path, keys, name, current().allow_import)


def check_tensorboard(path: Optional[Path], labels: Any = ()) -> None:
    """Fail on a bad --tensorboard folder (a file in its place or where a run's folder goes, no
    write access) or a missing tensorboard, before any work is done."""
    if path is None:
        return
    from probe.render.tensorboard import check_dir

    check_dir(path, labels)


def draw(pictures: Any, runs: list[Any], hists: list[Any]) -> None:
    """--plot and --tensorboard of probed ``runs`` from their measured passes' histograms ``hists``;
    torchrun: rank 0 writes."""
    from probe.cli.formats import writes_files, wrote

    if not pictures.wanted or not writes_files():
        return
    if pictures.plot is not None:
        from probe.render.plot import runs_figure

        wrote(runs_figure(runs, pictures.plot, hists))
    if pictures.tensorboard is not None:
        from probe.render.tensorboard import write_runs

        for folder in write_runs(pictures.tensorboard, runs, hists):
            wrote(folder)


def render_runs(runs: list[Any], document: Any, page_title: str, out: Any) -> None:
    """Probed runs side by side (compare, check): ``document`` makes the terminal's Doc; the
    machine formats and the page are the runs' own."""
    from probe.cli.formats import render
    from probe.render import report as rp
    from probe.render.html import runs_page

    render(
        out.fmt,
        out.output,
        document,
        json=lambda: rp.runs_json(runs),
        csv=lambda: rp.compare_csv(runs),
        markdown=lambda: rp.compare_markdown(runs),
        html=lambda: runs_page(runs, page_title),
    )
