"""The command line: parse -> call the API -> render -> exit code. The only module using typer.

Exit codes: 0 a report was made (``check``: every spec healthy), 1 ``check`` found a broken rule,
2 bad input, 3 runtime failure (device unavailable, out of memory, a failing forward pass), 130
interrupted (Ctrl-C). The guard that maps errors to them lives in ``guard.py``.
"""

# No `from __future__ import annotations` here: typer would evaluate every annotation string of
# every command on each start (~13 ms); evaluated once at import they cost ~1 ms.
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from probe import __version__
from probe.cli.formats import (  # noqa: F401  (the command modules import these from here)
    Format,
    _emit,
    _err_console,
    check_output_path,
    check_outputs,
    render,
    show,
    write_atomic,
    write_output,
    writes_files,
    wrote,
)
from probe.cli.guard import guard  # noqa: F401  (the command modules import guard from here)
from probe.cli.session import Session, begin, current
from probe.errors import SpecError

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
    begin(Session(debug=debug or Session().debug, own_process=current().own_process, allow_import=allowed))
    if threads is not None:
        from probe.measurement.threads import set_threads

        cores = os.cpu_count() or 1
        if threads > cores:  # more threads than cores only contend; OpenMP fails to start tens of thousands
            raise typer.BadParameter(f"at most {cores} (this machine's cores), got {threads}", param_hint="'--threads'")

        set_threads(threads)


# ---- shared options --------------------------------------------------------------------------

FormatOpt = Annotated[
    Format,
    typer.Option("--format", "-f", metavar="FORMAT", help="table, json, csv, markdown or html.", case_sensitive=False),
]
OutputOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--output", "-o", metavar="FILE", help="Write the output to this file (atomically) instead of stdout."
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
        "--plot", metavar="PATH", help="Also draw a picture to PATH (.png, .svg or .pdf; needs probe\\[plot])."
    ),
]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", metavar="N", help="Override run.seed.")]
DeviceOpt = Annotated[
    Optional[str],
    typer.Option("--device", metavar="DEVICE", help="Override run.device (auto, cpu, cuda, cuda:N, mps)."),
]
DtypeOpt = Annotated[
    Optional[str],
    typer.Option("--dtype", metavar="DTYPE", help="Override run.dtype (float32, float64, bfloat16, float16)."),
]


def run_overrides(seed: int | None, device: str | None, dtype: str | None) -> dict[str, Any]:
    """``--seed``, ``--device`` and ``--dtype`` as spec overrides (only those given)."""
    given = {"run.seed": seed, "run.device": device, "run.dtype": dtype}
    return {k: v for k, v in given.items() if v is not None}


SetOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--set", "-s", metavar="KEY=VALUE", help="Override any spec key, e.g. --set model.depth=20 (repeatable)."
    ),
]

# -- issue 6: scale options (--jobs, --max-memory) --
JobsOpt = Annotated[int, typer.Option("--jobs", "-j", min=1, help="Worker processes running probes side by side.")]
MaxMemoryOpt = Annotated[
    Optional[float],
    typer.Option(
        "--max-memory",
        metavar="GIB",
        min=0.0,
        help="Refuse (exit 3) any run whose estimated peak memory exceeds this many GiB.",
    ),
]

# -- issue 13: TensorBoard export --
TensorboardOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--tensorboard",
        metavar="DIR",
        help="Also write TensorBoard event files to DIR, one folder per run (needs probe\\[tensorboard]).",
    ),
]


def check_tensorboard(path: Path, labels: Iterable[str] = ()) -> None:
    """Fail on a bad --tensorboard folder (a file in its place or where a run's folder goes, no
    write access) or a missing tensorboard before any work is done."""
    from probe.render.tensorboard import check_dir

    check_dir(path, labels)


EntriesArg = Annotated[
    list[str],
    typer.Argument(
        metavar="STRATEGY[:ACTIVATION]...",
        help="Init strategies, each optionally with an activation, e.g. he xavier:tanh.",
    ),
]
ConfigOpt = Annotated[
    Optional[Path],
    typer.Option("--config", "-c", metavar="SPEC.yaml", help="Base spec (default: see the command's help)."),
]


