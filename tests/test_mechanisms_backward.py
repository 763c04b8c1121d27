"""The backward-side mechanisms of issue 18 on small hand-written models (tests/mechanism_models.py):
each test builds the mechanism and asserts the verdict the training runs back
(benchmarks/backward_mechanisms.py, docs/verdicts.md), plus the negative cases that must stay errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import probe
from probe.judge import gradients, mechanisms, rules, severity
from tests import mechanism_models as mm

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _measure(model: torch.nn.Module, x: torch.Tensor) -> probe.Report:
    return probe.measure(model, x, seed=0)


def _rules(report: probe.Report, severity: str = "error") -> set[str]:
    found = report.verdict.problems if severity == "error" else report.verdict.warnings
    return {p.rule for p in found}


def _ratios(report: probe.Report) -> dict[str, float]:
    return {row.name: v for row, v in gradients.grad_ratios(report.stats) if v is not None}


# ---- dead units: no gradient from the unit itself ----------------------------------------------


def test_relu_units_negative_for_every_sample_are_dead_on_the_signal_path() -> None:
    torch.manual_seed(0)
    model = mm.mlp([16, 64, 64, 64, 10])
    with torch.no_grad():
        model[3].bias.fill_(-100.0)  # the second hidden layer: every pre-activation negative
    report = _measure(model, torch.randn(64, 16))
    row = report.layer("4")  # its ReLU
    assert row.dead_units == 1.0 and row.zero_units == 1.0
    assert "dead_units" in _rules(report)


def test_units_behind_a_zero_initialized_layer_are_not_dead_and_the_block_is_noted() -> None:
    # a zero projection ends every branch; blocks held as attributes, so the branch rows are judged
    # as the signal path: the rows behind it receive exactly 0 gradient at step 0
    torch.manual_seed(0)
    report = _measure(mm.ResMLP(end="proj", listed=False), torch.randn(64, 16))
    fc2 = report.layer("block0.fc2")
    assert fc2.zero_units == 1.0 and fc2.dead_units == 0.0 and fc2.zero_moving
    assert report.layer("block0.fc1").gradient_blocked
    assert report.healthy, report.verdict.problems
    assert any(n.rule == "zero_layer" for n in report.verdict.notes)


def test_squeeze_excitation_dead_units_are_a_warning_not_an_error() -> None:
    # a ReLU on globally pooled features: the same sign for every sample, so part of the SE units
    # read dead; the skip carries the gradient around the gate. Even with every SE unit dead (the
    # gate a constant) the network trains (benchmarks/backward_mechanisms.json: 0.79 of the
    # default's gain at 200 steps)
    torch.manual_seed(0)
    report = _measure(mm.ResNet(se=True), torch.randn(32, 3, 32, 32))
    se = [x for x in report.layers if x.name.endswith("se.act")]
    assert max(x.dead_units for x in se) > 0.25 * severity.FRACTION_ERROR
    assert report.healthy, report.verdict.problems
    assert "dead_units" in _rules(report, "warning")
    model = mm.ResNet(se=True)
    for m in model.modules():
        if isinstance(m, mm.SqueezeExcite):
            torch.nn.init.constant_(m.reduce.bias, -10.0)
    report = _measure(model, torch.randn(32, 3, 32, 32))
    assert max(x.dead_units for x in report.layers) == 1.0
    assert report.healthy, report.verdict.problems


def test_dead_units_that_cut_every_branch_are_an_error() -> None:
    # every unit of each branch's first ReLU negative for every input: nothing in any branch
    # receives a weight gradient, the network is its stem and head alone (trains at 0.15 of the
    # default's gain); half of them dead: each branch narrower (0.86), a warning
    def build(fraction: float) -> mm.ResNet:
        torch.manual_seed(0)
        model = mm.ResNet()
        for block in model.blocks:
            with torch.no_grad():
                block.bn1.bias[: round(fraction * block.bn1.bias.shape[0])] = -10.0
        return model

    half = _measure(build(0.5), torch.randn(32, 3, 32, 32))
    assert half.healthy and "dead_units" in _rules(half, "warning")
    cut = _measure(build(1.0), torch.randn(32, 3, 32, 32))
    assert "dead_units" in _rules(cut)


def test_a_partly_dead_layer_on_the_signal_path_is_a_warning() -> None:
    # PyTorch's default init in a 6-layer ReLU MLP: deeper layers' pre-activations are dominated
    # by their biases, so about half the units of the last hidden layer are negative for every
    # input: a narrower layer, not a cut path (it trains: the reference of its family)
    torch.manual_seed(0)
    report = _measure(mm.mlp([48] + [128] * 6 + [10]), torch.randn(64, 48))
    worst = max(x.dead_units for x in report.layers)
    assert 0.25 < worst < mechanisms.DEAD_CUT
    assert "dead_units" not in _rules(report) and "dead_units" in _rules(report, "warning")


# ---- symmetry: tied units, not equal outputs ---------------------------------------------------


def test_all_zero_mlp_stays_symmetric_dead_and_unhealthy() -> None:
    torch.manual_seed(0)
    report = _measure(mm.mlp([16, 64, 64, 64, 10], zero=True), torch.randn(64, 16))
    assert {"symmetry", "dead_units"} <= _rules(report)
    assert not any(n.rule == "zero_layer" for n in report.verdict.notes)  # nothing will move


def test_constant_weights_are_tied_units() -> None:
    torch.manual_seed(0)
    model = mm.mlp([16, 64, 64, 10])
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.constant_(m.weight, 0.05)
            torch.nn.init.constant_(m.bias, 0.01)  # (random biases would tell the units apart)
    report = _measure(model, torch.randn(64, 16))
    assert report.layer("3").tied_spread == pytest.approx(0.0, abs=1e-6)
    assert "symmetry" in _rules(report)


def test_zero_initialized_classifier_is_healthy() -> None:
    # mechanism 2 (MLP-Mixer, ResMLP): the head's weight rows are alike (0) but its gradient rows
    # differ (each class's direction), so the first step breaks nothing that is tied
    torch.manual_seed(0)
    report = _measure(mm.ResMLP(zero_head=True), torch.randn(64, 16))
    head = report.layer("head")
    assert head.zero_moving and head.tied_spread is not None and head.tied_spread > 0.1
    assert report.healthy, report.verdict.problems


# ---- zero-initialized branch ends and small LayerScale (mechanisms 1 and 5) --------------------


@pytest.mark.parametrize(
    ("label", "build"),
    [
        ("zero last BN gamma", lambda: mm.ResNet(zero_gamma=True)),
        ("zero LayerScale", lambda: mm.ResMLP(init=0.0)),
        ("zero LayerScale, blocks not found", lambda: mm.ResMLP(init=0.0, listed=False)),
        ("zero projection", lambda: mm.ResMLP(end="proj")),
        ("zero scalar gain (NF-ResNet, ReZero)", lambda: mm.ResMLP(end="gain", init=0.0)),
        ("zero scalar gain, blocks not found", lambda: mm.ResMLP(end="gain", init=0.0, listed=False)),
    ],
)
def test_zero_initialized_branch_ends_are_healthy(label: str, build) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = build()
    x = torch.randn(16, 3, 16, 16) if isinstance(model, mm.ResNet) else torch.randn(64, 16)
    report = _measure(model, x)
    assert report.healthy, (label, report.verdict.problems)


@pytest.mark.parametrize("init", [1e-5, 1e-4])
def test_small_layerscale_is_at_most_a_gradient_vanishing_warning(init: float) -> None:
    # blocks held as attributes: found from the residual adds (model/trace.py), so the branch rows
    # behind the LayerScale are branch rows, whose gradient is init times the stream's and which the
    # gradient rules do not read; the LayerScale's own relative gradient is 1/init times the head's.
    # Judged as stream rows (a network whose blocks are not found) it would be a warning at most.
    torch.manual_seed(0)
    report = _measure(mm.ResMLP(init=init, listed=False), torch.randn(64, 16))
    assert report.healthy, report.verdict.problems
    assert "gradient_vanishing" not in _rules(report)
    assert any(x.name.endswith(".ls") for x in mechanisms.movers(report.stats))


def test_small_layerscale_behind_a_class_token_readout_is_a_warning() -> None:
    # a class-token readout: the patch rows receive gradient only through the attention of branches
    # scaled by 1e-6 (7.5e-5 of the output's). The LayerScales' relative gradient is ~2e5 times the
    # head's: they are movers, and the patch row's gradient is a warning. The class token is the
    # model's own parameter, so the model is a row too; its output is its head's (``output_of``),
    # and the movers' reference is the head's relative gradient, not that of the class token
    torch.manual_seed(0)
    report = _measure(mm.Encoder(depth=4, layer_scale=1e-6), torch.randn(32, 3, 16, 16))
    assert report.healthy, report.verdict.problems
    assert "gradient_vanishing" in _rules(report, "warning")
    rows = {x.name: x for x in report.stats.layers}
    assert rows["Encoder"].output_of == "head" and not rows["head"].output_of
    assert {f"blocks.{i}" for i in range(4)} <= {x.name for x in mechanisms.movers(report.stats)}


def test_a_zero_classifier_is_judged_at_its_own_row_not_at_the_model_returning_it() -> None:
    # mechanism 2 where the model holds a parameter (a class token) and so is a row too: its row
    # reads the zero logits and its own parameter's gradient is 0 behind the zero head. It returns
    # the head's tensor, so it is judged there: a zero layer that moves (a note), not a vanishing
    # or dead output. N(0, 1) head weights are still read at the head (logit_scale)
    torch.manual_seed(0)
    model = mm.Encoder()
    torch.nn.init.zeros_(model.head.weight)
    torch.nn.init.zeros_(model.head.bias)
    x = torch.randn(32, 3, 16, 16)
    report = _measure(model, x)
    assert report.healthy, report.verdict.problems
    assert report.stats.last.output_of == "head" and report.stats.last.std == 0.0
    assert any(n.rule == "zero_layer" for n in report.verdict.notes)
    torch.nn.init.normal_(model.head.weight, std=3.0)
    assert "logit_scale" in _rules(_measure(model, x))


class _ZeroBehindZero(torch.nn.Module):
    """A zero-initialized residual branch end behind a zero-initialized classifier: DiT's adaLN-Zero
    (zero modulations, a zero final layer), the ADM U-Net's zero_module convolutions, Fixup."""

    def __init__(self, zero_head: bool) -> None:
        super().__init__()
        self.inp = torch.nn.Linear(32, 64)
        self.branch = torch.nn.Sequential(
            torch.nn.LayerNorm(64), torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 64)
        )
        self.head = torch.nn.Linear(64, 10)
        zeroed = [self.branch[3], self.head] if zero_head else [self.branch[3]]
        for layer in zeroed:
            torch.nn.init.zeros_(layer.weight)
            torch.nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        return self.head(h + self.branch(h))


