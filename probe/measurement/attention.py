"""Attention at init: the spread of the attention logits and how peaked the attention is.

Attention is often computed by functions, not modules: ``F.scaled_dot_product_attention`` (PyTorch's
``nn.MultiheadAttention`` and most ``transformers`` models) or a softmax over the keys (eager
implementations). While a probe runs, ``watching`` wraps those functions (``torch.nn.functional``'s,
``torch.softmax`` and ``Tensor.softmax``; calls inside ``multi_head_attention_forward`` look them up
there too) and attributes each call to the innermost module of the probed model that is running,
found by walking the call stack when attention is computed. A softmax over the last axis of a
tensor of 3 or more dimensions (batch, [heads,] queries, keys) is taken as attention.

For each call, on its first ``SAMPLES`` samples (no gradient, no host read): per query row, over
the keys that take part (masked keys excluded), the std of the logits (softmax is unchanged by a
shift, so this is what sets how peaked it is) and the entropy of the weights divided by log(keys),
which is 1 for uniform attention and 0 for one-hot. Rows with fewer than 2 keys are skipped.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from probe.records import AttentionStats

if TYPE_CHECKING:
    from types import FrameType

    import torch

SAMPLES = 4  # samples of a batch each attention call is measured on


class AttentionRecorder:
    """Accumulates per-module sums on the device: [normalized entropy, rows, squared logit std, calls]."""

    def __init__(self, model: torch.nn.Module, acc_dtype: torch.dtype) -> None:
        self.names = {id(m): name for name, m in model.named_modules()}
        self.acc_dtype = acc_dtype
        self.sums: dict[str, torch.Tensor] = {}
        self._inside = False  # F.softmax calls Tensor.softmax: one call is recorded once

    @contextmanager
    def watching(self) -> Iterator[None]:
        """Wrap the attention functions and track running modules; everything is restored on exit."""
        import torch
        import torch.nn.functional as F

        patched: list[tuple[Any, str, Any]] = [
            (F, "scaled_dot_product_attention", F.scaled_dot_product_attention),
            (F, "softmax", F.softmax),
            (torch, "softmax", torch.softmax),
            (torch.Tensor, "softmax", torch.Tensor.softmax),
        ]
        try:
            F.scaled_dot_product_attention = self._sdpa(F.scaled_dot_product_attention)  # type: ignore[assignment]
            F.softmax = self._softmax(F.softmax)  # type: ignore[assignment]
            torch.softmax = self._softmax(torch.softmax)  # type: ignore[assignment]
            torch.Tensor.softmax = self._softmax(torch.Tensor.softmax)  # type: ignore[method-assign]
            yield
        finally:
            for owner, name, original in patched:
                setattr(owner, name, original)

    # ---- the wrappers -------------------------------------------------------------------------

    def _sdpa(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def sdpa(query: Any, key: Any, value: Any, attn_mask: Any = None, *args: Any, **kwargs: Any) -> Any:
            name = None if self._inside else self._running_module()
            if name is None:
                return original(query, key, value, attn_mask, *args, **kwargs)
            self._from_qk(name, query, key, attn_mask, *args, **kwargs)
            self._inside = True
            try:
                return original(query, key, value, attn_mask, *args, **kwargs)
            finally:
                self._inside = False

        return sdpa

    def _softmax(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def softmax(input: Any, *args: Any, **kwargs: Any) -> Any:
            dim = kwargs.get("dim", args[0] if args else None)
            name = None if self._inside or not _is_attention(input, dim) else self._running_module()
            if name is None:
                return original(input, *args, **kwargs)
            self._record(name, input.detach()[:SAMPLES], None)
            self._inside = True
            try:
                return original(input, *args, **kwargs)
            finally:
                self._inside = False

        return softmax

    def _running_module(self) -> str | None:
        """The qualified name of the innermost module of the probed model whose ``forward`` is on
        the call stack (``None``: the call does not come from the model). Walking the frames only
        when attention is computed costs nothing per module call, unlike global module hooks."""
        frame: FrameType | None = sys._getframe(2)
        while frame is not None:
            owner = frame.f_locals.get("self")
            if owner is not None:
                name = self.names.get(id(owner))
                if name is not None:
                    return name
            frame = frame.f_back
        return None

    def _from_qk(
        self,
        name: str,
        query: torch.Tensor,
        key: torch.Tensor,
        attn_mask: torch.Tensor | None,
        dropout_p: float = 0.0,
        is_causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
    ) -> None:
        import torch

        with torch.no_grad():
            q, k = query.detach()[:SAMPLES].float(), key.detach()[:SAMPLES].float()
            if q.dim() >= 3 and k.dim() >= 3 and k.shape[-3] != q.shape[-3]:  # grouped-query attention
                k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
            logits = q @ k.transpose(-2, -1) * (scale if scale is not None else 1.0 / math.sqrt(q.shape[-1]))
            masked = None
            if is_causal:
                rows, cols = logits.shape[-2:]
                masked = torch.ones(rows, cols, dtype=torch.bool, device=logits.device).triu(1)
            if attn_mask is not None:
                mask = attn_mask.detach()
                if mask.dim() == logits.dim() and mask.shape[0] == query.shape[0]:
                    mask = mask[:SAMPLES]
                if mask.dtype == torch.bool:
                    masked = ~mask if masked is None else masked | ~mask
                else:
                    logits = logits + mask.float()
            self._record(name, logits, masked)

    def _record(self, name: str, logits: torch.Tensor, masked: torch.Tensor | None) -> None:
        import torch

        with torch.no_grad():
            # per-element work in float32 (float64 cost GPT-2 small 4% of its pass); sums in acc_dtype
            x = logits.float()
            out = torch.isneginf(x) | (x <= torch.finfo(logits.dtype).min / 2)  # additive masks use -inf or min
            if masked is not None:
                out = out | masked
            x = x.masked_fill(out, -math.inf)
            keys = (~out).sum(-1, dtype=x.dtype)
            rows = keys >= 2
            log_p = torch.log_softmax(x, dim=-1)
            entropy = -(log_p.exp() * log_p).nan_to_num(0.0, posinf=0.0, neginf=0.0).sum(-1)
            normalized = entropy / keys.clamp_min(2).log()
            finite = x.masked_fill(out, 0.0)
            mean = finite.sum(-1, keepdim=True) / keys.clamp_min(1).unsqueeze(-1)
            spread = ((finite - mean).masked_fill(out, 0.0) ** 2).sum(-1) / keys.clamp_min(1)
            zero = torch.zeros((), dtype=x.dtype, device=x.device)
            record = torch.stack(
                [
                    torch.where(rows, normalized, zero).sum(dtype=self.acc_dtype),
                    rows.sum(dtype=self.acc_dtype),
                    torch.where(rows, spread, zero).sum(dtype=self.acc_dtype),
                    torch.ones((), dtype=self.acc_dtype, device=x.device),
                ]
            )
        if name in self.sums:
            self.sums[name].add_(record)
        else:
            self.sums[name] = record

    # ---- results ---------------------------------------------------------------------------------

    def parts(self) -> list[torch.Tensor]:
        """The device sums, in ``results``'s order, for the collector's one host transfer."""
        return list(self.sums.values())

    def results(self, flat: list[float]) -> tuple[AttentionStats, ...]:
        out = []
        for i, name in enumerate(self.sums):
            entropy_sum, rows, spread_sum, calls = flat[4 * i : 4 * i + 4]
            if rows == 0:
                continue
            out.append(AttentionStats(name or "(model)", int(calls), math.sqrt(spread_sum / rows), entropy_sum / rows))
        return tuple(out)


def _is_attention(t: Any, dim: Any) -> bool:
    """A softmax over the last axis (keys) of a (batch, [heads,] queries, keys) floating tensor."""
    import torch

    if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.dim() < 3 or t.shape[-1] < 2:
        return False
    return dim in (-1, t.dim() - 1)
