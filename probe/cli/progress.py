"""Progress on stderr for --layer-by-layer: blocks done, seconds per block, time left."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


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
