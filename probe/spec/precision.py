"""The low-precision formats ``run.precision`` measures headroom against (docs/precision.md).

Numbers only (no torch): the measurement counts against them and the judge reads them. Each
bound is where a round-to-nearest-even cast from float32 changes what a value is:

- ``overflow``: the smallest magnitude that does not round to a finite value of the format:
  the largest value plus half its unit in the last place. From there a cast gives inf (FP16,
  BF16, FP8 E5M2). FP8 E4M3 (the ``fn`` variant: no inf, one NaN) has nothing above 448: torch's
  cast saturates to 448, hardware conversions without saturation give NaN. Values in
  ``(max, overflow)`` round down to ``max``.
- ``flush``: the largest magnitude the cast turns into 0: half the smallest subnormal (the tie
  goes to the even neighbour, 0). A nonzero value at or below it is lost.
- ``normal``: the smallest normal value; below it a value keeps fewer significant bits.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Format:
    name: str  # the run.precision value
    dtype: str  # the torch dtype a real cast goes to
    max: float  # the largest finite value
    overflow: float  # the smallest magnitude that does not round to a finite value (see above)
    subnormal: float  # the smallest subnormal value (positive)
    normal: float  # the smallest normal value
    saturates: bool = False  # no inf in the format: the cast saturates (torch) or gives NaN

    @property
    def flush(self) -> float:
        """The largest magnitude the cast turns into 0 (half the smallest subnormal; a tie goes to 0)."""
        return self.subnormal / 2


def _format(name: str, dtype: str, exponent_bits: int, mantissa_bits: int, max_value: float, **kw: bool) -> Format:
    bias = 2 ** (exponent_bits - 1) - 1
    normal = 2.0 ** (1 - bias)
    max_exponent = max_value.hex().split("p")[1]  # the exponent of the largest value
    half_ulp = 2.0 ** (int(max_exponent) - mantissa_bits - 1)
    return Format(name, dtype, max_value, max_value + half_ulp, normal * 2.0**-mantissa_bits, normal, **kw)


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        _format("fp16", "float16", 5, 10, 65504.0),
        _format("bf16", "bfloat16", 8, 7, (2 - 2**-7) * 2.0**127),
        _format("fp8_e4m3", "float8_e4m3fn", 4, 3, 448.0, saturates=True),
        _format("fp8_e5m2", "float8_e5m2", 5, 2, 57344.0),
    )
}
ALIASES = {"fp8": "fp8_e4m3"}  # FP8 training keeps activations and weights in E4M3 (E5M2: gradients)
PRECISIONS = ("none", *FORMATS, *ALIASES)


def precision_format(name: str) -> Format | None:
    """The format ``run.precision`` names; None for ``none``."""
    return FORMATS.get(ALIASES.get(name, name))
