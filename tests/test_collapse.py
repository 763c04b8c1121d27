"""Collapse: the centered squared cosine between samples (and between a sequence's tokens), its
mean-field prediction (the collapse map), the ``collapse`` rule and where sweeps show it."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch
from torch import nn

import probe
from probe.judge import gaussian, theory
from probe.judge.rules import evaluate
from probe.measurement.collect import Collector
from probe.measurement.correlation import SAMPLES as _CORRELATION_SAMPLES
from probe.measurement.run import run_probe
from probe.model.network import Watched
from probe.spec import Choice, parse
from tests.conftest import CONFIGS


def _measure(*batches: torch.Tensor, unit_dim: int = -1) -> Any:
    module = nn.Identity()
    units = batches[0].shape[unit_dim]
    collector = Collector([Watched("x", 1, "hidden", module, None, units, unit_dim, None)], torch.device("cpu"))
    with collector.hooks():
        for b in batches:
            module(b)
    return collector.finish()[0]


def _excess(centered: torch.Tensor, rho: float) -> tuple[float, float]:
    """Sum over ordered pairs of distinct nonzero rows of the excess squared cosine, and the
    number of pairs; the plain n x n way."""
    width = centered.shape[1]
    keep = centered.norm(dim=1) > 0
    unit = centered[keep] / centered[keep].norm(dim=1, keepdim=True)
    cos2 = (unit @ unit.t()) ** 2
    n = unit.shape[0]
    base = rho * rho + (1 - rho * rho) ** 2 / width
    return (float(cos2.sum() - cos2.diagonal().sum()) - n * (n - 1) * base) / (1 - base), n * (n - 1)


def _reference(rows: torch.Tensor) -> tuple[float, float]:
    """The sample statistic's sums for one batch's rows: centered on their mean (rows that are 0
    enter the mean, they are outputs, but take no part in the pairs)."""
    rows = rows.double().reshape(rows.shape[0], -1)
    centered = rows - rows.mean(dim=0)
    centered[rows.norm(dim=1) == 0] = 0
    return _excess(centered, 1 / (rows.shape[0] - 1))


def _token_reference(batch: torch.Tensor, sequences: int) -> tuple[float, float]:
    """The token statistic's sums: each token centered on the batch mean at its position."""
    centered = batch.double() - batch.double().mean(dim=0)
    total = pairs = 0.0
    for seq in centered[:sequences]:
        s, n = _excess(seq, 0.0)
        total, pairs = total + s, pairs + n
    return total, pairs


def test_sample_statistic_matches_the_pairwise_reference() -> None:
    g = torch.Generator().manual_seed(0)
    # a shared direction with a per-sample weight plus noise; two rows all zero take no part
    shared = torch.randn(1, 3, 5, generator=g)
    a = shared * torch.randn(100, 1, 1, generator=g) + torch.randn(100, 3, 5, generator=g)
    b = shared * torch.randn(40, 1, 1, generator=g) + torch.randn(40, 3, 5, generator=g)
    b[3] = 0
    b[7] = 0
    stats = _measure(a, b, unit_dim=1)
    total, pairs = 0.0, 0.0
    for batch in (a, b):
        s, n = _reference(batch[:_CORRELATION_SAMPLES])
        total, pairs = total + s, pairs + n
    # the record is computed in the activation's float32: squared cosines to a few epsilons
    assert stats.correlation == pytest.approx(total / pairs, rel=1e-5, abs=1e-6)
    assert 0.05 < stats.correlation < 0.9
    assert stats.token_correlation is None  # channels first: no token axis


