"""What each watched row is in the network: its role, found from the module tree and one forward pass.

Roles (docs/verdicts.md explains each and the limits of the detection):

- ``stream``: the signal path. In a residual network, the outputs of its repeated blocks (the
  residual stream); in a plain chain, each layer. Vanishing, exploding and the gradient rules
  judge these rows and the network output.
- ``branch``: a module inside a block; its output is added to the stream, and may be small on
  purpose (GPT-2's scaled projections, LayerScale, ReZero).
- ``activation``: a parameter-free ``torch.nn`` activation module.
- ``norm``: a leaf module whose own parameters are all vectors (a scale, a shift) and whose output
  has its input's shape: LayerNorm, RMSNorm, BatchNorm, GroupNorm in any library.
- ``embedding``: a module fed integer ids (a lookup table).
- ``head``: a module that runs after the last block (a classifier, a pooler, an LM head).

A *block* is a child of a ``ModuleList``/``Sequential`` that has children of its own, whose class
repeats (in that container or another one, as in the stages of a ConvNeXt or Swin), and, for at
least one of its repeats, returns a tensor with its input's shape. When blocks nest (a stage of blocks), the innermost ones are the blocks. Nothing
here reads a class name of a particular library.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

ROLES = ("stream", "branch", "activation", "norm", "embedding", "head")


@dataclass
class Ran:
    """What one forward pass showed about a module: when it finished and the shapes it saw."""

    order: int
    in_shape: tuple[int, ...] | None
    out_shape: tuple[int, ...] | None
    int_input: bool  # its first input was integer ids


def block_candidates(model: nn.Module) -> dict[str, list[str]]:
    """Groups of possible blocks before anything runs: ``{class name: [member quals]}``, where the
    members are the non-leaf children of any ModuleList/Sequential of one class, at least two
    (a stage holding a single block still repeats that block's class in the next stage)."""
    from torch import nn

    groups: dict[str, list[str]] = {}
    for qual, module in model.named_modules():
        if not isinstance(module, (nn.ModuleList, nn.Sequential)):
            continue
        for name, child in module.named_children():
            if any(True for _ in child.children()):
                cls = type(child)
                groups.setdefault(f"{cls.__module__}.{cls.__qualname__}", []).append(f"{qual}.{name}" if qual else name)
    return {k: v for k, v in groups.items() if len(v) >= 2}


def blocks(groups: Mapping[str, list[str]], ran: Mapping[str, Ran]) -> list[str]:
    """The members of the innermost groups where some member kept its input's shape."""

    qualifying = [
        [q for q in members if q in ran] for members in groups.values() if any(keeps_shape(ran.get(q)) for q in members)
    ]
    qualifying = [g for g in qualifying if len(g) >= 2]
    inner = [
        g
        for g in qualifying
        if not any(other is not g and any(o.startswith(m + ".") for m in g for o in other) for other in qualifying)
    ]
    return sorted({q for g in inner for q in g}, key=lambda q: ran[q].order)


def keeps_shape(ran: Ran | None) -> bool:
    return ran is not None and ran.in_shape is not None and ran.in_shape == ran.out_shape


def role(qual: str, module: nn.Module, ran: Ran, block_quals: Iterable[str], last_block_order: int | None) -> str:
    """The role of one watched row (see the module docstring)."""
    block_list = list(block_quals)
    if qual in block_list:
        return "stream"
    if _is_activation(module):
        return "activation"
    if ran.int_input or ran.in_shape is None:
        return "embedding"  # a lookup or a parameter table: its output is not a function of the batch
    if _is_norm(module, ran):
        return "norm"
    if any(qual.startswith(b + ".") for b in block_list):
        return "branch"
    if last_block_order is not None and ran.order > last_block_order:
        return "head"
    return "stream"


def _is_activation(module: nn.Module) -> bool:
    return type(module).__module__ == "torch.nn.modules.activation" and not any(True for _ in module.parameters())


def _is_norm(module: nn.Module, ran: Ran) -> bool:
    own = list(module.parameters(recurse=False))
    if not own or any(p.dim() != 1 for p in own) or any(True for _ in module.children()):
        return False
    return keeps_shape(ran)


def first_tensor(args: Any, kwargs: Mapping[str, Any]) -> Any:
    """The first tensor among a module's inputs (positional, then keyword), or ``None``."""
    import torch

    for a in (*(args if isinstance(args, (tuple, list)) else (args,)), *kwargs.values()):
        if isinstance(a, torch.Tensor):
            return a
    return None


def first_tensor_shape(args: Any, kwargs: Mapping[str, Any]) -> tuple[tuple[int, ...] | None, bool]:
    """The shape of the first tensor among a module's inputs (positional, then keyword), and
    whether it holds ids."""
    a = first_tensor(args, kwargs)
    if a is None:
        return None, False
    return tuple(a.shape), not (a.is_floating_point() or a.is_complex())


class Consumers:
    """Which module read each module's output as its first input, seen in one forward pass.

    A module's output tensor is remembered (by identity, through a weak reference, so a freed
    tensor whose memory is reused is never mistaken for it); a later module whose first input is
    that tensor, or a view of it (a permute before a channels-last LayerNorm), is its consumer.
    Functional operations in between (an add, an activation called as a function) make a new
    tensor: nothing is recorded, so the answer errs on the side of "not consumed"."""

    def __init__(self) -> None:
        self._made: dict[int, tuple[str, Any]] = {}
        self.of: dict[str, list[str]] = {}

    def saw(self, qual: str, first_input: Any, output: Any) -> None:
        import weakref

        if first_input is not None:
            for t in (first_input, first_input._base):
                made = self._made.get(id(t)) if t is not None else None
                if made is not None and made[1]() is t and made[0] != qual:
                    self.of.setdefault(made[0], []).append(qual)
                    break
        if output is not None:
            self._made[id(output)] = (qual, weakref.ref(output))
