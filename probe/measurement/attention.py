"""Attention at init: the spread of the attention logits and how peaked the attention is.

Attention is often computed by functions, not modules: ``F.scaled_dot_product_attention`` (PyTorch's
``nn.MultiheadAttention`` and most ``transformers`` models) or a softmax over the keys (eager
implementations). While a probe's own passes run, ``watching`` enters a ``TorchFunctionMode`` that
sees those calls, and keeps the stack of the probed model's running modules with forward hooks on
its modules, so each call is attributed to the innermost module running. A torch function written
in Python that computes attention inside (``F.multi_head_attention_forward``: the mode does not see
the calls a function makes once it has handled it) runs under a ``TorchDispatchMode`` that sees the
operators it reaches (``aten._softmax``, the fused attention kernels of each device, whose arguments
are read by name from the operator's schema). Nothing of torch is replaced: the modes and the hooks
are scoped to the ``with`` block and to the calling thread, so two probes in two threads do not see
each other's calls. A softmax over the last axis of a tensor of 3 or more dimensions (batch,
[heads,] queries, keys) is taken as attention.

For each call, on its first ``SAMPLES`` samples (no gradient, no host read): per query row, over
the keys that take part (masked keys excluded), the std of the logits (softmax is unchanged by a
shift, so this is what sets how peaked it is) and the entropy of the weights divided by log(keys),
which is 1 for uniform attention and 0 for one-hot. Rows with fewer than 2 keys are skipped. And
how much the routing depends on the sample: per query row, the entropy of the weights averaged over
the samples less the samples' mean entropy (the information the row's routing carries about which
sample it is), over log(samples): 0 where every sample attends the same way (a position bias), 1
where each routes its own way (a content match).
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from probe.records import AttentionStats

if TYPE_CHECKING:
    import torch

SAMPLES = 4  # samples of a batch each attention call is measured on
# per module on the device: normalized entropy, rows, squared logit std, calls, routing by sample, its rows
RECORD = 6
SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
# the operators a Python-level attention function reaches: a softmax (eager, or sdpa's math path)
# or a fused attention kernel
SOFTMAX_OPS = ("_softmax", "_safe_softmax")
FUSED_OPS = (
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_fused_attention_overrideable",
)


class AttentionRecorder:
    """Accumulates per-module sums on the device (``RECORD``: normalized entropy, rows, squared logit
    std, calls, routing by sample, its rows)."""

    def __init__(self, model: torch.nn.Module, acc_dtype: torch.dtype) -> None:
        self.model = model
        self.acc_dtype = acc_dtype
        self.sums: dict[str, torch.Tensor] = {}
        self.paused = False  # layer by layer's recomputation: the calls were recorded in the forward walk
        self._running: list[str] = []  # the probed model's modules whose forward is running, innermost last
        self._thread: int | None = None
        self._mode: Any = None  # the function mode while ``watching``

    @contextmanager
    def watching(self) -> Iterator[None]:
        """Observe attention inside the body, on this thread only; hooks and modes are gone on exit."""
        import torch
        import torch.nn.functional as F
        from torch.overrides import TorchFunctionMode
        from torch.utils._python_dispatch import TorchDispatchMode

        recorder = self
        softmaxes = (F.softmax, torch.softmax, torch.Tensor.softmax)

        class Operators(TorchDispatchMode):
            def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
                recorder._operator(func, args, kwargs or {})
                return func(*args, **(kwargs or {}))

        class Functions(TorchFunctionMode):
            def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
                kwargs = kwargs or {}
                kind = kinds.get(func)
                if kind is None:
                    kind = kinds[func] = _kind(func, softmaxes)
                if kind == _OTHER or recorder.paused or not recorder._running:  # most calls: no attention
                    return func(*args, **kwargs)
                name = recorder._running[-1]
                if kind == _SDPA:
                    named = {**dict(zip(SDPA_ARGS, args, strict=False)), **kwargs}
                    recorder._from_qk(
                        name,
                        named["query"],
                        named["key"],
                        named.get("attn_mask"),
                        is_causal=bool(named.get("is_causal", False)),
                        scale=named.get("scale"),
                    )
                elif kind == _SOFTMAX:
                    dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
                    if _is_attention(args[0], dim):
                        recorder._record(name, args[0].detach()[:SAMPLES], None)
                else:  # _INSIDE
                    with Operators():
                        return func(*args, **kwargs)
                # the mode is off while a call it handled runs: F.softmax's Tensor.softmax is not seen twice
                return func(*args, **kwargs)

        kinds: dict[Any, int] = {}  # function -> what it is to the mode (a pure fact, cached per watch)
        self._mode = Functions()
        self._thread, self._running = threading.get_ident(), []
        handles = []
        try:
            for name, module in self.model.named_modules():
                if isinstance(module, torch.jit.ScriptModule):
                    continue  # takes no hooks (a scripted part's ops are not seen either)
                handles.append(module.register_forward_pre_hook(self._enter(name)))
                handles.append(module.register_forward_hook(self._leave, always_call=True))
            with self._mode:
                yield
        finally:
            for h in handles:
                h.remove()
            self._running, self._thread, self._mode = [], None, None

    @contextmanager
    def aside(self) -> Iterator[None]:
        """The body runs without this recorder's function mode (the collector's own statistics:
        their many small ops are no attention, and each would pass through the mode), where the
        mode is the innermost on this thread; otherwise as it is."""
        from torch.overrides import _get_current_function_mode, _pop_mode_temporarily

        if self._mode is None or _get_current_function_mode() is not self._mode:
            yield
            return
        with _pop_mode_temporarily():
            yield

    def _enter(self, name: str) -> Any:
        def pre_hook(_module: Any, _args: Any) -> None:
            if threading.get_ident() == self._thread:
                self._running.append(name)

        return pre_hook

    def _leave(self, _module: Any, _args: Any, _output: Any) -> None:
        if threading.get_ident() == self._thread and self._running:
            self._running.pop()

    def _operator(self, func: Any, args: Any, kwargs: dict[str, Any]) -> None:
        """Record one operator call (inside a Python-level attention function) if it computes attention."""
        if self.paused or not self._running:
            return
        op = func.overloadpacket.__name__
        if op in SOFTMAX_OPS:
            if _is_attention(args[0], args[1]):
                self._record(self._running[-1], args[0].detach()[:SAMPLES], None)
        elif op in FUSED_OPS:
            named = dict(zip((a.name for a in func._schema.arguments), args, strict=False))
            named.update(kwargs)
            self._from_qk(
                self._running[-1],
                named["query"],
                named["key"],
                named.get("attn_mask", named.get("attn_bias")),
                is_causal=bool(named.get("is_causal", False)),
                scale=named.get("scale"),
            )

    def _from_qk(
        self,
        name: str,
        query: torch.Tensor,
        key: torch.Tensor,
        attn_mask: torch.Tensor | None,
        *,
        is_causal: bool = False,
        scale: float | None = None,
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
            x, out = masked_logits(logits, masked)
            keys = (~out).sum(-1, dtype=x.dtype)
            rows = keys >= 2
            log_p = torch.log_softmax(x, dim=-1)
            p = log_p.exp()
            entropy = -(p * log_p).nan_to_num(0.0, posinf=0.0, neginf=0.0).sum(-1)
            normalized = entropy / keys.clamp_min(2).log()
            routing, routed = _routing(p, entropy, rows)
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
                    routing.sum(dtype=self.acc_dtype),
                    routed.sum(dtype=self.acc_dtype),
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
            entropy_sum, rows, spread_sum, calls, routing_sum, routed = flat[RECORD * i : RECORD * i + RECORD]
            if rows == 0:
                continue
            routing = routing_sum / routed if routed else None
            out.append(
                AttentionStats(name or "(model)", int(calls), math.sqrt(spread_sum / rows), entropy_sum / rows, routing)
            )
        return tuple(out)


def _routing(p: torch.Tensor, entropy: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per query row (over the samples, the first dimension of ``p``): the entropy of the weights
    averaged over the samples less their mean entropy (``entropy``, nats), over log(samples), where
    every sample's row has 2 keys or more (``rows``): ``(values, rows counted)``, 0 where every
    sample attends the same way; none counted with one sample. A model that folds heads into the first dimension compares heads
    there, which reads as routing by sample: the conservative side for ``attention_saturation``."""
    import torch

    both = rows.all(0) & (p.shape[0] >= 2)
    mean = p.mean(0)
    pooled = -(mean * mean.clamp_min(1e-30).log()).sum(-1)
    value = (pooled - entropy.mean(0)).clamp_min(0.0) / math.log(max(p.shape[0], 2))
    return torch.where(both, value, torch.zeros((), dtype=value.dtype, device=value.device)), both


