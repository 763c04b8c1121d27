"""``probe train``: rows, the view (``Doc``) and the JSON/CSV/Markdown layouts. Never prints."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from probe.experiments.train import TrainResult, TrainSettings
from probe.render import spark
from probe.render.doc import LIST_BREAKS, NAME_BREAKS, Cell, Column, Doc, Line, doc, table
from probe.render.numbers import clean
from probe.render.report import csv_text, dumps
from probe.render.writers import md_table
from probe.spec import Spec

TRAIN_FORMAT = "probe.train/1"


# ---- train -----------------------------------------------------------------------------------


def train_row(r: TrainResult) -> dict[str, Any]:
    return {
        "run": r.label,
        "strategy": r.strategy,
        "activation": r.activation,
        "start_loss": clean(r.start_loss),
        "end_loss": clean(r.end_loss),
        "val_accuracy": clean(r.val_accuracy),
        "flags": list(r.flags),
    }


def _loss_scale(results: Sequence[TrainResult]) -> tuple[float | None, float | None]:
    """One log scale for every loss curve of a table, so a flat curve looks flat."""
    losses = [x for r in results for x in r.losses if math.isfinite(x) and x > 0]
    return (min(losses), max(losses)) if losses else (None, None)


def _train_cells(r: TrainResult, scale: tuple[float | None, float | None] = (None, None)) -> list[str]:
    return [
        r.label,
        f"{r.start_loss:.3f}",
        f"{r.end_loss:.3f}",
        f"{r.val_accuracy:.3f}",
        spark.sparkline(r.losses, log=True, lo=scale[0], hi=scale[1]),
        ", ".join(r.flags) or "ok",
    ]


_TRAIN_COLUMNS = ("run", "start loss", "end loss", "val acc", "loss curve", "flags")


def train_settings_line(s: TrainSettings) -> str:
    return (
        f"two moons: {s.samples} samples, noise {s.noise:g}, {1 - s.val_fraction:.0%} train / "
        f"{s.val_fraction:.0%} validation (stratified); {s.optimizer} lr {s.lr:g}, {s.steps} steps; seed {s.seed}"
    )


def train_network_line(spec: Spec) -> str:
    m = spec.model
    norm = f" +{m.norm}" if m.norm != "none" else ""
    return f"network: {m.kind} {m.input_dim} -> {m.width} x {m.depth} -> {m.output_dim} {m.activation.name}{norm}; bias init {spec.init.bias.name} (torch's own for 'default')"


def train_doc(results: Sequence[TrainResult], settings: TrainSettings, title: str) -> Doc:
    columns = [
        Column("run", align="left", wrap=NAME_BREAKS),
        Column("start loss", "start_loss"),
        Column("end loss", "end_loss"),
        Column("val acc", "val_accuracy"),
        Column("loss curve", align="left", picture=True),
        Column("flags", align="left", wrap=LIST_BREAKS),
    ]
    scale = _loss_scale(results)
    rows = []
    for r in results:
        cells = _train_cells(r, scale)
        style = "red" if r.stuck else ("yellow" if r.warning_start else "green")
        values = (clean(r.start_loss), clean(r.end_loss), clean(r.val_accuracy))
        rows.append(
            [
                Cell(cells[0], style),
                *(Cell(t, None, v) for t, v in zip(cells[1:4], values, strict=True)),
                Cell(cells[4], "cyan"),
                Cell(cells[-1], style, list(r.flags)),
            ]
        )
    return doc(
        Line(title, "dim", "network"),
        Line(train_settings_line(settings), "dim", "settings"),
        table(columns, rows, key="runs"),
        title="probe train",
    )


def train_json(results: Sequence[TrainResult], settings: TrainSettings) -> str:
    return dumps(
        {
            "format": TRAIN_FORMAT,
            "settings": {k: getattr(settings, k) for k in settings.__dataclass_fields__},
            "runs": [{**train_row(r), "losses": [clean(x) for x in r.losses]} for r in results],
        }
    )


def train_csv(results: Sequence[TrainResult]) -> str:
    rows = [train_row(r) for r in results]
    return csv_text(rows, list(rows[0]))


def train_markdown(results: Sequence[TrainResult]) -> str:
    scale = _loss_scale(results)
    return md_table(_TRAIN_COLUMNS, [_train_cells(r, scale) for r in results])
