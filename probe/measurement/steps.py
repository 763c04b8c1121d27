"""The first optimizer steps (``run.steps``): K AdamW steps on one batch after the step-0
measurement, what they moved, and every parameter and buffer put back exactly.

Why: under a normalization, a weight k times its fan-in scale gives the forward statistics of a
well-scaled one (the norm divides the scale out), so no step-0 statistic sees it; only the
optimizer does. Adam moves each element about ``lr`` per step whatever its gradient's size, so
a weight of rms ``r`` turns about ``lr / r`` of its norm per step: k times slower at k times
the scale. These steps measure it instead of inferring it (docs/verdicts.md, ``stalled``).

The objective is generic (any model, no labels): fit a fixed random target ``t`` of the
output's own per-element scale, ``mean((out - t)^2)``, on one fixed batch. Its progress after K
steps, ``1 - loss_K / loss_0``, reads the same on every model whatever the output's scale or
size: the fraction of the distance to a target as far away as the output is large that K
steps closed. Each row records ``||W_K - W_0|| / ||W_0||`` (its weight's relative update) and
``||y_K - y_0|| / ||y_0||`` (its output's relative change on the batch) and the rms of ``y_K - y_0``
per coordinate (the size the coordinate check compares across widths, ``probe sweep --steps``).

Memory: the snapshot is one CPU copy of every parameter and buffer (no copy of the module), the
optimizer's state lives for the steps only, and each row keeps its step-0 output on the batch.
Cost: K + 1 forward passes, K backward passes and K optimizer steps, plus the snapshot and
restore; the rows' outputs are cloned at step 0 and after the last step only
(``benchmarks/steps_cost.py``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from probe.errors import RunError
from probe.measurement.step_signals import LogitMax, adam_update_rms, constant_loss, log_partition
from probe.records import StepRow, StepStats

if TYPE_CHECKING:
    import torch

    from probe.model.network import Watched

Progress = Callable[[int, int], None]  # (steps done, steps total)

_TARGET_STREAM = 3  # random stream (from run.seed) of the fixed target; run.py uses 0-2


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of every parameter and buffer (by qualified name; shared tensors once)."""
    out: dict[str, torch.Tensor] = {}
    for name, t in _tensors(model):
        out[name] = t.detach().to("cpu", copy=True)
    return out


def restore(model: torch.nn.Module, saved: dict[str, torch.Tensor]) -> None:
    """Put back what ``snapshot`` saved, in place (bit for bit: ``copy_`` of the same dtype)."""
    import torch

    with torch.no_grad():
        for name, t in _tensors(model):
            t.copy_(saved[name])


