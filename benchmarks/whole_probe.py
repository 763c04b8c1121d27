"""The whole probe against what it watches (issue 21): ``probe.run_probe(spec)`` (build, discovery,
the measured pass, every statistic) over a bare build + forward + backward of the same
transformers config, batch and direction, interleaved in one process, median of repeats.

Configs: GPT-2, ResNet (basic blocks, 4 stages) and Llama at 4 blocks, width 128, the sizes
people put in CI (targets <= 1.3x), and with ``--gpt2-small`` GPT-2 small's own config (12 layers,
width 768: target <= 1.1x). ``--cli`` also times ``probe run --model whole_probe:factory`` (the
same model from a user factory: the memory guard, its estimate and the report added) in this
process against the same bare pass.
Skipped without ``transformers``.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import torch
from common import Result, interleaved_ratio

from probe import spec as spec_mod
from probe.spec import Spec

os.environ.setdefault("HF_HUB_OFFLINE", "1")

BATCH, SEQ, IMAGE = 4, 128, 64
SMALL = {
    "gpt2": {"n_layer": 4, "n_embd": 128, "n_head": 4},
    "resnet": {"hidden_sizes": [128, 128, 128, 128], "depths": [1, 1, 1, 1], "embedding_size": 64},
    "llama": {
        "num_hidden_layers": 4,
        "hidden_size": 128,
        "intermediate_size": 344,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
    },
}
LABELS = {"gpt2": "GPT-2", "resnet": "ResNet (basic, 4 stages)", "llama": "Llama"}
TARGET_SMALL, TARGET_GPT2_SMALL = 1.3, 1.1


def spec_of(kind: str, kwargs: dict[str, Any]) -> Spec:
    model: dict[str, Any] = {"hf": kind, "kwargs": kwargs}
    if kind == "resnet":
        model["kwargs"] = {"layer_type": "basic", **kwargs}
        model["image_size"] = IMAGE
    else:
        model["seq_len"] = SEQ
    return spec_mod.parse({"model": model, "data": {"batch_size": BATCH}, "run": {"device": "cpu"}}, default_name=kind)


def passes(spec: Spec) -> tuple[Any, Any]:
    """(bare, probed): a bare build + forward + backward of the spec's model (its first batch, a
    fixed random direction), and ``probe.run_probe(spec)``."""
    import probe
    from probe.model import hf
    from probe.model.inputs import data_stream, next_batch
    from probe.model.network import Built

    config, _ = hf.load_config(spec)
    inputs = hf.input_spec(config, spec)
    probe_model = hf.make_model(config)
    batch = next_batch(spec, Built(probe_model, [], inputs), data_stream(spec), torch.device("cpu"), torch.float32)
    with torch.no_grad():
        shape = probe_model(*batch.args, **batch.kwargs).shape
    direction = torch.randn(shape, generator=torch.Generator().manual_seed(2))

    def bare() -> None:
        torch.manual_seed(spec.run.seed)
        model = hf.make_model(config)
        model.train()
        out = model(*batch.args, **batch.kwargs)
        (out * direction).sum().backward()

    def probed() -> None:
        probe.run_probe(spec)

    return bare, probed


class Factory(torch.nn.Module):
    """The config's transformers model as a user factory returns it (``--model whole_probe:factory``):
    one tensor in (token ids or pixels), its last hidden state out."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        from probe.model import hf

        self.kind = kind
        self.inner = hf.make_model(hf.load_config(spec_of(kind, SMALL.get(kind, {})))[0]).inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(**{"pixel_values" if self.kind == "resnet" else "input_ids": x})
        return out.last_hidden_state


def factory(kind: str) -> torch.nn.Module:
    return Factory(kind)


def cli_pass(spec: Spec) -> Any:
    """``probe run --model whole_probe:factory`` (memory guard, estimate, build, probe, report) in
    this process, as a user runs it."""
    from typer.testing import CliRunner

    from probe.cli import app

    args = ["run", "--model", "whole_probe:factory", "--model-arg", f"kind={spec.model.hf}", "--format", "json"]
    args += ["--set", f"data.batch_size={BATCH}", "--set", "run.device=cpu"]
    if spec.model.hf == "resnet":
        args += ["--input-shape", f"3,{IMAGE},{IMAGE}"]
    else:
        args += ["--set", f"model.vocab_size={_vocab(spec)}", "--set", f"model.seq_len={SEQ}"]
    runner = CliRunner()

    def run() -> None:
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output

    return run


