"""Any spec's network (spec-built, ``model.import`` or ``model.hf``) on the meta device, cut into
given units (the blocks FSDP2 shards, ``probe.measurement.distributed_engine.blocks``), with the init program
a whole build runs: what ``run.shard: fsdp`` materializes, initializes and shards one unit at a
time (``probe.measurement.distributed_engine``), in the ``MetaModel`` form of ``probe.model.blocks``.

The network is ``build``'s own (``build.plan``), constructed under ``torch.device("meta")`` with
its constructors recorded; the init program is their draws, a transformers model's own init, then
the steps ``build`` runs after the constructors (the spec's ``init.weight``/``init.bias`` and
``init.rules``). Every module with tensors of its own outside the units is resident.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

from probe.errors import BuildError
from probe.model.blocks import Block, MetaModel, has_tensors, program
from probe.model.recorder import recorder
from probe.spec import Spec

if TYPE_CHECKING:
    from torch import nn

    from probe.model.network import Plan


def meta_units(spec: Spec, units: Callable[[nn.Module], list[nn.Module]]) -> tuple[MetaModel, Plan]:
    """Any spec's network as ``build`` makes it (spec-built, ``model.import`` or ``model.hf``), on
    the meta device: its blocks are ``units(model)`` (the rest resident) and its init program is the
    constructors' draws, a transformers model's own init, then ``build``'s init steps (the spec's
    ``init``). The plan's ``finish`` makes the Built once the program has been swept (``sweep``).
    Refuses (BuildError) a model with tied tensors (each would be materialized twice)."""
    import torch

    from probe.model.build import plan

    with torch.device("meta"), recorder() as recorded:
        planned = plan(spec)
    model = planned.model
    after: list[tuple[nn.Module, Callable[[], None]]] = []
    init_context: Callable[[], Any] = nullcontext
    if spec.model.hf is not None:  # on the meta device the library skips its init: replayed here
        from probe.model import hf

        after, init_context = hf.meta_init(model)
    after += [(step.module, step.fill) for step in planned.steps]
    _check_untied(model)
    blocks, resident = unit_partition(model, units(model))
    meta = program(model, recorded, blocks, resident, after, init_context, None, [])
    meta.mode = "run.shard: fsdp"
    return meta, planned


def _check_untied(model: nn.Module) -> None:
    """Each tensor under one name: a tied one would be materialized twice, as two tensors."""
    seen: dict[int, str] = {}
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    for name, t in named:
        other = seen.setdefault(id(t), name)
        if other != name:
            raise BuildError(f"{name} is {other} (tied weights)")


def unit_partition(model: nn.Module, units: list[nn.Module]) -> tuple[list[Block], list[nn.Module]]:
    """The given units (disjoint subtrees of the model) as blocks, in their order, and as resident
    every other module with tensors of its own."""
    names = {id(m): q for q, m in model.named_modules()}
    inside = {id(m) for unit in units for m in unit.modules()}
    blocks = [Block(names[id(unit)], unit) for unit in units]
    resident = [m for m in model.modules() if id(m) not in inside and has_tensors(m, recurse=False)]
    return blocks, resident
