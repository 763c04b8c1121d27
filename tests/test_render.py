"""The render layer: any Doc in every format, and tables that fit the terminal without cutting a
number, a name or a verdict (at 80, 100 and 120 columns, for every table-printing command)."""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

import pytest
from typer.testing import CliRunner

from probe.render import writers
from probe.render.doc import LIST_BREAKS, NAME_BREAKS, Cell, Column, Line, doc, table
from probe.render.numbers import fmt
from tests.conftest import CONFIGS

WIDTHS = [80, 100, 120]


# ---- reading a rendered table back -----------------------------------------------------------


def _lines(text: str) -> list[str]:
    return [re.sub(r"[│┃]", " ", line) for line in text.splitlines()]


def appears_whole(text: str, word: str) -> bool:
    """``word`` is a whole token of ``text``, or a cell wrapped onto the lines below it at the same
    column (a wrapped name or list), its pieces in order."""
    lines = _lines(text)
    for i, line in enumerate(lines):
        for m in re.finditer(r"\S+", line):
            got, j = m.group(), i
            while got.rstrip(",") != word and word.startswith(got) and j + 1 < len(lines):
                j += 1
                column = m.start()
                if column > 0 and lines[j][column - 1 : column] not in (" ", ""):
                    break
                piece = re.match(r"\S+", lines[j][column:])
                if piece is None:
                    break
                got += piece.group()
            if got.rstrip(",") == word:  # a list item keeps its comma
                return True
    return False


def check_fits(text: str, width: int, words: list[str], fits: bool = True) -> None:
    assert "…" not in text
    for line in text.splitlines():
        assert not fits or len(line.rstrip()) <= width, f"{len(line.rstrip())} > {width}: {line!r}"
    missing = [w for w in words if not appears_whole(text, w)]
    assert not missing, f"not whole at {width} columns: {missing}\n{text}"


# ---- the writer on a made-up table ---------------------------------------------------------

NAMES = ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj", "lm_head"]
RULES = ["vanishing, gradient_vanishing, dead_units", "healthy", "saturation"]


def _doc() -> Any:
    columns = [
        Column("layer", "name", align="left", wrap=NAME_BREAKS),
        *(Column(f"statistic {i}", short=f"s{i}") for i in range(4)),
        Column("rule", align="left", wrap=" "),
        Column("picture", align="left", picture=True),
        Column("verdict", align="left", wrap=LIST_BREAKS),
    ]
    rows = [
        [
            Cell(n),
            *(Cell(fmt(-1.2345e-05 * (i + 1) * (k + 1)), value=-1.2345e-05) for i in range(4)),
            Cell(f"rule[{k}] he_normal"),
            Cell("▁▂▃▅▇" * 3),
            Cell(r),
        ]
        for k, (n, r) in enumerate(zip(NAMES, RULES, strict=True))
    ]
    return doc(Line("a title line", "dim"), table(columns, rows), Line("verdict: fine", key="verdict"))


def _words() -> list[str]:
    numbers = [fmt(-1.2345e-05 * (i + 1) * (k + 1)) for i in range(4) for k in range(3)]
    rules = [w.strip(",") for r in RULES for w in r.split()]
    return [*NAMES, *numbers, *rules, "he_normal", *(f"rule[{k}]" for k in range(3))]


@pytest.mark.parametrize("width", [80, 100, 120, 200])
def test_the_writer_never_cuts_a_cell(width: int) -> None:
    text = writers.plain_text(_doc(), width)
    check_fits(text, width, _words())


def test_a_table_too_wide_to_fit_is_printed_whole() -> None:
    # 4 numbers of 10 characters, a name of 12 and a rule name of 10 cannot fit 40 columns
    text = writers.plain_text(_doc(), 40)
    check_fits(text, 40, _words(), fits=False)
    assert "legend" in text  # every step was tried first


def test_the_steps_come_in_order() -> None:
    d = _doc()
    natural = writers.plain_text(d, None)
    assert "picture" in natural and "legend" not in natural and NAMES[0] in natural
    wide = len(max(natural.splitlines(), key=len))
    # a little narrower: only the picture goes, and the legend says so once, with the width it needs
    text = writers.plain_text(d, wide - 5)
    assert NAMES[0] in text and text.count("picture") == 1
    (legend,) = [line for line in text.splitlines() if line.startswith("legend")]
    assert legend == f"legend: not shown at {wide - 5} columns: picture (they need {wide})"
    # narrow: names wrap, headers are abbreviated and explained
    text = writers.plain_text(d, 80)
    assert NAMES[0] not in text and appears_whole(text, NAMES[0])
    assert "legend: s0 = statistic 0; s1 = statistic 1" in text