def test_a_shared_offset_does_not_move_it_and_a_line_reads_one() -> None:
    """What every sample shares (a bias, the positive mean of ReLU features) cancels; samples that
    differ only along one direction read 1, whatever each one's position on it."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 256, generator=g)
    offset = 50 * torch.randn(1, 256, generator=g)
    plain, shifted = _measure(x).correlation, _measure(x + offset).correlation
    assert shifted == pytest.approx(plain, abs=1e-6)
    # independent directions in 256 dimensions: E[cos^2] = 1/256, the excess is 0 up to the
    # 32 centered rows summing to zero (each cosine then averages -1/31: cos^2 gains 1/31^2)
    assert abs(plain) < 2 / (_CORRELATION_SAMPLES - 1) ** 2 + 4 / 256
    line = offset + torch.randn(64, 1, generator=g) * torch.randn(1, 256, generator=g)
    assert _measure(line).correlation == pytest.approx(1.0, abs=1e-6)


def test_many_batches_fold_into_the_same_sums() -> None:
    """Past PENDING batches the records fold into the layer's sums on the device: the pooled mean
    over every batch's pairs is unchanged (sequences too)."""
    from probe.measurement.correlation import PENDING, TOKEN_SEQUENCES

    g = torch.Generator().manual_seed(5)
    batches = [torch.randn(1, 4, 8, generator=g) + torch.randn(6, 4, 8, generator=g) for _ in range(PENDING + 9)]
    stats = _measure(*batches)
    total = pairs = token_total = token_pairs = 0.0
    for b in batches:
        s, n = _reference(b)
        total, pairs = total + s, pairs + n
        s, n = _token_reference(b, TOKEN_SEQUENCES)
        token_total, token_pairs = token_total + s, token_pairs + n
    assert stats.correlation == pytest.approx(total / pairs, rel=1e-5, abs=1e-6)
    assert stats.token_correlation == pytest.approx(token_total / token_pairs, rel=1e-5, abs=1e-6)


def test_token_statistic_is_measured_within_each_sequence() -> None:
    """Rank collapse: every token of a sequence carries the same sample-specific vector (on top of
    a position pattern every sample shares, which cancels): 1. Independent tokens read 0."""
    from probe.measurement.correlation import TOKEN_SEQUENCES

    g = torch.Generator().manual_seed(1)
    positions = 5 * torch.randn(1, 6, 32, generator=g)
    direction = torch.randn(20, 1, 32, generator=g)
    x = positions + direction
    stats = _measure(x)
    assert stats.token_correlation == pytest.approx(1.0, abs=1e-6)
    mixed = x + 0.5 * torch.randn(20, 6, 32, generator=g)
    total, pairs = _token_reference(mixed, TOKEN_SEQUENCES)
    assert _measure(mixed).token_correlation == pytest.approx(total / pairs, rel=1e-5, abs=1e-6)
    assert stats.correlation is not None and stats.correlation < 0.2
    free = torch.randn(20, 6, 32, generator=g)
    total, pairs = _token_reference(free, TOKEN_SEQUENCES)
    assert _measure(free).token_correlation == pytest.approx(total / pairs, rel=1e-5, abs=1e-6)
    assert abs(total / pairs) < 0.05


def test_a_batch_with_a_non_finite_value_adds_nothing() -> None:
    g = torch.Generator().manual_seed(7)
    good = torch.randn(40, 64, generator=g) + torch.randn(40, 1, generator=g) * torch.randn(1, 64, generator=g)
    bad = torch.randn(40, 64, generator=g)
    bad[5, 3] = float("nan")
    assert _measure(good, bad).correlation == pytest.approx(_measure(good).correlation, rel=1e-6)


def test_one_sample_one_value_or_a_constant_output_has_no_statistic() -> None:
    assert _measure(torch.randn(1, 8)).correlation is None
    assert _measure(torch.randn(16)).correlation is None
    assert _measure(torch.randn(16, 1)).correlation is None
    # every sample the same: nothing varies, no direction to judge (the scale rules judge it)
    assert _measure(torch.randn(1, 8).expand(16, 8).contiguous()).correlation is None


# ---- the correlation map ----------------------------------------------------------------------


def _arccos(c: float) -> float:
    """ReLU's normalized arc-cosine kernel: the next layer's cosine from this one's (Cho & Saul)."""
    return (math.sqrt(1 - c * c) + (math.pi - math.acos(c)) * c) / math.pi


@pytest.mark.parametrize("rho", [-0.9, -0.3, 0.0, 0.5, 0.9, 0.999])
def test_relu_closed_form_matches_quadrature(rho: float) -> None:
    closed = gaussian.pair_moment(Choice("relu", {"inplace": False}), 0.0, 2.0, 2.0 * rho)
    # leaky_relu with slope 0 is ReLU, but takes the quadrature path
    quad = gaussian.pair_moment(Choice("leaky_relu", {"negative_slope": 0.0, "inplace": False}), 0.0, 2.0, 2.0 * rho)
    assert quad == pytest.approx(closed, rel=1e-8, abs=1e-12)
    assert closed == pytest.approx(2.0 / 2 * _arccos(rho), rel=1e-12)  # var/2 * k(rho) for var = 2