def _tensors(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    seen: set[int] = set()
    for name, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        if id(t) not in seen:
            seen.add(id(t))
            yield name, t


def take_steps(
    model: torch.nn.Module,
    watched: list[Watched],
    forward: Callable[[], list[torch.Tensor]],
    steps: int,
    lr: float,
    seed: int,
    progress: Progress | None = None,
    lr_scale: Mapping[str, float] | None = None,
    attention_of: torch.nn.Module | None = None,
) -> StepStats:
    """``steps`` AdamW steps (``lr``, times ``lr_scale``'s multiplier for the parameters it names:
    muP's) on ``forward``'s outputs fitting a fixed random target; the model comes back exactly as
    it was (parameters, buffers, ``.grad`` cleared). ``attention_of``: the model whose attention
    logits' largest value is read at each forward pass (None: not read)."""
    import torch

    from probe.model.mup import param_groups

    started = time.perf_counter()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise RunError("--steps: the model has no parameter that requires grad")
    saved = snapshot(model)
    names = {id(t): name for name, t in _tensors(model)}
    # each row's weight before the steps: the snapshot's copy (a weight the model does not hold, own)
    weights = {
        w.name: saved[names[id(w.weight)]] if id(w.weight) in names else w.weight.detach().to("cpu", copy=True)
        for w in watched
        if w.weight is not None
    }
    outputs: dict[str, list[torch.Tensor]] = {}
    logits = LogitMax(attention_of) if attention_of is not None else None
    attention: list[float | None] = []  # the largest attention logit before each step and after the last

    def watched_forward(rows: list[Watched]) -> list[torch.Tensor]:
        with _row_outputs(rows, outputs), logits.watching() if logits is not None else nullcontext():
            out = forward()
        if logits is not None:
            attention.append(logits.take())
        return out

    try:
        first = watched_forward(watched)  # step 0: the rows' outputs and the target are drawn from it
        starts = {name: ys[0] for name, ys in outputs.items() if ys}
        gen = torch.Generator().manual_seed(seed * 1000 + _TARGET_STREAM)
        targets = [
            (torch.randn(o.shape, generator=gen).to(o.device, o.dtype) * _scale(o.detach())).detach() for o in first
        ]
        optimizer = torch.optim.AdamW(param_groups(model, lr, lr_scale or {}), lr=lr)
        losses: list[float] = []
        log_z: list[float | None] = []
        row_params = [w.weight for w in watched if w.weight is not None]
        rms_max: dict[int, float] = {}  # Adam's update RMS per row weight, the largest over the steps
        rms_steps: list[float | None] = []  # per step, the largest over the rows' weights
        out = first
        recorded = False  # the rows' outputs are cloned twice only: at step 0 and after the last step
        for k in range(steps):
            loss = _objective(out, targets)
            losses.append(float(loss.detach()))
            log_z.append(log_partition(out))
            if not math.isfinite(losses[-1]):
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            del loss
            rms = adam_update_rms(optimizer, row_params)
            for key, value in rms.items():
                rms_max[key] = max(value, rms_max.get(key, value))
            rms_steps.append(max(rms.values()) if rms else None)
            recorded = k == steps - 1
            outputs.clear()
            out = watched_forward(watched if recorded else [])
            if progress is not None:
                progress(k + 1, steps)
        if not recorded:  # stopped early (a loss not finite) or no step: the rows' outputs now
            outputs.clear()
            if attention:
                attention.pop()  # this forward pass reads the same weights again
            out = watched_forward(watched)
        last_loss = float(_objective(out, targets).detach())
        log_z.append(log_partition(out))
        ends = {name: ys[0] for name, ys in outputs.items() if ys}

        def both(name: str) -> bool:
            return name in starts and name in ends

        with torch.no_grad():
            out_change = _change([o.detach() for o in out], [o.detach() for o in first])
            rows = tuple(
                StepRow(
                    name=w.name,
                    update_ratio=_update(w, weights),
                    output_change=_change([ends[w.name]], [starts[w.name]]) if both(w.name) else None,
                    change_rms=_rms(ends[w.name], starts[w.name]) if both(w.name) else None,
                    amax=_amax(ends.get(w.name)),
                    weight_amax=_amax(w.weight),
                    adam_rms=rms_max.get(id(w.weight)) if w.weight is not None else None,
                )
                for w in watched
            )
        del optimizer
    finally:
        restore(model, saved)
        model.zero_grad(set_to_none=True)
    loss0 = losses[0] if losses else last_loss
    return StepStats(
        steps=steps,
        lr=lr,
        progress=1.0 - last_loss / loss0 if loss0 > 0 else 0.0,
        output_change=out_change,
        losses=(*losses, last_loss),
        rows=rows,
        baseline=constant_loss(targets),
        log_z=tuple(log_z),
        adam_rms=tuple(rms_steps),
        attention_max=tuple(attention),
        elapsed_s=time.perf_counter() - started,
    )


def _scale(t: torch.Tensor) -> float:
    """The target's rms: the output's own; 1 for an output that is 0 (a zero-initialized head has
    no scale of its own; 1 is that of the logits and standardized targets it is trained toward)."""
    rms = float(t.float().pow(2).mean().sqrt())
    return rms if rms > 0 and math.isfinite(rms) else 1.0


def _objective(out: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
    total = sum(((o.float() - t.float()) ** 2).mean() for o, t in zip(out, targets, strict=True))
    return total / len(out)  # type: ignore[return-value]


def _change(now: list[torch.Tensor], then: list[torch.Tensor]) -> float | None:
    """``||now - then|| / ||then||`` over every tensor together; None where ``then`` is 0."""
    num = sum(float((a.float() - b.float()).pow(2).sum()) for a, b in zip(now, then, strict=True))
    den = sum(float(b.float().pow(2).sum()) for b in then)
    return math.sqrt(num / den) if den > 0 else None


def _amax(t: torch.Tensor | None) -> float | None:
    """The largest magnitude (None: no tensor, or one on the meta device)."""
    return None if t is None or t.is_meta or t.numel() == 0 else float(t.detach().abs().max())


def _rms(now: torch.Tensor, then: torch.Tensor) -> float | None:
    """The root mean square of ``now - then`` per coordinate (the coordinate check's size of a
    change, comparable across widths); None for an empty tensor."""
    if then.numel() == 0:
        return None
    return float((now.float() - then.float()).pow(2).mean().sqrt())


def _update(w: Watched, weights: dict[str, torch.Tensor]) -> float | None:
    if w.weight is None or w.name not in weights:
        return None
    before = weights[w.name]
    norm = float(before.float().norm())
    if norm == 0:
        return None
    return float((w.weight.detach().to("cpu").float() - before.float()).norm()) / norm


@contextmanager
def _row_outputs(watched: list[Watched], into: dict[str, list[torch.Tensor]]) -> Iterator[None]:
    """Each watched row's output (its measured tensor, detached) while the block runs."""
    from probe.model.network import output_tensor

    def hook(w: Watched) -> Callable[..., None]:
        def record(_module: Any, _inputs: Any, output: Any) -> None:
            y = output_tensor(output, w.output_index)
            if y is not None and w.name not in into:  # a module called again (shared) keeps its first call
                into[w.name] = [y.detach().clone()]

        return record

    handles = [w.module.register_forward_hook(hook(w)) for w in watched]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
