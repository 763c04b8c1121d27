"""What a model is fed: random continuous tensors of a shape, random token ids, or a user function.

Continuous inputs have unit variance (``data.distribution``), drawn on the CPU from the run's data
stream so they are identical on every device. A user function ``fn(batch_size)`` may return a
tensor, a tuple/list of positional arguments or a dict of keyword arguments; it draws from
torch's global generator, which the run seeds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from probe.model.network import Built
    from probe.spec import Spec

_DATA_STREAM = 1  # the run's input batches; run.py's direction stream is 2


@dataclass(frozen=True)
class InputSpec:
    kind: str  # "shape" (continuous), "tokens" (integer ids) or "function"
    shape: tuple[int, ...] = ()  # one sample, no batch dimension
    vocab_size: int | None = None
    function: Callable[[int], Any] | None = None
    requires_grad: bool = False  # the probe reads d loss / d input (recurrent steps)
    keyword: str | None = None  # passed as this keyword argument (transformers: input_ids, pixel_values)
    attention_mask: bool = False  # token ids come with an all-ones attention_mask keyword argument

    def describe(self) -> str:
        if self.kind == "tokens":
            return f"token ids {list(self.shape)} < {self.vocab_size}"
        if self.kind == "function":
            return f"inputs from {getattr(self.function, '__qualname__', 'a function')}"
        return f"shape {list(self.shape)}"


@dataclass(frozen=True)
class Batch:
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


def draw(
    spec: InputSpec,
    batch_size: int,
    distribution: str,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
) -> Batch:
    """One batch of inputs on ``device``; floating tensors in ``dtype``."""
    import torch

    if spec.kind == "tokens":
        ids = torch.randint(0, spec.vocab_size or 2, (batch_size, *spec.shape), generator=generator)
        if spec.keyword is not None:
            named = {spec.keyword: ids.to(device)}
            if spec.attention_mask:
                named["attention_mask"] = torch.ones_like(named[spec.keyword])
            return Batch((), named)
        return Batch((ids.to(device),), {})
    if spec.kind == "function":
        assert spec.function is not None
        return _to_batch(spec.function(batch_size), device, dtype)
    x = continuous((batch_size, *spec.shape), distribution, generator).to(device=device, dtype=dtype)
    if spec.requires_grad:
        x.requires_grad_(True)
    if spec.keyword is not None:
        return Batch((), {spec.keyword: x})
    return Batch((x,), {})


def continuous(shape: tuple[int, ...], distribution: str, generator: torch.Generator) -> torch.Tensor:
    """Unit-variance values: N(0, 1) or U(-sqrt 3, sqrt 3)."""
    import torch

    if distribution == "uniform":
        limit = 3.0**0.5
        return torch.rand(shape, generator=generator) * (2 * limit) - limit
    return torch.randn(shape, generator=generator)


def _to_batch(value: Any, device: torch.device, dtype: torch.dtype) -> Batch:
    def move(v: Any) -> Any:
        import torch

        if isinstance(v, torch.Tensor):
            return v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device)
        return v

    if isinstance(value, Mapping):
        return Batch((), {str(k): move(v) for k, v in value.items()})
    if isinstance(value, (tuple, list)):
        return Batch(tuple(move(v) for v in value), {})
    return Batch((move(value),), {})


def data_stream(spec: Spec) -> torch.Generator:
    """The generator every input batch of a run is drawn from (seeded from ``run.seed``)."""
    import torch

    return torch.Generator().manual_seed(spec.run.seed * 1000 + _DATA_STREAM)


def next_batch(spec: Spec, built: Built, generator: torch.Generator, device: torch.device, dtype: torch.dtype) -> Batch:
    """The run's next input batch: the MLP's feature vectors, or the model's own inputs."""
    if built.inputs is None:
        return Batch((draw_batch(spec, generator).to(device=device, dtype=dtype),), {})
    return draw(built.inputs, spec.data.batch_size, spec.data.distribution, generator, device, dtype)


def draw_batch(spec: Spec, generator: torch.Generator) -> torch.Tensor:
    """One unit-variance input batch on the CPU (identical on every device)."""
    import torch

    shape = (spec.data.batch_size, spec.model.input_dim)
    if spec.data.distribution == "uniform":
        limit = 3.0**0.5  # U(-sqrt 3, sqrt 3) has variance 1
        return torch.rand(shape, generator=generator) * (2 * limit) - limit
    return torch.randn(shape, generator=generator)
