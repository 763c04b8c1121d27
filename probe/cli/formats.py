"""Writing a command's result: the chosen format to stdout or a file, tables fitted to the
terminal (render/writers.py), and the checks on output paths made before any probe runs."""

import os
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"
    html = "html"


def writes_files() -> bool:
    """Whether this process prints and writes files: a single process, or rank 0 under torchrun
    (the session's ``writer``, which the guard sets)."""
    from probe.cli.session import current

    return current().writer


def _err_console(always: bool = False) -> Any:
    """stderr console; quiet on the ranks of a torchrun launch other than rank 0 (``always``: errors)."""
    from rich.console import Console

    quiet = not always and not writes_files()
    return Console(stderr=True, highlight=False, emoji=False, quiet=quiet)  # messages quote user input verbatim


def _emit(text: str, output: Path | None) -> None:
    from probe.render.output import is_stdout

    if output is None or is_stdout(output):
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    write_output(output, text)
    _err_console().print(f"wrote {output}", style="dim")


def write_output(path: Path, text: str, option: str = "--output") -> None:
    """The one way a command writes a file (-o, --junit): ``probe.render.output``'s writer (atomic
    replace with the umask or old mode, devices and FIFOs written through, links followed)."""
    if not writes_files():  # torchrun: rank 0 writes
        return
    from probe.render.output import write_text

    write_text(path, text, option)


def check_output_path(path: Path | None, option: str) -> None:
    """Fail on an output file that cannot be written (a folder, a missing or read-only folder)
    before any probe runs (exit 2, naming the option); ``-`` is stdout."""
    from probe.render.output import check_output_path as check

    check(path, option)


def terminal_width() -> int | None:
    """The width tables must fit: the terminal's (or COLUMNS); ``None`` off a terminal without
    COLUMNS (pipes, CI logs): then every table keeps its natural width."""
    from rich.console import Console

    console = Console()
    return console.width if console.is_terminal or "COLUMNS" in os.environ else None


def print_doc(document: Any) -> None:
    """A ``Doc`` on stdout, fitted to the terminal (render/writers.py)."""
    from rich.console import Console

    from probe.render.writers import rich_renderable

    renderable, width = rich_renderable(document, terminal_width())
    Console(highlight=False, width=width).print(renderable)


def show(document: Any, output: Path | None) -> None:
    """A ``Doc`` as the table format: on stdout, or as plain text to ``output``."""
    if output is None:
        print_doc(document)
        return
    from probe.render.writers import plain_text

    _emit(plain_text(document), output)


def render(
    fmt: Format,
    output: Path | None,
    document: Callable[[], Any],
    *,
    json: Callable[[], str] | None = None,
    csv: Callable[[], str] | None = None,
    markdown: Callable[[], str] | None = None,
    html: Callable[[], str] | None = None,
) -> None:
    """Write one result in the chosen format. ``document`` makes the command's ``Doc``, which
    the generic writers turn into every format; a command passes its own writer for a format
    only where it keeps an established one (``probe.report/1`` JSON, the HTML pages, ...)."""
    if fmt is Format.table:
        show(document(), output)
        return
    from probe.render import writers

    own = {Format.json: json, Format.csv: csv, Format.markdown: markdown, Format.html: html}[fmt]
    generic = {
        Format.json: writers.json_text,
        Format.csv: writers.csv_text,
        Format.markdown: writers.markdown,
        Format.html: writers.html_page,
    }[fmt]
    _emit(own() if own is not None else generic(document()), output)


def check_outputs(output: Path | None = None, plot: Path | None = None, junit: Path | None = None) -> None:
    """Check every file a command will write before the probe runs: exit 2 naming the option."""
    check_output_path(output, "--output")
    check_output_path(junit, "--junit")
    if plot is not None:  # the folder, the image format, then matplotlib itself
        from probe.render.plot import _pyplot, check_path

        check_output_path(plot, "--plot")
        check_path(plot)
        _pyplot()


def wrote(path: Path) -> None:
    """Say on stderr that a file was written."""
    _err_console().print(f"wrote {path}", style="dim")
