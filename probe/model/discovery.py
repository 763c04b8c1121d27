"""Discovery: the one forward pass (traced) that finds a model's rows to watch, what each row is
(``probe.model.roles``) and which module calls are blocks (``probe.model.trace``); token models
take two short passes where they agree (``_short_passes``). What cannot be watched becomes a note.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from probe.errors import BuildError, ForwardError, first_line, user_code_error
from probe.model.inputs import InputSpec, draw
from probe.model.network import Watched, is_recurrent, placement

if TYPE_CHECKING:
    import torch
    from torch import nn

DISCOVERY_BATCH = 2  # a std needs 2 samples; BatchNorm in train mode needs more than 1


def module_modes(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    """Every submodule's train/eval flag: ``model.train(flag)`` alone would flatten a model
    whose parts differ (a frozen BatchNorm in eval inside a model in train mode)."""
    return [(m, m.training) for m in model.modules()]


def restore_modes(modes: list[tuple[nn.Module, bool]]) -> None:
    for module, training in modes:
        module.training = training


@dataclass
class _Seen:
    qual: str
    module: Any
    order: int
    calls: int = 0
    shape: tuple[int, ...] | None = None
    why_not: str = ""
    in_shape: tuple[int, ...] | None = None
    int_input: bool = False
    consumers: list[str] = field(default_factory=list)  # modules whose first input was its output
    candidate: bool = True  # a module that gets a row whatever the structure (False: only as a block)
    block: int = 0  # trace.RESIDUAL or trace.PROJECTION where it is a block
    stream_key: Any = None  # a residual block's input that its output continues (a position, a keyword)
    inside: bool = False  # it ran inside a block's call
    branch_end: bool = False  # a residual add added its output to the stream
    single: tuple[int, ...] | None = None  # its first call's input shape, where it was called on one tensor
    norm: bool | None = None  # roles.acts_as_norm (None: not asked or could not tell)
    hides_weight: bool = False  # roles.hides_weight_scale
    weight_direct: bool = True  # an op took its weight as it is, beside a computed operand
    weight_added: bool = False  # its weight was only ever added to a computed operand (a table)
    independent: bool = False  # its output was computed from nothing the model was fed (a position table)
    output_index: int = 0  # which floating-point tensor of its output its row measures
    other_shapes: set[tuple[int, ...]] = field(default_factory=set)  # later calls' output shapes, where not ``shape``
    # the candidate that made the very tensor it returns, on every call (a model returning its
    # head's logits); None: not yet called; "": its own output
    output_of: str | None = None
    # its output's first dimension holds the batch's samples, one row each (not batch x patches
    # folded together, not a sequence-first output): what per-sample statistics compare
    samples_first: bool = True


def discover(model: nn.Module, inputs: InputSpec, distribution: str) -> tuple[list[Watched], list[str]]:
    """One forward pass to learn which candidate modules run and the shape of their outputs
    (token ids: two passes on short sequences where they show the same, see ``_short_passes``)."""
    from probe.model import roles, trace

    candidates = {id(m): (q, m) for q, m in model.named_modules() if q and _is_candidate(m)}
    if _is_candidate(model) and (not candidates or any(True for _ in model.parameters(recurse=False))):
        # a model that is one module (torch.nn:Linear), or whose own parameters act: watch it too
        candidates[id(model)] = (type(model).__name__, model)
    try:
        seen = _short_passes(model, candidates, inputs, distribution)
        if seen is None:
            seen = _discovery_pass(model, candidates, inputs, distribution)
    except BuildError:
        raise
    except Exception as exc:
        raise ForwardError(
            f"the model rejected its inputs ({inputs.describe()}): {type(exc).__name__}: {first_line(exc)}"
        ) from None
    except BaseException as exc:
        raise user_code_error(exc, f"the forward pass of {type(model).__name__}") from None

    rows = [e for e in sorted(seen.values(), key=lambda e: e.order) if e.candidate or e.block]
    ran = {e.qual: roles.Ran(e.order, e.in_shape, e.shape, e.int_input) for e in rows}
    block_quals = [e.qual for e in rows if e.block]
    head = roles.heads([(e.qual, ran[e.qual]) for e in rows if e.shape is not None], block_quals)
    role_of = {
        e.qual: roles.role(
            e.qual,
            e.module,
            ran[e.qual],
            block=bool(e.block),
            inside=e.inside,
            norm=e.norm,
            head=e.qual in head,
            independent=e.independent,
        )
        for e in rows
    }
    watched: list[Watched] = []
    notes: list[str] = []
    for entry in rows:
        if entry.shape is None:
            notes.append(f"{entry.qual} ({type(entry.module).__name__}) not watched: {entry.why_not}")
            continue
        unit_dim = _unit_dim(entry.module, len(entry.shape))
        units = entry.shape[unit_dim] if entry.shape else 1
        widths = {units, *(s[unit_dim] if len(s) == len(entry.shape) else -1 for s in entry.other_shapes)}
        if len(widths) > 1:  # one activation module shared by layers of different widths
            shown = " and ".join(str(w) if w >= 0 else "other ranks" for w in sorted(widths))
            notes.append(
                f"{entry.qual} ({type(entry.module).__name__}) not watched: its {entry.calls} calls per forward "
                f"pass output {shown} units, which one row cannot pool"
            )
            continue
        if entry.calls > 1:
            notes.append(f"{entry.qual} runs {entry.calls} times per forward pass; its row pools every call")
        watched.append(
            Watched(
                entry.qual,
                len(watched) + 1,
                "hidden",
                entry.module,
                _weight(entry.module),
                units,
                unit_dim,
                _saturation(entry.module),
                module_type=type(entry.module).__name__,
                role=role_of[entry.qual],
                # batch size 1 out of a batch of DISCOVERY_BATCH: one table row shared by every sample
                broadcast=len(entry.shape) >= 2 and entry.shape[0] == 1,
                samples_first=entry.samples_first,
                residual=entry.block == trace.RESIDUAL,
                # read by a normalization only once (a module called again may feed something
                # else), or blind to its own weight's scale (a weight-standardized convolution)
                normalized=(entry.calls == 1 and any(role_of.get(c) == "norm" for c in entry.consumers))
                or entry.hides_weight,
                norm_reader=_norm_reader(entry, role_of, set(block_quals)),
                added_table=entry.weight_added,
                branch_end=entry.branch_end,
                stream_input=entry.stream_key if entry.block == trace.RESIDUAL else None,
                output_index=entry.output_index,
                output_of="" if entry.block else entry.output_of or "",
            )
        )
    # a row returning another row's output, in the same role (a model returning its head's logits),
    # measures that row's values: one row judges them, the one that made them. Not a block (the
    # stream row whose output its last activation made) nor where one row measures another tensor
    rows_by_name = {w.name: w for w in watched}
    for w in watched:
        maker_row = rows_by_name.get(w.output_of)
        if maker_row is None or maker_row.role != w.role or w.output_index or maker_row.output_index:
            w.output_of = ""
    never = [q for key, (q, _) in candidates.items() if key not in seen]
    if never:
        shown = ", ".join(never[:8]) + (f", ... ({len(never)} in all)" if len(never) > 8 else "")
        notes.append(f"not called in the forward pass, so not watched: {shown}")
    if not watched:
        raise BuildError("the model has no module with parameters or activation module that ran; nothing to watch")
    return watched, notes


def _norm_reader(entry: _Seen, role_of: dict[str, str], blocks: set[str]) -> str | None:
    """The normalization reading ``entry``'s output, where every module reading it is one or is a
    residual block (whose own norm reads it): a pre-norm stream, which no module reads at its own
    scale. None where a module reads it as it is, or where it runs more than once."""
    norms = [c for c in entry.consumers if role_of.get(c) == "norm"]
    if entry.calls != 1 or not norms or any(c not in blocks and role_of.get(c) != "norm" for c in entry.consumers):
        return None
    return norms[0]


def _discovery_pass(
    model: nn.Module,
    candidates: dict[int, tuple[str, Any]],
    inputs: InputSpec,
    distribution: str,
    behaviour: bool = True,
    retry: bool = True,
) -> dict[int, _Seen]:
    """One forward pass (eval mode, no gradients, DISCOVERY_BATCH samples) with a hook on every
    module: what ran, in which order, how often, on what input and with what output shape, and,
    from ``trace``, which modules are blocks, which ran inside one and which end a branch.
    ``behaviour``: then ask each candidate called on one tensor whether it normalizes its input
    and whether its output is blind to its weight's scale (``roles.acts_as_norm``,
    ``roles.hides_weight_scale``). ``retry``: a forward that fails under the trace runs again
    without it (the short passes' failures send discovery to the full length instead)."""
    import weakref

    import torch

    from probe.model import roles, trace

    seen: dict[int, _Seen] = {}
    consumers = roles.Consumers()
    # id(output tensor) -> (the candidate that made it, a weak reference, its version then)
    made: dict[int, tuple[str, Any, int]] = {}
    names = {id(m): q for q, m in model.named_modules() if q}
    names.update({key: q for key, (q, _) in candidates.items()})

    def hook(module: Any, args: Any, kwargs: Any, output: Any) -> None:
        key = id(module)
        entry = seen.get(key)
        if entry is None:
            if key not in names:
                return  # the model itself, not a candidate
            entry = seen[key] = _Seen(names[key], module, len(seen), candidate=key in candidates)
            entry.in_shape, entry.int_input = roles.first_tensor_shape(args, kwargs)
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            if len(tensors) == 1 and len(args) == 1 and tensors[0].is_floating_point():
                entry.single = tuple(tensors[0].shape)
        entry.calls += 1
        tensor = first_float_tensor(output)
        maker = _maker(made, tensor, entry.qual)
        entry.output_of = maker if entry.output_of in (None, maker) else ""
        if tensor is not None and entry.candidate and not maker:
            made[id(tensor)] = (entry.qual, weakref.ref(tensor), tensor._version)
        consumers.saw(entry.qual, roles.first_tensor(args, kwargs), tensor, claim=entry.candidate)
        if tensor is None:
            entry.why_not = f"its output ({type(output).__name__}) holds no floating-point tensor"
        elif entry.shape is None:
            entry.shape = tuple(tensor.shape)
        elif tuple(tensor.shape) != entry.shape:
            entry.other_shapes.add(tuple(tensor.shape))

    was_training = model.training
    # a factory may return a model already on a GPU or in float64: feed it there
    device, dtype = placement(model)
    for traced in (True, False):  # a forward that fails only under the trace runs again without it
        seen.clear()
        made.clear()
        consumers = roles.Consumers()
        tracer = trace.tracer(model, set(candidates))
        handles = trace.hooks(model, tracer) if traced else []  # first: the trace sees a call end before ours
        handles += [
            m.register_forward_hook(hook, with_kwargs=True)
            for m in model.modules()
            if not isinstance(m, torch.jit.ScriptModule)  # takes no hooks: not watched ("not called")
        ]
        model.eval()  # no BatchNorm running-stat updates, no dropout: only shapes are wanted here
        try:
            batch = draw(inputs, DISCOVERY_BATCH, distribution, torch.Generator().manual_seed(0), device, dtype)
            with torch.no_grad(), tracer if traced else contextlib.nullcontext():
                model(*batch.args, **batch.kwargs)
            if not traced:
                tracer.failed = "the forward pass failed under the trace"
            break
        except BuildError:
            raise
        except Exception:
            if not traced or not retry:
                raise
        finally:
            for h in handles:
                h.remove()
            model.train(was_training)
    first = roles.first_tensor(batch.args, batch.kwargs)
    rows = first.shape[0] if first is not None and first.dim() >= 1 else None
    for entry in seen.values():
        entry.consumers = consumers.of.get(entry.qual, [])
        entry.samples_first = rows is None or entry.shape is None or entry.shape[:1] == (rows,)
    for entry in seen.values():
        weight = _weight(entry.module) if entry.candidate else None
        entry.weight_direct = weight is None or tracer.ops == 0 or id(weight) in tracer.direct
        entry.weight_added = weight is not None and id(weight) in tracer.added and id(weight) not in tracer.other
    if behaviour:
        model.eval()
        try:
            _behaviour(seen, device, dtype)
        finally:
            model.train(was_training)
    _structure(model, seen, tracer)
    return seen


def _maker(made: dict[int, tuple[str, Any, int]], tensor: torch.Tensor | None, qual: str) -> str:
    """The candidate other than ``qual`` that made ``tensor`` (``made``: id -> (qual, weak
    reference, version)), where nothing changed it in place since (an in-place ReLU returns its
    input tensor, with other values); "" for none."""
    found = made.get(id(tensor)) if tensor is not None else None
    if found is None or tensor is None or found[1]() is not tensor or found[2] != tensor._version:
        return ""
    return found[0] if found[0] != qual else ""


def _structure(model: nn.Module, seen: dict[int, _Seen], tracer: Any) -> None:
    """Mark the blocks, what ran inside them and the branch ends (``trace.structure``). Where the
    trace saw nothing (code that does not run through torch functions: a scripted model), or found
    no block in a network that adds computed tensors (residual adds written inline in a loop over
    sub-modules, a stream mixed by matrices), the repeated children of containers that keep their
    input's shape are the blocks (``roles.blocks``), and what ran between a module reading the
    stream and the inline add of its result is inside too."""
    from probe.model import roles, trace

    found = trace.structure(tracer, model) if tracer.failed is None and tracer.ops > 0 else None
    if found is not None and (found.blocks or not tracer.computed_adds):
        for key, entry in seen.items():
            call = found.blocks.get(key)
            if call is not None:
                entry.block, entry.stream_key = call.kind or trace.RESIDUAL, call.stream_key
                entry.output_index = call.out_index  # a dict or tuple: the stream's tensor
                entry.shape = call.out_shape or entry.shape
            entry.inside = key in found.inside or key in found.inline
            entry.branch_end = key in found.branch_ends
            entry.independent = key in found.independent
        return
    for key, entry in seen.items():
        entry.independent = found is not None and key in found.independent
    by_qual = {e.qual: e for e in seen.values()}
    ran = {e.qual: roles.Ran(e.order, e.in_shape, e.shape, e.int_input) for e in seen.values()}
    # a module that normalizes (a fused BatchNorm + activation holding its activation) is no block
    norms = {e.qual for e in seen.values() if e.norm}
    groups = {k: [q for q in v if q not in norms] for k, v in roles.block_candidates(model).items()}
    quals = roles.blocks({k: v for k, v in groups.items() if len(v) >= 2}, ran)
    for q in quals:
        by_qual[q].block = trace.RESIDUAL if roles.keeps_shape(ran[q]) else trace.PROJECTION
        by_qual[q].stream_key = 0
    for key, e in seen.items():  # and what ran in the branch of an add written inline
        e.inside = any(e.qual.startswith(q + ".") for q in quals) or (found is not None and key in found.inline)


def _behaviour(seen: dict[int, _Seen], device: Any, dtype: Any) -> None:
    """``roles.acts_as_norm`` for the candidates whose parameters are all vectors and whose
    output has their input's shape; ``roles.hides_weight_scale`` for those whose weight no op
    took as it is (a weight used as it is beside the input shows its scale in the output; asking
    only the others keeps the test's forwards off every plain linear and convolution)."""
    from probe.model import roles

    for entry in seen.values():
        if not entry.candidate or entry.single is None or entry.int_input:
            continue
        module = entry.module
        params = list(module.parameters())
        if params and all(p.dim() <= 1 for p in params) and entry.shape == entry.single:
            entry.norm = roles.acts_as_norm(module, entry.single, dtype, device)
        weight = _weight(module)
        if weight is not None and weight.dim() >= 2 and not entry.weight_direct:
            entry.hides_weight = roles.hides_weight_scale(module, weight, entry.single, dtype, device)


# Token ids of a longer sequence are discovered on these two lengths first (see _short_passes).
SHORT_LENGTHS = (5, 7)


def _short_passes(
    model: nn.Module, candidates: dict[int, tuple[str, Any]], inputs: InputSpec, distribution: str
) -> dict[int, _Seen] | None:
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
    runs: list[dict[int, _Seen]] = []
    with _attributes_kept(model):
        for length in SHORT_LENGTHS:
            try:
                runs.append(
                    _discovery_pass(
                        model,
                        candidates,
                        replace(inputs, shape=(*inputs.shape[:-1], length)),
                        distribution,
                        behaviour=not runs,  # the behaviour tests once, on the shorter sequence
                        retry=False,
                    )
                )
            except Exception:
                return None
    if any(sum(e.candidate for e in run.values()) != len(candidates) for run in runs):
        return None  # a module did not run on a short sequence: it may on the full one
    return _at_length(runs[0], runs[1], inputs.shape[-1])


def _at_length(a: dict[int, _Seen], b: dict[int, _Seen], full: int) -> dict[int, _Seen] | None:
    """The entries of the two short passes at the full length, or ``None`` where they differ in
    anything but a dimension proportional to the sequence length."""
    short_a, short_b = SHORT_LENGTHS
    if list(a) != list(b):
        return None
    out: dict[int, _Seen] = {}
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


def first_float_tensor(output: Any) -> torch.Tensor | None:
    """The first floating-point tensor in a module output (tensor, tuple/list, dict)."""
    import torch

    if isinstance(output, torch.Tensor):
        return output if output.is_floating_point() else None
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        for item in output:
            found = first_float_tensor(item)
            if found is not None:
                return found
    return None


def _is_candidate(module: nn.Module) -> bool:
    from torch import nn

    if isinstance(module, nn.MultiheadAttention) or any(True for _ in module.parameters(recurse=False)):
        return True
    return type(module).__module__ == "torch.nn.modules.activation" and not list(module.children())


def _unit_dim(module: nn.Module, ndim: int) -> int:
    """Channels-first for conv-like outputs (N, C, ...), last dimension otherwise."""
    from torch import nn

    channel_first = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm)
    if ndim <= 1:
        return 0
    if isinstance(module, channel_first) or ndim >= 4:
        return 1
    return ndim - 1


def _weight(module: nn.Module) -> torch.Tensor | None:
    import torch

    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.requires_grad:
        return weight
    for _, p in module.named_parameters(recurse=False):
        if p.dim() >= 2 and p.requires_grad:
            return p
    return None


def _saturation(module: nn.Module) -> Any:
    from torch import nn

    from probe.spec import activations

    if isinstance(module, nn.Tanh):
        return activations.saturation("tanh", {})
    if isinstance(module, nn.Sigmoid):
        return activations.saturation("sigmoid", {})
    if is_recurrent(module):  # its gates, inside a fused kernel
        return activations.Saturation("recurrent", None, None)
    return None
