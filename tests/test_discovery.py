"""Discovery of token models on two short sequences (``probe.model.short_passes``): the rows are
those a pass on the full sequence finds, or the full pass runs. Each model here is discovered
both ways and the rows compared; the lengths its forward saw tell which way was taken."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from probe.errors import ForwardError
from probe.model import discovery
from probe.model.inputs import InputSpec
from probe.model.short_passes import SHORT_LENGTHS

torch.set_num_threads(1)

T, H, VOCAB = 32, 8, 50
TOKENS = InputSpec("tokens", (T,), vocab_size=VOCAB)
SHORT = list(SHORT_LENGTHS)


def rows(model: nn.Module, inputs: InputSpec = TOKENS) -> tuple[list[tuple[Any, ...]], list[str], list[int]]:
    """The discovered rows (every field), the notes, and the sequence lengths the forward saw."""
    lengths: list[int] = []
    handle = model.register_forward_pre_hook(lambda m, args: lengths.append(args[0].shape[-1]))
    try:
        watched, notes = discovery.discover(model, inputs, "normal")
    finally:
        handle.remove()
    fields = [
        (
            w.name,
            w.index,
            w.kind,
            w.module,
            w.weight,
            w.units,
            w.unit_dim,
            w.module_type,
            w.role,
            w.broadcast,
            w.residual,
        )
        for w in watched
    ]
    return fields, notes, lengths


def full_rows(model: nn.Module, monkeypatch: pytest.MonkeyPatch) -> tuple[list[tuple[Any, ...]], list[str]]:
    with monkeypatch.context() as m:
        m.setattr(discovery, "short_passes", lambda *args: None)
        found, notes, lengths = rows(model)
    assert lengths == [T]
    return found, notes


def check(model: nn.Module, monkeypatch: pytest.MonkeyPatch, lengths: list[int]) -> list[tuple[Any, ...]]:
    """Discovered as a full pass discovers it, through the passes ``lengths``."""
    found, notes, seen = rows(model)
    assert seen == lengths
    assert (found, notes) == full_rows(model, monkeypatch)
    return found


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(H)
        self.up = nn.Linear(H, 4 * H)
        self.act = nn.GELU()
        self.down = nn.Linear(4 * H, H)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(self.act(self.up(self.norm(x))))


class TinyGPT(nn.Module):
    """Token and position embeddings (a table broadcast over the batch), residual blocks, a norm."""

    def __init__(self, positions: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, H)
        self.position = nn.Embedding(positions, H)
        self.blocks = nn.ModuleList(Block() for _ in range(3))
        self.norm = nn.LayerNorm(H)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids) + self.position(torch.arange(ids.shape[-1]).unsqueeze(0))
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


def test_a_transformer_is_discovered_on_two_short_sequences(monkeypatch: pytest.MonkeyPatch) -> None:
    found = check(TinyGPT(), monkeypatch, SHORT)
    by_name = {f[0]: f for f in found}
    assert by_name["position"][9] is True  # broadcast: batch size 1
    assert by_name["blocks.0"][8] == "stream" and by_name["blocks.0"][10] is True  # residual block


class FixedPositions(TinyGPT):
    """A position table of exactly T rows added whole: a shorter sequence does not fit."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.zeros(T, H))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return super().forward(ids) + self.table


class FlattenHead(nn.Module):
    """A head over the whole flattened sequence: its weight is sized by T."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, H)
        self.head = nn.Linear(T * H, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids).flatten(1))


@pytest.mark.parametrize("model", [FixedPositions, FlattenHead])
def test_a_model_that_needs_the_full_length_is_discovered_at_it(
    model: type[nn.Module], monkeypatch: pytest.MonkeyPatch
) -> None:
    check(model(), monkeypatch, [SHORT[0], T])  # the first short pass fails: the full one runs


class PerToken(nn.Module):
    """A cell run once per token: how often it runs depends on the length."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, H)
        self.cell = nn.Linear(H, H)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        return torch.stack([self.cell(x[:, t]) for t in range(x.shape[1])], dim=1)


class LongOnly(TinyGPT):
    """A module that runs on long sequences only."""

    def __init__(self) -> None:
        super().__init__()
        self.long = nn.Linear(H, H)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = super().forward(ids)
        return self.long(x) if ids.shape[-1] > 16 else x