def memory_guard(
    specs: list[Any],
    max_memory: float | None,
    jobs: int = 1,
    *,
    layerwise: bool = False,
    offer_layerwise: bool = False,
    later: Any = None,
) -> None:
    """Print the estimate of large runs and refuse those over --max-memory (default: the memory
    available now), before any run."""
    _check_nan(max_memory)
    from probe.measurement.memory import guard_memory

    for line in guard_memory(
        specs, max_memory, jobs, layerwise=layerwise, offer_layerwise=offer_layerwise, later=later
    ):
        _err_console().print(line, style="dim", markup=False, soft_wrap=True)


def _check_nan(max_memory: float | None) -> None:
    if max_memory is not None and max_memory != max_memory:  # NaN passes typer's min=0 check
        raise SpecError("expected a number of GiB (inf: no limit), got nan", "--max-memory")


def memory_check(spec: Any, max_memory: float | None, *, layerwise: bool = False) -> Callable[[Any], None]:
    """``memory_guard`` for a user or transformers model, made from the model the run builds (its
    factory runs once, ``probe.measurement.once``): the callback refuses or prints the estimate
    when the run has it, before its measured pass."""
    _check_nan(max_memory)

    def check(est: Any) -> None:
        from probe.measurement.once import guarded

        line = guarded(spec, est, max_memory, layerwise)
        if line is not None:
            _err_console().print(line, style="dim", markup=False, soft_wrap=True)

    return check


def isolates() -> bool:
    """Whether ``check`` and ``run`` probe in a child process (``probe.experiments.isolated``): in
    the ``probe`` command's own process, whose exit code is the gate; not from Python (a test's
    ``CliRunner``, a notebook: the user's code already shares that process) nor under torchrun
    (the ranks already share each run). POSIX only (the child's report comes on an inherited pipe)."""
    from probe.measurement.distributed import launched_world_size

    return current().own_process and launched_world_size() == 1 and os.name == "posix"


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


def pairs(items: list[str] | None, prefix: str, option: str) -> dict[str, Any]:
    """``["min_std=1e-3"]`` -> ``{"gate.min_std": 0.001}``; values are read as YAML scalars."""
    if not items:
        return {}  # without importing yaml
    from probe.spec.yaml_text import parse_scalar

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
        out[key] = parse_scalar(value) if value.strip() else None
    return out


def _model_overrides(
    model: str | None, model_args: list[str] | None, input_shape: str | None, inputs: str | None, hf: str | None = None
) -> dict[str, Any]:
    """``--model`` and friends as spec overrides (``model.import``, ``model.kwargs``, ...)."""
    out: dict[str, Any] = {}
    if model is not None and hf is not None:
        raise SpecError("give --model or --hf, not both")
    if model is not None:
        out["model.import"] = model
    if hf is not None:
        out["model.hf"] = hf
    if model_args:
        if model is None and hf is None:
            raise SpecError("--model-arg needs --model or --hf")
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
    typer.Option(
        "--model-arg", metavar="KEY=VALUE", help="A factory keyword argument or --hf config field (repeatable)."
    ),
]
HfOpt = Annotated[
    Optional[str],
    typer.Option(
        "--hf",
        metavar="TYPE_OR_PATH",
        help="Probe a transformers model built from its config (offline): a model type (llama, gpt2, bert, vit, "
        "resnet, ...) or a local config.json; needs probe\\[hf].",
    ),
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
    hf: str | None = None,
) -> Any:
    """The spec from SPEC.yaml and/or ``--model`` (or ``--hf``) and friends, with ``overrides`` applied."""
    from probe import spec as spec_mod

    overrides = {**overrides, **_model_overrides(model, model_args, input_shape, inputs, hf)}
    if spec_path is None:
        if hf is not None:
            return spec_mod.parse({}, overrides, Path(hf).stem if hf.endswith(".json") else hf)
        if model is None:
            raise SpecError("give a SPEC.yaml, --model MODULE:FACTORY or --hf TYPE_OR_PATH")
        return trusted(spec_mod.parse({}, overrides, model.rpartition(":")[2] or "model"))
    return read_spec(spec_path, overrides)


def read_spec(path: Path, overrides: dict[str, Any]) -> Any:
    """``spec.load`` with what the command line allows the spec's imports (``--allow-import``)."""
    from probe import spec as spec_mod

    return trusted(spec_mod.load(path, overrides))


def trusted(spec: Any) -> Any:
    """``spec`` with the modules ``--allow-import`` allows; the spec's own text cannot set them."""
    from dataclasses import replace

    allowed = current().allow_import
    return replace(spec, trust=replace(spec.trust, modules=allowed)) if allowed else spec
