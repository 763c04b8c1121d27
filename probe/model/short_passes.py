"""Token models discovered on two short sequences (``SHORT_LENGTHS``) instead of the full one:
the records of the two passes, where they agree, scaled to the full length; the modules'
attributes are kept as they were before the passes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from probe.model.discovery_pass import Seen, discovery_pass
from probe.model.inputs import InputSpec

if TYPE_CHECKING:
    from torch import nn

# Token ids of a longer sequence are discovered on these two lengths first (see short_passes).
SHORT_LENGTHS = (5, 7)


def short_passes(
    model: nn.Module,
    candidates: dict[int, tuple[str, Any]],
    inputs: InputSpec,
    distribution: str,
    kept: dict[int, bool] | None = None,
) -> dict[int, Seen] | None:
    """What a pass on the full sequence would see, from two passes on sequences of 5 and 7 tokens
    (GPT-2 small: together a quarter of one on 128 tokens, reading the weights dominates), or
    ``None``: discover at full length.

    Taken only when both short passes run without error, every candidate runs in them, each module
    runs as often in both, and each output and input dimension is either the same in both or
    k times the sequence length in both (it is then k times the full length). A model with a
    fixed-size position table, one that reshapes by the length, a per-token loop or routing
    that skips a module is discovered at full length. The short passes leave every module's
    attributes (children, parameters, buffers, flags, caches) as they found them; a model with
    lazy modules (materialized by their first pass) is discovered at full length."""
    from torch.nn.modules.lazy import LazyModuleMixin

    if inputs.kind != "tokens" or not inputs.shape or inputs.shape[-1] <= SHORT_LENGTHS[-1]:
        return None
    if any(isinstance(m, LazyModuleMixin) for m in model.modules()):
        return None
    runs: list[dict[int, Seen]] = []
    with _attributes_kept(model):
        for length in SHORT_LENGTHS:
            try:
                runs.append(
                    discovery_pass(
                        model,
                        candidates,
                        replace(inputs, shape=(*inputs.shape[:-1], length)),
                        distribution,
                        behaviour=not runs,  # the behaviour tests once, on the shorter sequence
                        retry=False,
                        kept=kept,
                    )
                )
            except Exception:
                return None
    if any(sum(e.candidate for e in run.values()) != len(candidates) for run in runs):
        return None  # a module did not run on a short sequence: it may on the full one
    return _at_length(runs[0], runs[1], inputs.shape[-1])


def _at_length(a: dict[int, Seen], b: dict[int, Seen], full: int) -> dict[int, Seen] | None:
    """The entries of the two short passes at the full length, or ``None`` where they differ in
    anything but a dimension proportional to the sequence length."""
    short_a, short_b = SHORT_LENGTHS
    if list(a) != list(b):
        return None
    out: dict[int, Seen] = {}
    for key, x in a.items():
        y = b[key]
        if (x.order, x.calls, x.why_not, x.int_input) != (y.order, y.calls, y.why_not, y.int_input):
            return None
        if (x.block, x.stream_key, x.inside, x.branch_end, x.independent) != (
            y.block,
            y.stream_key,
            y.inside,
            y.branch_end,
            y.independent,
        ):
            return None  # the structure seen on one length is not the other's
        shapes: list[tuple[int, ...] | None] = []
        for sx, sy in ((x.shape, y.shape), (x.in_shape, y.in_shape)):
            if sx is None or sy is None:
                if sx is not sy:
                    return None
                shapes.append(None)
                continue
            if len(sx) != len(sy):
                return None
            dims = []
            for dx, dy in zip(sx, sy, strict=True):
                k = dx // short_a
                if dx == dy:
                    dims.append(dx)
                elif k > 0 and dx == k * short_a and dy == k * short_b:
                    dims.append(k * full)
                else:
                    return None
            shapes.append(tuple(dims))
        out[key] = replace(x, shape=shapes[0], in_shape=shapes[1])
    return out


@contextmanager
def _attributes_kept(model: nn.Module) -> Iterator[None]:
    """Every module's attributes, children, parameters and buffers as they were before (one level
    deep: what a module set or replaced, not what it changed inside a tensor or a list). Only a
    module whose attributes changed is written to (a scripted module's are left alone)."""
    saved = [(m, dict(m.__dict__), dict(m._parameters), dict(m._buffers), dict(m._modules)) for m in model.modules()]
    try:
        yield
    finally:
        for m, attributes, parameters, buffers, modules in saved:
            if not _same(m.__dict__, attributes):
                m.__dict__.clear()
                m.__dict__.update(attributes)
            for now, before in ((m._parameters, parameters), (m._buffers, buffers), (m._modules, modules)):
                if not _same(now, before):
                    now.clear()
                    now.update(before)  # type: ignore[arg-type]


def _same(now: Any, before: dict[str, Any]) -> bool:
    """The same keys holding the same objects (identity: tensors do not compare to a bool)."""
    return len(now) == len(before) and all(k in now and now[k] is v for k, v in before.items())