def _vocab(spec: Spec) -> int:
    from probe.model import hf

    return int(hf.load_config(spec)[0].vocab_size)


def factory_spec(kind: str) -> Spec:
    """The config's model from a user factory (``Factory``), as ``probe run --model`` reads it."""
    model: dict[str, Any] = {"import": "whole_probe:factory", "kwargs": {"kind": kind}}
    if kind == "resnet":
        model["input_shape"] = [3, IMAGE, IMAGE]
    else:
        model["vocab_size"] = _vocab(spec_of(kind, SMALL[kind]))
        model["seq_len"] = SEQ
    return spec_mod.parse({"model": model, "data": {"batch_size": BATCH}, "run": {"device": "cpu"}}, default_name=kind)


def once_against_twice(kind: str, repeats: int) -> tuple[float, float, float]:
    """A user factory's model probed with its memory estimate made from the model built once
    (``run_probe(spec, check=...)``, what ``probe run --model`` does) and, as before issue 21, from
    a meta-device call of the factory first (``estimate_any``, then ``run_probe``), each over the
    same bare pass, all three interleaved in one process: (median once / bare, median twice /
    bare, median bare seconds)."""
    import statistics
    import time

    import probe
    from probe.measurement.memory import estimate_any

    spec = factory_spec(kind)
    bare, _ = passes(spec_of(kind, SMALL[kind]))

    def once() -> None:
        probe.run_probe(spec, check=lambda est: None)

    def twice() -> None:
        estimate_any(spec)
        probe.run_probe(spec)

    fns = [bare, once, twice]
    for fn in fns:
        fn()
    times: list[list[float]] = [[], [], []]
    for i in range(repeats):
        for j in range(3):
            k = (i + j) % 3  # each takes every place in the order in turn
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    once_r = statistics.median(o / b for o, b in zip(times[1], times[0], strict=True))
    twice_r = statistics.median(t / b for t, b in zip(times[2], times[0], strict=True))
    return once_r, twice_r, statistics.median(times[0])


def results(quick: bool = False, gpt2_small: bool = False, cli: bool = False) -> list[Result]:
    try:
        import transformers  # noqa: F401
    except ImportError:
        return [Result("whole probe", 0.0, TARGET_SMALL, skipped=True, note="transformers not installed")]
    repeats = 3 if quick else 5
    cases = [(LABELS[k], spec_of(k, v), TARGET_SMALL) for k, v in SMALL.items()]
    if gpt2_small:
        cases.append(("GPT-2 small (12 x 768)", spec_of("gpt2", {}), TARGET_GPT2_SMALL))
    out = []
    for label, spec, target in cases:
        bare, probed = passes(spec)
        ratio, bare_s, probed_s = interleaved_ratio(bare, probed, repeats)
        note = f"bare {bare_s * 1e3:.0f} ms, probe {probed_s * 1e3:.0f} ms, median of {repeats}"
        out.append(Result(f"whole probe {label}: run_probe / bare", ratio, target, note=note))
        if cli and label in LABELS.values():  # the configs Factory builds
            once_r, twice_r, bare_s = once_against_twice(str(spec.model.hf), repeats)
            note = f"factory called twice (estimate on meta, then built): {twice_r:.3f}x; bare {bare_s * 1e3:.0f} ms"
            out.append(Result(f"whole probe {label}: --model, factory once / bare", once_r, target, note=note))
            ratio, bare_s, cli_s = interleaved_ratio(bare, cli_pass(spec), repeats)
            note = f"bare {bare_s * 1e3:.0f} ms, probe run {cli_s * 1e3:.0f} ms, median of {repeats}"
            out.append(Result(f"whole probe {label}: probe run --model / bare", ratio, target, note=note))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 repeats")
    parser.add_argument("--gpt2-small", action="store_true", help="also GPT-2 small's config (124M parameters)")
    parser.add_argument("--cli", action="store_true", help="also time `probe run --model` (the CLI path) in-process")
    args = parser.parse_args()
    for r in results(args.quick, args.gpt2_small, args.cli):
        print(r.line(), flush=True)


if __name__ == "__main__":
    main()
