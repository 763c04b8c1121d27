"""The training runs behind `collapse` and `logit_scale` (docs/verdicts.md): probe's verdict at init
beside what a short training run reaches.

    python benchmarks/forward_rules.py collapse [--only NAME,NAME]   # MLPs, 400 Adam steps
    python benchmarks/forward_rules.py logits [--only NAME,NAME]     # classifier heads, 200 AdamW steps

``collapse``: MLPs on 32 Gaussian inputs, a 10-class task labelled by a fixed random two-layer ReLU
teacher (logits centred so no class dominates), Adam at lr 1e-3, batch 64, 400 steps; ``gain`` =
the loss of the best constant guess (the label entropy) minus the final loss on 1024 training
inputs, in nats. ``logits``: the teacher-image task of ``benchmarks/trainability.py`` (AdamW, lr
1e-3, batch 32, 200 steps), transformers ConvNeXt and ViT with a classification head (small
configs, offline) and the stock CNN, with the classifier's scale changed. Each line is one JSON
object: the case, probe's collapse value (largest judged row) or loss ratio, its verdict on the
rule, the starting and final loss and the gain. One thread, fixed seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import probe
from probe.judge import rules
from probe.judge.readings import COLLAPSE_MIN_UNITS


def mlp(depth: int, width: int, act: type[nn.Module], gain: float | None, bias_std: float = 0.0) -> nn.Module:
    """Linear-act x depth (N(0, gain^2 / fan_in) weights, N(0, bias_std^2) biases; ``gain=None``:
    PyTorch's default init) and a default Linear head to 10 classes."""
    layers: list[nn.Module] = []
    for i in range(depth):
        linear = nn.Linear(32 if i == 0 else width, width)
        if gain is not None:
            nn.init.normal_(linear.weight, std=gain / math.sqrt(linear.in_features))
            nn.init.normal_(linear.bias, std=bias_std) if bias_std else nn.init.zeros_(linear.bias)
        layers += [linear, act()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


HE = math.sqrt(2.0)
MLPS: dict[str, Callable[[], nn.Module]] = {
    "he_relu_2": lambda: mlp(2, 256, nn.ReLU, HE),
    "he_relu_8": lambda: mlp(8, 256, nn.ReLU, HE),
    "he_relu_20": lambda: mlp(20, 256, nn.ReLU, HE),
    "he_relu_50": lambda: mlp(50, 256, nn.ReLU, HE),
    "he_relu_100": lambda: mlp(100, 256, nn.ReLU, HE),
    "he_relu_16_w128": lambda: mlp(16, 128, nn.ReLU, HE),
    "he_relu_32_w128": lambda: mlp(32, 128, nn.ReLU, HE),
    "he_relu_64_w128": lambda: mlp(64, 128, nn.ReLU, HE),
    "default_relu_8": lambda: mlp(8, 256, nn.ReLU, None),
    "xavier_sigmoid_3": lambda: mlp(3, 256, nn.Sigmoid, 1.0),
    "xavier_sigmoid_8": lambda: mlp(8, 256, nn.Sigmoid, 1.0),
    "xavier_tanh_20": lambda: mlp(20, 256, nn.Tanh, 1.0),
    "ordered_tanh_20": lambda: mlp(20, 256, nn.Tanh, 0.5, bias_std=0.3),
}


def teacher_task() -> tuple[torch.Tensor, torch.Tensor, float]:
    g = torch.Generator().manual_seed(123)
    x = torch.randn(4096, 32, generator=g)
    hidden = torch.randn(32, 256, generator=g) * math.sqrt(2 / 32)
    readout = torch.randn(256, 10, generator=g) / 16
    logits = F.relu(x @ hidden) @ readout
    y = (logits - logits.mean(0)).argmax(1)
    freq = torch.bincount(y, minlength=10).double() / len(y)
    freq = freq[freq > 0]
    return x, y, float(-(freq * freq.log()).sum())


def collapse_value(report: probe.Report) -> float:
    judged = [r for r in report.stats.layers if r.units >= COLLAPSE_MIN_UNITS and r.correlation is not None]
    return max((r.correlation or 0.0 for r in judged), default=0.0)


def run_collapse(only: list[str]) -> None:
    x, y, baseline = teacher_task()
    for name, build in MLPS.items():
        if only and name not in only:
            continue
        torch.manual_seed(0)
        model = build()
        report = probe.measure(model, x[:256], device="cpu", seed=0)
        with torch.no_grad():
            start = float(F.cross_entropy(model(x[:1024]), y[:1024]))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(1)
        t0 = time.perf_counter()
        for _ in range(400):
            idx = torch.randint(0, len(x), (64,), generator=g)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            end = float(F.cross_entropy(model(x[:1024]), y[:1024]))
        fired = sorted({p.rule for p in report.verdict.problems})
        row = {"case": name, "collapse": round(collapse_value(report), 3), "errors": fired}
        row |= {"start": round(start, 3), "end": round(end, 3), "gain": round(baseline - end, 3)}
        print(json.dumps(row | {"seconds": round(time.perf_counter() - t0, 1)}), flush=True)


def stock_cnn(norm: bool = False) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * 8 * 8, 128),
        nn.ReLU(),
        *([nn.LayerNorm(128)] if norm else []),
        nn.Linear(128, 10),
    )