@pytest.mark.parametrize("rho", [-0.9, 0.0, 0.5, 0.999])
def test_pair_moments_with_unequal_variances(rho: float) -> None:
    """The vectorized moment of two samples of different scales: ReLU's closed form, which scales
    as sqrt(var1 var2), against the quadrature (leaky_relu of slope 0), and tanh against the
    scalar quadrature where the variances agree."""
    v1, v2 = torch.tensor([0.5, 2.0], dtype=torch.float64), torch.tensor([2.0, 2.0], dtype=torch.float64)
    cov = rho * torch.sqrt(v1 * v2)
    closed = gaussian.pair_moments(Choice("relu", {"inplace": False}), 0.0, v1, v2, cov)
    quad = gaussian.pair_moments(Choice("leaky_relu", {"negative_slope": 0.0, "inplace": False}), 0.0, v1, v2, cov)
    assert quad.tolist() == pytest.approx(closed.tolist(), rel=1e-6, abs=1e-12)
    assert closed.tolist() == pytest.approx((torch.sqrt(v1 * v2) / 2 * _arccos(rho)).tolist(), rel=1e-12)
    tanh = gaussian.pair_moments(Choice("tanh", {}), 0.1, v2, v2, cov)
    assert float(tanh[1]) == pytest.approx(gaussian.pair_moment(Choice("tanh", {}), 0.1, 2.0, float(cov[1])), rel=1e-6)


def test_odd_activations_keep_the_inputs_own_statistic() -> None:
    """Independent inputs in d dimensions have squared cosine 1/d, and the statistic is the excess
    over it (the input's d directions are all a layer can vary in); tanh at Xavier's scale is nearly
    linear and odd: the prediction stays within 15% of 1/d of 0, just under it (its cubic term
    spreads a little of each cosine into directions of its own)."""
    p = theory.predict(parse({"model": {"depth": 6, "activation": "tanh"}, "init": {"weight": "xavier"}}))
    got = [t.expected_correlation for t in p.layers]
    assert all(c is not None and -0.15 / 32 < c <= 0 for c in got), got


def test_a_shared_bias_does_not_move_the_centered_statistic() -> None:
    """A bias N(0, 0.5^2) is the same for every sample: the uncentered cosine of layer 1's
    pre-activations is 0.25 / (1 + 0.25) = 0.2 from it alone (the old statistic), the centered one
    stays at the inputs' own 1/d, measured and predicted."""
    spec = parse(
        {
            "model": {"depth": 4, "width": 1024, "activation": "tanh", "input_dim": 256},
            "init": {"weight": "xavier", "bias": {"name": "normal", "std": 0.5}},
            "data": {"batch_size": 512},
            "run": {"device": "cpu", "seed": 2},
        }
    )
    report, p = run_probe(spec), theory.predict(spec)
    for measured, t in zip(report.layers, p.layers, strict=True):
        assert t.expected_correlation is not None and t.expected_correlation < 2 / 256
        # finite width adds O(kurtosis / units) per layer to the excess; 8 / units in all here
        assert measured.correlation == pytest.approx(t.expected_correlation, abs=8 / 1024)


def test_measured_he_relu_follows_the_map_on_a_wide_network() -> None:
    spec = parse(
        {
            "model": {"depth": 4, "width": 1024},
            "init": {"weight": "he"},
            "data": {"batch_size": 256},
            "run": {"device": "cpu", "seed": 0},
        }
    )
    report, p = run_probe(spec), theory.predict(spec)
    for measured, t in zip(report.layers, p.layers, strict=True):
        assert measured.correlation == pytest.approx(t.expected_correlation, abs=8 / 1024)


def test_the_map_predicts_he_relu_narrowing_to_one_direction() -> None:
    """Deep He + ReLU: the uncentered cosine climbs to 1 (the arc-cosine map), so the samples keep
    only their input's norm apart; after centering that is one direction. The wide limit shows the
    climb (finite width adds to it: docs/verdicts.md). The first layer reads 1/32 (the input's own
    squared cosine) less what the ReLU spreads, 0.0169, as an excess over 1/32: (0.0169 - 1/32) / (1 - 1/32)."""
    p = theory.predict(parse({"model": {"depth": 50, "width": 256}, "init": {"weight": "he"}}))
    got = [t.expected_correlation or 0.0 for t in p.layers]
    assert got[0] == pytest.approx((0.0169 - 1 / 32) / (1 - 1 / 32), abs=5e-4)
    assert got[49] > 0.15 and got[49] > got[9] + 0.15


