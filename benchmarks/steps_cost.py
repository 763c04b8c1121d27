"""`--steps K` against the training it stands for (issue 19): "K steps cost no more than K + 1 bare
training steps plus the step-0 probe".

Side by side on the same built network and batch, interleaved (``common.interleaved_ratio``):

- **reference**: the step-0 probe (``_probe`` with ``run.steps`` 0) then K + 1 bare training
  steps (forward, the same fixed-target MSE, backward, AdamW step, on a copy of the model);
- **probe --steps K**: ``_probe`` with ``run.steps`` K (the step-0 probe, then the K steps with
  the snapshot, the rows' step-0 and final outputs, the restore).

The ratio (probe / reference) must stay <= 1. Cases: the seed's MLP widened (depth 8, width 512,
batch 512) and a small transformer (d_model 128, 4 blocks, 32 tokens, batch 32), K = 10. The
steps run K + 1 forward passes but only K backward passes and optimizer steps, so the expected
ratio is below 1 by about one backward pass and optimizer step over the whole (~5% at K = 10);
on a loaded machine the median's noise is of that order (run it on an idle one).

Usage: OMP_NUM_THREADS=1 python benchmarks/steps_cost.py [--quick]
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import replace

import torch
from common import Result, built_model, interleaved_ratio

from probe import spec as spec_mod
from probe.measurement.run import _probe, float_outputs
from probe.model.inputs import data_stream, next_batch
from probe.model.network import Built
from probe.spec import Spec

K = 10
# (label, model keys, batch, repeats)
CASES = [
    ("mlp depth 8, width 512, batch 512", {"depth": 8, "width": 512, "input_dim": 512, "output_dim": 10}, 512, 9),
    (
        "transformer d 128 x 4, 32 tokens, batch 32",
        {"kind": "transformer", "width": 128, "depth": 4, "vocab_size": 1000, "seq_len": 32, "output_dim": 10},
        32,
        9,
    ),
]


def case_spec(model: dict[str, object], batch: int, steps: int) -> Spec:
    return spec_mod.parse(
        {"model": model, "data": {"batch_size": batch}, "run": {"device": "cpu", "steps": steps}}, default_name="steps"
    )


def bare_training(model: torch.nn.Module, built: Built, spec: Spec, steps: int) -> None:
    """``steps`` plain AdamW training steps of ``model`` (a copy of the built one: it keeps what
    it learns) on the run's batch, fitting a fixed random target."""
    model.train()
    batch = next_batch(spec, built, data_stream(spec), torch.device("cpu"), torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.run.lr)
    target: list[torch.Tensor] | None = None
    for _ in range(steps):
        outs = float_outputs(model(*batch.args, **batch.kwargs))
        if target is None:
            target = [torch.randn_like(o.detach()) for o in outs]
        loss = sum(((o - t) ** 2).mean() for o, t in zip(outs, target, strict=True))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[union-attr]
        optimizer.step()


def measure(model: dict[str, object], batch: int, repeats: int, k: int = K) -> tuple[float, float, float]:
    """(median ratio probe --steps K / reference, median reference s, median probe s)."""
    stepped = case_spec(model, batch, k)
    plain = replace(stepped, run=replace(stepped.run, steps=0))
    built = built_model(stepped)
    trained = copy.deepcopy(built.model)  # made once, outside the timed reference
    cpu = torch.device("cpu")

    def reference() -> None:
        _probe(built.model, built, plain, cpu, torch.float32, None)
        bare_training(trained, built, plain, k + 1)

    def probe_steps() -> None:
        _probe(built.model, built, stepped, cpu, torch.float32, None)

    return interleaved_ratio(reference, probe_steps, repeats)


def results(quick: bool = False) -> list[Result]:
    out = []
    for label, model, batch, repeats in CASES:
        repeats = 3 if quick else repeats
        ratio, ref_s, probe_s = measure(model, batch, repeats)
        note = f"step-0 probe + {K + 1} bare steps {ref_s * 1e3:.0f} ms, probe --steps {K} {probe_s * 1e3:.0f} ms"
        out.append(Result(f"--steps {K} cost: {label}", ratio, 1.0, note=f"{note}, median of {repeats}"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    for r in results(args.quick):
        print(r.line(), flush=True)


if __name__ == "__main__":
    main()
