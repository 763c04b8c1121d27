"""Models built from PyTorch's own layers: ``nn.Transformer``, ``nn.TransformerEncoder``, ``nn.LSTM``, ``nn.GRU``.

Each is used as the PyTorch docs and tutorials use it, at PyTorch's default init. Token models take
``input_ids`` (B, T) below ``VOCAB``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .handwritten import CLASSES, VOCAB


class TorchTransformer(nn.Module):
    """``nn.Transformer`` as a seq2seq model: the source is the ids, the target the ids shifted right; vocab head."""

    def __init__(self, dim: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.pos = nn.Parameter(torch.randn(1, 64, dim) * 0.02)
        self.transformer = nn.Transformer(
            dim, nhead=4, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=128, dropout=0.0, batch_first=True
        )
        self.head = nn.Linear(dim, VOCAB)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1]
        src = self.embed(input_ids) + self.pos[:, :t]
        tgt = self.embed(F.pad(input_ids[:, :-1], (1, 0), value=0)) + self.pos[:, :t]
        mask = nn.Transformer.generate_square_subsequent_mask(t)
        return self.head(self.transformer(src, tgt, tgt_mask=mask, tgt_is_causal=True))


class TorchEncoder(nn.Module):
    """``nn.TransformerEncoder`` with a learned position table (post-LN, or pre-LN with ``norm_first``)."""

    def __init__(self, dim: int = 64, norm_first: bool = False, activation: str = "relu") -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.pos = nn.Embedding(64, dim)
        layer = nn.TransformerEncoderLayer(
            dim, 4, 128, dropout=0.0, batch_first=True, norm_first=norm_first, activation=activation
        )
        self.encoder = nn.TransformerEncoder(
            layer, 3, norm=nn.LayerNorm(dim) if norm_first else None, enable_nested_tensor=False
        )

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        return self.encoder(self.embed(input_ids) + self.pos(pos))


class TorchDecoderLM(nn.Module):
    """A decoder-only LM from ``nn.TransformerEncoder`` with a causal mask and a vocabulary head."""

    def __init__(self, dim: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.pos = nn.Embedding(64, dim)
        layer = nn.TransformerEncoderLayer(
            dim, 4, 128, dropout=0.0, batch_first=True, norm_first=True, activation="gelu"
        )
        self.encoder = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(dim), enable_nested_tensor=False)
        self.head = nn.Linear(dim, VOCAB)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1]
        x = self.embed(input_ids) + self.pos(torch.arange(t, device=input_ids.device))
        mask = nn.Transformer.generate_square_subsequent_mask(t)
        return self.head(self.encoder(x, mask=mask, is_causal=True))


class GRUClassifier(nn.Module):
    """``nn.GRU`` (2 layers) over embeddings, the last state to a 10-way head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 32)
        self.gru = nn.GRU(32, 64, num_layers=2, batch_first=True)
        self.head = nn.Linear(64, CLASSES)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        _, h = self.gru(self.embed(input_ids))
        return self.head(h[-1])


class LSTMTagger(nn.Module):
    """The PyTorch tutorial's LSTM tagger: one ``nn.LSTM`` layer and a per-token head over the vocabulary."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 32)
        self.lstm = nn.LSTM(32, 64, batch_first=True)
        self.head = nn.Linear(64, VOCAB)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(self.embed(input_ids))[0])


class RNNTanh(nn.Module):
    """A vanilla ``nn.RNN`` (tanh) language model."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 32)
        self.rnn = nn.RNN(32, 64, num_layers=2, batch_first=True)
        self.head = nn.Linear(64, VOCAB)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(self.embed(input_ids))[0])
