"""The error guard of every command: expected errors become one red line and an exit code.

Exit codes: 0 a report was made (``check``: every spec healthy), 1 ``check`` found a broken rule,
2 bad input, 3 runtime failure (device unavailable, out of memory, a failing forward pass, user
code raising ``SystemExit`` or another ``BaseException``), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM while worker processes ran: they are ended too).
"""

# No `from __future__ import annotations`: typer reads the annotations of checked_path's callback.
import os
import sys
from collections.abc import Callable
from contextlib import redirect_stdout
from functools import partial
from pathlib import Path
from typing import Any, Optional

import typer

from probe.cli.formats import _err_console
from probe.cli.session import Session, current
from probe.errors import (
    Interrupted,
    ProbeError,
    SpecError,
    Terminated,
    exit_code_of,
    is_probes_own,
    shown,
    user_code_error,
)

EXIT_RUNTIME = 3


def err_line(text: str) -> None:
    """One red line on stderr, user text verbatim."""
    _err_console(always=True).print(text, style="red", markup=False, soft_wrap=True)


def checked_path(option: str) -> Callable[[Optional[Path]], Optional[Path]]:
    """A typer callback refusing an unwritable output path while the command line is parsed,
    before any work is done (exit 2, naming ``option``)."""

    def callback(value: Optional[Path]) -> Optional[Path]:
        if value is not None:
            from probe.render.output import check_output_path

            try:
                check_output_path(value, option)
            except SpecError as exc:
                raise typer.BadParameter(str(exc).removeprefix(f"{option}: ")) from None
        return value

    return callback


EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report a process ended by SIGINT
EXIT_TERMINATED = 143  # SIGTERM while workers ran (they are ended too), as shells report it


def _on_sigint(signum: int, frame: Any) -> None:
    raise Interrupted  # a real Ctrl-C, not a KeyboardInterrupt raised by user code


def guard(fn: Callable[[], int]) -> None:
    """Run a command body; turn expected errors into one red line and an exit code. Under
    torchrun, rank 0 alone prints and writes files; every rank reports its own errors."""
    import signal

    from probe.api import rank, threads_fixed, writes_output

    session = current()
    session.writer = writes_output()
    try:
        previous = signal.signal(signal.SIGINT, _on_sigint)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    where = "" if session.writer else f" (rank {rank()})"
    try:
        with threads_fixed(session.threads):
            if session.writer:
                code = _guarded(fn, session, where)
            else:
                with open(os.devnull, "w") as devnull, redirect_stdout(devnull):
                    code = _guarded(fn, session, where)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    raise typer.Exit(code)


def _guarded(fn: Callable[[], int], session: Session, where: str = "") -> int:
    try:
        return fn()
    except ProbeError as exc:
        if not is_probes_own(exc):  # a subclass from the code probe ran: its exit_code is not probe's
            return _guarded(partial(_reraise, user_code_error(exc, "the code probe ran")), session, where)
        if session.debug:
            raise
        # one line, or one per mistake (a spec's mistakes are reported together); each line escaped
        text = "\n".join(shown(line, 2000) for line in str(exc).splitlines()[:50])
        _err_console(always=True).print(f"probe: error{where}: {text}", style="red", markup=False, soft_wrap=True)
        return exit_code_of(exc)  # from probe's class: never an attribute the code probe ran set
    except KeyboardInterrupt as exc:
        if not isinstance(exc, Interrupted):  # raised by code probe ran, not by the user's Ctrl-C
            return _guarded(partial(_reraise, user_code_error(exc, "the code probe ran")), session, where)
        terminated = isinstance(exc, Terminated)
        _err_console(always=True).print("probe: terminated" if terminated else "probe: interrupted", style="red")
        if terminated:
            return EXIT_TERMINATED
        if session.own_process:
            # a Ctrl-C may land inside torch's import: finalizing a half-initialized torch can abort
            # the interpreter (SIGABRT and a stack dump). The process is ours: end it now.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    except SystemExit as exc:  # user code calling sys.exit() must not end probe with its code
        return _guarded(partial(_reraise, user_code_error(exc, "the code probe ran")), session, where)
    except Exception as exc:  # a bug, not user error: say so and keep the exit code distinct from 1/2
        if session.debug:
            raise
        _err_console(always=True).print(
            f"probe: unexpected error{where}: {type(exc).__name__}: {shown(str(exc), 500)} "
            "(rerun with --debug for the traceback)",
            style="red",
            markup=False,
        )
        return EXIT_RUNTIME


def _reraise(exc: BaseException) -> int:
    raise exc
