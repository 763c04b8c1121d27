"""What a model's constructors do on the meta device, recorded so that it can be replayed on real
storage (``probe.model.blocks``): every random op, in order (a ``reset_parameters`` call as one
event, also one that only fills, a norm's ones and zeros; any other draw as the op itself), and
every tensor an op writes, with the event whose replay writes it again (None: none does)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn


def storage_key(t: Any) -> int:
    """Which storage a tensor lies in: a view or ``.data`` shares its tensor's (meta tensors too)."""
    return int(t.untyped_storage()._cdata)


@dataclass(frozen=True)
class Reset:
    """A ``reset_parameters`` call: replayed by calling it again."""

    module: nn.Module
    method: str


@dataclass(frozen=True)
class Draw:
    """Any other random op: replayed as the op itself."""

    func: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    in_place: bool


_RESETS = ("reset_parameters", "_reset_parameters")


def _recorder_class() -> type:
    import sys

    import torch
    from torch import nn
    from torch.utils._python_dispatch import TorchDispatchMode

    class Recorder(TorchDispatchMode):
        """Every random op a constructor runs on the meta device, in order: a ``reset_parameters``
        call as one event (replayed by calling it; also one that only fills, a norm's ones and
        zeros), any other draw as the op itself; and every tensor an op writes."""

        def __init__(self) -> None:
            super().__init__()
            self.events: list[Any] = []
            self.writes: list[tuple[int | None, torch.Tensor]] = []  # kept alive: storages stay unique

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            seeded = torch.Tag.nondeterministic_seeded in func.tags
            schema = func._schema
            if seeded or schema.is_mutable:
                frame: Any = sys._getframe(1)
                owner = None
                while frame is not None:
                    if frame.f_code.co_name in _RESETS and isinstance(frame.f_locals.get("self"), nn.Module):
                        owner = Reset(frame.f_locals["self"], frame.f_code.co_name)
                    frame = frame.f_back
                event: int | None = None
                if owner is not None:  # the outermost reset: it replays everything inside it
                    last = self.events[-1] if self.events else None
                    if not (isinstance(last, Reset) and last.module is owner.module):
                        self.events.append(owner)
                    event = len(self.events) - 1
                elif seeded:
                    name = schema.name
                    self.events.append(Draw(func, tuple(args), dict(kwargs), name.endswith("_")))
                    event = len(self.events) - 1
                # what it writes, and the event whose replay writes it again (None: no replay does)
                self.writes.extend((event, t) for t in _written(schema, args, kwargs))
            return func(*args, **kwargs)

    return Recorder


def recorder() -> Any:
    """A dispatch mode that records (``events``, ``writes``) what runs under it."""
    return _recorder_class()()


def _written(schema: Any, args: Any, kwargs: dict[str, Any]) -> list[Any]:
    """The tensors an op writes: its arguments the schema marks as written (``self_``, ``out=``)."""
    import torch

    out: list[Any] = []
    for i, arg in enumerate(schema.arguments):
        if arg.alias_info is None or not arg.alias_info.is_write:
            continue
        value = kwargs[arg.name] if arg.name in kwargs else args[i] if i < len(args) else None
        values = value if isinstance(value, (list, tuple)) else [value]
        out.extend(v for v in values if isinstance(v, torch.Tensor))
    return out


def redraw(event: Draw, target: tuple[nn.Module, str] | None) -> Callable[[], None]:
    """Run a recorded draw again on the CPU: into the target tensor, or into scratch of the same shape."""

    def fill() -> None:
        import torch
        from torch.utils import _pytree as pytree

        def real(x: Any) -> Any:
            if isinstance(x, torch.Tensor) and x.device.type == "meta":
                return torch.empty(x.shape, dtype=x.dtype)
            if isinstance(x, torch.device) and x.type == "meta":
                return torch.device("cpu")
            return x

        args = [real(a) for a in event.args]
        if target is not None:
            args[0] = getattr(target[0], target[1])
        args = pytree.tree_map(real, args)
        kwargs = pytree.tree_map(real, event.kwargs)
        if kwargs.get("device") is not None and str(kwargs["device"]) == "meta":
            kwargs["device"] = torch.device("cpu")
        event.func(*args, **kwargs)

    return fill
