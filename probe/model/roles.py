"""What each watched row is in the network: its role, found from what one forward pass runs.

Roles (docs/verdicts.md explains each and the limits of the detection):

- ``stream``: the signal path. In a residual network, the outputs of its blocks (the residual
  stream); in a network without blocks, each layer before its head. Vanishing, exploding and the
  gradient rules judge these rows and the network output.
- ``branch``: a module that runs inside a block's call; its output, or what it feeds, is added to
  the stream, and may be small on purpose (GPT-2's scaled projections, LayerScale, ReZero).
- ``activation``: a parameter-free ``torch.nn`` activation module.
- ``norm``: a module that normalizes what it is fed (``acts_as_norm``: its output does not change
  when its input is scaled): LayerNorm, RMSNorm, BatchNorm, GroupNorm, a fused BatchNorm +
  activation, in any library.
- ``embedding``: a table: a module fed integer ids, one with no tensor input, or one whose output
  was computed from nothing the model was fed (a position table, an MLP on fixed coordinates).
- ``head``: the layers that map to the output (``heads``).

Blocks are the module calls whose output is their input plus something computed from it, found
by ``probe.model.trace`` in the discovery pass, wherever the module is held. Nothing here reads a
class name of a particular library.
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


def role(
    qual: str,
    module: nn.Module,
    ran: Ran,
    *,
    block: bool,
    inside: bool,
    norm: bool | None,
    head: bool,
    independent: bool = False,
) -> str:
    """The role of one watched row (see the module docstring): ``block``, ``inside`` (it ran
    inside a block call) and ``norm`` (``acts_as_norm``; None: the test could not tell, and the
    structural rule decides) from the discovery pass, ``head`` from ``heads``."""
    if block:
        return "stream"
    if independent or ran.int_input or ran.in_shape is None:
        # a lookup, a parameter table, or a layer on input-independent data (a position table, an
        # MLP on fixed relative coordinates): its output is not a function of the batch
        return "embedding"
    if _is_activation(module):
        return "activation"
    if norm if norm is not None else _is_norm(module, ran):
        return "norm"
    if inside:
        return "branch"
    if head:
        return "head"
    return "stream"


def heads(rows: list[tuple[str, Ran]], blocks: Iterable[str]) -> set[str]:
    """The rows (``(qual, ran)`` in the order they finished) that map to the output: every row
    that finishes after the last block; in a network without blocks, every row after the last
    one that saw a tensor of three or more dimensions (an image, a sequence) where the sample is
    one vector (after a global pooling or a flatten); and the last row in any network."""
    if not rows:
        return set()
    block_set = set(blocks)
    order = [q for q, _ in rows]
    if block_set:
        last = max(i for i, q in enumerate(order) if q in block_set)
        out = set(order[last + 1 :])
    else:
        wide = [i for i, (_, r) in enumerate(rows) if max(len(r.in_shape or ()), len(r.out_shape or ())) >= 3]
        out = set(order[wide[-1] + 1 :]) if wide else set()
    out.add(order[-1])
    return out


def _is_activation(module: nn.Module) -> bool:
    return type(module).__module__ == "torch.nn.modules.activation" and not any(True for _ in module.parameters())


def _is_norm(module: nn.Module, ran: Ran) -> bool:
    """The structural rule, where the behaviour test cannot run: a leaf whose own parameters are
    all vectors and whose output has its input's shape."""
    own = list(module.parameters(recurse=False))
    if not own or any(p.dim() != 1 for p in own) or any(True for _ in module.children()):
        return False
    return keeps_shape(ran)


# How close y(3 z) must be to y(z), relative to y's rms, for a module to be scale-invariant: a
# norm's eps (1e-5 against a variance of order 1 on a random input) moves it by about 1e-5; a
# module homogeneous of degree 1 (a ReLU, a linear map, a LayerScale) by 2, twice its output.
INVARIANT = 1e-2


def acts_as_norm(
    module: nn.Module,
    shape: tuple[int, ...],
    dtype: Any,
    device: Any,
    drawn: dict[Any, Any] | None = None,
    training: bool = True,
) -> bool | None:
    """Whether ``module`` normalizes what it is fed: its output on 3 z equals its output on z (z
    standard normal of its input's shape), with every parameter set to 1 for the test (so an
    affine that is zero at init, or a zero LayerScale, does not decide it), in train mode (BatchNorm
    in eval is an affine of its running statistics) or else in eval mode (a dropout inside); a
    module that runs in eval mode (``training`` False: a user's model keeps it so) in eval mode
    only. Only asked of
    modules whose parameters are all vectors (or none) and whose output has the input's shape.
    Parameters, buffers, train flags and the random state are restored. None: it could not
    run (meta tensors, an error). ``drawn``: the inputs drawn so far, reused for modules of the
    same input shape (the same draw: ``_drawn_input``)."""
    import torch

    params = list(module.parameters())
    if any(p.is_meta for p in params) or any(b.is_meta for b in module.buffers()):
        return None
    saved_p = [p.detach().clone() for p in params]
    saved_b = [b.detach().clone() for b in module.buffers()]
    modes = [(m, m.training) for m in module.modules()]
    z = _drawn_input(shape, dtype, device, drawn)
    devices = [device] if getattr(device, "type", "cpu") == "cuda" else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            for p in params:
                p.fill_(1.0)
            for train in (True, False) if training else (False,):
                for m, _ in modes:
                    m.training = train
                one, three = _first(module(z)), _first(module(3 * z))
                if one is None or three is None or one.shape != three.shape:
                    return None
                if _invariant(one, three):
                    return True
            return False
    except Exception:
        return None
    finally:
        with torch.no_grad():
            for p, v in zip(params, saved_p, strict=True):
                p.copy_(v)
            for b, v in zip(module.buffers(), saved_b, strict=True):
                b.copy_(v)
        for m, flag in modes:
            m.training = flag


