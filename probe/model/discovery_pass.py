"""The discovery pass: one forward pass (eval mode, no gradients, ``DISCOVERY_BATCH`` samples)
with a hook on every module, traced (``probe.model.trace``), that records what each module did
(``Seen``): in which order it ran, how often, on what input, with what output shape, which module
made the tensor it returned, whether it is a block, and how it behaves (``roles.acts_as_norm``,
``roles.hides_weight_scale``). ``probe.model.discovery`` turns the records into rows.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from probe.errors import BuildError
from probe.model.inputs import InputSpec, draw
from probe.model.network import placement, under_transform

if TYPE_CHECKING:
    import torch
    from torch import nn

DISCOVERY_BATCH = 2  # a std needs 2 samples; BatchNorm in train mode needs more than 1


@dataclass
class Seen:
    """What the discovery pass saw of one module (a candidate for a row, or a block)."""

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
    block: int = 0  # structure.RESIDUAL or structure.PROJECTION where it is a block
    stream_key: Any = None  # a residual block's input that its output continues (a position, a keyword)
    inside: bool = False  # it ran inside a block's call
    branch_end: bool = False  # a residual add added its output to the stream
    single: tuple[int, ...] | None = None  # its first call's input shape, where it was called on one tensor
    norm: bool | None = None  # roles.acts_as_norm (None: not asked or could not tell)
    hides_weight: bool = False  # roles.hides_weight_scale
    weight_direct: bool = True  # an op took its weight as it is, beside a computed operand
    weight_added: bool = False  # its weight was only ever added to a computed operand (a table)
    independent: bool = False  # its output was computed from nothing the model was fed (a position table)
    inputs_of: frozenset[Any] | None = None  # the model's inputs its outputs were computed from (None: unknown)
    output_index: int = 0  # which floating-point tensor of its output its row measures
    other_shapes: set[tuple[int, ...]] = field(default_factory=set)  # later calls' output shapes, where not ``shape``
    # the candidate that made the very tensor it returns, on every call (a model returning its
    # head's logits); None: not yet called; "": its own output
    output_of: str | None = None
    # its output's first dimension holds the batch's samples, one row each (not batch x patches
    # folded together, not a sequence-first output): what per-sample statistics compare
    samples_first: bool = True
    transformed: bool = False  # called under a function transform (torch.vmap): not watched


def discovery_pass(
    model: nn.Module,
    candidates: dict[int, tuple[str, Any]],
    inputs: InputSpec,
    distribution: str,
    behaviour: bool = True,
    retry: bool = True,
    kept: dict[int, bool] | None = None,
) -> dict[int, Seen]:
    """One forward pass (eval mode, no gradients, DISCOVERY_BATCH samples) with a hook on every
    module: what ran, in which order, how often, on what input and with what output shape, and,
    from ``trace`` and ``structure``, which modules are blocks, which ran inside one and which end
    a branch. ``behaviour``: then ask each candidate called on one tensor whether it normalizes its input
    and whether its output is blind to its weight's scale (``roles.acts_as_norm``,
    ``roles.hides_weight_scale``). ``retry``: a forward that fails under the trace runs again
    without it (the short passes' failures send discovery to the full length instead). ``kept``:
    the train/eval flag of each module (by id) that the measured pass keeps (a user's model); None:
    it runs every module in train mode (as at the first training step)."""
    import weakref

    import torch

    from probe.model import roles, trace

    seen: dict[int, Seen] = {}
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
            entry = seen[key] = Seen(names[key], module, len(seen), candidate=key in candidates)
            entry.in_shape, entry.int_input = roles.first_tensor_shape(args, kwargs)
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            if len(tensors) == 1 and len(args) == 1 and tensors[0].is_floating_point():
                entry.single = tuple(tensors[0].shape)
        entry.calls += 1
        tensor = first_float_tensor(output)
        if (tensor is not None and under_transform(tensor)) or entry.transformed:
            # called inside torch.vmap (an S5 or ensemble model maps a module over an axis): no row
            entry.transformed, entry.shape, entry.other_shapes = True, None, set()
            entry.why_not = (
                "it runs under a function transform (torch.vmap, torch.func): its values are batched wrappers"
            )
            return
        maker = _maker(made, tensor, entry.qual)
        entry.output_of = maker if entry.output_of in (None, maker) else ""
        if tensor is not None and entry.candidate and not maker:
            made[id(tensor)] = (entry.qual, weakref.ref(tensor), tensor._version)
        consumers.saw(entry.qual, roles.first_tensor(args, kwargs), tensor, claim=entry.candidate)
        if tensor is None:
            entry.why_not = f"its output ({type(output).__name__}) holds no floating-point tensor"
        elif tensor.dim() == 0:  # (a row's statistics are per sample and unit)
            entry.why_not = "its output is one number for the whole batch (a loss, a mean): no values per sample"
        elif entry.shape is None:
            entry.shape = tuple(tensor.shape)
        elif tuple(tensor.shape) != entry.shape:
            entry.other_shapes.add(tuple(tensor.shape))

    was_training = model.training
    # a factory may return a model already on a GPU or in float64: feed it there
    device, dtype = placement(model)
    # a forward that fails only under the trace runs again without it; one that fails in eval mode
    # runs in the model's own (a test-time pool needing a full-size map: the pass measured is train mode's)
    attempts = ((True, True), (False, True), (True, False), (False, False)) if retry else ((True, True),)
    failure: Exception | None = None
    for traced, eval_mode in attempts:
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
        # eval mode: no BatchNorm running-stat updates, no dropout (only shapes are wanted here);
        # in the model's own mode its buffers (running statistics) are put back after
        saved = [] if eval_mode else [(b, b.detach().clone()) for b in model.buffers()]
        if eval_mode:
            model.eval()
        try:
            batch = draw(inputs, DISCOVERY_BATCH, distribution, torch.Generator().manual_seed(0), device, dtype)
            with torch.no_grad(), tracer if traced else contextlib.nullcontext():
                model(*batch.args, **batch.kwargs)
            if not traced:
                tracer.failed = "the forward pass failed under the trace"
            break
        except BuildError:
            raise
        except Exception as exc:
            failure = failure or exc
            if (traced, eval_mode) == attempts[-1]:
                if failure is exc:
                    raise
                raise failure from None  # the first attempt's error says most (eval mode, traced)
        finally:
            for h in handles:
                h.remove()
            model.train(was_training)
            with torch.no_grad():
                for buffer, value in saved:
                    buffer.copy_(value)
    first = roles.first_tensor(batch.args, batch.kwargs)
    rows = first.shape[0] if first is not None and first.dim() >= 1 else None
    for entry in seen.values():
        entry.consumers = consumers.of.get(entry.qual, [])
        entry.samples_first = rows is None or entry.shape is None or entry.shape[:1] == (rows,)
    for entry in seen.values():
        weight = weight_of(entry.module) if entry.candidate else None
        entry.weight_direct = weight is None or tracer.ops == 0 or id(weight) in tracer.direct
        entry.weight_added = weight is not None and id(weight) in tracer.added and id(weight) not in tracer.other
    if behaviour:
        model.eval()
        try:
            _behaviour(seen, device, dtype, kept)
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


def _structure(model: nn.Module, seen: dict[int, Seen], tracer: Any) -> None:
    """Mark the blocks, what ran inside them and the branch ends (``structure.structure``). Where the
    trace saw nothing (code that does not run through torch functions: a scripted model), or found
    no block in a network that adds computed tensors (residual adds written inline in a loop over
    sub-modules, a stream mixed by matrices), the repeated children of containers that keep their
    input's shape are the blocks (``roles.blocks``), and what ran between a module reading the
    stream and the inline add of its result is inside too."""
    from probe.model import roles, structure

    found = structure.structure(tracer, model) if tracer.failed is None and tracer.ops > 0 else None
    if found is not None and (found.blocks or not tracer.computed_adds):
        for key, entry in seen.items():
            call = found.blocks.get(key)
            if call is not None:
                entry.block, entry.stream_key = call.kind or structure.RESIDUAL, call.stream_key
                entry.output_index = call.out_index  # a dict or tuple: the stream's tensor
                entry.shape = call.out_shape or entry.shape
            entry.inside = key in found.inside or key in found.inline
            entry.branch_end = key in found.branch_ends
            entry.independent = key in found.independent
            entry.inputs_of = found.inputs_of.get(key)
        return
    for key, entry in seen.items():
        entry.independent = found is not None and key in found.independent
        entry.inputs_of = found.inputs_of.get(key) if found is not None else None
    by_qual = {e.qual: e for e in seen.values()}
    ran = {e.qual: roles.Ran(e.order, e.in_shape, e.shape, e.int_input) for e in seen.values()}
    # a module that normalizes (a fused BatchNorm + activation holding its activation) is no block
    norms = {e.qual for e in seen.values() if e.norm}
    groups = {k: [q for q in v if q not in norms] for k, v in roles.block_candidates(model).items()}
    quals = roles.blocks({k: v for k, v in groups.items() if len(v) >= 2}, ran)
    for q in quals:
        by_qual[q].block = structure.RESIDUAL if roles.keeps_shape(ran[q]) else structure.PROJECTION
        by_qual[q].stream_key = 0
    for key, e in seen.items():  # and what ran in the branch of an add written inline
        e.inside = any(e.qual.startswith(q + ".") for q in quals) or (found is not None and key in found.inline)


def _behaviour(seen: dict[int, Seen], device: Any, dtype: Any, kept: dict[int, bool] | None = None) -> None:
    """``roles.acts_as_norm`` for the candidates whose parameters are all vectors and whose
    output has their input's shape, in the mode the measured pass runs them (``kept``: a BatchNorm
    a user's model keeps in eval mode is an affine of its running statistics, no normalization);
    ``roles.hides_weight_scale`` for those whose weight no op took as it is (a weight used as it is
    beside the input shows its scale in the output; asking only the others keeps the test's
    forwards off every plain linear and convolution)."""
    from probe.model import roles

    drawn: dict[Any, Any] = {}  # the test inputs, one draw per shape
    for entry in seen.values():
        if not entry.candidate or entry.single is None or entry.int_input:
            continue
        module = entry.module
        params = list(module.parameters())
        if params and all(p.dim() <= 1 for p in params) and entry.shape == entry.single:
            training = True if kept is None else kept.get(id(module), True)
            entry.norm = roles.acts_as_norm(module, entry.single, dtype, device, drawn, training=training)
        weight = weight_of(module)
        if weight is not None and weight.dim() >= 2 and not entry.weight_direct:
            entry.hides_weight = roles.hides_weight_scale(module, weight, entry.single, dtype, device)


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


def weight_of(module: nn.Module) -> torch.Tensor | None:
    """The weight a module's row watches: its trainable ``weight``, else its first trainable
    parameter of two or more dimensions; None where it has neither. A ``weight`` computed from
    parameters (a parametrization such as ``weight_norm``'s ``g v / ||v||`` or spectral norm's, or
    the old ``weight_norm``'s pre-hook) is not what the optimizer moves: the row watches the
    parameter of the weight's shape it is made from (weight_norm's direction ``v``), whose
    gradient, scale and blindness to its scale are the ones training sees."""
    import torch

    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and not isinstance(weight, torch.nn.Parameter):
        # computed (under no_grad too): the parameter of its shape it is made from
        made_of = [p for p in module.parameters() if p.requires_grad and p.shape == weight.shape]
        if made_of:
            return made_of[0]
    if isinstance(weight, torch.Tensor) and weight.requires_grad:
        return weight
    for _, p in module.named_parameters(recurse=False):
        if p.dim() >= 2 and p.requires_grad:
            return p
    return None
