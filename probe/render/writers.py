"""Generic writers: any ``Doc`` as a terminal table (rich), Markdown, CSV, JSON or HTML.

The terminal writer fits the width it is given without ever cutting a cell: it drops the picture
columns first, then wraps the name columns (after '.', '_', '/' or '-'), then abbreviates headers
(with a legend line); what still does not fit is printed at its own width, whole, for the
terminal to wrap. Without a width (a pipe, a file) every table keeps its natural width.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from probe.render.doc import DOC_FORMAT, LIST_BREAKS, NAME_BREAKS, Cell, Column, Doc, Line, Table, printable

NAME_MIN = 8  # a wrapped name column keeps at least this many characters a line


# ---- terminal (rich) -----------------------------------------------------------------------


def _rich_table(columns: Sequence[Column], rows: Sequence[Sequence[Cell]], short: bool, compact: bool) -> Any:
    from rich import box
    from rich.table import Table as RichTable
    from rich.text import Text

    if compact:  # one space between columns, no vertical rules: the last step before wrapping lists finer
        table = RichTable(box=box.SIMPLE_HEAD, show_edge=False, header_style="bold", pad_edge=False, padding=0)
    else:
        table = RichTable(show_edge=False, header_style="bold", pad_edge=False)
    for col in columns:
        header = col.short if short and col.short else col.header
        table.add_column(header, justify=col.align, no_wrap=True, overflow="fold")
    for row in rows:
        table.add_row(*(Text(c.text, style=c.style or "") for c in row))
    return table


def _measure(renderable: Any) -> int:
    from rich.console import Console
    from rich.measure import Measurement

    console = Console(width=100_000, file=io.StringIO())
    return Measurement.get(console, console.options, renderable).maximum


def _parts(text: str, breaks: str) -> list[str]:
    return re.split(f"(?<=[{re.escape(breaks)}])", text)


def wrap_name(name: str, width: int, breaks: str = NAME_BREAKS) -> str:
    """``name`` on lines of at most ``width`` characters, broken after one of ``breaks`` (and
    inside a part only where one part alone is longer). A list (``breaks`` starting with ',')
    wraps between its items, and an item longer than a line after its other ``breaks`` alone."""
    if breaks.startswith(LIST_BREAKS) and len(breaks) > 1:
        packed: list[str] = []
        for item in _parts(name, LIST_BREAKS):
            joined = f"{packed[-1]} {item.strip()}" if packed else item.strip()
            if packed and len(joined) <= width:
                packed[-1] = joined
            else:
                packed += wrap_name(item.strip(), width, breaks[1:]).split("\n")
        return "\n".join(packed)
    lines: list[str] = []
    current = ""
    for raw in _parts(name, breaks):
        part = raw if current else raw.lstrip()
        if current and len(current) + len(part) > width:
            lines.append(current.rstrip())
            current, part = "", part.lstrip()
        while len(part.rstrip()) > width:  # no break point: fold (the last resort)
            lines.append(part[:width])
            part = part[width:]
        current += part
    if current:
        lines.append(current)
    return "\n".join(lines)


def _wrapped(rows: list[list[Cell]], source: list[list[Cell]], i: int, breaks: str, excess: int) -> list[list[Cell]]:
    """``rows`` with column ``i`` wrapped again from the whole cells of ``source`` (after
    ``breaks``) to shed ``excess`` more characters, as far as that goes without cutting a part
    between two breaks."""
    longest = max((len(line) for r in rows for line in r[i].text.splitlines()), default=0)
    unbreakable = max((len(p.strip()) for r in source for p in _parts(r[i].text, breaks)), default=0)
    target = max(NAME_MIN if breaks == NAME_BREAKS else 0, unbreakable, longest - excess)
    if target >= longest:
        return rows
    return [
        [*r[:i], replace(s[i], text=wrap_name(s[i].text, target, breaks)), *r[i + 1 :]]
        for r, s in zip(rows, source, strict=True)
    ]


def _shared_prefix(names: list[str]) -> str:
    """The dotted prefix every one of two or more names starts with and goes on after ("a.b."
    for "a.b.c" and "a.b.d"); "" when there is none."""
    if len(names) < 2:
        return ""
    first, last = min(names), max(names)  # the shared prefix of all is that of these two
    common = first[: next((i for i, (a, b) in enumerate(zip(first, last, strict=False)) if a != b), len(first))]
    prefix = common[: common.rfind(".") + 1]
    return prefix if all(len(n) > len(prefix) for n in names) else ""


def fit_table(t: Table, width: int | None) -> tuple[Any, list[str], int]:
    """The rich table for ``t`` within ``width`` columns (``None``: natural width), the legend
    lines it needs, and the width it takes. Steps, each only while the table is too wide: drop
    the pictures; wrap names and lists (after '.', '_', '/', '-'; lists between items); abbreviate
    headers; one space between columns (names and lists wrapped again, as little as now needed);
    wrap lists inside their items too (after '_'); drop the columns with no value in any row ('-'
    everywhere: a model without saturating activations has no 'sat'), named in the legend."""
    columns = list(t.columns)
    source = rows = [list(r) for r in t.rows]  # source: the whole cells, which every wrap starts from
    short = compact = False
    empty: list[str] = []
    used = _measure(_rich_table(columns, rows, short, compact))
    if width is None or used <= width:
        return _rich_table(columns, rows, short, compact), [], used
    prefix = ""
    natural = used
    dropped: list[str] = []
    for step in ("pictures", "prefix", "wrap", "short", "compact", "wrap", "wrap lists", "empty"):
        if used <= width:
            break
        if step == "pictures":
            keep = [i for i, c in enumerate(columns) if not c.picture]
            dropped = [c.header for c in columns if c.picture]
            columns, rows = [columns[i] for i in keep], [[r[i] for i in keep] for r in rows]
            source = rows
        elif step == "prefix":  # every name under one module ("transformer."): say it once
            names = next((i for i, c in enumerate(columns) if c.wrap == NAME_BREAKS), None)
            prefix = _shared_prefix([r[names].text for r in source]) if names is not None else ""
            if names is not None and prefix:
                cut = len(prefix)
                rows = source = [
                    [*r[:names], replace(r[names], text=r[names].text[cut:]), *r[names + 1 :]] for r in source
                ]
        elif step == "short":
            short = True
        elif step == "empty":
            keep = [i for i in range(len(columns)) if any(r[i].text.strip() not in ("", "-") for r in source)]
            empty = [columns[i].header for i in range(len(columns)) if i not in keep]
            columns = [columns[i] for i in keep]
            rows, source = [[r[i] for i in keep] for r in rows], [[r[i] for i in keep] for r in source]
        elif step == "compact":  # which frees room: wrap again from whole cells, only as far as needed
            compact, rows = True, source
        else:
            extra = "_" if step == "wrap lists" else ""
            for i, col in enumerate(columns):
                if col.wrap and used > width:
                    breaks = col.wrap + extra if col.wrap == LIST_BREAKS else col.wrap
                    rows = _wrapped(rows, source, i, breaks, used - width)
                    used = _measure(_rich_table(columns, rows, short, compact))
        used = _measure(_rich_table(columns, rows, short, compact))
    legend = [f"every name is under {prefix}"] if prefix else []
    legend += ["; ".join(f"{c.short} = {c.header}" for c in columns if c.short)] if short else []
    if empty:
        legend.append(f"not shown, no value in any row: {', '.join(empty)}")
    if dropped:  # said once, with the width that shows them
        legend.append(f"not shown at {width} columns: {', '.join(dropped)} (they need {natural})")
    return _rich_table(columns, rows, short, compact), legend, used


def rich_renderable(d: Doc, width: int | None) -> tuple[Any, int]:
    """``d`` as one rich renderable, and the width to print it at: ``width`` when everything
    fits, wider when a table cannot shrink further (printed whole; the terminal wraps it).
    Without ``width``, the natural width of the widest table or line (nothing wraps)."""
    from rich.console import Group
    from rich.text import Text

    parts: list[Any] = []
    needed = 0
    for s in d.sections:
        if isinstance(s, Line):
            parts.append(Text(s.text, style=s.style or ""))
            if width is None:
                needed = max(needed, *(len(line) for line in s.text.splitlines() or [""]))
            continue
        if s.title:
            parts.append(Text(s.title, style="bold"))
        rich_table, legend, used = fit_table(s, width)
        parts.append(rich_table)
        parts += [Text(f"legend: {line}", style="dim") for line in legend]
        needed = max(needed, used)
    return Group(*parts), max(needed, width or 0, 1)


def plain_text(d: Doc, width: int | None = None) -> str:
    """``d`` as the terminal shows it, without colors (``--output`` with the table format)."""
    from rich.console import Console

    renderable, used = rich_renderable(d, width)
    console = Console(record=True, width=used, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


# ---- Markdown / CSV / JSON / HTML ------------------------------------------------------------


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table."""

    def esc(text: str) -> str:
        return printable(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def markdown(d: Doc) -> str:
    """Lines as paragraphs (the verdict in bold), tables as GitHub tables without the pictures."""
    parts = []
    for s in d.sections:
        if isinstance(s, Line):
            parts.append(f"**{s.text}**\n" if s.key == "verdict" else s.text + "\n")
            continue
        keep = s.data_columns
        if s.title:
            parts.append(f"#### {s.title}\n")
        parts.append(md_table([s.columns[i].header for i in keep], [[r[i].text for i in keep] for r in s.rows]))
    return "\n".join(parts)


def _csv_value(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return ";".join(str(v) for v in value)
    return "" if value is None else value


def csv_text(d: Doc) -> str:
    """Each table as CSV with a header (machine names, values not display text); tables after the
    first follow a blank line. Lines of prose are not CSV and are left out."""
    blocks = []
    for t in d.tables:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        keep = t.data_columns
        writer.writerow([t.columns[i].name for i in keep])
        for row in t.rows:
            writer.writerow([_csv_value(row[i].data) for i in keep])
        blocks.append(out.getvalue())
    return "\n".join(blocks)


def to_dict(d: Doc) -> dict[str, Any]:
    """``probe.table/1``: ``lines`` (title and notes, in order), one list of row objects per
    table under the table's key, and ``verdict`` when the Doc has one."""
    out: dict[str, Any] = {"format": DOC_FORMAT, "title": d.title, "lines": []}
    for s in d.sections:
        if isinstance(s, Line):
            if s.key:
                out[s.key] = s.text
            else:
                out["lines"].append(s.text)
            continue
        keep = s.data_columns
        out[s.key] = [{s.columns[i].name: _json_value(r[i].data) for i in keep} for r in s.rows]
    return out


def _json_value(value: Any) -> Any:
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_text(d: Doc) -> str:
    return json.dumps(to_dict(d), indent=2, allow_nan=False) + "\n"


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:80em}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.9em}
th,td{padding:.25em .6em;border-bottom:1px solid #ddd;text-align:right;font-variant-numeric:tabular-nums}
th:first-child,td:first-child{text-align:left}
.bad{color:#b00020;font-weight:600}.warn{color:#9a6700}.good{color:#1b7a1b;font-weight:600}.dim{color:#666}
figure{margin:1em 0}svg{max-width:100%;height:auto}
"""


def page(title: str, *sections: str) -> str:
    """A complete HTML document."""
    import html

    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>" + "".join(sections) + "</body></html>\n"
    )


def _html_class(style: str | None) -> str:
    """The page's class for a terminal style: red cells fail a rule, yellow ones are near it."""
    if not style:
        return ""
    if "red" in style:
        return " class=bad"
    if "yellow" in style:
        return " class=warn"
    return " class=good" if "green" in style else ""


def html_page(d: Doc, extra: Sequence[str] = ()) -> str:
    """A self-contained page: lines as paragraphs, tables without the pictures (their cells
    colored as the terminal colors them), then the ``extra`` HTML sections (figures)."""
    import html

    parts = []
    for s in d.sections:
        if isinstance(s, Line):
            parts.append(f"<p{_html_class(s.style)}>{html.escape(s.text)}</p>")
            continue
        keep = s.data_columns
        head = "".join(f"<th>{html.escape(s.columns[i].header)}</th>" for i in keep)
        body = "".join(
            "<tr>" + "".join(f"<td{_html_class(r[i].style)}>{html.escape(r[i].text)}</td>" for i in keep) + "</tr>"
            for r in s.rows
        )
        title = f"<h2>{html.escape(s.title)}</h2>" if s.title else ""
        parts.append(f"{title}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    return page(d.title, *parts, *extra)
