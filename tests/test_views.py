"""Every view is one ``Doc``; the terminal, Markdown, HTML, CSV and JSON are writers of it, so each
shows the same cells: the text of every cell (pictures aside, which only a terminal draws) in the
text formats, its value in the machine formats, and a failing cell marked failing in the page."""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Callable
from typing import Any

import pytest

from probe import api
from probe.render import writers
from probe.render.doc import Doc, Line, Table
from tests.conftest import CONFIGS

SMALL = {"data.batch_size": 8, "data.batches": 1}


def _spec(name: str, **overrides: Any) -> Any:
    return api.read_spec(CONFIGS / name, {**SMALL, **overrides})


def _run() -> Doc:
    from probe.render.run_view import run_doc

    report = api.probe_spec(_spec("lab1_tiny_relu.yaml"))
    return run_doc(report.stats, report.verdict, None)


def _compare() -> Doc:
    from probe.render.run_view import compare_doc

    base = _spec("lab1_he_relu.yaml", **{"model.depth": 6})
    return compare_doc(api.compare(base, ["tiny:relu", "he:relu"]), "compare")


def _check() -> Doc:
    from probe.render.run_view import check_doc

    specs = [_spec("lab1_tiny_relu.yaml"), _spec("lab1_he_relu.yaml")]
    runs, failures = api.check(specs, ["tiny", "he"])
    return check_doc(runs, [(f.label, f.message) for f in failures])


def _sweep() -> Doc:
    from probe.render.sweep_view import sweep_doc

    base = _spec("lab1_he_relu.yaml", **{"model.width": 16})
    return sweep_doc(api.sweep(base, ["he", "tiny"], (2, 6), None), "sweep")


def _train() -> Doc:
    from probe.render.train_view import train_doc

    settings = api.train_settings(samples=64, steps=3)
    base = api.train_base({})
    return train_doc(api.train(base, ["he", "zeros"], settings), settings, "train")


def _inspect() -> Doc:
    from probe.render.inspect_view import inspect_doc

    return inspect_doc(api.inspect(_spec("lab1_he_relu.yaml", **{"model.depth": 3})), "inspect")


def _theory() -> Doc:
    from probe.render.theory import theory_doc

    report = api.probe_spec(_spec("lab1_xavier_tanh.yaml"), theory=True)
    return theory_doc(report.stats, report.verdict, report.prediction, list(report.comparisons))


def _fix() -> Doc:
    from probe.render.theory import fix_doc

    return fix_doc(api.fix(_spec("lab1_tiny_relu.yaml", **{"model.depth": 4}), None, 0.1, 10), None)


def _depth() -> Doc:
    from probe.render.theory import depth_doc

    return depth_doc(api.depth(_spec("lab1_xavier_tanh.yaml"), ["he"], 60))


def _rules() -> Doc:
    from probe.render.views import rules_doc

    return rules_doc()


VIEWS: dict[str, Callable[[], Doc]] = {
    "run": _run,
    "compare": _compare,
    "check": _check,
    "sweep": _sweep,
    "train": _train,
    "inspect": _inspect,
    "theory": _theory,
    "fix": _fix,
    "depth": _depth,
    "rules": _rules,
}


def _data_cells(t: Table) -> list[tuple[str, str, Any, str | None]]:
    """(column name, text, value, style) of every cell a machine format keeps."""
    keep = t.data_columns
    return [(t.columns[i].name, r[i].text, r[i].data, r[i].style) for r in t.rows for i in keep]


@pytest.mark.parametrize("view", list(VIEWS))
def test_every_writer_shows_the_cells_of_one_doc(view: str) -> None:
    d = VIEWS[view]()
    text, md, page = writers.plain_text(d), writers.markdown(d), writers.html_page(d)
    machine = json.loads(writers.json_text(d))
    lines = [s for s in d.sections if isinstance(s, Line)]
    assert d.tables or lines, f"{view}: an empty document"
    for line in lines:  # a check's problems, a table's notes, the verdict
        assert " ".join(line.text.split()) in " ".join(text.split()), (
            f"{view}: {line.text!r} not in the terminal's text"
        )
        assert line.text in md and html.escape(line.text) in page, f"{view}: {line.text!r} not in Markdown or the page"
        assert line.text in (machine["lines"] if not line.key else [machine[line.key]]), (
            f"{view}: {line.text!r} not in JSON"
        )
    csv_blocks = [list(csv.DictReader(io.StringIO(b))) for b in writers.csv_text(d).split("\n\n") if b.strip()]
    for n, t in enumerate(d.tables):
        cells = _data_cells(t)
        assert cells, f"{view}: an empty table"
        for name, shown, value, style in cells:
            assert shown in text, f"{view}: {shown!r} not in the terminal's text"
            assert shown.replace("|", "\\|").replace("\n", " ") in md, f"{view}: {shown!r} not in the Markdown"
            cell_html = html.escape(shown)
            assert cell_html in page, f"{view}: {shown!r} not in the page"
            if style and "red" in style:
                assert f"<td class=bad>{cell_html}</td>" in page, f"{view}: failing {shown!r} not marked in the page"
            expected = ";".join(map(str, value)) if isinstance(value, (list, tuple)) else value
            column = [row[name] for row in csv_blocks[n]]
            assert ("" if expected is None else str(expected)) in column, f"{view}: {name}={expected!r} not in CSV"
        rows = machine[t.key]
        assert len(rows) == len(t.rows), f"{view}: JSON has {len(rows)} rows of {len(t.rows)}"
    assert ("verdict" in machine) == any(getattr(s, "key", "") == "verdict" for s in d.sections)