# ---- the rule -----------------------------------------------------------------------------------


def test_fifty_layer_he_relu_collapses_and_the_seed_networks_do_not() -> None:
    deep = parse({"model": {"depth": 50, "width": 256}, "init": {"weight": "he"}, "run": {"device": "cpu", "seed": 0}})
    verdict = evaluate(run_probe(deep))
    collapse = [p for p in verdict.problems if p.rule == "collapse"]
    assert collapse and collapse[0].value > 0.25 and collapse[0].gate_key == "max_correlation"
    for name in ("lab1_he_relu", "lab1_xavier_tanh"):
        from probe.spec import load

        assert "collapse" not in {p.rule for p in evaluate(run_probe(load(CONFIGS / f"{name}.yaml"))).problems}


def test_a_few_input_features_are_not_collapse(cli: Any) -> None:
    """Samples of 2 or 3 features differ in no more than 2 or 3 directions, and so do a layer's
    outputs computed from them: the statistic's base is 1/2 or 1/3 there, not 1/128 (it read 0.49
    and 0.33, errors, at the first layer of every such classifier). One feature (a curve fit) gives
    one line by construction: 0 (it read 1). A FiLM generator reading a 3-value condition
    is the same inside a CNN. Depth still collapses them: He + ReLU, 50 layers."""
    from tests.models_for_tests import FiLMConditioned, few_features_mlp

    for features in (1, 2, 3):
        result = cli(
            "run",
            "--model",
            "tests.models_for_tests:few_features_mlp",
            "--model-arg",
            f"features={features}",
            "--input-shape",
            str(features),
            "-f",
            "json",
        )
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        assert doc["verdict"]["healthy"] and "collapse" not in {w["rule"] for w in doc["verdict"]["warnings"]}
        hidden = [x["correlation"] for x in doc["layers"] if x["role"] != "head"]
        assert hidden and all(c < 0.05 for c in hidden), hidden  # one feature: 0 by construction
    torch.manual_seed(0)
    film = probe.measure(FiLMConditioned(), (3, 32, 32))
    assert not film.problems and "collapse" not in {w.rule for w in film.verdict.warnings}
    torch.manual_seed(0)
    deep = probe.measure(few_features_mlp(2, depth=50, he=True), (2,), batch_size=64)
    assert "collapse" in {p.rule for p in deep.problems}


def test_a_time_embedding_varies_with_one_number() -> None:
    """A denoiser's time MLP reads the sinusoidal features of one timestep per sample: its rows can
    differ between samples in one direction, whatever their width. With continuous times in [0, 1)
    (flow matching) the features are nearly linear in t and the rows read 0.76, an error, at
    PyTorch's default init, as diffusers' UNet with Fourier time features (0.69) and I2VGenXL's
    (0.28) did. The traced pass says which of the model's inputs each row is computed from; the
    rows computed from the time alone read 0, the rows on the image keep their reading."""
    from tests.models_for_tests import TimeConditioned, flow_times, timesteps

    for inputs in (flow_times, timesteps):
        torch.manual_seed(0)
        report = probe.measure(TimeConditioned(), inputs)
        assert "collapse" not in {p.rule for p in report.problems}, report.problems
        rows = {x.name: x.correlation for x in report.layers}
        assert all(rows[f"time_mlp.{i}"] == 0 for i in range(3)), rows
        assert rows["conv"] is not None


def test_gate_key_moves_the_threshold(cli: Any) -> None:
    config = str(CONFIGS / "lab1_he_relu.yaml")
    loose = cli("check", config)
    strict = cli("check", config, "--gate", "max_correlation=0.01")
    assert loose.exit_code == 0, loose.output
    assert strict.exit_code == 1 and "collapse" in strict.output


def test_run_shows_cos_and_json_has_correlations(cli: Any) -> None:
    config = str(CONFIGS / "lab1_he_relu.yaml")
    table = cli("run", config)
    assert table.exit_code == 0 and " cos " in table.output
    doc = json.loads(cli("run", config, "-f", "json").stdout)
    layer = doc["layers"][0]
    # 32-dimensional inputs through one ReLU layer: about 1/32 less what the ReLU spreads (0.017),
    # as an excess over the input's 1/32: just under 0
    assert -0.03 < layer["correlation"] < 0.01 and layer["token_correlation"] is None


