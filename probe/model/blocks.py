"""A user model or a transformers model on the meta device, cut into blocks, with the init program
that fills each block with exactly the weights a normal build would give it.

The structure is built under ``torch.device("meta")``: shapes, no storage, no generator draws.
Blocks: the items of the model's repeated stack (the ``nn.ModuleList``/``nn.Sequential`` of two or
more items holding the most parameters: Llama's ``layers``, GPT-2's ``h``, BERT's ``encoder.layer``,
a ResNet's stages), and every other child with parameters on the way down to it (the
embeddings, the final norm, a head). What is left, parameters or buffers of the modules on that way
and children with buffers only (rotary tables), is *resident*: materialized once and kept.

The init program is what a normal build runs, in its order: each module's constructor draw
(``reset_parameters``, in construction order) and, for transformers, the model's own
``_init_weights`` applied to every module in the order ``PreTrainedModel.initialize_weights``
visits them (children first). A first sweep (``probe.model.replay``) runs the program one step at
a time on real storage (``probe.model.storage``) only to record torch's generator state before each
step, and which steps a later one overwrites completely (tested by filling the storage with NaN
first: a step that writes every value without reading the old ones leaves none). Materializing a
block replays its remaining steps from their recorded states, so it gets the numbers a whole build
would have drawn, without the other blocks.

A spec-built MLP or conv stack is cut and programmed by ``probe.model.stack_blocks`` into the same
``MetaModel``, with its own rows and ``build``'s init program; any spec's network, cut into the
units FSDP2 shards, by ``probe.model.unit_blocks``. The constructors' draws and writes are recorded
by ``probe.model.recorder``.

Exact for models whose constructors draw only through ``reset_parameters`` (torch's layers,
Llama, GPT-2, BERT, ...); ``replay.sweep`` raises a BuildError for a tensor no step writes (a value set by
constructor code that cannot be replayed).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from probe.errors import BuildError, SpecError
from probe.model.inputs import InputSpec
from probe.model.recorder import Reset, recorder, redraw, storage_key
from probe.model.storage import module_tensors
from probe.spec import Spec

if TYPE_CHECKING:
    import torch
    from torch import nn

    from probe.model.network import Watched


@dataclass
class Block:
    """One unit built, probed and freed at a time: a module called by the model's forward."""

    name: str
    module: nn.Module
    steps: list[int] = field(default_factory=list)  # init steps replayed to fill it, in order

    def numel(self) -> int:
        return sum(p.numel() for p in self.module.parameters())


@dataclass(frozen=True)
class Step:
    """One init action: ``fill()`` writes the tensors of ``scope`` (a module, with or without its children)."""

    module: nn.Module
    fill: Callable[[], None]
    block: int  # index into blocks, -1: resident
    recurse: bool  # scope is the module's subtree (inside a block) or its own tensors only
    constructor: bool
    tensor: str | None = None  # scope is this one tensor of the module ("": none, the step only draws)


@dataclass
class MetaModel:
    model: nn.Module  # every tensor on the meta device until materialized
    inputs: InputSpec | None  # None: a spec MLP's (batch_size, input_dim) features
    notes: list[str]
    blocks: list[Block]
    resident: list[nn.Module]  # modules whose own tensors stay materialized for the whole run
    resident_steps: list[int]
    steps: list[Step]
    init_context: Callable[[], Any] = nullcontext  # transformers' guard around its init functions
    states: list[torch.Tensor] = field(default_factory=list)  # generator state before each step (``replay.sweep``)
    # a spec stack's rows (its build's, probe.model.stack_blocks) and the owner and name of each
    # row's weight (the tensors themselves change as blocks come and go); None: found by running it
    watched: list[Watched] | None = None
    weights: list[tuple[nn.Module, str] | None] = field(default_factory=list)
    # each tensor's dtype as built, by (id(owner), name): a block cast to the run's dtype goes back
    # to the meta device in this one, so that its next materialization draws its init as the build did
    built_dtypes: dict[tuple[int, str], torch.dtype] = field(init=False)
    # tensors a constructor wrote where no step's replay reaches (outside reset_parameters, a draw
    # into a view, a reset writing outside its module): (id(owner), name) -> qualified name
    unreplayed: dict[tuple[int, str], str] = field(default_factory=dict)
    mode: str = "--layer-by-layer"  # who builds block by block, for error messages

    def __post_init__(self) -> None:
        self.built_dtypes = {(id(owner), name): t.dtype for owner, name, t, _ in module_tensors(self.model, True)}


