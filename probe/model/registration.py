"""Weights the forward pass uses that the model does not register.

``nn.Module`` registers a parameter only when it is assigned as an ``nn.Parameter`` or inside a
submodule assigned as an attribute, an ``nn.ModuleList`` or an ``nn.ModuleDict``. Layers kept in
a plain Python list or dict, a weight kept as a plain tensor with ``requires_grad=True``, or a
parameter replaced by a copy (``nn.Parameter(...).to(device)`` returns a tensor that is not a
parameter) still take part in the forward pass and receive a gradient, but
``model.parameters()`` does not yield them: an optimizer built from it never moves them,
``model.to(...)`` and ``state_dict()`` skip them. They are found from what runs: the autograd
graph of the outputs, whose leaves that require a gradient are the tensors the pass used; those
not among ``model.parameters()`` that a module holds (or that are parameters) are weights held
outside the model. Names come from the attributes that hold them (``layers[2].weight``), or the
shape of a parameter no attribute holds. A leaf the forward itself made (transformers' audio
encoders set ``requires_grad`` on a view of their input) is not a weight and is not reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

# how many of the graph's nodes the walk visits at most (a very long unrolled recurrence: stop, report what was found)
MAX_NODES = 1_000_000
# items of one plain list or dict the name search looks into (a vocabulary kept as a dict is not a layer list)
MAX_ITEMS = 4096


def unregistered(
    model: nn.Module, outputs: Iterable[torch.Tensor], inputs: Iterable[Any] = ()
) -> tuple[tuple[str, ...], float]:
    """The names of the weights the outputs' autograd graph reaches as leaves requiring a
    gradient that are not ``model.parameters()``: tensors the model's modules hold outside their
    registered parameters (plain tensor attributes, the parameters of layers in plain lists and
    dicts) and parameters no attribute holds; not ``inputs`` (tensors, nested in lists, tuples and
    dicts). In the order the model holds them, with their share of the elements of every weight
    the graph reaches (0 where it reaches none)."""
    from torch import nn

    params = {id(p) for p in model.parameters()}
    inputs_ = {id(t) for t in _tensors(inputs)}
    names = _held(model)
    found: dict[int, str] = {}
    used = held = 0
    for leaf in _leaves(outputs):
        if id(leaf) in params:
            used += leaf.numel()
            continue
        if id(leaf) in inputs_ or id(leaf) in found:
            continue
        if id(leaf) in names:
            found[id(leaf)] = names[id(leaf)]
        elif isinstance(leaf, nn.Parameter):  # one no attribute holds: replaced by a copy (``.to(device)``)
            found[id(leaf)] = f"a parameter of shape {tuple(leaf.shape)}"
        else:  # a tensor the forward itself made require a gradient (transformers' audio encoders
            continue  # mark their input's view so): not a weight
        held += leaf.numel()
    order = {key: i for i, key in enumerate(names)}  # the model's attribute order; unnamed ones last
    ordered = tuple(found[key] for key in sorted(found, key=lambda key: order.get(key, len(order))))
    return ordered, held / (used + held) if held else 0.0


def _leaves(outputs: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
    """The tensors the outputs' graph accumulates gradients into (``AccumulateGrad`` nodes), each
    once, breadth first from the outputs."""
    seen: set[int] = set()
    queue = [o.grad_fn for o in outputs if o.grad_fn is not None]
    while queue and len(seen) < MAX_NODES:
        node = queue.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)
        if variable is not None:
            yield variable
        queue.extend(n for n, _ in node.next_functions if n is not None and id(n) not in seen)


def _held(model: nn.Module) -> dict[int, str]:
    """id -> name of each tensor requiring a gradient that a module of ``model`` holds outside its
    registered parameters and submodules: plain tensor attributes, and the parameters of modules
    (and tensors) kept in plain lists, tuples and dicts."""
    import torch
    from torch import nn

    names: dict[int, str] = {}
    for path, item, _ in _attributes(model):
        if isinstance(item, torch.Tensor) and item.requires_grad:
            names.setdefault(id(item), path)
        elif isinstance(item, nn.Module):
            for name, p in item.named_parameters():
                names.setdefault(id(p), f"{path}.{name}")
    return names


def _attributes(model: nn.Module) -> Iterator[tuple[str, Any, bool]]:
    """(qualified path, value, whether a plain list, tuple or dict holds it) for every attribute of
    every module of ``model`` but its registered parameters, buffers and submodules, and for the
    items of those containers (``_items``)."""
    for prefix, module in model.named_modules():
        dotted = f"{prefix}." if prefix else ""
        for attr, value in vars(module).items():
            if attr in ("_parameters", "_buffers", "_modules"):
                continue
            for path, item in _items(value, attr):
                yield dotted + path, item, path != attr


def _items(value: Any, path: str, depth: int = 0) -> Iterator[tuple[str, Any]]:
    """``value`` and, inside plain lists, tuples and dicts (two levels), its items with their paths."""
    if depth > 2:
        return
    if isinstance(value, Mapping) and not hasattr(value, "named_modules"):
        for key, item in list(value.items())[:MAX_ITEMS]:
            yield from _items(item, f"{path}[{key!r}]", depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value[:MAX_ITEMS]):
            yield from _items(item, f"{path}[{i}]", depth + 1)
    else:
        yield path, value


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    import torch

    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)


def held_modules(model: nn.Module) -> list[str]:
    """The names of modules with parameters that ``model``'s modules keep in plain lists, tuples
    or dicts (not registered): what a model that registers nothing watchable may hold instead."""
    from torch import nn

    return [
        path
        for path, item, contained in _attributes(model)
        if contained and isinstance(item, nn.Module) and any(True for _ in item.parameters())
    ]