class _Logits(nn.Module):
    """A transformers image classifier with its logits as the output."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits  # type: ignore[no-any-return]


def hf_classifier(kind: str) -> nn.Module:
    from transformers import AutoConfig, AutoModelForImageClassification

    sizes = {
        "convnext": {"depths": [1, 1, 1, 1], "hidden_sizes": [16, 32, 64, 128]},
        "vit": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128},
    }
    extra = {"patch_size": 8} if kind == "vit" else {}
    config = AutoConfig.for_model(kind, num_labels=10, image_size=32, **sizes[kind], **extra)
    return _Logits(AutoModelForImageClassification.from_config(config))


def _head(model: nn.Module) -> nn.Linear:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def _normal_head(std: float) -> Callable[[nn.Module], None]:
    def change(model: nn.Module) -> None:
        _head(model).weight.normal_(0.0, std)

    return change


def _scaled_head(factor: float) -> Callable[[nn.Module], None]:
    def change(model: nn.Module) -> None:
        head = _head(model)
        head.weight.mul_(factor)
        head.bias.mul_(factor)

    return change


def _unchanged(model: nn.Module) -> None:
    return None


HEADS: dict[str, tuple[Callable[[], nn.Module], Callable[[nn.Module], None]]] = {
    "convnext_default": (lambda: hf_classifier("convnext"), _unchanged),
    "convnext_head_n0.4": (lambda: hf_classifier("convnext"), _normal_head(0.4)),
    "convnext_head_n0.6": (lambda: hf_classifier("convnext"), _normal_head(0.6)),
    "convnext_head_n0.8": (lambda: hf_classifier("convnext"), _normal_head(0.8)),
    "convnext_head_n1": (lambda: hf_classifier("convnext"), _normal_head(1.0)),
    "vit_default": (lambda: hf_classifier("vit"), _unchanged),
    "vit_head_n0.5": (lambda: hf_classifier("vit"), _normal_head(0.5)),
    "vit_head_n1": (lambda: hf_classifier("vit"), _normal_head(1.0)),
    "cnn_default": (stock_cnn, _unchanged),
    "cnn_head_x100": (stock_cnn, _scaled_head(100.0)),
    "cnn_head_x300": (stock_cnn, _scaled_head(300.0)),
    "ln_cnn_default": (lambda: stock_cnn(norm=True), _unchanged),
    "ln_cnn_head_n1": (lambda: stock_cnn(norm=True), _normal_head(1.0)),
    "ln_cnn_head_x30": (lambda: stock_cnn(norm=True), _scaled_head(30.0)),
}


def run_logits(only: list[str]) -> None:
    from benchmarks.trainability import ImageTask

    batches = ImageTask(0).eval_batches()
    targets = torch.cat([b.targets for b in batches])
    freq = torch.bincount(targets, minlength=10).double() / len(targets)
    baseline = float(-(freq[freq > 0] * freq[freq > 0].log()).sum())

    def eval_loss(model: nn.Module) -> float:
        with torch.no_grad():
            return sum(
                float(F.cross_entropy(model(b.inputs["pixel_values"]), b.targets)) * len(b.targets) for b in batches
            ) / len(targets)

    for name, (build, change) in HEADS.items():
        if only and name not in only:
            continue
        torch.manual_seed(0)
        model = build()
        with torch.no_grad():
            change(model)
        report = probe.measure(model, batches[0].inputs["pixel_values"][:64], device="cpu", seed=0)
        ratio = [v for _, v in rules.RULES["logit_scale"].checks[0].values(report.stats)]
        verdict = [p.severity for p in (*report.verdict.problems, *report.verdict.warnings) if p.rule == "logit_scale"]
        model.train()
        task = ImageTask(0)  # each case sees the same batches in the same order
        start = eval_loss(model)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
        t0 = time.perf_counter()
        for _ in range(200):
            batch = task.train_batch()
            loss = F.cross_entropy(model(batch.inputs["pixel_values"]), batch.targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
        end = eval_loss(model)
        row = {"case": name, "loss_ratio": round(ratio[0], 2) if ratio and ratio[0] else None, "logit_scale": verdict}
        row |= {"start": round(start, 3), "start_ratio": round(start / math.log(10), 2), "end": round(end, 3)}
        print(json.dumps(row | {"gain": round(baseline - end, 3), "seconds": round(time.perf_counter() - t0, 1)}))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("which", choices=("collapse", "logits"))
    parser.add_argument("--only", default="", help="comma-separated case names")
    args = parser.parse_args()
    torch.set_num_threads(1)
    only = [s for s in args.only.split(",") if s]
    (run_collapse if args.which == "collapse" else run_logits)(only)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
