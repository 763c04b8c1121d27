"""Shared helpers: the two passes being compared, interleaved timing, and result lines.

A "bare" pass is what a user's training step costs without probe: draw a batch, forward, a
fixed-direction loss, backward, zero the gradients. A "probed" pass is probe's own loop
(``probe.measurement.run._probe``: the same steps plus hooks, every statistic, and the one host read).
Both run on the same built model and data, so the ratio is the probe's overhead alone.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from probe import spec as spec_mod
from probe.measurement.run import _probe
from probe.model.build import build
from probe.model.inputs import data_stream, draw_batch
from probe.model.network import Built
from probe.spec import Spec


@dataclass
class Result:
    name: str
    measured: float
    target: float
    unit: str = "x"
    note: str = ""
    skipped: bool = False

    @property
    def passed(self) -> bool:
        return self.measured <= self.target

    def line(self) -> str:
        if self.skipped:
            return f"  SKIP  {self.name:<58s} {self.note}"
        verdict = "PASS" if self.passed else "MISS"
        value = f"{self.measured:.3f}{self.unit}"
        target = f"<= {self.target:g}{self.unit}"
        note = f"  ({self.note})" if self.note else ""
        return f"  {verdict}  {self.name:<58s} {value:>10s}  target {target}{note}"


def mlp_spec(depth: int, width: int, batch: int, activation: str = "relu", input_dim: int | None = None) -> Spec:
    return spec_mod.parse(
        {
            "model": {"depth": depth, "width": width, "activation": activation, "input_dim": input_dim or width},
            "data": {"batch_size": batch},
            "run": {"device": "cpu", "dtype": "float32"},
        },
        default_name=f"mlp{depth}x{width}",
    )


def built_model(spec: Spec, device: torch.device | str = "cpu") -> Built:
    torch.manual_seed(spec.run.seed)
    built = build(spec)
    built.model.to(device)
    return built


def bare_pass(built: Built, spec: Spec, device: torch.device) -> None:
    """forward + backward with no hooks: the physical limit of a probe."""
    model = built.model
    model.train()
    data_gen = data_stream(spec)  # the same inputs as the probed pass
    dir_gen = torch.Generator().manual_seed(spec.run.seed * 1000 + 2)
    for _ in range(spec.data.batches):
        x = draw_batch(spec, data_gen).to(device)
        out = model(x)
        direction = torch.randn(out.shape, generator=dir_gen).to(device)
        (out * direction).sum().backward()
        model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()


def probed_pass(built: Built, spec: Spec, device: torch.device) -> list:
    """probe's own loop: forward + backward + every statistic + the one host read."""
    return _probe(built.model, built, spec, device, torch.float32, None)[0]


def interleaved_ratio(
    a: Callable[[], object], b: Callable[[], object], repeats: int, warmup: int = 1
) -> tuple[float, float, float]:
    """Median of (time b / time a) over ``repeats`` rounds, a and b run back to back in each
    round (order alternating) so that load from other processes hits both alike.
    Returns (median ratio, median a seconds, median b seconds)."""
    for _ in range(warmup):
        a()
        b()
    ratios, ta, tb = [], [], []
    for i in range(repeats):
        order = (a, b) if i % 2 == 0 else (b, a)
        times = {}
        for fn in order:
            t0 = time.perf_counter()
            fn()
            times[fn] = time.perf_counter() - t0
        ta.append(times[a])
        tb.append(times[b])
        ratios.append(times[b] / times[a])
    return statistics.median(ratios), statistics.median(ta), statistics.median(tb)
