"""Issue 18's forward-side mechanisms: collapse on what varies between samples (a shared offset
cannot move it), and the output's starting loss against a constant guess (``logit_scale``).

Each case is a network whose training outcome is known (docs/verdicts.md has the runs): the
statistic must read the mechanism, not the confound the old one read."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

import probe
from probe.judge import logits
from probe.judge.gaussian import start_loss_ratio
from probe.judge.readings import COLLAPSE_MIN_UNITS
from probe.measurement.correlation import SAMPLES
from probe.measurement.outputs import SUM_TOLERANCE, probability_classes
from tests import models_for_tests as models
from tests.zoo.handwritten import stock_cnn  # Conv-ReLU x 3, two max pools, Flatten, Linear-ReLU-Linear

RULES = ("collapse", "logit_scale")


class _SqueezeExcite(nn.Module):
    """Global average pool -> Linear -> ReLU -> Linear -> sigmoid, scaling the channels."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, reduced)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(reduced, channels)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3))
        return x * self.gate(self.fc2(self.act(self.fc1(pooled))))[:, :, None, None]


class _SEBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)
        self.act = nn.ReLU()
        self.se = _SqueezeExcite(channels, channels // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.se(self.act(self.bn(self.conv(x))))


def _se_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Sequential(*[_SEBlock(16) for _ in range(3)]),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


def _mlp(depth: int, width: int, act: type[nn.Module], gain: float, classes: int = 10) -> nn.Module:
    """Linear-act x depth (weights N(0, gain^2 / fan_in), zero biases) and a default Linear head."""
    layers: list[nn.Module] = []
    for i in range(depth):
        linear = nn.Linear(32 if i == 0 else width, width)
        nn.init.normal_(linear.weight, std=gain / math.sqrt(linear.in_features))
        nn.init.zeros_(linear.bias)
        layers += [linear, act()]
    return nn.Sequential(*layers, nn.Linear(width, classes))


def _normed_classifier(std: float, features: int = 256, classes: int = 10) -> nn.Module:
    """Features -> LayerNorm -> a classifier with N(0, std^2) weights: the ConvNeXt/ResMLP head.
    LayerNorm fixes the features' scale, so the logits' spread is std * sqrt(features)."""
    head = nn.Linear(features, classes)
    nn.init.normal_(head.weight, std=std)
    return nn.Sequential(nn.Linear(32, features), nn.GELU(), nn.LayerNorm(features), head)


def _measure(model: nn.Module, x: torch.Tensor, **options: Any) -> probe.Report:
    torch.manual_seed(0)
    return probe.measure(model, x, device="cpu", seed=0, **options)


def _rules(report: probe.Report, severity: str | None = None) -> set[str]:
    found = [*report.verdict.problems, *report.verdict.warnings]
    return {p.rule for p in found if p.rule in RULES and (severity is None or p.severity == severity)}


def _uncentered(rows: torch.Tensor) -> float:
    """The old statistic: mean pairwise cosine of the flattened, uncentered rows."""
    unit = rows.double().flatten(1)
    unit = unit / unit.norm(dim=1, keepdim=True)
    n = unit.shape[0]
    return float(((unit @ unit.t()).sum() - n) / (n * (n - 1)))


# ---- collapse -------------------------------------------------------------------------------------


def test_the_stock_cnn_at_default_init_is_healthy_where_the_uncentered_cosine_was_not() -> None:
    torch.manual_seed(0)
    model = stock_cnn()
    x = torch.rand(64, 3, 32, 32)  # images in [0, 1]: every sample shares a positive mean
    with torch.no_grad():
        logits = model(x)
    assert _uncentered(logits[:SAMPLES]) > 0.9  # what failed `collapse` before: the shared offset
    report = _measure(model, x)
    assert not _rules(report)
    # no row near the threshold (half of it is a near miss)
    assert max(row.correlation or 0.0 for row in report.stats.layers) < 0.125


def test_squeeze_excitation_and_sigmoid_stacks_do_not_collapse() -> None:
    """Pooled positive features (SE paths) and sigmoid outputs share a large mean: the uncentered
    cosine read 0.98-0.999; what varies between samples is spread over many directions."""
    torch.manual_seed(0)
    se = _measure(_se_cnn(), torch.randn(64, 3, 16, 16))
    assert not _rules(se)
    torch.manual_seed(0)
    sigmoid = _mlp(3, 256, nn.Sigmoid, gain=1.0)
    x = torch.randn(64, 32)
    with torch.no_grad():
        hidden = sigmoid[:6](x)
    assert _uncentered(hidden) > 0.98
    report = _measure(sigmoid, x)
    assert not _rules(report)
    assert max(row.correlation or 0.0 for row in report.stats.layers) < 0.125


@pytest.mark.parametrize("channels", [8, 64])
def test_a_global_pool_of_noise_images_is_not_collapse(channels: int) -> None:
    """A bias-free-at-heart ReLU conv net scales with its input's norm, and averaging over every
    position leaves noise images little else to differ by: after the pool, 8 channels read 0.5 to
    1 (a bottleneck's width, not depth: such rows are not judged), 64 channels under 0.125."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, channels, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(channels, channels, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, channels),
        nn.ReLU(),
        nn.Linear(channels, 10),
    )
    report = _measure(model, torch.rand(64, 3, 16, 16))
    assert "collapse" not in _rules(report)
    judged = [row for row in report.stats.layers if row.units >= COLLAPSE_MIN_UNITS]
    assert max((row.correlation or 0.0 for row in judged), default=0.0) < 0.125


def test_a_small_bottleneck_is_not_collapse() -> None:
    """8-16-8-16-32: a random map between small widths is anisotropic from the start (0.2 to 0.3 after
    the bottleneck); rows under ``COLLAPSE_MIN_UNITS`` are not judged."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 8)),
        nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 32)),
    )
    assert "collapse" not in _rules(_measure(model, torch.randn(64, 32)))


