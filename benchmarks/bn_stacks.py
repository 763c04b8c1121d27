"""Deep BatchNorm stacks: the gradient ratio at init, how rough the network is in its input, and
whether it trains (docs/corpus.md, "An independent check").

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/bn_stacks.py [--only NAME,NAME] [--no-train]

Plain Linear-BatchNorm stacks (the 40-layer one is `gradient_exploding`'s reference failure) beside
ConvMixer-like convolution stacks (Trockman and Kolter 2022: patch stem, then depthwise convolution
+ activation + BatchNorm inside a skip and pointwise convolution + activation + BatchNorm without
one), all at PyTorch's default init. Per case, one JSON line: probe's first error (rule @ row =
value), ``roughness`` (the network outputs' change under an input perturbation of relative size
1e-3, over the outputs' spread across the batch, divided by 1e-3: about 1 / 1e-3 = 1,000 is an
output as different as another input's, the chaotic map), and with training the gain of
``benchmarks/trainability.py``'s image protocol (AdamW lr 1e-3, 150 steps, batch 32; the task's
line is 0.25 nats). Minutes per ConvMixer on one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

IMAGE = 32


class BNMLP(nn.Module):
    """Flatten, then ``depth`` x (Linear, BatchNorm1d, activation), then a 10-way Linear."""

    def __init__(self, depth: int, act: type[nn.Module] = nn.ReLU, width: int = 256) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        d = 3 * IMAGE * IMAGE
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.BatchNorm1d(width), act()]
            d = width
        self.net = nn.Sequential(*layers, nn.Linear(d, 10))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values)


class Residual(nn.Module):
    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) + x


class ConvMixer(nn.Module):
    """ConvMixer-``dim``/``depth`` as its paper writes it; ``skips=False`` drops the depthwise skips."""

    def __init__(self, dim: int = 256, depth: int = 32, act: type[nn.Module] = nn.GELU, skips: bool = True) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        for _ in range(depth):
            dw = nn.Sequential(nn.Conv2d(dim, dim, 9, groups=dim, padding="same"), act(), nn.BatchNorm2d(dim))
            blocks += [Residual(dw) if skips else dw, nn.Sequential(nn.Conv2d(dim, dim, 1), act(), nn.BatchNorm2d(dim))]
        stem = [nn.Conv2d(3, dim, 4, stride=4), act(), nn.BatchNorm2d(dim)]
        self.net = nn.Sequential(*stem, *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(dim, 10))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values)


CASES: dict[str, Callable[[], nn.Module]] = {
    "bn_mlp_relu_20": lambda: BNMLP(20),
    "bn_mlp_relu_40": lambda: BNMLP(40),
    "bn_mlp_gelu_40": lambda: BNMLP(40, nn.GELU),
    "convmixer_gelu": lambda: ConvMixer(),
    "convmixer_relu": lambda: ConvMixer(act=nn.ReLU),
    "convmixer_gelu_no_skips": lambda: ConvMixer(skips=False),
}


def roughness(model: nn.Module, eps: float = 1e-3, batch: int = 16) -> float:
    """||f(x + eps d) - f(x)|| / ||f(x) - mean_batch f(x)|| / eps, train mode, d ~ N(0, 1) like x."""
    torch.manual_seed(0)
    x = torch.randn(batch, 3, IMAGE, IMAGE)
    model.train()
    with torch.no_grad():
        y0 = model(x)
        y = model(x + eps * torch.randn_like(x))
    return float((y - y0).norm() / (y0 - y0.mean(0)).norm() / eps)


def case(name: str, train: bool) -> dict[str, object]:
    import trainability

    import probe
    from tests import zoo

    out: dict[str, object] = {"case": name}
    torch.manual_seed(0)
    model = CASES[name]()
    report = probe.measure(model, zoo.image_inputs, batch_size=16, seed=0)
    errors = [f"{p.rule}@{p.layer}={p.value:.3g}" for p in report.verdict.problems]
    out["probe"] = errors[0] if errors else "healthy"
    torch.manual_seed(0)
    out["roughness"] = round(roughness(CASES[name]()), 1)
    if train:
        entry_id = f"bn_stacks/{name}"
        zoo.ZOO[entry_id] = zoo.Entry(
            entry_id, "bn_stacks", "handwritten", "image", True, CASES[name], zoo.image_inputs
        )
        run = trainability.train_zoo_case(entry_id, "default")
        out["gain"] = round(run.baseline - run.final_loss, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated case names")
    parser.add_argument("--no-train", action="store_true", help="probe and roughness only (seconds)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = [n for n in args.only.split(",") if n] or list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise SystemExit(f"--only: unknown {', '.join(unknown)}; choose from {', '.join(CASES)}")
    for name in names:
        print(json.dumps(case(name, not args.no_train)), flush=True)


if __name__ == "__main__":
    main()