_OTHER, _SDPA, _SOFTMAX, _INSIDE = range(4)


def masked_logits(logits: torch.Tensor, masked: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``logits`` in float32 with every masked key at -inf, and the mask: the keys ``masked`` names
    and those an additive mask pushed to -inf or to the dtype's minimum."""
    import torch

    x = logits.float()
    out = torch.isneginf(x) | (x <= torch.finfo(logits.dtype).min / 2)  # additive masks use -inf or min
    if masked is not None:
        out = out | masked
    return x.masked_fill(out, -math.inf), out


def _kind(func: Any, softmaxes: tuple[Any, ...]) -> int:
    """What a torch function is to the attention mode: sdpa, a softmax, a Python function that
    attends inside, or another."""
    import torch.nn.functional as F

    if func is F.scaled_dot_product_attention:
        return _SDPA
    if func in softmaxes:
        return _SOFTMAX
    return _INSIDE if _attends_inside(func) else _OTHER


@functools.cache
def _attends_inside(func: Any) -> bool:
    """A torch function written in Python whose own code calls a softmax or sdpa (a pure fact about
    the function's code, cached)."""
    code = getattr(func, "__code__", None)
    return code is not None and bool({"softmax", "scaled_dot_product_attention"} & set(code.co_names))


def _is_attention(t: Any, dim: Any) -> bool:
    """A softmax over the last axis (keys) of a (batch, [heads,] queries, keys) floating tensor."""
    import torch

    if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.dim() < 3 or t.shape[-1] < 2:
        return False
    return dim in (-1, t.dim() - 1)
