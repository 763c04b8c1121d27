"""Exact counts of non-finite values in tensors of any size, without a float64 copy of them.

``nonfinite`` marks the values in a scratch buffer the collector already holds (an activation's);
``nonfinite_in_chunks`` needs none, for tensors too large for one. A weight gradient can be very large (a 128256 x 8192 embedding: 1.05 billion values, 4.2 GB in
float32). Counting its nan/inf values through a scratch tensor of its size and a float64 sum took
three more copies of it (12.6 GB) and pushed a layer-by-layer run of a Llama-3-70B-sized config
from 8 GiB to 21 GiB. Above ``LARGE`` values the count goes chunk by chunk: a boolean chunk of
``CHUNK`` values at a time, summed in int64 (exact), on the tensor's device (no host sync).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

LARGE = 2**24  # from here on, count in chunks (float32 sums of 0/1 values are exact below it)
CHUNK = 2**22  # values per chunk: exact in float32; a 4 MiB boolean temporary


def widened(t: torch.Tensor) -> torch.Tensor:
    """``t`` in the precision the collector counts and sums in: float16 and bfloat16 widened to
    float32 (their sums lose counts and their squares overflow), any other dtype as it is."""
    import torch

    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def finite_on_cpu(total: torch.Tensor) -> bool:
    """Whether a sum (or sum of products) over a tensor's values proves none of them nan or inf:
    a nan makes it nan and an inf inf or nan, so a finite one does (a sum that overflows from
    finite values is not finite: the caller counts). Read on the CPU only, where reading a value
    costs no device sync; the count it spares is two or three passes over the tensor."""
    return total.device.type == "cpu" and math.isfinite(float(total))


def nonfinite(y: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """The number of nan and inf values in ``y``, exactly: 1 where ``y - y`` is nan, summed in
    chunks of fewer than 2**24 values (each chunk's float32 sum is exact) and the few chunk sums
    in float64, never a float64 copy of the whole tensor (a 124M-parameter model's embedding
    gradient: 38.6M values, a 309 MB copy per batch). ``scratch``: a buffer shaped like ``y``."""
    import torch

    marks = torch.sub(y, y, out=scratch).nan_to_num_(nan=1.0)
    n = marks.numel()
    if n < LARGE or marks.dtype == torch.float64:
        return marks.sum()
    whole = n - n % CHUNK
    flat = marks.view(-1)
    chunks = [flat[:whole].view(-1, CHUNK).sum(dim=1), flat[whole:].sum().view(1)]
    return torch.cat(chunks).sum(dtype=torch.float64)


def nonfinite_in_chunks(flat: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The number of nan and inf values of the 1-D tensor ``flat``, as a 0-d ``dtype`` tensor."""
    import torch

    total = torch.zeros((), dtype=torch.int64, device=flat.device)
    for chunk in flat.split(CHUNK):
        total += chunk.numel() - torch.isfinite(chunk).sum()
    return total.to(dtype)
