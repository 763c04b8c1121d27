"""Attention at init: logit spread and normalized entropy from every way attention is computed
(``F.scaled_dot_product_attention``, an eager softmax, ``nn.MultiheadAttention``), against a
plain reference, and the ``attention_saturation`` rule."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from probe.judge.rules import evaluate
from probe.measurement.attention import SAMPLES, AttentionRecorder
from probe.measurement.run import run_probe
from probe.spec import load, parse
from tests.conftest import CONFIGS


def _reference(logits: torch.Tensor, masked: torch.Tensor | None = None) -> tuple[float, float]:
    """(RMS over rows of the logits' std across keys, mean over rows of entropy / log keys)."""
    x = logits[:SAMPLES].double()
    if masked is not None and masked.dim() == x.dim():
        masked = masked[:SAMPLES]
    keep = torch.ones_like(x, dtype=torch.bool) if masked is None else ~masked.expand_as(x)
    stds, entropies = [], []
    for row, ok in zip(x.reshape(-1, x.shape[-1]), keep.reshape(-1, x.shape[-1]), strict=True):
        values = row[ok]
        if values.numel() < 2:
            continue
        p = torch.softmax(values, 0)
        stds.append(values.var(correction=0).item())
        entropies.append(float(-(p * p.log()).sum() / math.log(values.numel())))
    return math.sqrt(sum(stds) / len(stds)), sum(entropies) / len(entropies)


class Attend(nn.Module):
    """One attention call, by sdpa or by an eager softmax, on given q and k (v = k)."""

    def __init__(self, eager: bool, **sdpa: Any) -> None:
        super().__init__()
        self.eager, self.sdpa = eager, sdpa

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        if self.eager:
            weights = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(dim=-1)
            return weights @ k
        return F.scaled_dot_product_attention(q, k, k, **self.sdpa)


class Model(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return self.inner(q, k)


def _record(module: nn.Module, *args: torch.Tensor) -> Any:
    model = Model(module)
    recorder = AttentionRecorder(model, torch.float64)
    with recorder.watching():
        model(*args)
    flat = torch.cat(recorder.parts()).tolist()
    return recorder.results(flat)


def _qk(scale: float, heads: int = 2, kv_heads: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(6, heads, 5, 8, generator=g), scale * torch.randn(6, kv_heads, 7, 8, generator=g)


@pytest.mark.parametrize("scale", [0.1, 1.0, 6.0])
@pytest.mark.parametrize("eager", [False, True], ids=["sdpa", "eager"])
def test_logit_std_and_entropy_match_the_reference(scale: float, eager: bool) -> None:
    q, k = _qk(scale)
    (stats,) = _record(Attend(eager), q, k)
    std, entropy = _reference(q @ k.transpose(-2, -1) / math.sqrt(8))
    assert stats.name == "inner" and stats.calls == 1
    assert stats.logit_std == pytest.approx(std, rel=1e-6)
    assert stats.entropy == pytest.approx(entropy, rel=1e-6)


def test_masks_causal_and_grouped_query_attention() -> None:
    q, k = _qk(1.0, heads=4, kv_heads=2)
    k = k[:, :, :5]  # square, for the causal case
    logits = q @ k.repeat_interleave(2, dim=1).transpose(-2, -1) / math.sqrt(8)
    causal = torch.ones(5, 5, dtype=torch.bool).triu(1)
    (stats,) = _record(Attend(False, is_causal=True, enable_gqa=True), q, k)
    assert (stats.logit_std, stats.entropy) == pytest.approx(_reference(logits, causal), rel=1e-6)
    keep = torch.rand(6, 1, 5, 5, generator=torch.Generator().manual_seed(3)) > 0.3
    keep[..., 0] = True
    (stats,) = _record(Attend(False, attn_mask=keep, enable_gqa=True), q, k)
    assert (stats.logit_std, stats.entropy) == pytest.approx(_reference(logits, ~keep), rel=1e-6)
    additive = torch.zeros(6, 1, 5, 5).masked_fill(~keep, -math.inf)
    (stats,) = _record(Attend(False, attn_mask=additive, enable_gqa=True), q, k)
    assert (stats.logit_std, stats.entropy) == pytest.approx(_reference(logits, ~keep), rel=1e-6)


def test_multihead_attention_is_seen_inside_its_functional_forward() -> None:
    mha = nn.MultiheadAttention(16, 4, batch_first=True)
    x = torch.randn(3, 9, 16)
    model = nn.Sequential()
    model.add_module("attn", mha)
    recorder = AttentionRecorder(model, torch.float64)
    with recorder.watching():
        mha(x, x, x, need_weights=False)  # sdpa inside F.multi_head_attention_forward
        mha(x, x, x, need_weights=True)  # an eager softmax inside it
    (stats,) = recorder.results(torch.cat(recorder.parts()).tolist())
    assert stats.name == "attn" and stats.calls == 2
    assert 0.9 < stats.entropy <= 1.0


def test_nothing_is_left_behind_even_when_the_forward_raises() -> None:
    """No torch function is replaced at any time; the mode and the module hooks end with the block."""
    from torch.overrides import _get_current_function_mode_stack

    originals = (F.softmax, F.scaled_dot_product_attention, torch.softmax, torch.Tensor.softmax)
    model = Model(Attend(eager=True))
    recorder = AttentionRecorder(model, torch.float64)
    with pytest.raises(RuntimeError), recorder.watching():
        assert (F.softmax, F.scaled_dot_product_attention, torch.softmax, torch.Tensor.softmax) == originals
        assert len(_get_current_function_mode_stack()) == 1
        raise RuntimeError("boom")
    assert (F.softmax, F.scaled_dot_product_attention, torch.softmax, torch.Tensor.softmax) == originals
    assert not _get_current_function_mode_stack()
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_two_threads_record_only_their_own_calls() -> None:
    """Two recorders watching at once in two threads: each sees exactly its own model's calls, with
    the values a recorder alone gives (the mode is per thread, the module stack per recorder)."""
    import threading

    g = torch.Generator().manual_seed(3)
    sharp = (4.0 * torch.randn(4, 2, 6, 8, generator=g), 4.0 * torch.randn(4, 2, 6, 8, generator=g))
    flat = (0.1 * torch.randn(4, 2, 6, 8, generator=g), 0.1 * torch.randn(4, 2, 6, 8, generator=g))
    alone = {key: _record(Attend(eager), *qk)[0] for key, eager, qk in (("sharp", True, sharp), ("flat", False, flat))}
    results: dict[str, Any] = {}
    barrier = threading.Barrier(2)

    def work(key: str, eager: bool, qk: tuple[torch.Tensor, torch.Tensor]) -> None:
        model = Model(Attend(eager))
        recorder = AttentionRecorder(model, torch.float64)
        with recorder.watching():
            barrier.wait()
            for _ in range(20):
                model(*qk)
        results[key] = recorder.results(torch.cat(recorder.parts()).tolist())

    threads = [
        threading.Thread(target=work, args=("sharp", True, sharp)),
        threading.Thread(target=work, args=("flat", False, flat)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for key, expected in alone.items():
        (stats,) = results[key]
        assert stats.calls == 20
        assert (stats.logit_std, stats.entropy) == pytest.approx((expected.logit_std, expected.entropy), rel=1e-9)


def _transformer(**rules: Any) -> Any:
    raw: dict[str, Any] = {
        "model": {"kind": "transformer", "vocab_size": 100, "seq_len": 16, "width": 32, "heads": 4, "depth": 2},
        "data": {"batch_size": 8},
        "run": {"device": "cpu"},
    }
    if rules:
        raw["init"] = {"rules": [{"match": {"type": "MultiheadAttention"}, **rules}]}
    return parse(raw)


def test_large_query_key_weights_saturate_attention_and_the_default_does_not() -> None:
    healthy = run_probe(_transformer())
    assert [a.name for a in healthy.attention] == ["layers.0.self_attn", "layers.1.self_attn"]
    assert all(a.entropy > 0.9 for a in healthy.attention)
    assert "attention_saturation" not in {p.rule for p in evaluate(healthy).problems}
    broken = run_probe(_transformer(weight="large"))
    problems = [p for p in evaluate(broken).problems if p.rule == "attention_saturation"]
    # every module one-hot: reported at the least peaked one
    assert problems and problems[0].layer in ("layers.0.self_attn", "layers.1.self_attn") and problems[0].value < 0.2


def test_networks_without_attention_are_not_watched() -> None:
    report = run_probe(load(CONFIGS / "lab1_he_relu.yaml"))
    assert report.attention == ()


def test_cli_shows_attention_and_the_gate_key_moves_the_threshold(cli: Any, tmp_path: Path) -> None:
    spec = CONFIGS / "transformer_gpt.yaml"
    doc = json.loads(cli("run", str(spec), "-f", "json").stdout)
    assert len(doc["attention"]) == 12 and all(0.9 < a["entropy"] <= 1.0 for a in doc["attention"])
    table = cli("run", str(spec))
    assert "attention" in table.stdout and "entropy" in table.stdout
    # every module under 0.999: each a warning; no error, since near-uniform attention is the same
    # for every sample (routing near 0: a fixed mixing, not a routing stuck on content)
    strict = json.loads(cli("run", str(spec), "--gate", "min_attention_entropy=0.999", "-f", "json").stdout)
    assert strict["verdict"]["healthy"]
    warned = [w for w in strict["verdict"]["warnings"] if w["rule"] == "attention_saturation"]
    assert warned and warned[0]["threshold"] == 0.999 and "(12 layers)" in warned[0]["message"]
    assert all(a["routing"] < 0.1 for a in strict["attention"])


class _PreLN(nn.Module):
    """A pre-LN block around ``nn.MultiheadAttention`` and an MLP."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, 4, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class _Encoder(nn.Module):
    """Token embedding, two pre-LN attention blocks, a linear head; ``sharpen`` multiplies the query
    and key weights of the blocks it names by 8 (the logits by 64: one-hot attention)."""

    def __init__(self, sharpen: tuple[int, ...], dim: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(64, dim)
        self.blocks = nn.Sequential(_PreLN(dim), _PreLN(dim))
        self.head = nn.Linear(dim, 64)
        with torch.no_grad():
            for i in sharpen:
                self.blocks[i].attn.in_proj_weight[: 2 * dim].mul_(8.0)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.embed(ids)))


def _query_to_value_gradient(model: _Encoder, ids: torch.Tensor, block: int) -> float:
    """The query weights' gradient norm over the value weights' (per unit of their own norm)."""
    model.zero_grad()
    model(ids).square().mean().backward()
    w = model.blocks[block].attn.in_proj_weight
    assert w.grad is not None
    dim = w.shape[1]
    q, v = slice(0, dim), slice(2 * dim, 3 * dim)
    w, g = w.detach(), w.grad
    return float((g[q].norm() / w[q].norm()) / (g[v].norm() / w[v].norm()))


def test_one_hot_attention_passes_no_gradient_to_its_queries_and_fails_only_where_no_module_learns() -> None:
    """The mechanism: the softmax's Jacobian diag(p) - p p^T vanishes at a one-hot p, so in a
    saturated module only the rows with a near tie pass gradient to the queries and keys (a tenth
    of them at logit std 29 over 16 keys), while the values receive theirs; and logits that large
    are far from what the optimizer's steps move, so the module keeps the routing init gave it.
    Training stalls when that holds for every attention module; while another module learns where
    to look it goes on (a post-LN encoder whose embeddings are scaled by sqrt(64) trains: its first
    attention is one-hot, the next two are not), so one saturated module is a warning."""
    import probe

    ids = torch.randint(0, 64, (16, 16), generator=torch.Generator().manual_seed(0))

    def encoder(sharpen: tuple[int, ...]) -> _Encoder:
        torch.manual_seed(0)  # the same draw; only the sharpened query and key weights differ
        return _Encoder(sharpen)

    default, one, both = encoder(()), encoder((0,)), encoder((0, 1))
    # the queries' gradient, relative to the values', falls to the share of rows with a near tie (a
    # tenth); the default's rows are all near uniform
    assert _query_to_value_gradient(one, ids, 0) < 0.2 * _query_to_value_gradient(default, ids, 0)

    def judged(model: nn.Module) -> Any:
        return probe.measure(model, ids, batch_size=16, seed=0)

    healthy = judged(default)
    assert healthy.healthy and all(a.entropy > 0.9 for a in healthy.stats.attention)
    partly = judged(one)
    entropy = {a.name: a.entropy for a in partly.stats.attention}
    assert entropy["blocks.0.attn"] < 0.2 < entropy["blocks.1.attn"]
    assert partly.healthy, partly.verdict_lines()
    warned = [p for p in partly.verdict.warnings if p.rule == "attention_saturation"]
    assert [p.layer for p in warned] == ["blocks.0.attn"]
    broken = judged(both)
    errors = [p for p in broken.problems if p.rule == "attention_saturation" and p.severity == "error"]
    assert not broken.healthy and errors and errors[0].value < 0.2


class _PositionBiased(nn.Module):
    """``_Encoder``'s embedding, blocks and head, each block's attention given a learned bias per
    relative position (T5's, drawn N(0, 8^2) as an N(0, 1) table scaled by sqrt(64)): every module
    one-hot on a position, the same for every sample."""

    def __init__(self, tokens: int = 16, dim: int = 32, std: float = 8.0) -> None:
        super().__init__()
        self.inner = _Encoder(())
        self.bias = nn.Parameter(std * torch.randn(2, 2 * tokens - 1))
        offset = torch.arange(tokens)[:, None] - torch.arange(tokens)[None, :] + tokens - 1
        self.register_buffer("offset", offset)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.inner.embed(ids)
        for block, bias in zip(self.inner.blocks, self.bias, strict=True):
            h = block.norm1(x)
            x = x + block.attn(h, h, h, attn_mask=bias[self.offset], need_weights=False)[0]
            x = x + block.mlp(block.norm2(x))
        return self.inner.head(x)


class _Softmax(nn.Module):
    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.softmax(dim=-1)


def test_routing_tells_a_position_bias_from_a_content_match() -> None:
    """``routing`` (the information a row's attention carries about which sample it is, over
    log(samples)): 0 for logits the same for every sample, near 1 for large random per-sample
    logits (4 one-hot samples over 7 keys rarely pick the same key), against a direct computation."""
    g = torch.Generator().manual_seed(0)
    bias = 8.0 * torch.randn(1, 1, 5, 7, generator=g).expand(6, 2, 5, 7)
    content = 8.0 * torch.randn(6, 2, 5, 7, generator=g)
    for logits, low, high in ((bias, 0.0, 1e-6), (content, 0.5, 1.0)):
        model = _Softmax()
        recorder = AttentionRecorder(model, torch.float64)
        with recorder.watching():
            model(logits)
        (stats,) = recorder.results(torch.cat(recorder.parts()).tolist())
        p = torch.softmax(logits[:SAMPLES].double(), -1)
        pooled = p.mean(0)
        expected = (-(pooled * pooled.log()).sum(-1) + (p * p.log()).sum(-1).mean(0)).mean() / math.log(SAMPLES)
        assert stats.routing == pytest.approx(float(expected), abs=1e-6)
        assert low <= stats.routing <= high


def test_one_hot_attention_set_by_position_alone_is_a_fixed_mixing_not_an_error() -> None:
    """A position bias large enough to make every module one-hot routes every sample the same way:
    a fixed token mixing (a convolution's) the values learn through, and x-transformers' encoders
    and decoder with T5's relative position bias so made train (docs/verdicts.md); each module is
    a warning. The same entropy from large queries and keys routes each sample its own way: the error."""
    import probe

    ids = torch.randint(0, 64, (16, 16), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    positional = probe.measure(_PositionBiased(), ids, batch_size=16, seed=0)
    assert all(a.entropy < 0.2 and a.routing is not None and a.routing < 0.05 for a in positional.stats.attention)
    assert positional.healthy, positional.verdict_lines()
    warned = [p for p in positional.verdict.warnings if p.rule == "attention_saturation"]
    assert warned and "(2 layers)" in warned[0].message
    torch.manual_seed(0)
    content = probe.measure(_Encoder((0, 1)), ids, batch_size=16, seed=0)
    assert all(a.routing is not None and a.routing > 0.5 for a in content.stats.attention)
    assert not content.healthy


def test_saturated_attention_that_adams_steps_undo_within_the_budget_is_a_warning() -> None:
    """GPT-Neo does not scale its attention logits by 1/sqrt(head dim): at width 2048 its default
    N(0, 0.02^2) queries and keys give logits of std about 9 and every module near one-hot, yet
    Adam turns those weights 5% a step (rms 0.02 against lr 1e-3), so the logits are back within
    reach in tens of steps (a one-layer GPT-Neo of width 2560 so drawn gains 1.87 nats on the zoo's
    token task, docs/verdicts.md). The same saturation from N(0, 1) weights (rms 1: 0.1% a step)
    stays the error, and so does any under gate.optimizer sgd."""
    transformers = pytest.importorskip("transformers")
    import probe

    def neo(init_range: float) -> nn.Module:
        config = transformers.AutoConfig.for_model(
            "gpt_neo", hidden_size=2048, num_layers=1, num_heads=16, attention_types=[[["global"], 1]],
            intermediate_size=64, vocab_size=64, max_position_embeddings=32, initializer_range=init_range,
            embed_dropout=0.0, attention_dropout=0.0, resid_dropout=0.0,
        )  # fmt: skip
        torch.manual_seed(0)
        return transformers.AutoModel.from_config(config)

    def ids(batch: int) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.randint(0, 64, (batch, 16))}

    wide = probe.measure(neo(0.02), ids, batch_size=8, seed=0)
    assert all(a.entropy < 0.2 for a in wide.stats.attention)
    assert "attention_saturation" not in {p.rule for p in wide.problems}, wide.verdict_lines()
    assert "attention_saturation" in {p.rule for p in wide.verdict.warnings}
    sgd = probe.measure(neo(0.02), ids, batch_size=8, seed=0, gate={"optimizer": "sgd"})
    assert "attention_saturation" in {p.rule for p in sgd.problems}