def check_replayable(spec: Spec) -> None:
    """A SpecError where the block program cannot reproduce the model's own init."""
    if spec.init.explicit or spec.init.rules:
        where = "model.hf" if spec.model.hf is not None else "model.import"
        raise SpecError(
            f"--layer-by-layer rebuilds a {where} model with its own init; drop init.weight/init.bias/init.rules "
            "(or run without --layer-by-layer)"
        )


def meta_model(spec: Spec) -> MetaModel:
    """The spec's user or transformers model on the meta device, its blocks and init program."""
    import torch

    check_replayable(spec)
    notes: list[str] = []
    after: list[tuple[nn.Module, Callable[[], None]]] = []
    init_context: Callable[[], Any] = nullcontext
    if spec.model.hf is not None:
        from probe.model import hf

        config, notes = hf.load_config(spec)
        with torch.device("meta"), recorder() as recorded:
            model = hf.make_model(config)
        inputs = hf.input_spec(config, spec)
        after, init_context = hf.meta_init(model)
    else:
        from probe.model import user_model

        with torch.device("meta"), recorder() as recorded:
            model, notes = user_model.make_model(spec)
        inputs = user_model.input_spec(spec)
    blocks, resident = partition(model)
    _check_unshared(blocks)
    return program(model, recorded, blocks, resident, after, init_context, inputs, notes)


def program(
    model: nn.Module,
    recorded: Any,
    blocks: list[Block],
    resident: list[nn.Module],
    after: list[tuple[nn.Module, Callable[[], None]]],
    init_context: Callable[[], Any],
    inputs: InputSpec | None,
    notes: list[str],
) -> MetaModel:
    """The init program: one step per recorded constructor event, in order (so event i is step i),
    the constructor fills that drew nothing, then ``after``; and the constructor writes no step
    replays (``MetaModel.unreplayed``)."""
    block_of = {id(m): i for i, b in enumerate(blocks) for m in b.module.modules()}
    steps: list[Step] = []

    def add(module: nn.Module, fill: Callable[[], None], constructor: bool, tensor: str | None = None) -> None:
        b = block_of.get(id(module), -1)
        steps.append(Step(module, fill, b, recurse=b >= 0 and tensor is None, constructor=constructor, tensor=tensor))

    owners = {id(t): (owner, name) for owner, name, t, _ in module_tensors(model, True)}
    reset_done: set[int] = set()
    for event in recorded.events:  # the constructors' draws, in the order they drew
        if isinstance(event, Reset):
            reset_done.add(id(event.module))
            add(event.module, getattr(event.module, event.method), True)
            continue
        target = owners.get(id(event.args[0])) if event.args and event.in_place else None
        if target is not None:
            add(target[0], redraw(event, target), True, tensor=target[1])
        else:  # a draw into a temporary or a tensor wrapped later: replayed for its draws only
            add(model, redraw(event, None), True, tensor="")
    for module in model.modules():  # constructor fills that draw nothing (norms' ones and zeros)
        reset = getattr(module, "reset_parameters", None)
        if callable(reset) and id(module) not in reset_done and has_tensors(module, recurse=False):
            add(module, reset, True)
    for module, fill in after:
        add(module, fill, False)
    resident_steps = [i for i, s in enumerate(steps) if s.block < 0]
    meta = MetaModel(model, inputs, notes, blocks, resident, resident_steps, steps, init_context)
    meta.unreplayed = _unreplayed(model, recorded.writes, steps)
    return meta