def hides_weight_scale(module: nn.Module, weight: Any, shape: tuple[int, ...], dtype: Any, device: Any) -> bool:
    """Whether the module's output is blind to its weight's scale (a weight-standardized
    convolution): on one standard normal input of its input's shape, its output with its weight W
    equals its output with 3 W (a weight of zeros, as a layer-by-layer discovery holds, is drawn
    standard normal first). The weight is restored; False where it cannot run."""
    import torch

    if weight is None or weight.is_meta or not weight.is_floating_point():
        return False
    saved = weight.detach().clone()
    gen = torch.Generator(device="cpu").manual_seed(0)
    z = _test_input(shape, dtype, device, gen)
    devices = [device] if getattr(device, "type", "cpu") == "cuda" else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            if not bool(saved.any()):
                weight.copy_(torch.randn(tuple(weight.shape), generator=gen).to(weight.device, weight.dtype))
            one = _first(module(z))
            weight.mul_(3)
            three = _first(module(z))
        return one is not None and three is not None and one.shape == three.shape and _invariant(one, three)
    except Exception:
        return False
    finally:
        with torch.no_grad():
            weight.copy_(saved)


def _test_input(shape: tuple[int, ...], dtype: Any, device: Any, gen: Any) -> Any:
    """A standard normal input of the module's input shape, with 16 samples at least: a BatchNorm
    over a 1x1 map of the discovery's 2 samples sees 2 values per channel, and a channel whose two
    are close is ruled by eps, not by its input (a ResNet's last stage)."""
    import torch

    test_shape = (max(shape[0], 16), *shape[1:]) if len(shape) >= 2 else shape
    return torch.randn(test_shape, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)


def _drawn_input(shape: tuple[int, ...], dtype: Any, device: Any, drawn: dict[Any, Any] | None) -> Any:
    """``_test_input`` from a generator seeded 0: the same values for the same shape, so one draw
    held in ``drawn`` serves every module of that input shape, as long as none changed it in place
    (its version counter says)."""
    import torch

    key = (shape, dtype, str(device))
    held = drawn.get(key) if drawn is not None else None
    if held is not None and held[0]._version == held[1]:
        return held[0]
    z = _test_input(shape, dtype, device, torch.Generator(device="cpu").manual_seed(0))
    if drawn is not None:
        drawn[key] = (z, z._version)
    return z


def _first(output: Any) -> Any:
    import torch
    from torch.utils import _pytree as pytree

    return next((t for t in pytree.tree_leaves(output) if isinstance(t, torch.Tensor) and t.is_floating_point()), None)


def _invariant(one: Any, three: Any) -> bool:
    import torch

    if one.dtype in (torch.float32, torch.float64):
        # in their own precision first (the float64 copies cost twice the module's two forwards on
        # a ResNet's BatchNorm inputs): 1e-7 relative against a line at 1e-2. Norms that overflow
        # or see a non-finite value are taken again below
        difference, scale = torch.linalg.vector_norm(three - one), torch.linalg.vector_norm(one - one.mean())
        if bool(torch.isfinite(difference)) and bool(torch.isfinite(scale)):
            return bool(scale > 0) and bool(difference <= INVARIANT * scale)
    # A non-finite value needs no test of its own: in ``one`` it makes ``scale`` nan (the mean is
    # not finite, and inf - inf is nan), in ``three`` alone the difference's norm inf or nan, and
    # either comparison is then False (float32 values cannot overflow these float64 norms)
    # float64 copies, then worked on in place (the same values as new tensors, half the memory)
    one, three = one.to(torch.float64, copy=True), three.to(torch.float64, copy=True)
    difference = three.sub_(one)
    scale = torch.linalg.vector_norm(one.sub_(one.mean()))
    if scale == 0:
        return False
    return bool(torch.linalg.vector_norm(difference) <= INVARIANT * scale)


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

    def saw(self, qual: str, first_input: Any, output: Any, claim: bool = True) -> None:
        """``claim=False`` (a module that is no row: a wrapper, a block without parameters of its
        own) takes the output only where no module made it before (a wrapper returns its child's)."""
        import weakref

        if first_input is not None:
            for t in (first_input, first_input._base):
                made = self._made.get(id(t)) if t is not None else None
                if made is not None and made[1]() is t and made[0] != qual:
                    self.of.setdefault(made[0], []).append(qual)
                    break
        if output is not None:
            if not claim:  # where the tensor, or the tensor it views, has a maker, keep it
                for t in (output, output._base):
                    made = self._made.get(id(t)) if t is not None else None
                    if made is not None and made[1]() is t:
                        return
            self._made[id(output)] = (qual, weakref.ref(output))
