"""A health rule's parts: the checks it makes (one threshold each) and what they read. The rules
are in ``rules.py``; the values they read in ``readings.py``, or where their mechanism is (``stalled.py``,
``headroom.py``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from probe.records import Stats


class Row(Protocol):
    """What a check judges: a layer's statistics, or a module's attention (``AttentionStats``)."""

    @property
    def name(self) -> str: ...


Values = Callable[[Stats], "list[tuple[Row, float | None]]"]


@dataclass(frozen=True)
class Check:
    """One threshold of a rule: the per-layer values it reads, the gate key, and the direction.

    A check without ``cell`` judges one value for the whole network (the last/first std ratio,
    reported at the last layer) and colors no table cell.
    """

    key: str  # GateSpec field holding the threshold
    what: str  # how the value reads in a message
    values: Values
    below: bool  # the rule breaks when a value is below the threshold (else above)
    cell: str = ""  # the LayerStats field a broken value colors in the table
    fraction: bool = False  # a fraction in [0, 1] (its error margin is additive-like, not a factor)
    # a check whose breaking is unusual rather than a mechanism that stops training: at most a warning
    warning_only: bool = False
    # whether a value within the margin of its threshold is said as a near miss (a second reading of
    # what another check of its rule reads need not be: what every sample shares is often large)
    near: bool = True


@dataclass(frozen=True)
class Rule:
    name: str
    summary: str
    checks: tuple[Check, ...]

    @property
    def thresholds(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.key for c in self.checks))  # nonfinite checks two values against one key
