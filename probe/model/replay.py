"""The init program of a ``MetaModel`` (``probe.model.blocks``) run: ``sweep`` runs it once to
record torch's generator state before each step and drop the steps a later one overwrites whole;
``materialize`` and ``materialize_resident`` give a block (or the resident tensors) real storage
and replay its remaining steps from their recorded states.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from probe.errors import BuildError
from probe.model.blocks import MetaModel, qualname, step_scope
from probe.model.storage import Staging, module_tensors, reinstate, release, take

if TYPE_CHECKING:
    from torch import nn


def sweep(meta: MetaModel, staging: Staging | None = None) -> None:
    """Run the init program once, one step at a time, recording the generator state before each
    step and dropping from each block's replay the steps a later step overwrites (see the module
    docstring). Seeds nothing: the caller seeds torch's generator as a normal build would be.
    Leaves the model as it found it (the same meta tensors); a BuildError for a tensor the replay
    cannot rebuild."""
    import torch

    steps = meta.steps
    last_full: dict[tuple[int, str], int] = {}
    scopes: list[list[tuple[int, str]]] = []
    written: set[tuple[int, str]] = set()
    meta.states = []
    for i, s in enumerate(steps):
        meta.states.append(torch.get_rng_state())
        scope = step_scope(s)
        keys = [(id(owner), name) for owner, name, _, _ in scope]
        scopes.append(keys)
        # a constructor is the first writer of its tensors: no need to test what it overwrites
        tensors = take(s.module, s.recurse, None if s.constructor else float("nan"), scope, staging)
        try:
            with torch.no_grad(), meta.init_context():
                s.fill()
            if not s.constructor:
                for key, t in zip(keys, tensors, strict=True):
                    # a NaN left anywhere makes the sum NaN (one fast pass; isnan().any() is 5-10x
                    # slower); an inf - inf sum only costs a replay that was not needed
                    if not t.is_floating_point() or not math.isnan(float(t.sum())):
                        last_full[key] = i
        finally:
            reinstate(scope)
        written.update(keys)
    missing = [
        f"{qualname(meta.model, owner)}.{name}"
        for owner, name, _, _ in module_tensors(meta.model, True)
        if (id(owner), name) not in written
    ]
    if missing:
        raise BuildError(
            f"{meta.mode} cannot rebuild {_shown(missing)}: set by constructor code that no init step replays "
            "(no reset_parameters)" + _instead(meta)
        )
    # a write no replay repeats is harmless only if a later init step (not a constructor) rewrites it whole
    lost = [name for key, name in meta.unreplayed.items() if key not in last_full]
    if lost:
        raise BuildError(
            f"{meta.mode} cannot rebuild {_shown(lost)}: constructor code writes it outside reset_parameters "
            "(a copy or fill no init step replays)" + _instead(meta)
        )
    for block in meta.blocks:
        block.steps = []
    meta.resident_steps = []
    for i, s in enumerate(steps):
        if scopes[i] and all(last_full.get(key, -1) > i for key in scopes[i]):
            continue  # every tensor it writes is written again, whole, later
        if not scopes[i] and s.tensor == "":
            continue  # a draw into a temporary: its state is recorded, nothing to rebuild
        (meta.blocks[s.block].steps if s.block >= 0 else meta.resident_steps).append(i)


def _shown(names: list[str]) -> str:
    return ", ".join(names[:4]) + (f", ... ({len(names)} in all)" if len(names) > 4 else "")


def _instead(meta: MetaModel) -> str:
    return "; run without --layer-by-layer" if meta.mode == "--layer-by-layer" else ""


def materialize(
    meta: MetaModel, module: nn.Module, step_ids: list[int], recurse: bool = True, staging: Staging | None = None
) -> None:
    """Real storage for the module and its replayed init steps: the weights a normal build gives it."""
    import torch

    take(module, recurse, staging=staging)
    after_build = torch.get_rng_state()  # a model's input function draws from it, as in a normal run
    try:
        with torch.no_grad(), meta.init_context():
            for i in step_ids:
                torch.set_rng_state(meta.states[i])
                meta.steps[i].fill()
    finally:
        torch.set_rng_state(after_build)


def materialize_resident(meta: MetaModel, staging: Staging | None = None) -> None:
    """Real storage for the resident tensors and their replayed init steps."""
    import torch

    take(
        meta.model, False, scope=[x for module in meta.resident for x in module_tensors(module, False)], staging=staging
    )
    after_build = torch.get_rng_state()
    try:
        with torch.no_grad(), meta.init_context():
            for i in meta.resident_steps:
                torch.set_rng_state(meta.states[i])
                meta.steps[i].fill()
    finally:
        torch.set_rng_state(after_build)


@contextmanager
def resident_materialized(meta: MetaModel) -> Iterator[None]:
    """The resident tensors materialized and initialized for the body, released after."""
    try:
        materialize_resident(meta)
        yield
    finally:
        for module in meta.resident:
            release(module, recurse=False, dtypes=meta.built_dtypes)