@pytest.mark.parametrize("depth", [50, 100])
def test_a_deep_he_relu_stack_still_collapses(depth: int) -> None:
    """He + ReLU at depth 50 and 100, width 256: every sample is pushed to one direction up to its
    norm, and 400 Adam steps gained 0.22 and 0.004 nats of the 1.98 the 8-deep one gained."""
    torch.manual_seed(0)
    report = _measure(_mlp(depth, 256, nn.ReLU, gain=math.sqrt(2.0)), torch.randn(256, 32))
    (problem,) = [p for p in report.verdict.problems if p.rule == "collapse"]
    assert problem.severity == "error" and problem.value > 0.25


def test_a_shallow_he_relu_stack_does_not() -> None:
    torch.manual_seed(0)
    report = _measure(_mlp(8, 256, nn.ReLU, gain=math.sqrt(2.0)), torch.randn(256, 32))
    assert "collapse" not in _rules(report)


class _TokenAverage(nn.Module):
    """Every token replaced by its sequence's mean: attention at its rank-collapse limit."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1, keepdim=True).expand_as(x)


def test_tokens_that_are_all_alike_collapse_and_a_default_llama_does_not() -> None:
    torch.manual_seed(0)
    x = torch.randn(32, 12, 32)
    # the averaged tokens go through a stream layer before the head (the last layer is the head,
    # which collapse does not judge)
    model = nn.Sequential(nn.Linear(32, 64), _TokenAverage(), nn.Linear(64, 64), nn.Linear(64, 64))
    report = _measure(model, x)
    (problem,) = [p for p in report.verdict.problems if p.rule == "collapse"]
    assert problem.gate_key == "max_token_correlation" and problem.value == pytest.approx(1.0, abs=1e-6)
    # each token keeps its own part: well under the threshold
    assert "collapse" not in _rules(_measure(nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64)), x))


# ---- logit_scale ----------------------------------------------------------------------------------


@pytest.mark.parametrize("classes", [2, 10, 1000])
@pytest.mark.parametrize("spread", [0.5, 2.0, 8.0])
def test_the_starting_loss_matches_a_monte_carlo_estimate(classes: int, spread: float) -> None:
    g = torch.Generator().manual_seed(0)
    draws = 200_000 // classes
    z = spread * torch.randn(draws, classes, generator=g, dtype=torch.float64)
    loss = torch.logsumexp(z, dim=1) - z.mean(dim=1)  # against a uniformly random label
    standard_error = float(loss.std()) / math.sqrt(draws)
    mc = float(loss.mean()) / math.log(classes)
    # the quadrature's own error is under 0.01 nats; the key rounds the spread to 3 digits
    # (a relative 5e-4 of the spread, so of the loss's excess at most 1e-3)
    tolerance = (4 * standard_error + 0.01) / math.log(classes) + 2e-3 * mc
    assert start_loss_ratio(spread, classes) == pytest.approx(mc, abs=tolerance)


def test_small_logits_lose_a_constant_guess_plus_half_their_variance() -> None:
    for classes in (2, 10, 50257):
        s = 0.1
        second_order = 1 + s * s / 2 * (1 - 1 / classes) / math.log(classes)
        assert start_loss_ratio(s, classes) == pytest.approx(second_order, abs=1e-4)


def test_default_init_classifiers_are_silent_and_n01_ones_fire() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 32)
    default = _measure(_normed_classifier(std=1 / math.sqrt(3 * 256)), x)  # torch's own Linear scale
    assert "logit_scale" not in _rules(default)
    n01 = _measure(_normed_classifier(std=1.0), x)  # logits' spread ~16: loss ~ 25 nats on 10 classes
    (problem,) = [p for p in n01.verdict.problems if p.rule == "logit_scale"]
    assert problem.severity == "error" and problem.gate_key == "max_loss_ratio" and problem.value > 5
    near = _measure(_normed_classifier(std=0.2), x)  # spread ~3.2: a start ~2.2 times log 10
    assert "logit_scale" in {p.rule for p in near.verdict.warnings}
    assert "logit_scale" not in {p.rule for p in near.verdict.problems}


def test_the_stock_cnn_with_n01_weights_fails_logit_scale() -> None:
    torch.manual_seed(0)
    model = stock_cnn()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 1.0)
    report = _measure(model, torch.rand(32, 3, 32, 32))
    assert "logit_scale" in _rules(report, "error")


def test_logits_the_layers_below_can_shrink_quickly_are_a_warning() -> None:
    """kaiming_normal_(mode="fan_out") on every weight of the stock CNN (torchvision's conv init,
    applied to the Linear layers too: the 10-way head gets std sqrt(2/10)) starts 6 times a
    constant guess's loss and trains (0.52 nats against the default's 0.66 on the zoo's image
    task, docs/verdicts.md): every layer below is fan-in sized, so Adam's steps of about lr turn
    them by 1-10% a step and the logits shrink within tens of steps."""
    torch.manual_seed(0)
    model = stock_cnn()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                nn.init.kaiming_normal_(p, mode="fan_out")
    report = _measure(model, torch.rand(32, 3, 32, 32))
    (problem,) = [p for p in report.verdict.warnings if p.rule == "logit_scale"]
    assert problem.value > report.spec.gate.max_loss_ratio  # past the threshold: shown, not failed
    assert "logit_scale" not in _rules(report, "error")
    head = report.layers[-1]
    spread = (head.unit_spread or 0) * head.std
    assert logits.shrink_steps(report.stats, head, spread) < logits.SHRINK_BUDGET
    # the same start over a normalization (only the head and the norm's gain can shrink it): an error
    normed = _measure(_normed_classifier(std=1.0), torch.randn(64, 32))
    last = normed.layers[-1]
    assert logits.shrink_steps(normed.stats, last, (last.unit_spread or 0) * last.std) > 10 * logits.SHRINK_BUDGET


def test_an_offset_every_sample_shares_is_removed_by_the_heads_weights() -> None:
    """A residual CNN at PyTorch's default init whose stream mean grows with depth (each branch adds
    ReLU(BN(.))) gives its logits a per-class offset every sample shares: 24 blocks start near 5
    times a constant guess's loss (32 blocks: 4.2). Its gradient has one sign on every sample and step, so Adam moves
    all of the head's weights against it at once, lr * fan_in * |mean input| a step: a warning (such
    networks reach under the constant guess's loss within 20-50 AdamW steps, docs/verdicts.md). The
    same offset on centered features, drawn into the head's bias, moves at lr a step: an error (it
    is still above a constant guess after 200 steps). Seeds 0-3 start 3.5 to 6.9 times log 10."""
    torch.manual_seed(0)
    model = models.residual_stack(blocks=32)
    x = torch.randn(32, 3, 32, 32)
    stream = _measure(model, x)
    (problem,) = [p for p in stream.verdict.warnings if p.rule == "logit_scale"]
    assert problem.value > stream.spec.gate.max_loss_ratio  # past the threshold: shown, not failed
    head = stream.layers[-1]
    assert head.input_mean is not None and head.input_mean > 1  # the pooled stream's positive mean
    assert head.sample_std is not None and head.sample_std < head.std / 3  # mostly shared
    spread = (head.unit_spread or 0) * head.std
    assert logits.shrink_steps(stream.stats, head, spread) > logits.SHRINK_BUDGET  # the scales alone: slow
    assert logits.start_steps(stream.stats, head, head, spread) < logits.SHRINK_BUDGET
    torch.manual_seed(0)
    bias = _measure(models.residual_stack(blocks=16, head_bias_std=8.0), x)
    (problem,) = [p for p in bias.verdict.problems if p.rule == "logit_scale"]
    assert problem.value > bias.spec.gate.max_loss_ratio
    assert abs(bias.layers[-1].input_mean or 0.0) < 1e-3  # centered features: only the bias moves it


def test_an_output_of_probabilities_is_noted_and_judged_by_nothing() -> None:
    """A softmax as the model's last step (before nn.CrossEntropyLoss: the newcomer's mistake; this
    MLP goes from 2.30 to 1.69 on the zoo's image task, 2.32 to 0.25 without it), as a module or
    called in the forward, gives outputs that sum to 1 in every sample: a note naming the loss that
    would see them as logits, with the best loss it could reach, log(1 + 9/e) = 1.46 of log 10 =
    2.30. A sigmoid (right before a binary cross-entropy on probabilities), a log-softmax and plain
    logits get none, two-unit ones included."""
    x = torch.randn(32, 3, 32, 32)
    for last, classes in (("softmax", 10), ("softmax", 2), ("functional", 10)):
        torch.manual_seed(0)
        report = _measure(models.softmax_classifier(last, classes), x)
        assert report.stats.probability_classes == classes
        (note,) = [n for n in report.verdict.notes if n.rule == "probability_output"]
        assert "nn.CrossEntropyLoss" in note.message and f"{math.log(1 + (classes - 1) / math.e):.2f}" in note.message
        assert report.healthy
    for last, classes in (("sigmoid", 10), ("sigmoid", 2), ("log_softmax", 10), ("none", 10), ("none", 2)):
        torch.manual_seed(0)
        report = _measure(models.softmax_classifier(last, classes), x)
        assert report.stats.probability_classes == 0, (last, classes)
        assert all(n.rule != "probability_output" for n in report.verdict.notes), (last, classes)


def test_probabilities_are_read_along_the_last_or_the_second_dimension() -> None:
    g = torch.Generator().manual_seed(0)
    logits_ = torch.randn(4, 5, 6, 7, generator=g)
    assert probability_classes(logits_.softmax(dim=1)) == 5  # a segmentation map's channels
    assert probability_classes(logits_.softmax(dim=-1)) == 7  # a sequence's vocabulary
    assert probability_classes(logits_.softmax(dim=2)) == 0  # neither
    assert probability_classes(logits_.softmax(dim=-1).to(torch.bfloat16)) == 7  # within bf16's rounding
    assert probability_classes(torch.sigmoid(logits_)) == 0
    # nonnegative values that sum to within a wide slice's rounding of 1 are not probabilities
    wide = torch.full((2, 4096), 1.0 / 4096 + 0.002).to(torch.bfloat16)  # sums near 9.2
    assert probability_classes(wide) == 0
    bent = logits_.softmax(dim=-1)
    bent[0, 0, 0] += 2 * SUM_TOLERANCE  # one slice off by more than the tolerance
    assert probability_classes(bent) == 0
    assert probability_classes(torch.full((3, 1), 1.0)) == 0  # one class: nothing to choose
    assert probability_classes((logits_.softmax(dim=-1), logits_)) == 0  # not one tensor


class _OwnParameter(nn.Module):
    """A classifier whose model holds a parameter of its own, as a learned temperature (CLIP's
    logit scale) or a position table (``self.pos = nn.Parameter(...)``, nanoGPT-style): the model's
    own call is then a row, and it finishes last."""

    def __init__(self, head_std: float, tied_lm: bool = False) -> None:
        super().__init__()
        self.tied_lm = tied_lm
        if tied_lm:  # an embedding tied to the head, at nn.Embedding's default N(0, 1)
            self.emb = nn.Embedding(64, 64)
            self.pos = nn.Parameter(torch.zeros(16, 64))
            self.norm = nn.LayerNorm(64)
            self.head = nn.Linear(64, 64, bias=False)
            self.head.weight = self.emb.weight
        else:
            self.net = _normed_classifier(std=head_std)
            self.temperature = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tied_lm:
            return self.head(self.norm(self.emb(x) + self.pos))
        return self.net(x) * self.temperature


def test_a_models_own_parameter_does_not_hide_its_logits() -> None:
    """The model's own row (a temperature that scales the head's logits, a position table beside a
    head whose logits it returns) made the logits no more than a model without it: ``logit_scale``
    reads them at the head. Red team 4's 32-64-10 MLP with an N(0, 1) head over a LayerNorm starts
    at loss 13.8 on 10 classes with the temperature or without and gains 0.72 and 0.64 nats in 200
    AdamW steps (1.47 with PyTorch's head); its tied language model at nn.Embedding's N(0, 1) gains
    -0.02 nats (2.03 at N(0, 0.02)). Before, the model's own row hid both (healthy)."""
    torch.manual_seed(0)
    x = torch.randn(64, 32)
    for model in (_OwnParameter(head_std=1.0), _OwnParameter(head_std=1.0, tied_lm=True)):
        inputs = torch.randint(0, 64, (64, 16)) if model.tied_lm else x
        report = _measure(model, inputs)
        assert report.layers[-1].name == "_OwnParameter"  # the model's own row is the last
        (problem,) = [p for p in report.verdict.problems if p.rule == "logit_scale"]
        assert problem.layer == ("head" if model.tied_lm else "net.3")
    assert "logit_scale" not in _rules(_measure(_OwnParameter(head_std=1 / math.sqrt(3 * 256)), x))


def test_outputs_that_are_not_logits_are_not_judged() -> None:
    """A LayerNorm's output (a transformer's last hidden state) is features a head rescales; a
    single unit has no classes; an activation has no weight of its own."""
    torch.manual_seed(0)
    x = torch.randn(64, 32)
    big = nn.Linear(32, 64)
    nn.init.normal_(big.weight, std=1.0)
    for model in (nn.Sequential(big, nn.LayerNorm(64)), nn.Sequential(nn.Linear(32, 1)), nn.Sequential(big, nn.Tanh())):
        assert "logit_scale" not in _rules(_measure(model, x))


# ---- library models ---------------------------------------------------------------------------------


def test_corpus_default_inits_are_silent() -> None:
    """Every default-init case of the corpus: neither rule fires, not even as a near miss."""
    from tests import corpus

    for case in corpus.CASES.values():
        torch.manual_seed(0)
        model = case.factory(init="default")
        torch.manual_seed(0)
        report = probe.measure(model, case.inputs(16), device="cpu", seed=0)
        assert not _rules(report), (case.name, report.verdict)


@pytest.mark.parametrize("kind", ["gpt2", "bert", "llama"])
def test_transformer_last_hidden_states_are_features(kind: str) -> None:
    pytest.importorskip("transformers")
    from tests.hf_models import hidden

    torch.manual_seed(0)
    report = probe.measure(hidden(kind), {"input_ids": torch.randint(0, 64, (16, 12))}, device="cpu", seed=0)
    assert "logit_scale" not in _rules(report)


def test_a_convnext_classifier_with_an_n01_head_fails_and_its_default_does_not() -> None:
    """transformers' ConvNeXt with a classification head: its N(0, 1) classifier on LayerNorm'd
    features starts 7 times above a constant guess and did not train in 200 AdamW steps."""
    pytest.importorskip("transformers")
    from transformers import AutoConfig, AutoModelForImageClassification

    config = AutoConfig.for_model(
        "convnext", depths=[1, 1, 1, 1], hidden_sizes=[16, 32, 64, 128], num_labels=10, image_size=32
    )
    torch.manual_seed(0)
    model = AutoModelForImageClassification.from_config(config)
    x = {"pixel_values": torch.randn(16, 3, 32, 32)}
    assert not _rules(_measure(model, x))
    with torch.no_grad():
        model.classifier.weight.normal_(0.0, 1.0)
    assert "logit_scale" in _rules(_measure(model, x), "error")


class _PreNormStack(nn.Module):
    """Embedding, two pre-LN residual MLP blocks, a final LayerNorm (``final_norm``) and a head: the
    stream is read only by norms, and by the head where there is no final norm. ``scale``
    multiplies the embedding's and the blocks' weights (the zoo's ``tiny`` init is x 1e-3)."""

    def __init__(self, scale: float, final_norm: bool = True, dim: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(64, dim)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(2))
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim)) for _ in range(2))
        with torch.no_grad():
            for p in (self.embed.weight, *self.mlps.parameters()):
                p.mul_(scale)
        self.blocks = nn.ModuleList(_Residual(n, m) for n, m in zip(self.norms, self.mlps, strict=True))
        self.final = nn.LayerNorm(dim) if final_norm else nn.Identity()
        self.head = nn.Linear(dim, 64)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x)
        return self.head(self.final(x))


