"""The one shape of every command's output: a ``Doc`` of sections, each a line of text or a table.

View functions (``report.py``, ``views.py``, ``theory.py``) lay computed rows out as a ``Doc``;
the generic writers in ``writers.py`` turn any ``Doc`` into a terminal table (rich), Markdown,
CSV, JSON or HTML. Nothing here computes a statistic: cells carry the text to show and, for the
machine formats, the value it shows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

NAME_BREAKS = "._/-"  # a layer or run name wraps after these
LIST_BREAKS = ","  # a list of rule names wraps between the names, never inside one
DOC_FORMAT = "probe.table/1"  # the JSON of commands without a format of their own (docs/output.md)


@dataclass(frozen=True)
class Column:
    """One column: its header, its key in JSON/CSV, and how it may give way on a narrow terminal."""

    header: str
    key: str = ""  # default: the header in snake case
    align: Literal["left", "right"] = "right"
    picture: bool = False  # a sparkline or bar: dropped first when the terminal is narrow; not in JSON/CSV
    short: str = ""  # abbreviated header for a narrow terminal (a legend line explains it)
    wrap: str = ""  # may wrap when narrow, only after these characters (NAME_BREAKS, LIST_BREAKS)

    @property
    def name(self) -> str:
        return self.key or "_".join(self.header.replace("/", " ").split()) or "flag"


def printable(text: str) -> str:
    """``text`` with every control character but the newline written as its escape (``\\x1b``):
    a spec's name or a module's name must not move the cursor or clear the terminal."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch in " \n" else ascii(ch)[1:-1] for ch in text)


@dataclass(frozen=True)
class Cell:
    """The text a cell shows, its style, and the value it stands for (JSON/CSV; default the text)."""

    text: str
    style: str | None = None
    value: Any = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", printable(self.text))

    @property
    def data(self) -> Any:
        return self.text if self.value is None else self.value


@dataclass(frozen=True)
class Table:
    columns: tuple[Column, ...]
    rows: tuple[tuple[Cell, ...], ...]
    title: str = ""
    key: str = "rows"  # the section's name in JSON

    @property
    def data_columns(self) -> list[int]:
        """Indices of the columns the machine formats keep (pictures are for eyes only)."""
        return [i for i, c in enumerate(self.columns) if not c.picture]


@dataclass(frozen=True)
class Line:
    """A line of prose: a title, a note or the verdict. ``key`` names it in JSON ('' = a note)."""

    text: str
    style: str | None = None
    key: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", printable(self.text))


Section = Table | Line


@dataclass(frozen=True)
class Doc:
    """A command's whole output, in order. ``title`` heads the HTML page."""

    sections: tuple[Section, ...]
    title: str = "probe"

    @property
    def tables(self) -> list[Table]:
        return [s for s in self.sections if isinstance(s, Table)]

    def __add__(self, other: Doc) -> Doc:
        return Doc(self.sections + other.sections, self.title)


def cell(text: Any, style: str | None = None, value: Any = None) -> Cell:
    return text if isinstance(text, Cell) else Cell(str(text), style, value)


def table(columns: Sequence[Column], rows: Iterable[Sequence[Any]], title: str = "", key: str = "rows") -> Table:
    """A table whose rows may hold plain strings or ``Cell``s."""
    out = tuple(tuple(cell(c) for c in row) for row in rows)
    for row in out:
        if len(row) != len(columns):
            raise ValueError(f"a row of {len(row)} cells for {len(columns)} columns")
    return Table(tuple(columns), out, title, key)


def doc(*sections: Section | Iterable[Section] | None, title: str = "probe") -> Doc:
    """A Doc from sections, lists of sections and ``None``s (skipped)."""
    flat: list[Section] = []
    for s in sections:
        if s is None:
            continue
        if isinstance(s, (Table, Line)):
            flat.append(s)
        else:
            flat.extend(s)
    return Doc(tuple(flat), title)