def _unreplayed(
    model: nn.Module, writes: list[tuple[int | None, Any]], steps: list[Step]
) -> dict[tuple[int, str], str]:
    """The model's tensors a constructor wrote that the replay of its steps would not write again:
    a write outside any reset_parameters that no recorded draw targets (``copy_``, ``fill_``, a draw
    into a view or through ``.data``), or a reset's write outside the module it resets. Tensors
    are matched by storage (a view or ``.data`` shares its tensor's)."""
    by_storage = {storage_key(t): (owner, name) for owner, name, t, _ in module_tensors(model, True)}
    scopes: dict[int, set[tuple[int, str]]] = {}
    out: dict[tuple[int, str], str] = {}
    for event, t in writes:
        found = by_storage.get(storage_key(t))
        if found is None:
            continue  # a temporary
        key = (id(found[0]), found[1])
        if event is not None:
            if event not in scopes:
                scopes[event] = {(id(owner), name) for owner, name, _, _ in step_scope(steps[event])}
            if key in scopes[event]:
                continue
        out[key] = f"{qualname(model, found[0])}.{found[1]}"
    return out


def _check_unshared(blocks: list[Block]) -> None:
    """Each block's tensors are its own: a tensor shared by two blocks (tied weights) would be
    materialized twice, and its gradient split between them."""
    owner: dict[int, str] = {}
    for block in blocks:
        for name, p in block.module.named_parameters():
            other = owner.setdefault(id(p), block.name)
            if other != block.name:
                raise BuildError(
                    f"--layer-by-layer: {block.name}.{name} is shared with {other} (tied weights); "
                    "run without --layer-by-layer"
                )


def has_tensors(module: nn.Module, recurse: bool) -> bool:
    return any(True for _ in module.parameters(recurse=recurse)) or any(
        b is not None for b in module.buffers(recurse=recurse)
    )


def partition(model: nn.Module) -> tuple[list[Block], list[nn.Module]]:
    """The blocks (see the module docstring) and the resident modules, in forward order as far as
    the module tree tells it (the order of registration)."""
    from torch import nn

    stacks = [
        (sum(p.numel() for p in m.parameters()), len(m), -q.count("."), m)
        for q, m in model.named_modules()
        if isinstance(m, (nn.ModuleList, nn.Sequential)) and len(m) >= 2
    ]
    best = max(stacks, key=lambda s: s[:3], default=None)
    stack = (None, best[3]) if best is not None and best[0] > 0 else None
    blocks: list[Block] = []
    resident: list[nn.Module] = []

    def walk(module: nn.Module, prefix: str) -> None:
        if has_tensors(module, recurse=False):
            resident.append(module)
        for name, child in module.named_children():
            qual = f"{prefix}{name}"
            if stack is not None and child is stack[1]:
                for item_name, item in child.named_children():
                    blocks.append(Block(f"{qual}.{item_name}", item))
            elif stack is not None and any(m is stack[1] for m in child.modules()):
                walk(child, qual + ".")
            elif any(True for _ in child.parameters()):
                blocks.append(Block(qual, child))
            elif has_tensors(child, recurse=True):
                resident.extend(m for m in child.modules() if has_tensors(m, recurse=False))

    if stack is None and not any(True for _ in model.children()):
        raise BuildError("--layer-by-layer: the model has no child modules to build one at a time")
    walk(model, "")
    return blocks, resident


def step_scope(step: Step) -> list[tuple[nn.Module, str, torch.Tensor, bool]]:
    """The tensors a step writes: its module's own, its subtree's, or its one tensor."""
    if step.tensor is None:
        return list(module_tensors(step.module, step.recurse))
    return [x for x in module_tensors(step.module, False) if x[1] == step.tensor]


def qualname(model: nn.Module, module: nn.Module) -> str:
    """The module's qualified name in the model (its type's name where it is not found)."""
    return next((q for q, m in model.named_modules() if m is module), type(module).__name__)