def test_sweep_says_where_collapse_starts(cli: Any) -> None:
    result = cli("sweep", "--depth", "10,60", "he", "--set", "model.width=256", "--set", "data.batch_size=64")
    assert result.exit_code == 0, result.output
    assert "he: first fails at depth 60" in result.stdout and "collapse" in result.stdout


def test_run_theory_puts_the_predicted_statistic_beside_the_measured(cli: Any) -> None:
    config = str(CONFIGS / "lab1_he_relu.yaml")
    doc = json.loads(cli("run", config, "--theory", "-f", "json").stdout)
    first = doc["layers"][0]
    from probe.spec import load

    expected = theory.predict(load(CONFIGS / "lab1_he_relu.yaml")).layers[0].expected_correlation
    assert first["expected_correlation"] == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx((0.0169 - 1 / 32) / (1 - 1 / 32), abs=5e-4)
    table = cli("run", config, "--theory")
    assert table.exit_code == 0 and "-0.015" in table.stdout


class _FoldedPatches(nn.Module):
    """MobileViT's unfolding: a feature map upsampled to a 4 x 4 patch, its 16 pixels folded into
    the batch dimension ((batch x 16, 1 patch, 64)) for two transformer blocks, folded back."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 8, stride=8)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(64, 2, 128, dropout=0.0, batch_first=True, norm_first=True) for _ in range(2)
        )
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = nn.functional.interpolate(self.stem(x).mean((2, 3), keepdim=True), size=(4, 4), mode="bilinear")
        t = f.flatten(2).transpose(1, 2).reshape(-1, 1, 64)  # 16 copies of each sample's pixel
        for b in self.blocks:
            t = b(t)
        return self.head(t.reshape(x.shape[0], 16, 64).mean(1))


def test_rows_holding_batch_times_patches_are_not_compared_as_samples() -> None:
    # dim 0 of the blocks' rows holds 16 rows per sample (alike here): centered over the first 32
    # rows (two samples' copies) they lie on one line (1.0), which says nothing about the samples
    import probe

    torch.manual_seed(0)
    report = probe.measure(_FoldedPatches(), torch.randn(32, 3, 16, 16), seed=0)
    rows = {x.name: x for x in report.stats.layers}
    assert rows["blocks.0"].role == "stream" and rows["blocks.0"].correlation is None
    assert rows["stem"].correlation is not None and rows["head"].correlation is not None
    assert "collapse" not in {p.rule for p in report.verdict.problems}


def _audio_net(zero_weights: bool, zero_head_only: bool = False) -> nn.Module:
    """A 1-D conv net as a newcomer writes one; ``zero_weights``: every weight matrix 0, the biases
    PyTorch's own (nonzero); ``zero_head_only``: only the classifier's weight 0 (MLP-Mixer style)."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv1d(1, 16, 9, stride=4), nn.GELU(), nn.Conv1d(16, 32, 9, stride=4), nn.GELU(),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(32, 5),
    )  # fmt: skip
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() > 1 and (zero_weights or (zero_head_only and p.shape == (5, 32))):
                p.zero_()
    return net


def test_a_network_the_input_reaches_nowhere_is_collapsed() -> None:
    # zero weight matrices behind nonzero biases: every sample gives every row the same values, so the
    # first steps' weight gradients are input-independent rank-one updates (150 AdamW steps memorizing 64
    # random labels, lr 1e-3: loss 1.62 -> 1.20, against 1.62 -> 0.04 at PyTorch's default init, measured
    # on a deeper net of this kind; a GRU language model so broken: 5.30 -> 5.02 against -> 0.22); a zero classifier alone behind
    # rows that vary with the input is a design (MLP-Mixer, ResMLP) and stays healthy
    import probe

    inputs = lambda b: torch.randn(b, 1, 600)  # noqa: E731
    broken = probe.measure(_audio_net(True), inputs, batch_size=16, seed=0)
    assert not broken.healthy
    [problem] = [p for p in broken.verdict.problems if p.rule == "collapse"]
    assert problem.layer == "0" and "input reaches none" in problem.message
    assert all(x.samples_identical for x in broken.layers if x.std > 0)
    zero_head = probe.measure(_audio_net(False, zero_head_only=True), inputs, batch_size=16, seed=0)
    assert zero_head.healthy and not any(x.samples_identical for x in zero_head.layers if x.role != "head")
    assert probe.measure(_audio_net(False), inputs, batch_size=16, seed=0).healthy
