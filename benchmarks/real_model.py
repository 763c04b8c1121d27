"""A real model: GPT-2 small's config (12 layers, width 768, vocabulary 50257, built offline), the
probed pass including the discovery pass over a bare forward + backward on the same inputs.

Target (issue 14): <= 1.3x on the CPU. Skipped when ``transformers`` is not installed.
"""

from __future__ import annotations

import argparse
import os

import torch
from common import Result, interleaved_ratio

from probe import spec as spec_mod
from probe.measurement.run import _probe
from probe.model.discovery import discover
from probe.model.inputs import data_stream, next_batch
from probe.model.network import Built

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TARGET = 1.3
BATCH, SEQ = 4, 128


class Hidden(torch.nn.Module):
    """GPT-2's last hidden state as the output (one tensor for the random-direction loss)."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import GPT2Config, GPT2Model

        self.model = GPT2Model(GPT2Config())  # the small model's defaults: 124M parameters

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids).last_hidden_state


def measure(repeats: int) -> tuple[float, float, float]:
    torch.manual_seed(0)
    model = Hidden()
    model.train()
    spec = spec_mod.parse(
        {
            "model": {"import": "real_model:Hidden", "vocab_size": 50257, "seq_len": SEQ},
            "data": {"batch_size": BATCH},
            "run": {"device": "cpu"},
        }
    )
    from probe.model.user_model import input_spec

    inputs = input_spec(spec)
    device = torch.device("cpu")
    batch = next_batch(spec, Built(model, [], inputs), data_stream(spec), device, torch.float32)
    direction = torch.randn(BATCH, SEQ, 768, generator=torch.Generator().manual_seed(2))

    def bare() -> None:
        out = model(*batch.args, **batch.kwargs)
        (out * direction).sum().backward()
        model.zero_grad(set_to_none=True)

    def probed() -> None:
        watched, notes = discover(model, inputs, spec.data.distribution)
        _probe(model, Built(model, watched, inputs, notes, keep_mode=True), spec, device, torch.float32, None)

    return interleaved_ratio(bare, probed, repeats)


def results(quick: bool = False) -> list[Result]:
    try:
        import transformers  # noqa: F401
    except ImportError:
        return [Result("real model gpt2-small", 0.0, TARGET, skipped=True, note="transformers not installed")]
    repeats = 3 if quick else 5
    ratio, bare_s, probed_s = measure(repeats)
    note = f"batch {BATCH} x {SEQ} tokens; bare {bare_s:.2f} s, probed {probed_s:.2f} s (with discovery), median of {repeats}"
    return [Result("real model gpt2-small: probed / bare fwd+bwd", ratio, TARGET, note=note)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    for r in results(args.quick):
        print(r.line())


if __name__ == "__main__":
    main()
