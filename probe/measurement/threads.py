"""Work per batch and the intra-op thread policy: how many threads a spec's run uses.

No torch at import time: the work is arithmetic on the spec.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from probe.spec import Spec

# Below this many multiply-adds per batch, intra-op threads cost more than they save: each op is
# microseconds long, and waking (or, on a busy machine, waiting for) a second thread is not.
SINGLE_THREAD_MACS = 2**28


def linear_shapes(spec: Spec) -> list[tuple[int, int, int]]:
    """(fan_in, fan_out, how many) of the Linear layers of an MLP spec: at most three kinds (the
    first, the depth - 1 hidden ones, the head), so what is summed over them costs the same at any
    depth."""
    m = spec.model
    shapes = [(m.input_dim, m.width, 1), (m.width, m.width, m.depth - 1)]
    if m.output_dim is not None:
        shapes.append((m.width, m.output_dim, 1))
    return [s for s in shapes if s[2] > 0]


def forward_macs(spec: Spec) -> int:
    """Multiply-adds of one forward pass over one batch."""
    return spec.data.batch_size * sum(n * i * o for i, o, n in linear_shapes(spec))


def work_macs(spec: Spec) -> int | None:
    """Multiply-adds of one forward pass over one batch, for every spec model kind (the dominant
    terms: matrix products and convolutions); ``None`` for a user model (unknown)."""
    m, b = spec.model, spec.data.batch_size
    if m.factory is not None or m.hf is not None:
        return None
    w = m.width
    if m.kind == "mlp":
        return forward_macs(spec)
    if m.kind == "conv" or (m.kind == "residual" and m.block == "conv"):
        per_layer = b * m.image_size**2 * w * w * m.kernel_size**2
        first = b * m.image_size**2 * m.in_channels * w * m.kernel_size**2
        return first + per_layer * m.depth * (2 if m.kind == "residual" else 1)
    if m.kind == "residual":
        return b * (m.input_dim * w + 2 * m.depth * w * w)
    if m.kind == "transformer":
        ff = m.ff_width or 4 * w
        tokens = b * m.seq_len
        return m.depth * (tokens * (4 * w * w + 2 * w * ff) + 2 * b * m.seq_len**2 * w)
    gates = 4 if m.kind == "lstm" else 3
    return b * m.seq_len * gates * m.depth * (max(m.input_dim, w) + w) * w


# probe --threads N: every run of the invocation (its context) uses exactly N intra-op threads
_EXPLICIT: ContextVar[int | None] = ContextVar("probe_explicit_threads", default=None)


def explicit_threads() -> int | None:
    """The thread count ``--threads`` fixed for the runs of this context (None: the policy)."""
    return _EXPLICIT.get()


def set_threads(n: int | None) -> None:
    """Fix the intra-op thread count of every later run in this context (a worker or child
    process of probe's own, given its parent's ``--threads``); ``None``: the policy."""
    _EXPLICIT.set(n)


@contextmanager
def threads_fixed(n: int | None) -> Iterator[None]:
    """The runs inside the block use ``n`` intra-op threads (None: the policy); restored after."""
    token = _EXPLICIT.set(n)
    try:
        yield
    finally:
        _EXPLICIT.reset(token)


def threads_for(spec: Spec, model: Any = None) -> int | None:
    """The intra-op threads for ``spec``'s work, one policy for every command and model kind:
    ``--threads`` when given; else, with ``OMP_NUM_THREADS`` set, torch's count (which honours
    it); else 1 for small work (below SINGLE_THREAD_MACS: waking threads costs more than they
    save, and on a busy machine far more) and torch's default (``None``) otherwise. A user
    model's work is counted as batch size x parameters when ``model`` is given."""
    import os

    if _EXPLICIT.get() is not None:
        return _EXPLICIT.get()
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    macs = work_macs(spec)
    if macs is None and model is not None:
        macs = spec.data.batch_size * sum(p.numel() for p in model.parameters())
    if macs is None:
        return None
    return 1 if macs < SINGLE_THREAD_MACS else None


@contextmanager
def intra_op_threads(n: int | None) -> Iterator[None]:
    """Run the body with ``n`` intra-op threads (None: leave as is), then restore the count."""
    import torch

    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