class Pairs(TinyGPT):
    """Tokens paired up: a dimension of T // 2, not proportional to the length."""

    def __init__(self) -> None:
        super().__init__()
        self.pair = nn.Linear(2 * H, H)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = super().forward(ids)
        return self.pair(x[:, : x.shape[1] // 2 * 2].reshape(x.shape[0], -1, 2 * H))


@pytest.mark.parametrize("model", [PerToken, LongOnly, Pairs])
def test_a_model_whose_passes_differ_with_the_length_is_discovered_at_full_length(
    model: type[nn.Module], monkeypatch: pytest.MonkeyPatch
) -> None:
    check(model(), monkeypatch, [*SHORT, T])
    if model is PerToken:
        _, notes, _ = rows(model())
        assert any(f"runs {T} times" in n for n in notes)


class TokensAsUnits(TinyGPT):
    """Rows whose dimensions are multiples of the length: (batch x tokens, width) and a
    (batch, width, tokens) output whose units are the tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.flat = nn.Linear(H, H)
        self.squash = nn.Tanh()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = super().forward(ids)
        x = self.flat(x.reshape(-1, H)).view_as(x)
        return self.squash(x.transpose(1, 2))


def test_dimensions_proportional_to_the_length_are_scaled_to_it(monkeypatch: pytest.MonkeyPatch) -> None:
    found = check(TokensAsUnits(), monkeypatch, SHORT)
    assert {f[0]: f[5] for f in found}["squash"] == T  # units: the tokens of the full sequence


class Switches(TinyGPT):
    """As BigBird's block-sparse attention: on a sequence too short for it, the model switches
    itself to another mode for good, and keeps what it computed on the way."""

    def __init__(self) -> None:
        super().__init__()
        self.sparse = True

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.sparse and ids.shape[-1] <= 16:
            self.sparse = False
            self.blocks[0].seen = ids.shape[-1]
        return super().forward(ids)


def test_short_passes_leave_the_modules_attributes_as_found(monkeypatch: pytest.MonkeyPatch) -> None:
    model = Switches()
    _, _, lengths = rows(model)
    assert lengths == SHORT
    assert model.sparse is True and not hasattr(model.blocks[0], "seen")


def test_a_model_with_lazy_modules_is_discovered_at_full_length() -> None:
    model = nn.Sequential(nn.Embedding(VOCAB, H), nn.LazyLinear(4))
    _, _, lengths = rows(model)
    assert lengths == [T]
    assert model[1].weight.shape == (4, H)


def test_short_sequences_and_other_inputs_run_one_pass() -> None:
    assert rows(TinyGPT(), InputSpec("tokens", (SHORT[-1],), vocab_size=VOCAB))[2] == [SHORT[-1]]
    model = nn.Sequential(nn.Linear(T, H))
    assert rows(model, InputSpec("shape", (T,)))[2] == [T]


def test_a_model_that_fails_at_every_length_reports_the_full_inputs() -> None:
    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(VOCAB, H)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            raise ValueError("no")

    with pytest.raises(ForwardError, match=rf"token ids \[{T}\] < {VOCAB}\): ValueError: no"):
        rows(Broken())


@pytest.mark.parametrize("kind", ["gpt2", "bert", "llama"])
def test_transformers_models_are_discovered_on_two_short_sequences(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``--hf`` inputs (ids and an attention mask): the same rows as a pass on 32 tokens."""
    transformers = pytest.importorskip("transformers")
    from probe.model.hf import HiddenState

    small = {"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2}
    if kind == "gpt2":
        small = {"n_layer": 2, "n_embd": 32, "n_head": 2}
    config = transformers.AutoConfig.for_model(kind, vocab_size=VOCAB, **small)
    torch.manual_seed(0)
    model = HiddenState.wrap(transformers.AutoModel.from_config(config))
    inputs = InputSpec("tokens", (T,), vocab_size=VOCAB, keyword="input_ids", attention_mask=True)
    calls: list[int] = []
    model.register_forward_pre_hook(
        lambda m, args, kwargs: calls.append(kwargs["input_ids"].shape[-1]), with_kwargs=True
    )
    short = discovery.discover(model, inputs, "normal")
    with monkeypatch.context() as m:
        m.setattr(discovery, "short_passes", lambda *args: None)
        full = discovery.discover(model, inputs, "normal")
    assert calls == [*SHORT, T]
    fields = [
        [(w.name, w.units, w.unit_dim, w.module_type, w.role, w.broadcast, w.residual) for w in found[0]]
        for found in (short, full)
    ]
    assert fields[0] == fields[1] and short[1] == full[1]