def test_a_zero_layer_behind_a_zero_classifier_waits_one_step_it_is_not_dead() -> None:
    # the branch's zero last layer gets exactly 0 gradient at step 0 only because the zero head
    # passes none back; the head's own gradient is not 0, so the first step moves it and the second
    # reaches the branch (red team 4: loss 2.30 -> 0.57 in 200 AdamW steps, 2.35 -> 0.45 with a
    # default head; DiT with adaLN-Zero trains at 0.94 of a plain ViT). Not dead, not vanishing
    torch.manual_seed(0)
    x = torch.randn(64, 32)
    report = _measure(_ZeroBehindZero(zero_head=True), x)
    end = report.layer("branch.3")
    assert end.gradient_blocked and end.dead_units == 1.0 and end.std == 0.0
    assert report.healthy, report.verdict.problems
    assert any(n.rule == "zero_layer" for n in report.verdict.notes)
    # a zero layer behind nothing that moves stays dead: the all-zero MLP (above) and the saddle of
    # two zero factors keep their errors
    both = mm.mlp([16, 32, 32, 10], zero=True)
    assert "dead_units" in _rules(_measure(both, torch.randn(64, 16)))


class _LoRA(torch.nn.Linear):
    """loralib's layout: a frozen Linear with its adapter's factors A (rank x in) and B (out x rank)
    as parameters of the same module, ``x W^T + x A^T B^T``."""

    def __init__(self, fan_in: int, fan_out: int, zero_a: bool, rank: int = 4) -> None:
        super().__init__(fan_in, fan_out)
        self.requires_grad_(False)
        a = torch.zeros(rank, fan_in) if zero_a else torch.randn(rank, fan_in) / fan_in**0.5
        self.A = torch.nn.Parameter(a)
        self.B = torch.nn.Parameter(torch.zeros(fan_out, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + x @ self.A.t() @ self.B.t()


def test_lora_factors_both_zero_are_dead_the_recipes_b_zero_moves() -> None:
    # LoRA's recipe (A random, B 0): B's gradient is not 0, the first step moves it. Both 0: each
    # factor's gradient is a product with the other, exactly 0 for ever, while the row's output
    # receives gradient through the frozen weight (red team 4: loss 2.347 -> 2.347 in 200 AdamW
    # steps; 2.378 -> 1.922 with the recipe). With PEFT's layout (A and B as Linear submodules)
    # they are rows of their own and read dead units already
    torch.manual_seed(0)
    x = torch.randn(64, 32)
    recipe = torch.nn.Sequential(_LoRA(32, 64, zero_a=False), torch.nn.ReLU(), _LoRA(64, 10, zero_a=False))
    report = _measure(recipe, x)
    assert report.healthy, report.verdict.problems
    assert report.layer("0").zero_moving and not report.layer("0").zero_product
    stuck = torch.nn.Sequential(_LoRA(32, 64, zero_a=True), torch.nn.ReLU(), _LoRA(64, 10, zero_a=True))
    report = _measure(stuck, x)
    assert report.layer("0").zero_product and report.layer("0").dead_units == 0.0  # its outputs are alive
    (problem,) = [p for p in report.verdict.problems if p.rule == "dead_units"]
    assert problem.layer == "0" and problem.severity == "error"


class _InvertedResidual(torch.nn.Module):
    """timm's UniversalInvertedResidual, cut down: 1x1 expand, BatchNorm, ReLU, 1x1 project,
    BatchNorm, a LayerScale of ``scale``; the skip only where the shape is kept and ``skip``."""

    def __init__(self, c_in: int, c_out: int, skip: bool, scale: float = 1e-5) -> None:
        super().__init__()
        self.expand = torch.nn.Sequential(
            torch.nn.Conv2d(c_in, 4 * c_in, 1), torch.nn.BatchNorm2d(4 * c_in), torch.nn.ReLU()
        )
        self.project = torch.nn.Sequential(torch.nn.Conv2d(4 * c_in, c_out, 1), torch.nn.BatchNorm2d(c_out))
        self.layer_scale = _LayerScale2d(c_out, scale)
        self.skip = skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layer_scale(self.project(self.expand(x)))
        return x + y if self.skip else y


class _LayerScale2d(torch.nn.Module):
    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        self.gamma = torch.nn.Parameter(torch.full((channels,), scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma[:, None, None]


def test_a_stage_whose_first_block_ends_in_a_small_layerscale_without_a_skip_is_slower_not_stuck() -> None:
    # timm's MobileNetV4 hybrid at its default: each stage's first block changes the width, so it
    # has no skip, and ends in a LayerScale of 1e-5; the blocks after it carry that 1e-5 stream on
    # their skips. It trains (0.70 nats on the zoo's image task at 64 x 64): the LayerScales' relative
    # gradient is 1e5 times the head's, the first steps grow them (movers). A warning, not an error;
    # the same network with every weight x 1e-3 has no mover and keeps the error
    torch.manual_seed(0)
    stage = [
        _InvertedResidual(16, 32, skip=False),
        _InvertedResidual(32, 32, skip=True),
        _InvertedResidual(32, 32, skip=True),
    ]
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1),
        torch.nn.BatchNorm2d(16),
        torch.nn.ReLU(),
        *stage,
        torch.nn.Conv2d(32, 64, 1),
        torch.nn.BatchNorm2d(64),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(64, 10),
    )
    x = torch.randn(16, 3, 8, 8)
    report = _measure(model, x)
    assert report.layer("3").returns == "3.layer_scale" and report.layer("3").std < 1e-4
    assert report.healthy, report.verdict.problems
    assert "vanishing" in _rules(report, "warning")
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e-3)
    assert "vanishing" in _rules(_measure(model, x))


def test_tiny_deep_relu_mlp_stays_vanishing_errors() -> None:
    # the seed lab: std 0.01 weights in an 8-layer ReLU MLP; every layer is alike (no mover)
    report = probe.measure("configs/lab1_tiny_relu.yaml")
    assert {"vanishing", "gradient_vanishing"} <= _rules(report)
    assert mechanisms.movers(report.stats) == ()
    torch.manual_seed(0)
    user = _measure(mm.mlp([16] + [128] * 8 + [10], std=0.01), torch.randn(64, 16))
    assert "vanishing" in _rules(user)


def test_zeros_spec_mlp_stays_unhealthy() -> None:
    report = probe.measure("configs/zeros_relu.yaml")
    assert {"symmetry", "dead_units", "gradient_vanishing"} <= _rules(report)


# ---- the gradient scale per position (mechanism 3) ----------------------------------------------


def test_gradient_ratio_does_not_depend_on_the_image_size() -> None:
    # circular padding: every position of a 16 x 16 and a 64 x 64 map is alike; what differs is
    # only the number of positions averaged (BatchNorm's statistics over 32 x n values: ~2% noise)
    small, large = (_ratios(_measure(_seeded(mm.ResNet, circular=True), torch.randn(32, 3, s, s))) for s in (16, 64))
    for name in ("stem.0", "blocks.0", "blocks.2"):
        assert small[name] == pytest.approx(large[name], rel=0.05), name


def test_class_token_readout_is_not_multiplied_by_the_token_count() -> None:
    # 17 and 257 tokens: the per-sample ||x|| ||g|| grew as sqrt(tokens) (10 -> 39 at the last
    # block); per position, the gradient living on the class token is not multiplied by every
    # token's norm
    ratios = {s: _ratios(_measure(_seeded(mm.Encoder, readout="cls"), torch.randn(32, 3, s, s))) for s in (16, 64)}
    mean = _ratios(_measure(_seeded(mm.Encoder, readout="mean"), torch.randn(32, 3, 64, 64)))
    for name in ("blocks.0", "blocks.1"):
        assert ratios[16][name] == pytest.approx(ratios[64][name], rel=0.15), name
        # the two readouts of one encoder: within the factor that mean-pooling decorrelated tokens
        # shrinks the output by (the reference), far from the old sqrt(257) = 16
        assert 0.25 < ratios[64][name] / mean[name] < 4.0, name


def _seeded(cls, **kw):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    return cls(**kw)


def _bn_mlp(depth: int) -> torch.nn.Module:
    """A plain BatchNorm stack (Linear-BN-ReLU x depth, no skip), PyTorch's default init."""
    from torch import nn

    layers: list[nn.Module] = [nn.Linear(64, 64)]
    for _ in range(depth):
        layers += [nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 64)]
    return nn.Sequential(*layers[:-1], nn.Linear(64, 10))


