"""Training runs behind the backward-side rules of issue 18 (docs/verdicts.md): does each small
hand-written network (tests/mechanism_models.py) train, and what does probe say about it?

The task and the measure of "trains" are benchmarks/trainability.py's vision task: 10-way
classification of 2048 smooth random 32 x 32 images labelled by a fixed random conv teacher;
AdamW (lr 1e-3, weight decay 0.01), batch 32, ``--steps`` steps (200), one thread, fixed seeds.
``gain = baseline - loss`` (nats beyond the best constant prediction) on the first 512 training
images; a case trains when its gain is at least half its family's reference (the same network at
PyTorch's default init, or without the mechanism). Vector models (MLPs, ResMLP) read the images
average-pooled to 4 x 4 (48 features). The loss is also recorded at steps 25, 50 and 75 (how fast
a slow start catches up).

Writes benchmarks/backward_mechanisms.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import probe  # noqa: E402
from benchmarks.trainability import LR, WEIGHT_DECAY, ImageTask, baseline_loss  # noqa: E402
from tests import mechanism_models as mm  # noqa: E402

JSON_PATH = REPO / "benchmarks" / "backward_mechanisms.json"
CHECKPOINTS = (25, 50, 75)
FEATURES = 48  # 3 x 4 x 4


def _vector(model: nn.Module) -> nn.Module:
    return nn.Sequential(nn.AvgPool2d(8), nn.Flatten(), model)


def _shifted_se(bias: float) -> nn.Module:
    model = mm.ResNet(se=True)
    for m in model.modules():
        if isinstance(m, mm.SqueezeExcite):
            nn.init.constant_(m.reduce.bias, bias)  # every SE unit negative for every input: all dead
    return model


def _dead_branches(fraction: float) -> nn.Module:
    model = mm.ResNet()
    for block in model.blocks:
        k = round(fraction * block.bn1.bias.shape[0])
        with torch.no_grad():
            block.bn1.bias[:k] = -10.0  # those units of every branch's first ReLU negative for every input
    return model


# (family, case, builder, vector input?)
CASES: list[tuple[str, str, Callable[[], nn.Module], bool]] = [
    ("resnet", "default", lambda: mm.ResNet(), False),
    ("resnet", "zero last BN gamma", lambda: mm.ResNet(zero_gamma=True), False),
    ("resnet", "SE (default)", lambda: mm.ResNet(se=True), False),
    ("resnet", "SE, every SE unit dead (reduce bias -10)", lambda: _shifted_se(-10.0), False),
    ("resnet", "half of each branch's first ReLU dead", lambda: _dead_branches(0.5), False),
    ("resnet", "every branch's first ReLU dead (branches cut)", lambda: _dead_branches(1.0), False),
    ("resmlp", "default (LayerScale 0.1)", lambda: mm.ResMLP(inputs=FEATURES, init=0.1), True),
    ("resmlp", "LayerScale 0", lambda: mm.ResMLP(inputs=FEATURES, init=0.0), True),
    ("resmlp", "LayerScale 1e-5", lambda: mm.ResMLP(inputs=FEATURES, init=1e-5), True),
    ("resmlp", "LayerScale 1e-4", lambda: mm.ResMLP(inputs=FEATURES, init=1e-4), True),
    ("resmlp", "zero projection", lambda: mm.ResMLP(inputs=FEATURES, end="proj"), True),
    ("resmlp", "zero scalar gain", lambda: mm.ResMLP(inputs=FEATURES, end="gain", init=0.0), True),
    ("resmlp", "zero classifier", lambda: mm.ResMLP(inputs=FEATURES, zero_head=True), True),
    ("mlp", "default", lambda: mm.mlp([FEATURES] + [128] * 6 + [10]), True),
    ("mlp", "bias shift -0.05", lambda: mm.mlp([FEATURES] + [128] * 6 + [10], bias_shift=-0.05), True),
    ("mlp", "bias shift -0.1", lambda: mm.mlp([FEATURES] + [128] * 6 + [10], bias_shift=-0.1), True),
    ("mlp", "bias shift -0.5", lambda: mm.mlp([FEATURES] + [128] * 6 + [10], bias_shift=-0.5), True),
    ("mlp", "depth 3, bias shift -0.15", lambda: mm.mlp([FEATURES] + [128] * 3 + [10], bias_shift=-0.15), True),
    ("mlp", "depth 3, bias shift -0.2", lambda: mm.mlp([FEATURES] + [128] * 3 + [10], bias_shift=-0.2), True),
    ("mlp", "tiny (std 0.01, depth 8)", lambda: mm.mlp([FEATURES] + [128] * 8 + [10], std=0.01), True),
    ("mlp", "zeros", lambda: mm.mlp([FEATURES] + [128] * 6 + [10], zero=True), True),
]


def eval_loss(model: nn.Module, task: ImageTask) -> float:
    total, n = 0.0, 0
    with torch.no_grad():
        for batch in task.eval_batches():
            x, y = batch.inputs["pixel_values"], batch.targets
            total += float(nn.functional.cross_entropy(model(x), y)) * len(y)
            n += len(y)
    return total / n


def verdict(model: nn.Module, vector: bool) -> dict[str, Any]:
    x = torch.randn(64, FEATURES) if vector else torch.randn(32, 3, 32, 32)
    report = probe.measure(model, x, seed=0)
    return {
        "healthy": report.healthy,
        "errors": sorted({p.rule for p in report.verdict.problems}),
        "warnings": sorted({p.rule for p in report.verdict.warnings}),
        "notes": sorted({p.rule for p in report.verdict.notes}),
        "dead_units_max": max((x.dead_units for x in report.layers), default=0.0),
        "dead_units": [round(x.dead_units, 3) for x in report.layers if x.dead_units > 0],
    }


def run(case: tuple[str, str, Callable[[], nn.Module], bool], steps: int) -> dict[str, Any]:
    family, name, build, vector = case
    torch.manual_seed(0)
    body = build()
    probed = verdict(body, vector)
    model = _vector(body) if vector else body
    task = ImageTask(0)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    model.train()
    curve = {0: eval_loss(model, task)}
    start = time.process_time()
    for step in range(1, steps + 1):
        batch = task.train_batch()
        loss = nn.functional.cross_entropy(model(batch.inputs["pixel_values"]), batch.targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in CHECKPOINTS or step == steps:
            curve[step] = eval_loss(model, task)
    base = baseline_loss(task)
    return {
        "family": family,
        "case": name,
        "baseline": base,
        "loss": curve,
        "gain": base - curve[steps],
        "cpu_s": time.process_time() - start,
        "probe": probed,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--only", default="", help="comma-separated families")
    args = parser.parse_args()
    torch.set_num_threads(1)
    only = set(filter(None, args.only.split(",")))
    results = [run(c, args.steps) for c in CASES if not only or c[0] in only]
    reference: dict[str, float] = {}
    for r in results:
        reference.setdefault(r["family"], r["gain"])  # the family's first case is its reference
        r["of_reference"] = r["gain"] / reference[r["family"]] if reference[r["family"]] > 0 else None
        r["trains"] = bool(r["of_reference"] is not None and r["of_reference"] >= 0.5)
    print("| family | case | loss 0 / 25 / 50 / 75 / end | gain | of ref | trains | probe |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        losses = " / ".join(f"{v:.2f}" for v in r["loss"].values())
        p = r["probe"]
        said = "healthy" if p["healthy"] else "errors: " + ", ".join(p["errors"])
        if p["warnings"]:
            said += "; warnings: " + ", ".join(p["warnings"])
        print(
            f"| {r['family']} | {r['case']} | {losses} | {r['gain']:.2f} | {r['of_reference'] or 0:.2f} | "
            f"{'yes' if r['trains'] else 'no'} | {said} |"
        )
    if not only:
        JSON_PATH.write_text(json.dumps({"steps": args.steps, "torch": torch.__version__, "runs": results}, indent=1))


if __name__ == "__main__":
    main()
