"""Progress on stderr, on a terminal only: parts of long work (train, sweep, compare, check) with their
count and time left, the row passes of a run (its batches and steps), and the blocks of --layer-by-layer."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from probe.cli.formats import _err_console


def err_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False, emoji=False)


@contextmanager
def block_progress() -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on stderr for --layer-by-layer (only on a terminal): blocks done (forward
    and backward passes), seconds per block, time left."""
    console = err_console()
    if not console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    per_block = TextColumn("{task.fields[per_block]}")
    columns = (TextColumn("blocks"), BarColumn(), MofNCompleteColumn(), per_block, TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("blocks", total=None, per_block="")

        def update(done: int, total: int) -> None:
            elapsed = bar.tasks[0].elapsed or 0.0
            per_block = f"{elapsed / done:.1f} s/block" if done else "drawing the init program"
            bar.update(task, completed=done, total=total, per_block=per_block)
            bar.refresh()  # updates come seconds apart: show each at once

        yield update


class Steps:
    """A progress bar on stderr for long multi-part work (only on a terminal): the count done of
    ``total``, the part running, and the time left. Called with a label as each part starts (the
    parts before it are done); or ``advance`` by finer units (training steps) with ``label`` naming
    the part."""

    def __init__(self, total: int, what: str, console: Any = None) -> None:
        self.total, self.what, self.started = total, what, 0
        self.console = console if console is not None else _err_console()
        self.bar: Any = None
        self.task: Any = None

    def _shown(self) -> bool:
        if self.bar is None and self.console.is_terminal and self.total >= 2:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            columns = (TextColumn(self.what), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[label]}"))
            self.bar = Progress(*columns, TimeRemainingColumn(), console=self.console, transient=True)
            self.bar.start()
            self.task = self.bar.add_task(self.what, total=self.total, label="")
        return self.bar is not None

    def __call__(self, label: str) -> None:
        self.started += 1
        if self._shown():
            self.bar.update(self.task, completed=self.started - 1, label=label)

    def label(self, label: str) -> None:
        if self._shown():
            self.bar.update(self.task, label=label)

    def advance(self, units: int = 1) -> None:
        if self._shown():
            self.bar.advance(self.task, units)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


# a run shorter than this shows no bar (it would only flicker); a longer one shows it from then on
SHOW_AFTER_S = 1.0


@contextmanager
def batch_progress(total: int, what: str = "probing batches") -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on stderr (only on a terminal) for a run: its batches, then the ``--steps``
    optimizer steps, counted in row passes (``probe.measurement.run``: a deep stack moves within a
    batch), with the time left. Shown once the run has taken ``SHOW_AFTER_S``."""
    console = _err_console()
    if not console.is_terminal:
        yield None
        return
    import time

    from rich.progress import Progress

    bar = Progress(console=console, transient=True)
    task = bar.add_task(what, total=max(total, 1))
    started, shown = time.monotonic(), False

    def update(done: int, total_now: int) -> None:
        nonlocal shown
        bar.update(task, completed=done, total=total_now)
        if not shown and time.monotonic() - started >= SHOW_AFTER_S:
            bar.start()
            shown = True

    try:
        yield update
    finally:
        if shown:
            bar.stop()