class _Residual(nn.Module):
    def __init__(self, norm: nn.Module, mlp: nn.Module) -> None:
        super().__init__()
        self.norm, self.mlp = norm, mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


def test_a_small_stream_that_every_reader_normalizes_is_read_at_its_norms() -> None:
    """A pre-norm stream is read only by normalizations: they divide its scale out, all but their
    eps (LayerNorm's 1e-5: a stream of std s comes out at s / sqrt(s^2 + 1e-5)). Llama and GLM-4
    with weights x 1e-3 have such a stream at std 2e-5, their norms emit 0.02, and both train like
    their defaults. So vanishing reads such a row at its norm's output: weights x 1e-3 (stream
    1e-3, norms 0.3) are not vanishing; x 1e-8 (norms 3e-6) still are under SGD (under Adam the
    first step redraws weights that far under lr: a warning, ``mechanisms.redrawn``), and so is a
    x 1e-3 stream that the head reads as it is."""
    torch.manual_seed(0)
    ids = torch.randint(0, 64, (16, 12))

    def vanishing(model: nn.Module) -> tuple[list[str], probe.Report]:
        report = probe.measure(model, ids, batch_size=16, seed=0)
        return [p.severity for p in (*report.problems, *report.verdict.warnings) if p.rule == "vanishing"], report

    said, small = vanishing(_PreNormStack(1e-3))
    streams = [x for x in small.layers if x.role == "stream"]
    assert streams and all(x.std < 2e-3 for x in streams)  # the stream itself is small
    assert all(x.norm_reader is not None for x in streams)  # and read only by norms
    read = {x.name: x.std for x in small.layers}
    for x in streams:  # what the norm emits: s / sqrt(s^2 + eps), gain 1, within the batch's spread
        assert read[str(x.norm_reader)] == pytest.approx(x.std / math.sqrt(x.std**2 + 1e-5), rel=0.1)
    assert "error" not in said and small.healthy, small.verdict_lines()
    said, _ = vanishing(_PreNormStack(1e-8))
    assert said and "error" not in said
    sgd = probe.measure(_PreNormStack(1e-8), ids, batch_size=16, seed=0, gate={"optimizer": "sgd"})
    assert "vanishing" in {p.rule for p in sgd.problems}
    said, raw = vanishing(_PreNormStack(1e-3, final_norm=False))
    last = [x for x in raw.layers if x.role == "stream"][-1]
    assert last.norm_reader is None and said  # the head reads it at its own scale


