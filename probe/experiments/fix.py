"""LSUV (layer-sequential unit variance, Mishkin & Matas 2015): turn a failing init into one that passes.

Starting from an init (orthogonal by default), each weighted layer, in execution order, has its
weight rescaled until the variance of its output on the probe's batches is 1 within a tolerance,
for at most ``max_iter`` passes. A layer whose output is all zero or not finite cannot be rescaled:
it is reported with that status and left as it is (never divided by zero).

``lsuv_built`` itself lives in ``model/lsuv.py``: it is also the post-build step of the ``lsuv`` init strategy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from probe.errors import RunError, SpecError
from probe.model.lsuv import LsuvResult, lsuv_built
from probe.records import Stats, Verdict
from probe.spec import Spec

if TYPE_CHECKING:
    from probe.measurement.once import MemoryCheck

    pass


@dataclass(frozen=True)
class FixResult:
    """The spec as written (``before``) beside the LSUV-fixed network (``after``)."""

    before: Stats
    before_verdict: Verdict
    after: Stats
    after_verdict: Verdict
    lsuv: LsuvResult
    fixed_spec: Spec
    state_dict: dict[str, Any]


def lsuv_spec(spec: Spec, start: str | None = None, tolerance: float = 0.1, max_iter: int = 10) -> Spec:
    """``spec`` with the ``lsuv`` weight strategy (validated like any spec)."""
    from probe import spec as spec_mod

    raw: dict[str, Any] = {"name": "lsuv", "tolerance": tolerance, "max_iter": max_iter}
    if start is not None:
        raw["start"] = start
    weight = spec_mod.parse({"init": {"weight": raw}}).init.weight
    # explicit: a user model gets the start init too, as with ``--set init.weight=lsuv``
    return replace(spec, init=replace(spec.init, weight=weight, explicit=True))


def fix(
    spec: Spec,
    start: str | None = None,
    tolerance: float = 0.1,
    max_iter: int = 10,
    step: Callable[[str], None] | None = None,
    check: MemoryCheck | None = None,
) -> FixResult:
    """Probe ``spec`` as written, then LSUV from ``start`` (default orthogonal), and probe the
    result; ``step(label)`` as each of the three begins. ``check``: given the first probe's memory
    estimate (``probe.measurement.once``), which the later two share."""
    import torch

    from probe.judge.rules import evaluate
    from probe.measurement.run import run_probe
    from probe.measurement.threads import intra_op_threads, threads_for
    from probe.model.build import build

    say = step or (lambda _label: None)
    say("probing as written")
    before = run_probe(spec, check=check)
    fixed = lsuv_spec(spec, start, tolerance, max_iter)
    say("LSUV")
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(fixed.run.seed)  # exactly as run_probe builds, so the weights are the same
            built = build(fixed)
            with intra_op_threads(threads_for(fixed, built.model)):
                result = lsuv_built(built, fixed)
    except RuntimeError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RunError(f"lsuv failed on this network: {first}") from None
    state = {k: v.detach().clone() for k, v in built.model.state_dict().items()}
    say("probing the result")
    after = run_probe(fixed, state_dict=state)
    return FixResult(before, evaluate(before), after, evaluate(after), result, fixed, state)


def weights_bytes(state_dict: dict[str, Any]) -> bytes:
    """The bytes ``torch.save`` writes for ``state_dict`` (``probe.render.output`` writes them to a file)."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    return buffer.getvalue()


def load_weights(path: Path) -> dict[str, Any]:
    """A state dict saved by ``probe fix`` (or any ``torch.save(model.state_dict())``)."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SpecError(f"weights file not found: {path}") from None
    except Exception as exc:
        raise SpecError(f"cannot read weights file {path}: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    if not isinstance(state, dict):
        raise SpecError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    return state
