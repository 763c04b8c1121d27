"""Models under ``torch.compile``, probed as eager PyTorch runs them.

``torch.compile(model)`` returns a wrapper (``OptimizedModule``) around the model, and
``module.compile()`` compiles a module's call in place. Either way dynamo traces every hook a probe
puts on the modules inside: the hooks read their tensors' values, which breaks the graph at each one,
and each module's hook recompiles for each input, so a five-layer MLP took 19 s instead of 14 ms,
printed dynamo's recompile warnings, and its rows were named ``_orig_mod.0``. The compiled graph
computes what the eager modules compute, from the same parameters, so the probe runs the eager
modules: the wrapper is looked through, a compiled child is swapped for the module it wraps, and
a module compiled in place runs its eager call, for the duration of the probe (``eager``; the
caller's model is put back as it was), or for good on a model probe built itself (``unwrap``).
What stays compiled (a function compiled inside a forward) runs as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn


def _optimized() -> type | None:
    try:
        from torch._dynamo.eval_frame import OptimizedModule
    except Exception:  # a torch without dynamo: nothing can be compiled
        return None
    return OptimizedModule  # type: ignore[no-any-return]


def unwrap(model: nn.Module) -> tuple[nn.Module, list[str], Callable[[], None]]:
    """The eager model under ``model``, the notes that say what was looked through, and a function
    that puts every swapped child and in-place compiled call back."""
    optimized = _optimized()
    undo: list[Callable[[], None]] = []
    seen: list[str] = []

    def inner(module: Any) -> Any:
        while optimized is not None and isinstance(module, optimized):
            module = getattr(module, "_orig_mod")  # noqa: B009 (its type is known at run time only)
        return module

    root = inner(model)
    if root is not model:
        seen.append("the model")
    stack: list[tuple[str, Any]] = [("", root)]
    while stack:
        prefix, module = stack.pop()
        for name, child in list(module._modules.items()):
            if child is None:
                continue
            qual = f"{prefix}{name}"
            eager = inner(child)
            if eager is not child:
                module._modules[name] = eager
                undo.append(partial(module._modules.__setitem__, name, child))
                seen.append(qual)
            stack.append((f"{qual}.", eager))
    for qual, module in root.named_modules():
        compiled = getattr(module, "_compiled_call_impl", None)
        if compiled is not None:
            module._compiled_call_impl = None
            undo.append(partial(setattr, module, "_compiled_call_impl", compiled))
            seen.append(qual or "the model")
    notes: list[str] = []
    if seen:
        shown = ", ".join(seen[:6]) + (f", ... ({len(seen)} in all)" if len(seen) > 6 else "")
        notes.append(f"torch.compile: probed eagerly (the same parameters; a compiled graph runs no hooks): {shown}")

    def restore() -> None:
        for step in reversed(undo):
            step()

    return root, notes, restore


@contextmanager
def eager(model: nn.Module) -> Iterator[tuple[nn.Module, list[str]]]:
    """``unwrap`` for the body's duration: the caller's model is put back as it was after it."""
    root, notes, restore = unwrap(model)
    try:
        yield root, notes
    finally:
        restore()