def test_wrap_name_keeps_every_character() -> None:
    for name in [*NAMES, "a" * 40, "x.y"]:
        for width in (5, 8, 12, 20):
            wrapped = writers.wrap_name(name, width)
            assert wrapped.replace("\n", "") == name
            assert all(len(line) <= width for line in wrapped.splitlines())
    assert writers.wrap_name("vanishing, gradient_vanishing", 20, LIST_BREAKS) == "vanishing,\ngradient_vanishing"
    # inside an item only when the item alone is longer than a line
    wrapped = writers.wrap_name("vanishing, dead_units, gradient_vanishing", 16, LIST_BREAKS + "_")
    assert wrapped == "vanishing,\ndead_units,\ngradient_\nvanishing"


def test_machine_formats_keep_values_and_drop_pictures() -> None:
    d = _doc()
    data = json.loads(writers.json_text(d))
    assert data["format"] == "probe.table/1" and data["verdict"] == "verdict: fine"
    assert data["rows"][0] == {
        "name": NAMES[0],
        **{f"statistic_{i}": -1.2345e-05 for i in range(4)},
        "rule": "rule[0] he_normal",
        "verdict": RULES[0],
    }
    rows = list(csv.DictReader(io.StringIO(writers.csv_text(d))))
    assert [r["name"] for r in rows] == NAMES and "picture" not in rows[0]
    md = writers.markdown(d)
    assert "| layer | statistic 0" in md and "picture" not in md and "**verdict: fine**" in md
    page = writers.html_page(d)
    assert page.startswith("<!DOCTYPE html>") and "<td>model.layers.0.self_attn.q_proj</td>" in page


# ---- every table-printing command at 80, 100 and 120 columns ---------------------------------

SMALL = ["--set", "data.batch_size=16"]
TRANSFORMER = ["--set", "model.width=32", "--set", "model.depth=2", "--set", "model.seq_len=8"]
TRANSFORMER += ["--set", "model.ff_width=64", "--set", "model.vocab_size=50", "--set", "data.batch_size=4"]
CASES = {
    "run": ["run", str(CONFIGS / "lab1_tiny_relu.yaml"), *SMALL],
    "run transformer": ["run", str(CONFIGS / "transformer_gpt.yaml"), *TRANSFORMER],
    "run lstm": ["run", str(CONFIGS / "lstm_forget_bias.yaml"), "--set", "model.width=16", *SMALL],
    "run --precision": ["run", str(CONFIGS / "lab1_tiny_relu.yaml"), "--precision", "fp8", *SMALL],
    "run --model": ["run", "--model", "tests.models_for_tests:awkward", "--input-shape", "3,8,8", *SMALL],
    "compare": ["compare", "tiny:relu", "large:tanh", "xavier:tanh", "he:relu", "--width", "32", "--depth", "20"],
    "sweep": ["sweep", "he", "tiny", "large:tanh", "--depth", "2,12", "--set", "model.width=16", *SMALL],
    "train": ["train", "he", "zeros", "--steps", "5", "--samples", "100"],
    "inspect": ["inspect", str(CONFIGS / "cnn_he.yaml"), "--set", "model.depth=3", *SMALL],
    "run --hf": [
        "run", "--hf", "gpt2", *(f"--model-arg={k}={v}" for k, v in (("n_layer", 2), ("n_embd", 32), ("n_head", 4))),
        "--model-arg=vocab_size=50", "--set", "data.batch_size=3", "--set", "model.seq_len=6",
    ],
    "check": ["check", str(CONFIGS / "lab1_tiny_relu.yaml"), str(CONFIGS / "lab1_he_relu.yaml"), *SMALL],
    "fix": ["fix", str(CONFIGS / "lab1_tiny_relu.yaml"), "--set", "model.depth=6", *SMALL],
    "depth": ["depth", str(CONFIGS / "lab1_xavier_tanh.yaml"), "--strategy", "he", "--max-depth", "60"],
    "advise": ["advise", str(CONFIGS / "lab1_tiny_relu.yaml"), *SMALL],
    "rules": ["rules"],
}  # fmt: skip


def _invoke(argv: list[str], columns: int | None) -> Any:
    from probe.cli import app

    result = CliRunner().invoke(app, argv, env={"COLUMNS": str(columns) if columns else None})
    assert result.exit_code in (0, 1), result.stderr
    return result


