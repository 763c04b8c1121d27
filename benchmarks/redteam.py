"""probe's verdict on the red-team corpus (``benchmarks/redteam_models.py``), and training beside it.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/redteam.py [--only ID,ID] [--inits ...]
    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/redteam.py --train rt/tcn:default,tiny

The models join the zoo's registry for the run only (``tests/zoo``'s ``ZOO`` dict, family
``redteam``), so ``zoo_check.check_one`` probes them (batch 16, seed 0) and
``trainability.train_zoo_case`` trains them on the zoo's tasks (150 AdamW steps for images, 200 for
tokens and vectors; a case trains when its gain is at least half its default's, the default's at
least 0.25 nats). Prints one line per case.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import redteam_models  # noqa: E402
import zoo_check  # noqa: E402


def register(zoo: Any) -> None:
    """Add the red-team models to ``zoo.ZOO`` (held out: every family split reads ``held-out``)."""
    split = zoo.split
    zoo.split = lambda family: "held-out" if family == "redteam" else split(family)
    for id_, (kind, factory, head) in redteam_models.MODELS.items():
        zoo.ZOO[id_] = zoo.Entry(id_, "redteam", "handwritten", kind, head, factory, zoo.INPUTS[kind])


def probe_all(ids: list[str], inits: list[str]) -> None:
    zoo = zoo_check.quiet_zoo()
    register(zoo)
    for i in ids:
        for init in inits:
            r = zoo_check.check_one(zoo, i, init)
            status = {True: "healthy", False: "UNHEALTHY", None: "ERROR"}[r["healthy"]]
            detail = r.get("error") or zoo_check.fmt_problems(r.get("problems", []), 4)
            warn = zoo_check.fmt_problems(r.get("warnings", []), 3)
            print(f"{i:26s} {init:8s} {status:9s} {detail} | warnings: {warn}", flush=True)


def train(cases: str) -> None:
    import torch
    import trainability

    from tests import zoo

    torch.set_num_threads(1)
    register(zoo)
    for part in cases.split(";"):
        id_, inits = part.split(":")
        for init in inits.split(","):
            run = trainability.train_zoo_case(id_, init)
            gain = run.baseline - run.final_loss
            print(
                f"{id_:26s} {init:8s} loss {run.initial_loss:.3g} -> {run.final_loss:.3f} "
                f"(baseline {run.baseline:.3f}) gain {gain:.3f} moved {run.moved:.3g}",
                flush=True,
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated ids (default: all)")
    parser.add_argument("--inits", default="default,zeros,normal1,tiny")
    parser.add_argument("--train", default="", help="'id:init,init;id:init': train these cases instead")
    args = parser.parse_args(argv)
    if args.train:
        train(args.train)
        return 0
    ids = [i for i in args.only.split(",") if i] or list(redteam_models.MODELS)
    probe_all(ids, [i for i in args.inits.split(",") if i])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