def _gradient_exploding(report: probe.Report) -> list[probe.Problem]:
    return [p for p in (*report.verdict.problems, *report.verdict.warnings) if p.rule == "gradient_exploding"]


class _DeepBranch(torch.nn.Module):
    """A residual block whose branch is ``depth`` Linear-BatchNorm layers (ReLU between)."""

    def __init__(self, width: int, depth: int) -> None:
        from torch import nn

        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU()]
        self.f = nn.Sequential(*layers[:-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.f(x))


def test_a_batchnorm_resnets_growing_gradient_is_a_warning_a_plain_stacks_an_error() -> None:
    """transformers' ResNet-50 layout at its default init: summed per position, its gradient grows
    toward the stem past max_grad_ratio's error line (BatchNorm does that at init), but the
    positions' gradients point different ways: the weight gradient a convolution reading the stem
    receives (``coherent_grad_scale``, what ``gradient_exploding`` reads) is a tenth of that. So is
    RegNet's. Where the weight gradient itself grows past the line in a residual network whose every
    weight it reaches feeds a BatchNorm (scale-invariant), it is a warning; 40 BatchNorm layers
    without a skip grow it to thousands and do not train (gain -0.03 nats against 1.5 at depth 4,
    with AdamW and with SGD): an error (docs/verdicts.md)."""
    from torch import nn
    from transformers import AutoConfig, AutoModel

    gate = probe.measure(_bn_mlp(2), (64,), batch_size=8, seed=0, device="cpu").spec.gate
    error_line = 2 * gate.max_grad_ratio
    torch.manual_seed(0)
    resnet = AutoModel.from_config(AutoConfig.for_model("resnet", hidden_sizes=[32, 64, 128, 256], embedding_size=16))
    torch.manual_seed(0)
    regnet = AutoModel.from_config(AutoConfig.for_model("regnet"))
    for model in (resnet, regnet):
        report = probe.measure(model, (3, 64, 64), batch_size=4, seed=0, device="cpu")
        last, stem = report.stats.last, report.stats.signal()[0]
        per_position = (stem.grad_scale or 0.0) / (last.output_grad_scale or 1.0)
        coherent = (stem.coherent_grad_scale or 0.0) / (last.output_coherent_grad_scale or 1.0)
        # 282 and 522 per position, 21 and 33 coherent: between the two bounds of 32 x 32 = 1024
        # stem positions, 1 (every position's gradient alike) and 1 / sqrt(1024) (independent)
        assert per_position > error_line and per_position / 32 < coherent < per_position / 5
        assert coherent < gate.max_grad_ratio
        assert all(p.severity == "warning" for p in _gradient_exploding(report))
    torch.manual_seed(0)
    branches = nn.Sequential(
        nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), *[_DeepBranch(64, 8) for _ in range(4)], nn.Linear(64, 10)
    )
    report = probe.measure(branches, (64,), batch_size=64, seed=0, device="cpu")
    (problem,) = _gradient_exploding(report)
    assert problem.value > error_line and problem.severity == "warning" and "scale-invariant" in problem.message
    plain = probe.measure(_bn_mlp(40), (64,), batch_size=64, seed=0, device="cpu")
    (problem,) = _gradient_exploding(plain)
    assert problem.value > error_line and problem.severity == "error"