def _expected_words(case: str, argv: list[str]) -> list[str]:
    """Every name, number and verdict word the table must show, read from the machine output."""
    if case.startswith("run"):
        report = json.loads(_invoke([*argv, "-f", "json"], None).stdout)
        layers = report["layers"]
        if len(layers) > 40:
            pytest.skip("summarized table")
        prefix = "transformer." if "--hf" in argv else ""  # shared by every row: said once, in the legend
        words = [x["name"].removeprefix(prefix) for x in layers]
        for key in ("mean", "std", "grad_std", "weight_grad_norm"):
            words += [fmt(x[key]) for x in layers if x[key] is not None]
        return words + [p["rule"] for p in report["verdict"]["problems"]]
    rows = list(csv.DictReader(io.StringIO(_invoke([*argv, "-f", "csv"], None).stdout)))
    if case == "check":  # one line per problem, then the count
        return ["healthy", "unhealthy"]
    if case == "compare":
        keys = ("first_std", "last_std", "std_ratio", "grad_ratio")
        return [r["run"] for r in rows] + [fmt(float(r[k])) for r in rows for k in keys] + _rules(rows, "problems")
    if case == "sweep":
        return (
            [r["run"] for r in rows]
            + [fmt(float(r[k])) for r in rows for k in ("last_std", "grad_ratio")]
            + _rules(rows, "problems")
        )
    if case == "train":
        keys = ("start_loss", "end_loss", "val_accuracy")
        return [r["run"] for r in rows] + [f"{float(r[k]):.3f}" for r in rows for k in keys] + _rules(rows, "flags")
    if case == "inspect":
        keys = ("mean", "std", "expected_std")
        return [r["name"] for r in rows] + [fmt(float(r[k])) for r in rows for k in keys]
    if case == "advise":  # lines of prose: their words
        return [w for r in rows for w in r["text"].split() if w.isalpha()]
    return [next(iter(r.values())) for r in rows]  # fix's layers, depth's strategies, the rules


def _rules(rows: list[dict[str, str]], key: str) -> list[str]:
    return [w for r in rows for w in r[key].split(";") if w and " " not in w]


@pytest.mark.parametrize("case", list(CASES))
def test_tables_fit_80_100_120_columns_without_cutting(case: str) -> None:
    argv = CASES[case]
    words = _expected_words(case, argv)
    assert words
    for width in WIDTHS:
        check_fits(_invoke(argv, width).stdout, width, words)


def test_off_a_terminal_without_columns_a_table_keeps_its_natural_width() -> None:
    text = _invoke(CASES["run"], None).stdout
    assert "std (log)" in text and "legend" not in text  # the pictures stay; nothing is abbreviated


@pytest.mark.parametrize("width", range(40, 161, 6))
def test_a_cell_on_one_line_reads_exactly_as_given(width: int) -> None:
    # wrapping again after the compact step starts from the whole cells: no space lost on the way
    t = _doc().tables[0]
    rich_table, _, _ = writers.fit_table(t, width)
    source = {c.text for row in t.rows for c in row}
    for column in rich_table.columns:
        for cell in column._cells:
            plain = cell.plain
            if "\n" not in plain:
                assert plain in source or plain == "", (width, plain)
            else:
                # a line break took the place of nothing or of one space
                pattern = " ?".join(re.escape(line) for line in plain.split("\n"))
                assert any(re.fullmatch(pattern, text) for text in source), (width, plain)


def test_a_column_with_no_value_in_any_row_goes_last_and_is_named() -> None:
    d = _doc()
    t = d.sections[1]
    empty = table([*t.columns, Column("saturation", short="sat")], [[*r, Cell("-")] for r in t.rows])
    d = doc(d.sections[0], empty, d.sections[2])
    roomy = writers.plain_text(d, 200)
    assert "saturation" in roomy and "no value in any row" not in roomy  # it fits: kept
    # as narrow as the table without that column can be: only dropping it makes the table fit
    tightest = max(len(line) for line in writers.plain_text(_doc(), 60).splitlines()[1:5])
    narrow = writers.plain_text(d, tightest)
    assert "legend: not shown, no value in any row: saturation" in narrow
    assert " sat" not in narrow.splitlines()[1]
    check_fits(narrow, tightest, _words())


def test_names_under_one_module_lose_the_shared_prefix_only_when_too_wide() -> None:
    d = _doc()
    t = d.sections[1]
    under = ["transformer.h.0.attn.c_attn", "transformer.h.0.mlp.c_proj", "transformer.ln_f"]
    rows = [[Cell(n), *r[1:]] for n, r in zip(under, t.rows, strict=True)]
    d = doc(d.sections[0], table(list(t.columns), rows), d.sections[2])
    roomy = writers.plain_text(d, 250)
    assert "transformer.h.0.attn.c_attn" in roomy and "every name is under" not in roomy
    narrow = writers.plain_text(d, 80)
    assert "legend: every name is under transformer." in narrow
    assert "transformer" not in "".join(narrow.split("legend:")[0].split())  # not in the rows
    check_fits(narrow, 80, [n.removeprefix("transformer.") for n in under])
    # no shared dotted prefix: nothing is cut
    assert writers._shared_prefix(["model.a", "modelb.c"]) == ""
    assert writers._shared_prefix(["a.b.c", "a.b.d", "a.b"]) == "a."
