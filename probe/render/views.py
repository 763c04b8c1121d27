"""Views (``Doc``s) for ``advise`` and ``rules``, and the advice lines other views end with. Never prints.

As in ``rows.py`` and ``report.py``: each command's rows come from a plain function (tests check numbers there),
and the table, JSON, CSV and Markdown layouts are built from those rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from probe.judge.advice import Advice, change_text
from probe.records import Verdict
from probe.render.doc import Cell, Column, Doc, Line, doc, table
from probe.render.report import dumps, verdict_text

# ---- advice ----------------------------------------------------------------------------------


def advice_doc(advice: Advice) -> Doc:
    """The advice lines: a mismatch or a fix to try in yellow, the rest in green."""
    return doc(
        [Line(line, "yellow" if line.startswith(("mismatch", "try")) else "green") for line in advice.lines()],
        title="probe advise",
    )


ADVICE_FORMAT = "probe.advice/1"


def advise_doc(advice: Advice) -> Doc:
    """``probe advise``: one row per piece of advice (mismatch, try, ok) and its text."""
    columns = [Column("advice", "kind", align="left"), Column("", "text", align="left", wrap=" ")]
    rows = []
    for line in advice.lines():
        kind, _, text = line.partition(": ")
        style = "yellow" if kind in ("mismatch", "try") else "green"
        rows.append([Cell(kind, style), Cell(text, style)])
    return doc(table(columns, rows, key="advice"), title=f"probe advise: {advice.spec_name}")


def advise_json(advice: Advice, applied: Applied | None = None) -> str:
    extra = {"applied": applied.to_dict()} if applied is not None else {}
    return dumps(
        {"format": ADVICE_FORMAT, "spec": advice.spec_name, **advice.to_dict(), "lines": advice.lines(), **extra}
    )


@dataclass(frozen=True)
class Applied:
    """``probe advise --apply``: the change written to ``path``, and the verdicts before and after it."""

    path: str
    change: dict[str, Any]
    before: Verdict
    after: Verdict

    def to_dict(self) -> dict[str, Any]:
        def verdict(v: Verdict) -> dict[str, Any]:
            return {"healthy": v.healthy, "failing": sorted({p.rule for p in v.problems})}

        return {"path": self.path, "change": self.change, "before": verdict(self.before), "after": verdict(self.after)}


def applied_doc(applied: Applied) -> Doc:
    """The lines ``--apply`` adds: what was written, and the verdict before and after."""
    return doc(
        [
            Line(f"applied: {change_text(applied.change)} -> {applied.path}", "yellow"),
            *(
                Line(f"{label}: {verdict_text(v)}", "green" if v.healthy else "red")
                for label, v in (("before", applied.before), ("after", applied.after))
            ),
        ]
    )


# ---- rules -----------------------------------------------------------------------------------


def rules_doc() -> Doc:
    """The health rules, their gate keys, defaults and meaning."""
    from probe.judge.rules import RULES
    from probe.spec import GATE_PARAMS

    columns = [
        Column("rule", align="left", wrap=" "),
        Column("gate key", "gate_key", align="left"),
        Column("default"),
        Column("meaning", align="left", wrap=" "),
    ]
    rows = []
    for rule in RULES.values():
        for key in rule.thresholds:
            p = GATE_PARAMS[key]
            rows.append(
                [Cell(rule.name), Cell(key), Cell(f"{p.default:g}", None, p.default), Cell(p.help.split(": ", 1)[-1])]
            )
    return doc(table(columns, rows, key="rules"), title="probe rules")
