"""Residual adds, branch ends and sums of two paths, seen in one forward pass (the discovery pass).

A ``TorchFunctionMode`` entered around that one forward (never a process-wide patch) sees every
torch function and tensor method it runs, and hooks on every module say which module calls are
running. Each tensor made while a call runs carries:

- its *tags*: which calls' inputs it was computed from (``(call, input key)``), for the calls
  running and those finished whose input is still alive (a stream it may yet be added to);
- its *paths*: for each running call, whether it is that call's input carried forward by adds
  and shape-keeping ops only (a *stream* path), and whether an add on the way added something
  computed from that same input (a *residual* add); or the sum of two computations of one input
  (a *projection* sum, as in a downsampling block ``shortcut(x) + f(x)``).

A call whose output is on its residual path is a *residual call*: its output is its input plus
something computed from it, whatever the module's class, however it is held (a container, an
attribute, a call in a loop), whichever of its inputs is the stream (a class-attention block
``blk(x, x_cls)`` returns ``x_cls`` plus a branch) and whether the add ran in place
(``out += x``). ``structure`` then picks, within each outermost residual call, the finest module
class whose calls together hold every residual add of it (a stage of blocks: the blocks; a
BERT layer, which holds a residual attention sub-module but also a second add of its own: the
layer). The operand a residual add adds is a branch; the module that made it is a *branch end*.
An add ``a + b`` where ``b`` was computed by a finished call whose input is ``a`` is a residual
add written inline (``x = x + block(x)`` in a forward that is no block's): what ran from that
call's start to the add is its branch. A call whose output depends on none of the model's own
inputs (a position table) is *independent*.

What the record cannot see: adds written as another op (``torch.sum`` of a stack, ``x - (-f)``),
a residual whose stream goes through an op with a second computed operand, and code that does
not run through torch functions (a scripted module, a compiled graph).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

_ADDS = frozenset({"add", "add_", "__add__", "__radd__", "__iadd__"})
IDENTITY, RESIDUAL, PROJECTION = 0, 1, 2


@dataclass(frozen=True)
class _Path:
    """A tensor as seen from one running call: computed from input ``src`` along the stream."""

    src: Any  # the input's key: a position or a keyword
    state: int  # IDENTITY: no residual add yet; RESIDUAL: one added a branch; PROJECTION: a sum of two paths
    adds: frozenset[int]  # the residual adds on the way (op numbers)
    transformed: bool  # an op with weights or a value-changing op ran on the way (not just views and adds)


@dataclass
class _Info:
    ref: Any
    tags: frozenset[tuple[int, Any]] = frozenset()
    paths: dict[int, _Path] = field(default_factory=dict)
    producer: nn.Module | None = None  # the outermost watched module whose output this is
    opaque: bool = False  # computed from a tensor the trace never saw made (a scripted module's output)
    sources: frozenset[int] = frozenset()  # the parameters and buffers a tensor made from them came from


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
    carry: dict[int, _Path] | None = None
    carry_shape: tuple[int, ...] | None = None
    refs: dict[Any, Any] = field(default_factory=dict)  # its inputs, by key (weak references)
    start: int = 0  # op counts when it began and ended
    end: int = 0


def _tensors(tree: Any, out: list[Any] | None = None) -> list[Any]:
    """The tensors in nested tuples, lists and dicts (a hand-written walk: pytree's costs a
    GPT-2 small discovery a tenth of a second over its ten thousand ops)."""
    import torch

    out = [] if out is None else out
    if isinstance(tree, torch.Tensor):
        out.append(tree)
    elif isinstance(tree, (tuple, list)):
        for x in tree:
            _tensors(x, out)
    elif isinstance(tree, dict):
        for x in tree.values():
            _tensors(x, out)
    return out


def _keyed_inputs(args: Any, kwargs: Any) -> list[tuple[Any, Any]]:
    import torch

    out: list[tuple[Any, Any]] = []
    for i, a in enumerate(args if isinstance(args, (tuple, list)) else (args,)):
        if isinstance(a, torch.Tensor):
            out.append((i, a))
    for k, a in (kwargs or {}).items():
        if isinstance(a, torch.Tensor):
            out.append((k, a))
    return out


def _tracer_class() -> type:
    from torch.overrides import TorchFunctionMode

    class Tracer(TorchFunctionMode):
        """See the module docstring: entered around one forward pass, with ``hooks`` on its modules."""

        def __init__(self, watched: set[int], known: set[int]) -> None:
            super().__init__()
            self.watched = watched  # ids of the modules whose outputs are rows (branch ends)
            self.known = known  # ids of the model's parameters and buffers: made before the pass
            self.calls: list[Call] = []
            self.stack: list[int] = []
            self.info: dict[int, _Info] = {}
            self.ops = 0
            self.failed: str | None = None
            # tensors an op took as they were beside a computed operand (a weight used as it is)
            self.direct: set[int] = set()
            # the parameters and buffers (ids) such an op added to a computed operand (a position
            # table), and those an op of another kind took (a linear map's weight)
            self.added: set[int] = set()
            self.other: set[int] = set()
            self.root: int | None = None  # the model's own call
            self.computed_adds = 0
            # residual adds written inline (``x = x + f(x)`` in a forward that is no block's): the
            # op span from the start of the call that read the stream to the add
            self.inline: list[tuple[int, int]] = []

        # -- tensors --
        def _get(self, t: Any) -> _Info | None:
            got = self.info.get(id(t))
            return got if got is not None and got.ref() is t else None

        def _put(self, t: Any) -> _Info:
            got = self._get(t)
            if got is None:
                got = self.info[id(t)] = _Info(weakref.ref(t))
            return got

        # -- module calls --
        def enter(self, module: nn.Module, args: Any, kwargs: Any) -> None:
            call = Call(len(self.calls), module, self.stack[-1] if self.stack else None, start=self.ops)
            self.calls.append(call)
            outermost = not self.stack
            if outermost and self.root is None:
                self.root = call.index
            self.stack.append(call.index)
            keyed = _keyed_inputs(args, kwargs)
            if len(keyed) == 1 and keyed[0][1].is_floating_point() and not outermost:
                got = self._get(keyed[0][1])
                if got is not None and got.paths and all(p.dim() <= 1 for p in module.parameters()):
                    call.carry, call.carry_shape = dict(got.paths), tuple(keyed[0][1].shape)
            for key, t in keyed:
                call.refs[key] = weakref.ref(t)
                if not outermost and self._get(t) is None and id(t) not in self.known:
                    self._put(t).opaque = True  # made where the trace could not see (a scripted module)
                if outermost and not t.is_floating_point():  # ids: what the outputs depend on
                    info = self._put(t)
                    info.tags = info.tags | {(call.index, key)}
                if not t.is_floating_point():
                    continue
                call.inputs.setdefault(key, tuple(t.shape))
                info = self._put(t)
                info.tags = info.tags | {(call.index, key)}
                info.paths = {**info.paths, call.index: _Path(key, IDENTITY, frozenset(), False)}

        def leave(self, module: nn.Module, output: Any) -> None:
            if not self.stack:
                return
            call = self.calls[self.stack.pop()]
            if call.module is not module:  # a hook pair out of step (an exception inside): stop reading
                self.failed = f"call stack out of step at {type(module).__name__}"
                return
            call.end = self.ops
            first = next((t for t in _tensors(output) if t.is_floating_point()), None)
            made = self._get(first) if first is not None else None
            if call.carry and made is not None and first is not None and tuple(first.shape) == call.carry_shape:
                for c in self.stack:
                    p = call.carry.get(c)
                    if p is not None and c not in made.paths:
                        made.paths[c] = _Path(p.src, p.state, p.adds, True)
            call.independent = (
                made is not None and not made.opaque and not any(tag[0] == self.root for tag in made.tags)
            )
            floats = [t for t in _tensors(output) if t.is_floating_point()]
            for index, t in enumerate(floats):
                info = self._get(t)
                path = info.paths.get(call.index) if info is not None else None
                if path is None or path.state == IDENTITY:
                    continue
                if path.state == RESIDUAL and call.inputs.get(path.src) != tuple(t.shape):
                    continue
                if path.state == PROJECTION and call.inputs.get(path.src) == tuple(t.shape):
                    continue  # two branches summed at the input's shape (shared + routed experts): no block
                call.kind, call.stream_key, call.adds = path.state, path.src, path.adds
                call.out_index, call.out_shape = index, tuple(t.shape)
                break
            if id(module) in self.watched:
                for t in _tensors(output):
                    self._put(t).producer = module

        # -- ops --
        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            ins = _tensors((args, kwargs)) if self.stack and self.failed is None else None
            before = [self._get(t) for t in ins] if ins else []
            out = func(*args, **kwargs)
            if ins is not None and self.failed is None:
                try:
                    self._op(getattr(func, "__name__", ""), ins, before, out)
                except Exception as exc:  # the record is lost, never the user's forward
                    self.failed = f"{type(exc).__name__}: {exc}"
            return out

        def _op(self, name: str, ins: list[Any], before: list[_Info | None], out: Any) -> None:
            outs = _tensors(out)
            if not outs:
                return
            self.ops += 1
            active = set(self.stack)
            # the calls running, and those finished whose input is still alive (a stream it may be added to)
            tags = frozenset(
                tag
                for info in before
                if info is not None
                for tag in info.tags
                if tag[0] in active or any(r() is not None for r in self.calls[tag[0]].refs.values())
            )
            opaque = any(
                info.opaque if info is not None else id(t) not in self.known
                for info, t in zip(before, ins, strict=True)
            )
            if not tags:
                sources = frozenset(id(t) for t in ins if id(t) in self.known).union(
                    *(info.sources for info in before if info is not None)
                )
                for t in outs:  # computed from nothing a running call received: nothing to carry
                    got = self._put(t)
                    got.tags, got.paths, got.producer, got.opaque = frozenset(), {}, None, opaque
                    got.sources = sources
                return
            is_add = name in _ADDS and len(ins) == 2
            for info, t in zip(before, ins, strict=True):
                if info is None or not info.tags:
                    # the model's own tensors only: an intermediate's id may be reused once it is freed
                    own = {id(t)} & self.known
                    self.direct.update(own)
                    origin = own | (info.sources if info is not None else set())
                    (self.added if is_add else self.other).update(origin)
            paths: list[dict[int, _Path]] = [{} for _ in outs]
            ends: dict[int, nn.Module | None] = {}
            if is_add:
                self._inline(ins, before, active)
            if is_add and all(info is not None and any(tag[0] == self.root for tag in info.tags) for info in before):
                self.computed_adds += 1  # both operands computed from what the model was fed
            for c in self.stack:
                on = [(k, info.paths[c]) for k, info in enumerate(before) if info is not None and c in info.paths]
                if is_add:
                    got, end = self._add(c, ins, before, on)
                    if got is not None:
                        for each in paths:
                            each[c] = got
                    if end is not None:
                        ends[c] = end
                elif len(on) == 1:
                    k, p = on[0]
                    others = [info for j, info in enumerate(before) if j != k and info is not None]
                    if any(tag[0] == c for info in others for tag in info.tags):
                        continue  # a second operand computed from the call's inputs: not the stream
                    source = ins[k]
                    view = len(ins) == 1 and all(_same_storage(t, source) for t in outs)
                    for t, each in zip(outs, paths, strict=True):
                        if t.shape == source.shape or (len(ins) == 1 and t.numel() == source.numel()):
                            each[c] = _Path(p.src, p.state, p.adds, p.transformed or not view)
            producer = None
            if not is_add and len(ins) >= 1:
                made = [info.producer for info in before if info is not None and info.producer is not None]
                computed = sum(1 for info in before if info is not None and info.tags)
                if len(made) == 1 and computed == 1:
                    producer = made[0]  # a scale, a dropout, a view of one module's output
            for c, end in ends.items():
                if end is not None:
                    self.calls[c].branch_ends.append(end)
            for t, each in zip(outs, paths, strict=True):
                info = self._put(t)
                info.tags, info.paths, info.producer, info.opaque = tags, each, producer, opaque

        def _inline(self, ins: list[Any], before: list[_Info | None], active: set[int]) -> None:
            """Record ``a + b`` where ``b`` was computed by a finished call whose input is ``a``."""
            starts = []
            for k in (0, 1):
                b = before[1 - k]
                if b is None:
                    continue
                for d, key in b.tags:
                    if d not in active:
                        ref = self.calls[d].refs.get(key)
                        if ref is not None and ref() is ins[k]:
                            starts.append(self.calls[d].start)
            if starts:
                self.inline.append((min(starts), self.ops))

        def _add(self, c: int, ins: list[Any], before: list[_Info | None], on: list[tuple[int, _Path]]) -> Any:
            """The path of ``a + b`` for call ``c``, and the module that made the added branch."""
            op = self.ops
            if len(on) == 1:
                k, p = on[0]
                other = before[1 - k]
                if other is not None and (c, p.src) in other.tags:
                    return _Path(p.src, max(p.state, RESIDUAL), p.adds | {op}, p.transformed), other.producer
                return p, None
            if len(on) == 2:
                (ka, a), (kb, b) = on
                if a.src == b.src and a.transformed != b.transformed:
                    stream, k = (a, kb) if not a.transformed else (b, ka)
                    other = before[k]
                    end = other.producer if other is not None else None
                    return _Path(stream.src, max(stream.state, RESIDUAL), stream.adds | {op}, False), end
                if a.src == b.src and a.transformed and b.transformed:
                    return _Path(a.src, PROJECTION, a.adds | b.adds, True), None
                return _Path(a.src, max(a.state, b.state), a.adds | b.adds, a.transformed and b.transformed), None
            x, y = before
            if x is None or y is None:
                return None, None
            common = {k for cc, k in x.tags if cc == c} & {k for cc, k in y.tags if cc == c}
            if common and ins[0].shape == ins[1].shape:
                return _Path(sorted(common, key=str)[0], PROJECTION, frozenset({op}), True), None
            return None, None

    return Tracer


def _same_storage(a: Any, b: Any) -> bool:
    try:
        return bool(a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr())
    except Exception:
        return False


def tracer(model: nn.Module, watched: set[int]) -> Any:
    """A function mode that records the residual structure of what runs under it (``enter`` and
    ``leave`` are called by the module hooks of ``hooks``); ``watched``: the ids of the modules
    whose outputs are rows."""
    known = {id(t) for t in model.parameters()} | {id(t) for t in model.buffers()}
    return _tracer_class()(watched, known)


def hooks(model: nn.Module, trace: Any) -> list[Any]:
    """Pre- and post-forward hooks on every submodule (the model itself too: its calls are the
    outermost) that tell ``trace`` which module call runs; the caller removes them."""
    import torch

    handles = []
    for module in model.modules():
        if isinstance(module, torch.jit.ScriptModule):
            continue  # takes no hooks; what runs inside it is not seen either

        def pre(m: Any, args: Any, kwargs: Any) -> None:
            try:
                trace.enter(m, args, kwargs)
            except Exception as exc:  # the record is lost, never the user's forward
                trace.failed = f"{type(exc).__name__}: {exc}"

        def post(m: Any, args: Any, kwargs: Any, output: Any) -> None:
            try:
                trace.leave(m, output)
            except Exception as exc:
                trace.failed = f"{type(exc).__name__}: {exc}"

        handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(module.register_forward_hook(post, with_kwargs=True, always_call=True))
    return handles


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
    return Structure(blocks, inside, ends, trace.ops, independent, inline)
