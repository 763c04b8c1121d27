"""What one CLI invocation knows about its own process: one ``Session`` object.

The options of the app (``--debug``) and the facts of the process (the console script's own
process, rank 0 under torchrun) live in one ``Session`` per invocation, which the app's callback
starts (``begin``) and the guard and the writers read (``current``). It is held in a context
variable, so it belongs to the invocation's thread and context: two invocations in one process
(``CliRunner`` tests, a notebook) each start their own, and threads do not see each other's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass
class Session:
    # --debug or PROBE_DEBUG: errors keep their traceback
    debug: bool = field(default_factory=lambda: bool(os.environ.get("PROBE_DEBUG")))
    own_process: bool = False  # the console script's process: it may freeze the GC and end at once on Ctrl-C
    writer: bool = True  # prints and writes files: a single process, or rank 0 under torchrun
    allow_import: tuple[str, ...] = ()  # --allow-import: installed modules model.import may name
    threads: int | None = None  # --threads: every run's intra-op threads (None: probe's policy)


_CURRENT: ContextVar[Session | None] = ContextVar("probe_cli_session", default=None)


def current() -> Session:
    """The running invocation's session; outside a command (Python calling a helper), a fresh one."""
    found = _CURRENT.get()
    return found if found is not None else Session()


def begin(session: Session) -> None:
    """Make ``session`` the current one for the rest of this invocation (the app's callback)."""
    _CURRENT.set(session)


@contextmanager
def running(session: Session) -> Iterator[Session]:
    """``session`` is the current one inside the block (the console script's whole run)."""
    token = _CURRENT.set(session)
    try:
        yield session
    finally:
        _CURRENT.reset(token)
