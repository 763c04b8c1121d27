"""Stats/Verdict -> plain rows (dicts): a layer's row, a problem's, the steps object, an attention
module's and ``compare``'s summary of a run. Tests check numbers on these rows without parsing
output; the renderers (``probe.render.report``, the views) only lay them out. Never prints.
"""

from __future__ import annotations

from typing import Any

from probe.records import AttentionStats, LayerStats, Problem, Run, StepStats
from probe.render.numbers import clean

LAYER_FIELDS = (
    "name",
    "index",
    "kind",
    "units",
    "mean",
    "std",
    "zero_ratio",
    "dead_units",
    "saturation_ratio",
    "nonfinite",
    "unit_spread",
    "grad_std",
    "weight_grad_norm",
    "weight_grad_std",
    "grad_nonfinite",
    "correlation",
    "token_correlation",
)

# row fields present where they apply: the role (always), what the row is and the verdicts' measures
EXTRA_FIELDS = (
    "role",
    "module_type",
    "init_rule",
    "grad_scale",
    "coherent_grad_scale",
    "weight_grad_ratio",
    "branch_ratio",
    "weight_scale",
    "weight_size",
    "weight_rms",
    "update_rank_share",
    "sample_std",
    "input_mean",
    "normalized",
)


def layer_row(layer: LayerStats) -> dict[str, Any]:
    row = {f: clean(getattr(layer, f)) for f in LAYER_FIELDS}
    # architectures and user models also say what each row is and what initialized it
    row["role"] = layer.role
    for extra in EXTRA_FIELDS[1:]:
        value = getattr(layer, extra)
        if value is not None and value is not False:  # ``normalized`` only where it is true
            row[extra] = clean(value)
    return row


def problem_dict(p: Problem) -> dict[str, Any]:
    row = {k: getattr(p, k) for k in ("rule", "severity", "layer", "value", "threshold", "message")}
    return {**row, "value": clean(p.value)}


def steps_dict(steps: StepStats) -> dict[str, Any]:
    """The JSON ``steps`` object (docs/json.md)."""
    return {
        "steps": steps.steps,
        "lr": steps.lr,
        "optimizer": "AdamW",
        "objective": "fixed random target of the output's scale",
        "progress": clean(steps.progress),
        "output_change": clean(steps.output_change),
        "losses": [clean(v) for v in steps.losses],
        "baseline": clean(steps.baseline),
        "log_z": [clean(v) for v in steps.log_z],
        "adam_rms": [clean(v) for v in steps.adam_rms],
        "attention_max": [clean(v) for v in steps.attention_max],
        "elapsed_s": round(steps.elapsed_s, 4),
        "layers": [
            {
                "name": r.name,
                "update_ratio": clean(r.update_ratio),
                "output_change": clean(r.output_change),
                "change_rms": clean(r.change_rms),
                "adam_rms": clean(r.adam_rms),
            }
            for r in steps.rows
        ],
    }


def attention_row(a: AttentionStats) -> dict[str, Any]:
    return {
        "name": a.name,
        "calls": a.calls,
        "logit_std": clean(a.logit_std),
        "entropy": clean(a.entropy),
        "routing": clean(a.routing),
    }


def compare_row(run: Run) -> dict[str, Any]:
    """The side-by-side summary ``compare`` prints for one strategy."""
    r = run.report
    sat = [x.saturation_ratio for x in r.layers if x.saturation_ratio is not None]
    return {
        "run": run.label,
        "strategy": run.strategy,
        "activation": run.activation,
        "first_std": clean(r.first.std),
        "last_std": clean(r.last.std),
        "std_ratio": clean(r.std_ratio()),
        "last_zero_ratio": clean(r.last.zero_ratio),
        "dead_units": clean(max(x.dead_units for x in r.layers)),
        "saturation_ratio": clean(max(sat)) if sat else None,
        "grad_ratio": clean(r.grad_ratio()),
        "healthy": run.verdict.healthy,
        "problems": sorted({p.rule for p in run.verdict.problems}),
    }
