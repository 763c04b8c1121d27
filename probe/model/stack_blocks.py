"""A spec-built plain stack (``model.kind: mlp`` or ``conv``) on the meta device, cut into blocks,
with the init program ``build`` runs: what ``--layer-by-layer`` (``probe.measurement.layerwise``) needs
of it, in the form ``probe.model.blocks`` gives for a user or transformers model.

The network is ``build``'s own ``nn.Sequential`` of leaf modules, built on ``torch.device("meta")``
(shapes, no storage, no generator draws). Blocks: each Linear or Conv with the norm, activation and
pooling after it, and the head (a conv stack's global pooling goes with its last block). The
sequence is regrouped into one ``nn.Sequential`` per block, holding the same module objects, so
the watched rows and the init steps still point at them and the forward computes the same thing.

The init program is ``build``'s, in its order (``build._mlp``; ``arch.conv`` then ``build``'s flat
init): each module's constructor (a Linear or Conv draws its default weight and bias; a norm sets
ones and zeros), ``init.weight`` and ``init.bias`` on each Linear and Conv, muP's head rescale
(``model.parametrization: mup``), the norms back to scale
1 and shift 0, then each ``init.rules`` fill over every module it matches. ``replay.sweep`` records
the generator's state before each step and drops the steps a later one overwrites, as for any
model. Where it applies: any init strategy except ``lsuv`` (data-dependent: it rescales layers on
the probe's batches), any norm, pooling and ``init.rules``; not ``residual``, ``transformer``,
``lstm``/``gru`` (their modules are not a plain chain whose draws this program replays).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from probe.errors import SpecError
from probe.model import mup
from probe.model.blocks import Block, MetaModel, Step
from probe.model.build import build_on_meta, reset_norms
from probe.model.init_rules import InitLog, RuleStep, apply_rule, rule_steps
from probe.spec import InitSpec, Spec, inits

if TYPE_CHECKING:
    from torch import nn

APPLIES = (
    "model.kind: mlp or conv (probe's own plain stacks; not residual, transformer, lstm/gru), --model and --hf models"
)


def check_stack(spec: Spec) -> None:
    """A SpecError (exit 2) where the block program cannot reproduce a normal build of the spec's stack."""
    where = f"--layer-by-layer applies to {APPLIES}"
    if spec.model.kind not in ("mlp", "conv"):
        raise SpecError(f"{where}; this spec has model.kind: {spec.model.kind}")
    if inits.canonical(spec.init.weight.name) == "lsuv" or inits.canonical(spec.init.bias.name) == "lsuv":
        raise SpecError(f"{where}, with any init except lsuv, which rescales each layer on the whole network's batches")


def meta_stack(spec: Spec) -> MetaModel:
    """The spec's MLP or conv stack on the meta device, its blocks, rows and init program."""
    from torch import nn

    check_stack(spec)
    built = build_on_meta(spec)
    named = list(built.model.named_children())
    weighted = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)  # what init.weight/init.bias fill
    groups: list[list[tuple[str, nn.Module]]] = []
    for name, module in named:
        if isinstance(module, weighted) or not groups:  # each Linear/Conv starts a block
            groups.append([])
        groups[-1].append((name, module))
    block_of = {id(module): b for b, group in enumerate(groups) for _, module in group}
    steps: list[Step] = []

    def add(module: nn.Module, fill: Callable[[], None], constructor: bool = False) -> None:
        steps.append(Step(module, fill, block_of[id(module)], recurse=False, constructor=constructor))

    m, init = spec.model, spec.init
    ctx = inits.InitContext(m.activation.name, m.activation.params)
    children = [module for _, module in named]
    for module in children:  # 1. constructors, in construction (registration) order
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            add(module, reset, constructor=True)
    for module in children:  # 2. init.weight and init.bias
        if isinstance(module, weighted):
            add(module, _flat_fill(module, init, ctx))
    linears = [module for module in children if isinstance(module, nn.Linear)]
    head = linears[-1] if m.output_dim is not None and m.kind == "mlp" else None
    for step in mup.readout_steps(head, m):  # muP's head rescale (probe/model/mup.py; draws nothing)
        add(step.module, step.fill)
    for module in children:  # 3. norms back to scale 1, shift 0
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)):
            add(module, partial(reset_norms, module))
    log = InitLog()  # 4. init.rules, matched by the names of the network as built
    for rule_step in rule_steps(built.model, init.rules):
        add(rule_step.module, _rule_fill(rule_step, ctx, m.depth, log))
    model = nn.Sequential(OrderedDict((group[0][0], nn.Sequential(OrderedDict(group))) for group in groups))
    blocks = [Block(name, module) for name, module in model.named_children()]
    owners = {id(p): (owner, n) for owner in children for n, p in owner.named_parameters(recurse=False)}
    weights = [owners.get(id(w.weight)) if w.weight is not None else None for w in built.watched]
    return MetaModel(
        model, built.inputs, list(built.notes), blocks, [], [], steps, watched=built.watched, weights=weights
    )


def _flat_fill(module: nn.Module, init: InitSpec, ctx: inits.InitContext) -> Callable[[], None]:
    def fill() -> None:  # reads the module's parameters when run: materializing replaces them
        inits.apply(module.weight, init.weight.name, init.weight.params, ctx)  # type: ignore[arg-type]
        if module.bias is not None:
            inits.apply(module.bias, init.bias.name, init.bias.params, ctx)  # type: ignore[arg-type]

    return fill


def _rule_fill(rule_step: RuleStep, ctx: inits.InitContext, depth: int, log: InitLog) -> Callable[[], None]:
    return lambda: apply_rule(rule_step, ctx, depth, log)
