"""The ``nn.Module`` classes of the spec architectures (residual stacks, transformer, LSTM/GRU).

Imported only from inside ``arch.py``'s builders, never on the ``probe --help`` path, hence the
module-level torch import.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch  # noqa: TID253
from torch import nn  # noqa: TID253


class Scale(nn.Module):
    """``x * factor``, a fixed multiplier (muP's output multiplier before the head)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor:g}"


class QueryScaledEncoderLayer(nn.TransformerEncoderLayer):
    """An encoder layer whose attention query input is multiplied by ``query_scale``: logits
    ``q.k * query_scale / sqrt(d)`` (muP's 1/d attention, probe/model/mup.py)."""

    def __init__(self, *args: object, query_scale: float, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.query_scale = query_scale
        self.activation_relu_or_gelu = 0  # the fused eval-mode fast path would bypass _sa_block

    def _sa_block(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None,
        key_padding_mask: torch.Tensor | None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        out = self.self_attn(
            x * self.query_scale,
            x,
            x,
            attn_mask=attn_mask,
            key_padding_mask=key_padding_mask,
            need_weights=False,
            is_causal=is_causal,
        )[0]
        return self.dropout1(out)  # type: ignore[no-any-return]


class ResidualBlock(nn.Module):
    """``y = x + scale * alpha * branch(x)``; ``alpha`` is ReZero's learnable scalar (starts at 0)."""

    def __init__(self, branch: nn.Module, scale: float, rezero: bool) -> None:
        super().__init__()
        self.branch = branch
        self.scale = scale
        self.alpha = nn.Parameter(torch.zeros(())) if rezero else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch(x)
        if self.scale != 1.0:
            out = out * self.scale
        if self.alpha is not None:
            out = out * self.alpha
        return x + out


class ResidualNet(nn.Module):
    def __init__(self, stem: nn.Module, blocks: Sequence[ResidualBlock], head: nn.Module | None) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = nn.ModuleList(blocks)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x) if self.head is not None else x


class TransformerNet(nn.Module):
    """Token embedding (or continuous ``(batch, seq, d_model)`` input), encoder blocks, head."""

    def __init__(
        self,
        embed: nn.Module | None,
        layers: Sequence[nn.Module],
        norm: nn.Module | None,
        head: nn.Module | None,
        readout_multiplier: float = 1.0,
    ) -> None:
        super().__init__()
        self.embed = embed
        self.layers = nn.ModuleList(layers)
        self.norm = norm
        self.head = head
        self.readout_multiplier = readout_multiplier  # muP's output multiplier (1 under SP)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embed is not None:
            x = self.embed(x)
        for layer in self.layers:
            x = layer(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.head is None:
            return x
        return self.head(x * self.readout_multiplier if self.readout_multiplier != 1.0 else x)


class RecurrentNet(nn.Module):
    """Stacked single-layer LSTMs/GRUs read as a sequence-to-one model (the last step's output).

    Each input time step passes through its own ``nn.Identity`` (``steps.t``), so a hook there
    sees d loss / d x_t: the gradient that survived the way back through time. The last layer's
    hidden state at each step passes, detached, through ``hidden.t``: the forward signal over
    time, observed without adding to the loss.
    """

    def __init__(self, seq_len: int, rnns: Sequence[nn.Module], head: nn.Module | None) -> None:
        super().__init__()
        self.steps = nn.ModuleList(nn.Identity() for _ in range(seq_len))
        self.hidden = nn.ModuleList(nn.Identity() for _ in range(seq_len))
        self.rnns = nn.ModuleList(rnns)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.stack([step(x[:, t]) for t, step in enumerate(self.steps)], dim=1)
        for rnn in self.rnns:
            x, _ = rnn(x)
        for t, observe in enumerate(self.hidden):
            observe(x[:, t].detach())
        last = x[:, -1]
        return self.head(last) if self.head is not None else last