def test_a_small_signal_cut_from_the_loss_is_not_vanishing() -> None:
    """RT-DETR's encoder box head (N(0, 0.01) Linears) makes reference points its decoder reads
    detached: no gradient reaches those rows, so nothing trains through them and their fading is
    not what stops training (transformers' RT-DETR trains: 0.76 nats on the zoo's image task). The
    rows are left out of `vanishing` (gradient_vanishing's warning says they are cut); the same side
    head with its gradient is judged as before."""
    import probe
    from tests.models_for_tests import DetachedSideHead

    torch.manual_seed(0)
    cut = probe.measure(DetachedSideHead(detach=True), (64,))
    assert cut.verdict.healthy, cut.verdict.problems
    assert "gradient_vanishing" in {w.rule for w in cut.verdict.warnings}
    torch.manual_seed(0)
    joined = probe.measure(DetachedSideHead(detach=False), (64,))
    assert "vanishing" in {p.rule for p in joined.problems}


def test_units_cut_from_the_loss_are_not_dead() -> None:
    """ControlNet wrapped to return one of its residuals: the zero convolutions of the others output
    0 and no gradient reaches them, because nothing they make is used (diffusers' ControlNet, SD3's
    and Flux's failed `dead_units` so; with their whole output they are healthy). A row cut from the
    loss is gradient_vanishing's warning, not dead units; the same zero layer on the output's path
    is a zero-initialized layer that moves (a note)."""
    import probe

    class TwoResiduals(torch.nn.Module):
        def __init__(self, keep_both: bool) -> None:
            super().__init__()
            self.keep_both = keep_both
            self.body = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64))
            self.zero_a, self.zero_b = torch.nn.Linear(64, 64), torch.nn.Linear(64, 64)
            for m in (self.zero_a, self.zero_b):
                torch.nn.init.zeros_(m.weight)
                torch.nn.init.zeros_(m.bias)

        def forward(self, x: torch.Tensor) -> Any:
            h = self.body(x)
            a, b = self.zero_a(h), self.zero_b(h)
            return (a, b) if self.keep_both else a

    for keep_both in (False, True):
        torch.manual_seed(0)
        report = probe.measure(TwoResiduals(keep_both), (32,))
        assert report.verdict.healthy, report.verdict.problems
    cut = {w.rule for w in report.verdict.warnings}
    torch.manual_seed(0)
    one = probe.measure(TwoResiduals(False), (32,))
    assert "gradient_vanishing" in {w.rule for w in one.verdict.warnings}, cut
