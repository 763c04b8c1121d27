"""The one cross-rank reduction of a distributed run (``probe.measurement.distributed``).

The hooks stay as they are (on-device, sync-free). ``merge_ranks`` runs once, just before the
collector's single host read, and moves two flat tensors: an ``all_gather`` of every slot's
(count, mean, M2) and the few per-layer host numbers, merged with Chan et al.'s update in a
fixed rank order (so every rank computes the same numbers), and an ``all_reduce`` (sum) of the
plain sums (non-finite and saturated counts, within-sample M2) and the per-unit nonzero counts
(a unit is dead only if its count is 0 on every rank).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from probe.errors import RunError
from probe.measurement.attention import RECORD
from probe.measurement.correlation import WIDTH

if TYPE_CHECKING:
    from probe.measurement.collect import Collector
    from probe.measurement.distributed import Share


def merge_ranks(c: Collector, share: Share) -> None:
    """Fold every rank's statistics into each rank's collector, exactly, in two collectives."""
    import torch
    import torch.distributed as dist

    n = len(c.layers)
    dtype, device = c.acc_dtype, c.device
    m = c.moments
    alive = [layer.alive for layer in c.layers if layer.alive is not None]
    summed_host = [float(v) for layer in c.layers for v in (layer.values, layer.grads, layer.spread_values)]
    summed_len = c.sums.numel() + sum(a.numel() for a in alive) + len(summed_host)
    host = [float(layer.weight_grad_batches) for layer in c.layers]
    host += [1.0 if layer.saturation_known else 0.0 for layer in c.layers]
    host += [1.0 if c.backward_done else 0.0, float(summed_len)]
    mine = torch.cat([m.count, m.mean, m.m2, torch.tensor(host, dtype=dtype).to(device)])
    everyone = torch.empty(share.world_size * mine.numel(), dtype=dtype, device=device)
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    gather(everyone, mine, group=share.group)
    everyone = everyone.view(share.world_size, -1)
    if len(set(everyone[:, -1].tolist())) != 1:
        raise RunError("the ranks measured different layers (their statistics do not line up)")
    slots = 3 * n
    counts, means, m2s = everyone[:, :slots], everyone[:, slots : 2 * slots], everyone[:, 2 * slots : 3 * slots]
    total = counts.sum(0)
    pooled = (counts * means).sum(0) / total.clamp_min(1)
    spread = means - pooled
    m.m2 = (m2s + counts * spread * spread).sum(0)
    m.mean, m.count = pooled, total
    flags = everyone[:, 3 * slots :].cpu()
    batches = flags[:, :n].amax(0).tolist()  # a rank whose shard is empty saw no weight gradient
    known = flags[:, n : 2 * n].amin(0).tolist()
    backward = bool(flags[:, 2 * n].amax().item())

    # the cosine sums (pairs within each rank's slice) and attention sums add up like the rest; a
    # layer without a record on this rank sends zeros, so every rank sends the same length
    no_pairs = torch.zeros(WIDTH, dtype=dtype, device=device)
    correlations = [layer.correlation if layer.correlation is not None else no_pairs for layer in c.layers]
    attention = c.attention.parts() if c.attention is not None else []
    summed = torch.cat(
        [c.sums.reshape(-1), *alive, *correlations, *attention, torch.tensor(summed_host, dtype=dtype).to(device)]
    )
    dist.all_reduce(summed, op=dist.ReduceOp.SUM, group=share.group)
    at = c.sums.numel()
    c.sums = summed[:at].view_as(c.sums)
    for layer in c.layers:
        if layer.alive is not None:
            size = layer.alive.numel()
            layer.alive = summed[at : at + size]
            at += size
    for layer in c.layers:
        layer.correlation = summed[at : at + WIDTH]
        at += WIDTH
    if c.attention is not None:
        for name in c.attention.sums:
            c.attention.sums[name] = summed[at : at + RECORD]
            at += RECORD
    totals = summed[at:].cpu().tolist()
    for i, layer in enumerate(c.layers):
        layer.values, layer.grads, layer.spread_values = (int(v) for v in totals[3 * i : 3 * i + 3])
        layer.weight_grad_batches = int(batches[i])
        layer.saturation_known = known[i] > 0
    c.backward_done = backward
