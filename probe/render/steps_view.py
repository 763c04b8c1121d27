"""What the ``--steps`` optimizer steps measured (``Stats.steps``) as ``Doc`` parts for the run
view (the JSON: ``rows.steps_dict``): one summary line, and a table of the shown rows' weight
update and output change."""

from __future__ import annotations

from collections.abc import Sequence

from probe.records import LayerStats, StepStats
from probe.render.doc import NAME_BREAKS, Cell, Column, Line, Table, table
from probe.render.numbers import clean, fmt


def steps_line(steps: StepStats) -> Line:
    """``after K AdamW steps (lr ...): progress ..., output change ...`` (JSON key ``steps``)."""
    from probe.judge.stalled import closed_per_step

    per_step = closed_per_step(steps) if steps.steps and steps.progress <= 1 else None
    text = (
        f"after {steps.steps} AdamW steps (lr {fmt(steps.lr)}) toward a random target: the objective fell by "
        f"{fmt(steps.progress)} of its start (progress), {fmt(per_step)} of the distance per step; the output "
        f"changed by {fmt(steps.output_change)} of its size ({steps.elapsed_s:.2f} s)"
    )
    return Line(text, "dim", "steps")


def signals_line(steps: StepStats) -> Line:
    """``Adam's update RMS up to ..., log Z a -> b, attention logits up to c -> d, loss against the
    best constant ...`` (probe/measurement/step_signals.py; measured, not judged)."""

    def ends(values: Sequence[float | None]) -> str:
        known = [v for v in values if v is not None]
        return f"{fmt(known[0])} -> {fmt(known[-1])}" if known else "-"

    rms = [v for v in steps.adam_rms if v is not None]
    parts = [f"Adam's update RMS up to {fmt(max(rms))}" if rms else "Adam's update RMS -", f"log Z {ends(steps.log_z)}"]
    if steps.attention_max:
        parts.append(f"largest attention logit {ends(steps.attention_max)}")
    if steps.baseline:
        parts.append(
            f"loss / best constant's {fmt(steps.losses[0] / steps.baseline)} -> {fmt(steps.losses[-1] / steps.baseline)}"
        )
    return Line("; ".join(parts) + " (measured, not judged)", "dim", "steps_signals")


def steps_table(steps: StepStats, shown: Sequence[LayerStats], stalled: set[str]) -> Table:
    """Per shown row: ||dW|| / ||W|| and ||dy|| / ||y|| after the steps (red: the ``stalled`` rows)."""
    by_name = {r.name: r for r in steps.rows}
    columns = [
        Column("after steps", "name", align="left", wrap=NAME_BREAKS),
        Column("|dW|/|W|", "update_ratio"),
        Column("|dy|/|y|", "output_change"),
    ]
    rows = []
    for x in shown:
        r = by_name.get(x.name)
        if r is None:
            continue
        style = "bold red" if x.name in stalled else None
        rows.append(
            [
                Cell(x.name, style, x.name),
                Cell(fmt(r.update_ratio), style, clean(r.update_ratio)),
                Cell(fmt(r.output_change), style, clean(r.output_change)),
            ]
        )
    return table(columns, rows, key="steps_layers")