# ---- side rows: a small gradient that is the row's own, not a fading one -------------------------


def test_additive_attention_query_term_is_a_side_row_not_a_vanishing_gradient() -> None:
    # W_dec's output is shifted out by the softmax over source positions: its gradient is far under
    # min_grad_ratio, while the encoder that ran before it receives its gradient. It trains (a red-team
    # seq2seq with this attention: loss 4.16 -> 1.25 in 200 AdamW steps): a warning, not an error
    torch.manual_seed(0)
    ids = torch.randint(0, 32, (32, 24))  # the shift's share of the gradient falls as 1 / positions
    report = _measure(mm.AdditiveAttentionDecoder(emb=32, hid=48), ids)
    ratios, gate = _ratios(report), report.spec.gate
    # past the error threshold: without the side-row reading, an error
    assert ratios["W_dec"] < severity.error_threshold(
        "gradient_vanishing", rules.RULES["gradient_vanishing"].checks[0], gate
    )
    assert ratios["encoder"] >= gate.min_grad_ratio
    assert "W_dec" in gradients.side_rows(report.stats, gate)
    assert report.healthy, report.verdict.problems
    assert "gradient_vanishing" in _rules(report, "warning")


def test_a_gradient_fading_from_the_first_row_has_no_side_rows() -> None:
    # the same decoder with every weight x 1e-3: the gradient is smallest at the rows the input
    # enters first, so nothing before the breaking rows receives gradient: still an error
    torch.manual_seed(0)
    model = mm.AdditiveAttentionDecoder()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(1e-3)
    report = _measure(model, torch.randint(0, 32, (32, 8)))
    first = next(name for name, v in _ratios(report).items())
    assert first not in gradients.side_rows(report.stats, report.spec.gate)
    assert "gradient_vanishing" in _rules(report)


