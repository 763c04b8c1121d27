"""The collector's record arithmetic: records pending (``PendingRecords``) until they are merged
into per-slot moments on the device (Chan et al.'s pairwise update), and a record's host numbers
merged on the host (probe/measurement/collect.py explains the records)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# A record's device values: c0, b, a (a mean and an M2, see host_numbers), non-finite count,
# saturated count. a of a forward record is the within-sample M2 (for the spread); the last three
# are summed per slot.
WIDTH = 5
# Merge once this many records per layer have piled up (bounds memory whatever the batch count).
PENDING_PER_LAYER = 12
# Cached host-integer vectors (one per distinct sequence of records between merges).
_MAX_KEYS = 16


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
    """``PendingRecords.merge`` for one record, on the host (Chan et al.'s pairwise update)."""
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


class PendingRecords:
    """Records not merged yet: per record, ``WIDTH`` 0-d device tensors (``stats``) and its host
    integers (``keys``: slot, number of values, a multiplier). ``merge`` folds them into per-slot
    accumulators with a few vector ops; the host integers reach the device as cached tensors built
    by fill kernels, never by a copy."""

    def __init__(self, acc_dtype: torch.dtype, device: torch.device) -> None:
        self.acc_dtype = acc_dtype
        self.device = device
        self.stats: list[torch.Tensor] = []  # WIDTH 0-d tensors per pending record
        self.keys: list[tuple[int, int, int]] = []  # per pending record: slot, values, multiplier
        self._consts: dict[float, torch.Tensor] = {}
        self._keyed: dict[tuple[tuple[int, int, int], ...], torch.Tensor] = {}

    def add(self, key: tuple[int, int, int], *stats: torch.Tensor) -> int:
        """Add one record; the number now pending."""
        self.keys.append(key)
        self.stats += stats
        return len(self.keys)

    def _const(self, value: float) -> torch.Tensor:
        """A 0-d accumulator-dtype tensor on the device, made by a fill kernel (no host copy)."""
        import torch

        t = self._consts.get(value)
        if t is None:
            t = self._consts[value] = torch.full((), value, dtype=self.acc_dtype, device=self.device)
        return t

    def _key_columns(self) -> torch.Tensor:
        """The pending records' host numbers (``host_numbers``) as a device matrix, cached: the
        same layers report in the same order every batch, so it is built once per run."""
        import torch

        key = tuple(self.keys)
        columns = self._keyed.get(key)
        if columns is None:
            if len(self._keyed) >= _MAX_KEYS:
                self._keyed.clear()
            numbers = [host_numbers(k) for k in key]
            if self.device.type == "cpu":  # host memory is device memory: nothing to copy
                columns = torch.tensor(numbers, dtype=self.acc_dtype)
            else:
                columns = torch.stack([self._const(v) for row in numbers for v in row]).view(len(numbers), -1)
            self._keyed[key] = columns
        return columns

    def merge(self, moments: SlotMoments, sums: torch.Tensor) -> None:
        """Fold every pending record into the per-slot moments and ``sums`` (per slot: M2 part a,
        non-finite count, saturated count) on the device (a few vector ops in all)."""
        import torch

        if not self.keys:
            return
        slot, n, mult, mean_scale, sq_scale = self._key_columns().unbind(1)
        # stack promotes mixed float32/float64 records to the wider type
        rows = torch.stack(self.stats).to(self.acc_dtype).view(-1, WIDTH)
        c0, b, a = rows[:, 0], rows[:, 1], rows[:, 2]
        m2 = (a + b * mult - sq_scale * c0 * c0).clamp_min(0)
        index = slot.long()
        moments.merge(index, n, c0 * mean_scale, m2)
        sums.index_add_(0, index, rows[:, 2:])  # a slice: a list index would be copied from the host
        self.keys, self.stats = [], []

    def host_part(self) -> list[torch.Tensor]:
        """The pending records' device values as one flat tensor, for the host read (none if empty)."""
        import torch

        return [torch.stack(self.stats).to(self.acc_dtype)] if self.stats else []

    def merge_host(
        self, values: list[float], count: list[float], mean: list[float], m2: list[float], sums: list[float]
    ) -> None:
        """``host_part``'s values, read to the host, merged into the host lists (``merge_host``);
        nothing is pending after."""
        for r, key in enumerate(self.keys):
            merge_host(key, values[r * WIDTH : (r + 1) * WIDTH], count, mean, m2, sums)
        self.keys, self.stats = [], []
