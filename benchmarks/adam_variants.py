"""Which weights decide whether a scaled init trains: train a zoo / red-team case at ``init`` with one
group of its weights put back to their default-init rms (issue 18, the Adam view).

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/adam_variants.py hw/fused_bn_act:normal1 rt/tcn:tiny

Variants (each trained by ``trainability.train_zoo_case``: same seeds, task, AdamW lr 1e-3, 150-200
steps; the gain is the constant-guess baseline minus the final loss):

- ``as-is``: the init itself (reproduces ``zoo_trainability.json`` / ``redteam.md``);
- ``norm``: the weights probe finds ``normalized`` (their output goes straight into a
  normalization, or they are standardized in forward) put back to their default rms, direction
  kept: the forward pass is the same up to the norms' eps, what changes is how far Adam's steps of
  about ``lr`` turn them (``lr / rms`` of their norm per step);
- ``rest``: every other weight (2-D or more) put back to its default rms, the normalized ones kept;
- ``bias``: the biases of the modules whose weights were scaled scaled the same way (for ``tiny``:
  biases x 1e-3, so the signal is not a constant plus a trace of the input).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import redteam  # noqa: E402
import torch  # noqa: E402
import trainability as tr  # noqa: E402

VARIANTS = ("as-is", "norm", "rest", "bias")


def normalized_weights(model: torch.nn.Module, inputs: Any) -> set[int]:
    """ids of the weights of the rows probe finds ``normalized`` (probed on a copy)."""
    import copy

    import probe

    names = {n for n, _ in model.named_modules()}
    clone = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = probe.measure(clone, inputs, batch_size=16, seed=0)
    rows = {x.name for x in report.stats.layers if x.normalized}
    modules = dict(model.named_modules())
    out = set()
    for name in rows & names:
        w = getattr(modules[name], "weight", None)
        if isinstance(w, torch.Tensor):
            out.add(id(w))
    return out


def make_factory(zoo: Any, entry: Any, init: str, variant: str):
    def factory() -> torch.nn.Module:
        model = entry.factory()
        default_rms = {id(p): float(p.detach().pow(2).mean().sqrt()) for p in model.parameters()}
        zoo.apply_init(model, init)
        if variant == "as-is":
            return model
        if variant == "bias":
            for m in model.modules():
                w, b = getattr(m, "weight", None), getattr(m, "bias", None)
                if isinstance(w, torch.Tensor) and w.dim() >= 2 and isinstance(b, torch.Tensor):
                    with torch.no_grad():
                        b.mul_(zoo.TINY)
            return model
        with torch.random.fork_rng():
            normed = normalized_weights(model, entry.inputs(16))
        for p in model.parameters():
            if p.dim() < 2 or (id(p) in normed) != (variant == "norm"):
                continue
            rms = float(p.detach().pow(2).mean().sqrt())
            if rms > 0 and default_rms[id(p)] > 0:
                with torch.no_grad():
                    p.mul_(default_rms[id(p)] / rms)
        return model

    return factory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("cases", nargs="+", help="id:init")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args(argv)
    from tests import zoo

    torch.set_num_threads(1)
    redteam.register(zoo)
    warnings.simplefilter("ignore")
    for part in args.cases:
        id_, init = part.split(":")
        entry = zoo.ZOO[id_]
        gains = []
        for variant in args.variants.split(","):
            vid = f"{id_}@{init}@{variant}"
            zoo.ZOO[vid] = zoo.Entry(
                vid,
                entry.family,
                entry.source,
                entry.kind,
                entry.head,
                make_factory(zoo, entry, init, variant),
                entry.inputs,
            )
            run = tr.train_zoo_case(vid, "default")
            gains.append(f"{variant} {run.baseline - run.final_loss:+.3f}")
        print(f"{id_:26s} {init:8s} " + "  ".join(gains), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