def test_a_zero_layer_does_not_explain_a_small_gradient_that_is_not_zero() -> None:
    # zero-ended GroupNorm blocks pass exactly 0 back into their branches (not judged), and the
    # stream gets its gradient through the skips. With every weight x 1e-3 the stem's gradient is
    # 4e-5 of the output's, small but not 0: the zero layers do not explain it (a red-team GN ResNet
    # so scaled did not train: 150-step gain -0.015 against 0.89 at its default init)
    torch.manual_seed(0)
    x = torch.randn(16, 3, 32, 32)
    default = _measure(mm.GNResNet(c=32), x)
    assert default.healthy, default.verdict.problems
    torch.manual_seed(0)
    tiny = _measure(mm.GNResNet(c=32, scale=1e-3), x)
    assert any(m.zero_moving for m in mechanisms.movers(tiny.stats))
    assert 0 < _ratios(tiny)["stem"] < tiny.spec.gate.min_grad_ratio
    assert "gradient_vanishing" in _rules(tiny)


def test_units_at_their_kink_behind_a_zero_last_layer_in_a_downsampling_block_are_a_warning() -> None:
    """NFNet's layout (timm's NFNet-F0 failed here at its default, and trains: gain 0.81 nats on the
    zoo's image task): each branch ends in a zero-initialized convolution and a squeeze-excitation
    on it, whose ReLU then reads exactly 0 (its bias is 0 too) and passes no gradient. The
    downsampling blocks have a projection shortcut, so no branch ratio is measured for them; their
    branch rows are inside a block all the same, and the skip carries the gradient around them.
    The excitation's ReLU receives exactly 0 behind the zero convolution, which moves on the first
    step: it waits for it, not judged (at most a warning before)."""
    from tests.models_for_tests import zero_last_se_net

    torch.manual_seed(0)
    model = zero_last_se_net()
    x = torch.randn(16, 3, 16, 16)
    report = probe.measure(model, x, batch_size=16, seed=0)
    assert report.healthy, report.verdict.problems
    assert report.layer("2.fc1").dead_units == 1.0 and report.layer("2.fc1").gradient_blocked
    assert not [p for p in report.verdict.warnings if p.rule == "dead_units" and p.layer == "2.fc1"]
    # the mechanism: one AdamW step moves the zero convolution, and the excitation's units come alive
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(x).square().mean().backward()
    opt.step()
    after = probe.measure(model, x, batch_size=16, seed=0)
    assert all(row.dead_units < 1.0 for row in after.layers if row.name.endswith(".fc1"))


