"""The memory estimate (``MemoryEstimate``, bytes at a run's peak by part) and its arithmetic
form for a spec MLP.

No torch at import time: the estimate is arithmetic on the spec, so ``--max-memory`` can refuse a
spec before torch is even loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from probe.measurement.threads import linear_shapes
from probe.spec import Spec

# Bytes per value of each run dtype.
DTYPE_BYTES = {"float32": 4, "float64": 8, "bfloat16": 2, "float16": 2}
# Fixed cost of the process itself (interpreter, torch, probe), added to every estimate.
PROCESS_BYTES = 400 * 2**20


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a run needs at its peak, by part."""

    weights: int  # parameters (and, with backward, their gradients)
    activations: int  # what autograd keeps for backward, or the largest live pair without it
    statistics: int  # the probe's own temporaries and accumulators
    process: int = PROCESS_BYTES

    @property
    def total(self) -> int:
        return self.weights + self.activations + self.statistics + self.process

    def line(self) -> str:
        gib = 2**30
        return (
            f"estimated peak memory {self.total / gib:.2f} GiB (weights {self.weights / gib:.2f}, "
            f"activations {self.activations / gib:.2f}, statistics {self.statistics / gib:.2f}, "
            f"process {self.process / gib:.2f})"
        )


def estimate_memory(spec: Spec) -> MemoryEstimate:
    """A deliberately simple upper-bound estimate for an MLP spec (the model kinds probe builds).

    Weights are built in float32 on the CPU and then cast, so both copies count when the run's
    dtype differs. Autograd keeps each Linear's input and each activation's output (and a norm's
    input) for the backward pass; without backward only the current layer's input and output live.
    Statistics need O(layers) accumulators plus two activation-sized temporaries at a time.
    """
    m, d = spec.model, spec.data
    size = DTYPE_BYTES[spec.run.dtype]
    params = sum(n * (i * o + (o if m.bias else 0)) for i, o, n in linear_shapes(spec))
    weights = params * 4 + (params * size if size != 4 else 0)
    if spec.run.backward:
        weights += params * size  # gradients
    rows = d.batch_size
    per_layer = rows * m.width * size
    if spec.run.backward:
        kept = 2 + (1 if m.norm != "none" else 0)
        activations = rows * m.input_dim * size + m.depth * kept * per_layer + 2 * per_layer
    else:
        activations = 3 * per_layer + rows * m.input_dim * size
    statistics = 2 * rows * max(m.width, m.input_dim) * 4 + (m.depth + 1) * (m.width * 8 + 1024)
    return MemoryEstimate(weights, activations, statistics)
