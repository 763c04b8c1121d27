"""What Adam's first steps do to each weight, on the zoo's and the red-team's training tasks (issue 18).

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/adam_view.py rt/tcn:tiny,default hf/llama:tiny --steps 30

Builds a case as ``trainability.train_zoo_case`` does (same seeds, head, task, AdamW lr 1e-3, weight
decay 0.01), takes ``--steps`` steps on the task's training batches and prints, per case: the loss
on the step's batch (step 0, 1, the last), the size-weighted median over the body's weights (2-D or
more) of the relative update per step ``||W_t - W_t-1|| / ||W_t-1||`` (step 1 and the last), the
angle each weight turned from its start (median), the weights' norm growth ``||W_K|| / ||W_0||``
(median), the stable rank ``||W||_F^2 / ||W||_2^2`` after the steps over the one at the start
(median), and the output's input-dependent share (variance over the batch / mean square) at the
start and after the steps. ``--json`` writes every case's numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import redteam  # noqa: E402
import torch  # noqa: E402
import trainability as tr  # noqa: E402


def weighted_median(pairs: list[tuple[float, int]]) -> float:
    pairs = sorted(p for p in pairs if math.isfinite(p[0]))
    half, seen = sum(n for _, n in pairs) / 2, 0
    for v, n in pairs:
        seen += n
        if seen >= half:
            return v
    return math.nan


def stable_rank(w: torch.Tensor) -> float:
    m = w.detach().reshape(w.shape[0], -1).double()
    s = torch.linalg.svdvals(m)
    return float((s**2).sum() / s[0] ** 2) if s[0] > 0 else math.nan


def input_share(y: torch.Tensor) -> float:
    y = y.detach().double()
    ms = float((y**2).mean())
    return float(y.var(dim=0, unbiased=False).mean()) / ms if ms > 0 else math.nan


def view(entry_id: str, init: str, steps: int, seed: int = 0) -> dict[str, Any]:

    body, _kind, _own, task, model = tr.zoo_classifier(entry_id, init, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=tr.LR, weight_decay=tr.WEIGHT_DECAY)
    weights = [(n, p) for n, p in body.named_parameters() if p.dim() >= 2 and p.norm() > 0]
    start = [p.detach().clone() for _, p in weights]
    rank0 = [stable_rank(w) for w in start]
    sizes = [p.numel() for _, p in weights]
    fixed = task.train_batch()  # one batch to read the output's input-dependent share on
    with torch.no_grad():
        share0 = input_share(model(fixed.inputs))
    losses, upd_first, upd_last = [], math.nan, math.nan
    for step in range(1, steps + 1):
        prev = [p.detach().clone() for _, p in weights]
        loss = tr.loss_of(model, task.train_batch())
        losses.append(float(loss))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        rel = [
            (float((p.detach() - w).norm() / w.norm()), n) for (_, p), w, n in zip(weights, prev, sizes, strict=True)
        ]
        if step == 1:
            upd_first = weighted_median(rel)
        upd_last = weighted_median(rel)
    with torch.no_grad():
        share_k = input_share(model(fixed.inputs))
        losses.append(float(tr.loss_of(model, task.train_batch())))
    angle, growth, rank = [], [], []
    for (_, p), w0, r0, n in zip(weights, start, rank0, sizes, strict=True):
        w = p.detach()
        cos = float((w * w0).sum() / (w.norm() * w0.norm()))
        angle.append((math.degrees(math.acos(max(-1.0, min(1.0, cos)))), n))
        growth.append((float(w.norm() / w0.norm()), n))
        rank.append((stable_rank(w) / r0, n))
    return {
        "id": entry_id,
        "init": init,
        "steps": steps,
        "loss": [losses[0], losses[1] if len(losses) > 1 else math.nan, losses[-1]],
        "update_first": upd_first,
        "update_last": upd_last,
        "angle_deg": weighted_median(angle),
        "growth": weighted_median(growth),
        "rank_ratio": weighted_median(rank),
        "share0": share0,
        "share_k": share_k,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("cases", nargs="+", help="id:init,init")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    from tests import zoo

    torch.set_num_threads(1)
    redteam.register(zoo)
    out = []
    for part in args.cases:
        id_, inits = part.split(":")
        for init in inits.split(","):
            r = view(id_, init, args.steps)
            out.append(r)
            lo = "/".join(f"{v:.3g}" for v in r["loss"])
            print(
                f"{id_:26s} {init:8s} loss {lo:22s} upd1 {r['update_first']:.3g} updK {r['update_last']:.3g} "
                f"angle {r['angle_deg']:.1f} growth {r['growth']:.3g} rank {r['rank_ratio']:.3g} "
                f"share {r['share0']:.2g}->{r['share_k']:.2g}",
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