def _conv_bn_stack(depth: int, width: int = 64) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(3, width, 1), nn.BatchNorm2d(width), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Conv2d(width, width, 1), nn.BatchNorm2d(width), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))


def _bn_mlp_on_images(depth: int, width: int = 128) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(3 * 32 * 32, width), nn.BatchNorm1d(width), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


@pytest.mark.parametrize(
    ("kind", "depth", "severity"),
    [("conv", 30, "warning"), ("conv", 40, "error"), ("mlp", 20, "error"), ("tiny conv", 30, "error")],
)
def test_a_batchnorm_convnet_without_skips_is_an_error_only_past_the_chaos_line(
    kind: str, depth: int, severity: str
) -> None:
    # without a residual add, a gradient growing through weights that all feed a BatchNorm: in a
    # convnet a warning up to STACK_CHAOS x max_grad_ratio (concatenating convnets train at 136-961:
    # GoogLeNet, Inception-v3, BN-Inception, SelecSLS) and an error past it (Inception-v4, 9,403,
    # does not); a BatchNorm MLP keeps the usual line (at width 64, 20 and 30 layers read 195 and
    # 1,500 and learn nothing); so does a convnet whose normalized weights are under Adam's lr, which
    # each step outgrows (red team 2's cosine-head CNN at x 1e-3 reads 686 and loses 3.3 nats)
    torch.manual_seed(0)
    conv = kind != "mlp"
    model, size = (_conv_bn_stack(depth), 4) if conv else (_bn_mlp_on_images(depth), 32)
    if kind == "tiny conv":
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.Conv2d):
                    m.weight.mul_(1e-3)
    report = probe.measure(model, torch.randn(16 if conv else 32, 3, size, size), seed=0)
    (said,) = [p for p in (*report.verdict.problems, *report.verdict.warnings) if p.rule == "gradient_exploding"]
    gate = report.stats.spec.gate
    assert said.severity == severity, said
    assert said.value > 2 * gate.max_grad_ratio
    if kind == "conv":
        assert (said.value < mechanisms.STACK_CHAOS * gate.max_grad_ratio) == (severity == "warning")
