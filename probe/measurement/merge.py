"""The collector's record arithmetic: per-slot moments merged on the device (Chan et al.'s pairwise
update), and a record's host numbers merged on the host (probe/measurement/collect.py explains the
records)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class SlotMoments:
    """Per-slot count, mean and centered second moment, merged from per-call records."""

    def __init__(self, slots: int, acc_dtype: torch.dtype, device: torch.device) -> None:
        import torch

        self.count = torch.zeros(slots, dtype=acc_dtype, device=device)
        self.mean = torch.zeros(slots, dtype=acc_dtype, device=device)
        self.m2 = torch.zeros(slots, dtype=acc_dtype, device=device)

    def merge(self, slot: torch.Tensor, n: torch.Tensor, mean: torch.Tensor, m2: torch.Tensor) -> None:
        """Fold in records ``r`` (slot ``slot[r]``, ``n[r]`` values with ``mean[r]`` and ``m2[r]``):
        the pooled mean is a weighted mean, and M2 adds each part's spread around it."""
        count = self.count.index_add(0, slot, n)
        pooled = (self.count * self.mean).index_add_(0, slot, n * mean) / count.clamp_min(1)
        own = self.mean - pooled
        delta = mean - pooled[slot]
        self.m2 = (self.m2 + self.count * own * own).index_add_(0, slot, m2 + n * delta * delta)
        self.mean = pooled
        self.count = count


def host_numbers(key: tuple[int, int, int]) -> tuple[float, float, float, float, float]:
    """A record's host numbers: slot, values n, M2 multiplier, and how its first three device
    values (c0, b, a) become a mean and an M2: mean = c0 * mean_scale and
    M2 = a + b * multiplier - sq_scale * c0^2. A forward record holds (mean, between-sample part,
    within-sample M2); a gradient record (multiplier -1) holds (sum, 0, sum of squares)."""
    slot, n, mult = key
    if mult == -1:
        return float(slot), float(n), 0.0, 1.0 / n, 1.0 / n
    return float(slot), float(n), float(mult), 1.0, 0.0


def merge_host(
    key: tuple[int, int, int],
    row: list[float],
    count: list[float],
    mean: list[float],
    m2: list[float],
    sums: list[float],
) -> None:
    """``Collector._merge`` for one record, on the host (Chan et al.'s pairwise update)."""
    slot_f, n, mult, mean_scale, sq_scale = host_numbers(key)
    slot = int(slot_f)
    c0, b, a, nonfinite, saturated = row
    mean_r = c0 * mean_scale
    m2_r = max(a + b * mult - sq_scale * c0 * c0, 0.0)  # a nan stays nan
    before = count[slot]
    if before == 0:
        mean[slot], m2[slot] = mean_r, m2_r
    else:
        total = before + n
        delta = mean_r - mean[slot]
        mean[slot] += delta * n / total
        m2[slot] += m2_r + delta * delta * before * n / total
    count[slot] = before + n
    sums[3 * slot] += a
    sums[3 * slot + 1] += nonfinite
    sums[3 * slot + 2] += saturated
