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
visits them (children first). A first sweep runs the program one step at a time on real storage
only to record torch's generator state before each step, and which steps a later one overwrites
completely (tested by filling the storage with NaN first: a step that writes every value without
reading the old ones leaves none). Materializing a block replays its remaining steps from their
recorded states, so it gets the numbers a whole build would have drawn, without the other blocks.

A spec-built MLP or conv stack is cut and programmed by ``probe.model.stack_blocks`` into the same
``MetaModel``, with its own rows and ``build``'s init program; any spec's network, cut into the
units FSDP2 shards, by ``probe.model.unit_blocks``. The constructors' draws and writes are recorded
by ``probe.model.recorder``.

Exact for models whose constructors draw only through ``reset_parameters`` (torch's layers,
Llama, GPT-2, BERT, ...); ``sweep`` raises a BuildError for a tensor no step writes (a value set by
constructor code that cannot be replayed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from probe.errors import BuildError, SpecError
from probe.model.inputs import InputSpec
from probe.model.recorder import Reset, recorder, redraw, storage_key
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
    states: list[torch.Tensor] = field(default_factory=list)  # generator state before each step (``sweep``)
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
        self.built_dtypes = {(id(owner), name): t.dtype for owner, name, t, _ in _tensors(self.model, True)}


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
            model = user_model.make_model(spec)
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

    owners = {id(t): (owner, name) for owner, name, t, _ in _tensors(model, True)}
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
    by_storage = {storage_key(t): (owner, name) for owner, name, t, _ in _tensors(model, True)}
    scopes: dict[int, set[tuple[int, str]]] = {}
    out: dict[tuple[int, str], str] = {}
    for event, t in writes:
        found = by_storage.get(storage_key(t))
        if found is None:
            continue  # a temporary
        key = (id(found[0]), found[1])
        if event is not None:
            if event not in scopes:
                scopes[event] = {(id(owner), name) for owner, name, _, _ in _scope(steps[event])}
            if key in scopes[event]:
                continue
        out[key] = f"{_qualname(model, found[0])}.{found[1]}"
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


# ---- storage: from the meta device to memory and back ---------------------------------------


def _tensors(module: nn.Module, recurse: bool) -> Iterator[tuple[nn.Module, str, torch.Tensor, bool]]:
    """(owner, name, tensor, is_parameter) of a module's own tensors, or of its whole subtree."""
    owners = module.modules() if recurse else [module]
    for m in owners:
        for name, p in m.named_parameters(recurse=False):
            yield m, name, p, True
        for name, buf in m.named_buffers(recurse=False):
            if buf is not None:
                yield m, name, buf, False


def _scope(step: Step) -> list[tuple[nn.Module, str, torch.Tensor, bool]]:
    if step.tensor is None:
        return list(_tensors(step.module, step.recurse))
    return [x for x in _tensors(step.module, False) if x[1] == step.tensor]


class Staging:
    """One CPU buffer that ``take`` gives parameters storage in (views), grown to the largest
    request and reused: each request invalidates the views of the one before. Allocating and
    freeing a block's worth per block instead leaves holes in glibc's heap between allocations that
    live on (an FSDP2 rank's shards): measured, building a 256 MiB MLP that way on each of 2 ranks
    kept 942 MiB resident where one block is 16 MiB and a rank's shards 128 MiB
    (benchmarks/distributed_memory.py)."""

    _ALIGN = 64  # bytes: every view starts aligned for any dtype

    def __init__(self) -> None:
        self.buffer: torch.Tensor | None = None

    def views(self, specs: list[tuple[torch.Size, torch.dtype]]) -> list[torch.Tensor]:
        import torch

        offsets, at = [], 0
        for shape, dtype in specs:
            at = -(-at // self._ALIGN) * self._ALIGN
            offsets.append(at)
            at += math.prod(shape) * dtype.itemsize
        if self.buffer is None or self.buffer.numel() < at:
            self.buffer = None  # free the smaller one first
            self.buffer = torch.empty(at, dtype=torch.uint8)
        buffer = self.buffer
        return [
            buffer[o : o + math.prod(shape) * dtype.itemsize].view(dtype).view(shape)
            for o, (shape, dtype) in zip(offsets, specs, strict=True)
        ]


def take(
    module: nn.Module,
    recurse: bool,
    fill: float | None = None,
    scope: list[Any] | None = None,
    staging: Staging | None = None,
) -> list[torch.Tensor]:
    """Give the module's tensors (or those of ``scope``) real CPU storage (float32 as built;
    uninitialized, or ``fill``), the parameters' in ``staging`` if given. Returns them
    (parameters and buffers) in a fixed order."""
    import torch
    from torch import nn

    entries = list(scope if scope is not None else _tensors(module, recurse))
    views = None
    if staging is not None:
        views = iter(staging.views([(t.shape, t.dtype) for _, _, t, is_param in entries if is_param and t.is_meta]))
    out = []
    for owner, name, t, is_param in entries:
        if t.device.type != "meta":
            out.append(t)
            continue
        if is_param and views is not None:
            real = next(views)
            if fill is not None:
                real.fill_(fill if t.is_floating_point() else 0)
        elif fill is None:
            real = torch.empty(t.shape, dtype=t.dtype, device="cpu")
        else:
            real = torch.full(t.shape, fill if t.is_floating_point() else 0, dtype=t.dtype, device="cpu")
        if is_param:
            owner.register_parameter(name, nn.Parameter(real, requires_grad=t.requires_grad))
        else:
            owner._buffers[name] = real
        out.append(real)
    return out


def release(
    module: nn.Module,
    recurse: bool = True,
    scope: list[Any] | None = None,
    dtypes: dict[tuple[int, str], torch.dtype] | None = None,
) -> None:
    """Back to the meta device: nothing of the module (or of ``scope``) stays in memory. ``dtypes``
    (``MetaModel.built_dtypes``): each tensor's dtype as built, where a cast has changed it."""
    import torch
    from torch import nn

    for owner, name, t, is_param in scope if scope is not None else list(_tensors(module, recurse)):
        if t.device.type == "meta":
            continue
        dtype = dtypes.get((id(owner), name), t.dtype) if dtypes is not None else t.dtype
        meta = torch.empty(t.shape, dtype=dtype, device="meta")
        if is_param:
            owner.register_parameter(name, nn.Parameter(meta, requires_grad=t.requires_grad))
        else:
            owner._buffers[name] = meta


def sweep(meta: MetaModel, staging: Staging | None = None) -> None:
    """Run the init program once, one step at a time, recording the generator state before each
    step and dropping from each block's replay the steps a later step overwrites (see the module
    docstring). Seeds nothing: the caller seeds torch's generator as a normal build would be.
    Leaves the model as it found it (the same meta tensors); a BuildError for a tensor the replay
    cannot rebuild."""
    import torch

    steps = meta.steps
    last_full: dict[tuple[int, str], int] = {}
    scopes: list[list[tuple[int, str]]] = []
    written: set[tuple[int, str]] = set()
    meta.states = []
    for i, s in enumerate(steps):
        meta.states.append(torch.get_rng_state())
        scope = _scope(s)
        keys = [(id(owner), name) for owner, name, _, _ in scope]
        scopes.append(keys)
        # a constructor is the first writer of its tensors: no need to test what it overwrites
        tensors = take(s.module, s.recurse, None if s.constructor else float("nan"), scope, staging)
        try:
            with torch.no_grad(), meta.init_context():
                s.fill()
            if not s.constructor:
                for key, t in zip(keys, tensors, strict=True):
                    # a NaN left anywhere makes the sum NaN (one fast pass; isnan().any() is 5-10x
                    # slower); an inf - inf sum only costs a replay that was not needed
                    if not t.is_floating_point() or not math.isnan(float(t.sum())):
                        last_full[key] = i
        finally:
            _reinstate(scope)
        written.update(keys)
    missing = [
        f"{_qualname(meta.model, owner)}.{name}"
        for owner, name, _, _ in _tensors(meta.model, True)
        if (id(owner), name) not in written
    ]
    if missing:
        raise BuildError(
            f"{meta.mode} cannot rebuild {_shown(missing)}: set by constructor code that no init step replays "
            "(no reset_parameters)" + _instead(meta)
        )
    # a write no replay repeats is harmless only if a later init step (not a constructor) rewrites it whole
    lost = [name for key, name in meta.unreplayed.items() if key not in last_full]
    if lost:
        raise BuildError(
            f"{meta.mode} cannot rebuild {_shown(lost)}: constructor code writes it outside reset_parameters "
            "(a copy or fill no init step replays)" + _instead(meta)
        )
    for block in meta.blocks:
        block.steps = []
    meta.resident_steps = []
    for i, s in enumerate(steps):
        if scopes[i] and all(last_full.get(key, -1) > i for key in scopes[i]):
            continue  # every tensor it writes is written again, whole, later
        if not scopes[i] and s.tensor == "":
            continue  # a draw into a temporary: its state is recorded, nothing to rebuild
        (meta.blocks[s.block].steps if s.block >= 0 else meta.resident_steps).append(i)


def _shown(names: list[str]) -> str:
    return ", ".join(names[:4]) + (f", ... ({len(names)} in all)" if len(names) > 4 else "")


def _instead(meta: MetaModel) -> str:
    return "; run without --layer-by-layer" if meta.mode == "--layer-by-layer" else ""


def _reinstate(scope: list[tuple[nn.Module, str, torch.Tensor, bool]]) -> None:
    """Put the scope's own tensors back (as ``_scope`` listed them, before ``take``)."""
    for owner, name, t, is_param in scope:
        if is_param:
            owner.register_parameter(name, t)  # type: ignore[arg-type]
        else:
            owner._buffers[name] = t


def _qualname(model: nn.Module, module: nn.Module) -> str:
    return next((q for q, m in model.named_modules() if m is module), type(module).__name__)


def materialize(
    meta: MetaModel, module: nn.Module, step_ids: list[int], recurse: bool = True, staging: Staging | None = None
) -> None:
    """Real storage for the module and its replayed init steps: the weights a normal build gives it."""
    import torch

    take(module, recurse, staging=staging)
    after_build = torch.get_rng_state()  # a model's input function draws from it, as in a normal run
    try:
        with torch.no_grad(), meta.init_context():
            for i in step_ids:
                torch.set_rng_state(meta.states[i])
                meta.steps[i].fill()
    finally:
        torch.set_rng_state(after_build)


def materialize_resident(meta: MetaModel, staging: Staging | None = None) -> None:
    """Real storage for the resident tensors and their replayed init steps."""
    import torch

    take(meta.model, False, scope=[x for module in meta.resident for x in _tensors(module, False)], staging=staging)
    after_build = torch.get_rng_state()
    try:
        with torch.no_grad(), meta.init_context():
            for i in meta.resident_steps:
                torch.set_rng_state(meta.states[i])
                meta.steps[i].fill()
    finally:
        torch.set_rng_state(after_build)


@contextmanager
def resident_materialized(meta: MetaModel) -> Iterator[None]:
    """The resident tensors materialized and initialized for the body, released after."""
    try:
        materialize_resident(meta)
        yield
    finally:
        for module in meta.resident:
            release(module, recurse=False, dtypes=meta.built_dtypes)
