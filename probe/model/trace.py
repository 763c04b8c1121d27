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
(``out += x``); ``probe.model.structure`` picks the blocks among them. The operand a residual
add adds is a branch; the module that made it is a *branch end*. An add ``a + b`` where ``b``
was computed by a finished call whose input is ``a`` is a residual add written inline
(``x = x + block(x)`` in a forward that is no block's): what ran from that call's start to the
add is its branch. A call whose output depends on none of the model's own inputs (a position
table) is *independent*.

What the record cannot see: adds written as another op (``torch.sum`` of a stack, ``x - (-f)``),
a residual whose stream goes through an op with a second computed operand, and code that does
not run through torch functions (a scripted module, a compiled graph).
"""

from __future__ import annotations

import dataclasses
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from probe.model.structure import IDENTITY, PROJECTION, RESIDUAL, Call, StreamPath

if TYPE_CHECKING:
    from torch import nn

_ADDS = frozenset({"add", "add_", "__add__", "__radd__", "__iadd__"})


@dataclass
class _Info:
    ref: Any
    tags: frozenset[tuple[int, Any]] = frozenset()
    paths: dict[int, StreamPath] = field(default_factory=dict)
    producer: nn.Module | None = None  # the outermost watched module whose output this is
    opaque: bool = False  # computed from a tensor the trace never saw made (a scripted module's output)
    sources: frozenset[int] = frozenset()  # the parameters and buffers a tensor made from them came from


def _tensors(tree: Any) -> list[Any]:
    """The tensors in nested tuples, lists and dicts (and a dataclass instance at the top), in order
    (a hand-written walk: pytree's costs a GPT-2 small discovery a tenth of a second over its ten
    thousand ops; leaves are tested in the loop, without a call each)."""
    import torch

    out: list[Any] = []
    _walk(tree, out, torch.Tensor)
    return out


def _walk(tree: Any, out: list[Any], tensor: type) -> None:
    if isinstance(tree, tensor):
        out.append(tree)
        return
    if isinstance(tree, dict):
        tree = tree.values()
    elif not isinstance(tree, (tuple, list)):
        if not dataclasses.is_dataclass(tree) or isinstance(tree, type):
            return
        tree = [getattr(tree, f.name) for f in dataclasses.fields(tree)]  # a model's own output record
    for x in tree:
        if isinstance(x, tensor):
            out.append(x)
        elif isinstance(x, (tuple, list, dict)):
            _walk(x, out, tensor)


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
                info.paths = {**info.paths, call.index: StreamPath(key, IDENTITY, frozenset(), False)}

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
                        made.paths[c] = StreamPath(p.src, p.state, p.adds, True)
            call.independent = (
                made is not None and not made.opaque and not any(tag[0] == self.root for tag in made.tags)
            )
            if made is not None and not made.opaque:
                call.root_keys = frozenset(tag[1] for tag in made.tags if tag[0] == self.root)
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
            paths: list[dict[int, StreamPath]] = [{} for _ in outs]
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
                            each[c] = StreamPath(p.src, p.state, p.adds, p.transformed or not view)
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

        def _add(self, c: int, ins: list[Any], before: list[_Info | None], on: list[tuple[int, StreamPath]]) -> Any:
            """The path of ``a + b`` for call ``c``, and the module that made the added branch."""
            op = self.ops
            if len(on) == 1:
                k, p = on[0]
                other = before[1 - k]
                if other is not None and (c, p.src) in other.tags:
                    return StreamPath(p.src, max(p.state, RESIDUAL), p.adds | {op}, p.transformed), other.producer
                return p, None
            if len(on) == 2:
                (ka, a), (kb, b) = on
                if a.src == b.src and a.transformed != b.transformed:
                    stream, k = (a, kb) if not a.transformed else (b, ka)
                    other = before[k]
                    end = other.producer if other is not None else None
                    return StreamPath(stream.src, max(stream.state, RESIDUAL), stream.adds | {op}, False), end
                if a.src == b.src and a.transformed and b.transformed:
                    return StreamPath(a.src, PROJECTION, a.adds | b.adds, True), None
                return StreamPath(a.src, max(a.state, b.state), a.adds | b.adds, a.transformed and b.transformed), None
            x, y = before
            if x is None or y is None:
                return None, None
            common = {k for cc, k in x.tags if cc == c} & {k for cc, k in y.tags if cc == c}
            if common and ins[0].shape == ins[1].shape:
                return StreamPath(sorted(common, key=str)[0], PROJECTION, frozenset({op}), True), None
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
