"""The residual structure of a traced forward pass (``probe.model.trace``): the kinds of a path
(``IDENTITY``, ``RESIDUAL``, ``PROJECTION``), the record each module call leaves (``Call``), and
the blocks chosen among those calls (``structure``).

A call whose output is on its residual path is a *residual call* (see ``probe.model.trace``).
``structure`` picks, within each outermost residual call, the finest module class whose calls
together hold every residual add of it (a stage of blocks: the blocks; a BERT layer, which holds
a residual attention sub-module but also a second add of its own: the layer); a sum of two
computations of one input where no residual call runs inside it (a downsampling block); and the
other calls of a chosen block's class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

IDENTITY, RESIDUAL, PROJECTION = 0, 1, 2


@dataclass(frozen=True)
class StreamPath:
    """A tensor as seen from one running call: computed from input ``src`` along the stream."""

    src: Any  # the input's key: a position or a keyword
    state: int  # IDENTITY: no residual add yet; RESIDUAL: one added a branch; PROJECTION: a sum of two paths
    adds: frozenset[int]  # the residual adds on the way (op numbers)
    transformed: bool  # an op with weights or a value-changing op ran on the way (not just views and adds)


@dataclass
class Call:
    """One module call of the forward pass."""

    index: int
    module: nn.Module
    parent: int | None
    inputs: dict[Any, tuple[int, ...]] = field(default_factory=dict)  # float inputs: key -> shape
    kind: int | None = None  # RESIDUAL or PROJECTION when its output is one
    stream_key: Any = None  # the input its output continues (a residual call)
    adds: frozenset[int] = frozenset()
    branch_ends: list[nn.Module] = field(default_factory=list)
    independent: bool = False  # its output was computed from nothing the model was fed (a position table)
    out_index: int = 0  # which floating-point tensor of its output continues the stream (a dict, a tuple)
    out_shape: tuple[int, ...] | None = None
    # a norm-like call (one tensor in, parameters all vectors): the paths its input was on, which
    # its output continues (a LayerNorm written as mean, variance and division in its own forward)
    carry: dict[int, StreamPath] | None = None
    carry_shape: tuple[int, ...] | None = None
    refs: dict[Any, Any] = field(default_factory=dict)  # its inputs, by key (weak references)
    start: int = 0  # op counts when it began and ended
    end: int = 0
    # the model's inputs (by position or keyword) its output was computed from; None: not known
    root_keys: frozenset[Any] | None = None


@dataclass
class Structure:
    """What one traced forward pass showed: the block modules and how each is one, the modules
    inside a block, and the branch ends."""

    blocks: dict[int, Call]  # id(module) -> its first block call
    inside: set[int]  # ids of modules that ran inside a block call
    branch_ends: set[int]  # ids of modules whose output a residual add added to a stream
    seen_ops: int
    independent: set[int]  # ids of modules whose every output was computed from nothing the model was fed
    inline: set[int]  # ids of modules that ran in the branch of a residual add written inline
    # id(module) -> the model's inputs its outputs were computed from, over all its calls (None:
    # not known for some call): what its values can vary with (collapse's base)
    inputs_of: dict[int, frozenset[Any] | None] = field(default_factory=dict)


def structure(trace: Any, root: nn.Module) -> Structure:
    """The blocks of a traced pass (see the module docstring for the choice among nested ones)."""
    calls: list[Call] = trace.calls

    def ancestors(call: Call) -> list[int]:
        out = []
        p = call.parent
        while p is not None:
            out.append(p)
            p = calls[p].parent
        return out

    chain = {c.index: ancestors(c) for c in calls}
    residual = [c for c in calls if c.kind == RESIDUAL and c.module is not root and c.adds]
    res_ids = {c.index for c in residual}
    chosen: list[Call] = []
    for top in residual:
        if any(a in res_ids for a in chain[top.index]):
            continue  # inside another residual call: reached from that one
        inner = [d for d in residual if top.index in chain[d.index] and d.adds <= top.adds]
        by_class: dict[type, list[Call]] = {}
        for d in inner:
            by_class.setdefault(type(d.module), []).append(d)
        best: list[Call] | None = None
        for members in by_class.values():
            covered = frozenset().union(*(d.adds for d in members))
            if covered != top.adds or any(a.index in chain[b.index] for a in members for b in members):
                continue
            if best is None or len(members) > len(best):
                best = members
        chosen.extend(best if best is not None else [top])
    block_calls = {c.index for c in chosen}
    # a sum of two computations of one input (a downsampling block), where no residual call or
    # other sum runs inside it and it is not inside a block
    projections = [c for c in calls if c.kind == PROJECTION and c.module is not root]
    proj_ids = {c.index for c in projections}
    for c in projections:
        if any(a in block_calls for a in chain[c.index]):
            continue
        if any(c.index in chain[d.index] for d in calls if d.index in res_ids | proj_ids):
            continue
        chosen.append(c)
        block_calls.add(c.index)
    # the other calls of a block's class (a downsampling repeat whose shortcut is not a sum)
    from torch import nn

    classes = {type(c.module) for c in chosen if not isinstance(c.module, (nn.Sequential, nn.ModuleList))}
    for c in calls:
        if type(c.module) not in classes or c.index in block_calls or c.module is root:
            continue
        if not any(b in chain[c.index] or c.index in chain[b] for b in block_calls):
            chosen.append(c)
            block_calls.add(c.index)
    blocks: dict[int, Call] = {}
    for c in sorted(chosen, key=lambda c: c.index):
        blocks.setdefault(id(c.module), c)
    inside = {id(c.module) for c in calls if any(a in block_calls for a in chain[c.index])}
    ends = {id(m) for c in chosen for m in c.branch_ends}
    dependent = {id(c.module) for c in calls if not c.independent}
    independent = {id(c.module) for c in calls if c.independent and c.module is not root} - dependent
    inline = {
        id(c.module)
        for c in calls
        if c.module is not root and any(start <= c.start and c.end <= end for start, end in trace.inline)
    }
    inputs_of: dict[int, frozenset[Any] | None] = {}
    for c in calls:
        known = inputs_of.get(id(c.module), frozenset())
        inputs_of[id(c.module)] = None if known is None or c.root_keys is None else known | c.root_keys
    return Structure(blocks, inside, ends, trace.ops, independent, inline, inputs_of)
