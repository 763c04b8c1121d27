"""The ``weight_scale`` rule: weights that feed a normalization, too large for the optimizer.

A layer whose output goes straight into a normalization computes the same function for W and
c W, so every forward statistic and the pooling-proof gradient scale are blind to the weight's
scale; Adam's fixed-size steps turn a weight k times its variance-rule scale k times slower
(SGD: k^2). docs/verdicts.md derives it; benchmarks/trainability.json holds the training runs.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from probe import spec as spec_mod
from probe.judge.rules import evaluate
from probe.measurement.run import run_probe
from probe.records import Stats


def _bn_resnet(weight: str) -> Stats:
    # a BatchNorm ResNet (stem + 3 basic blocks, width 8, bias-free convs) and a linear head
    spec = spec_mod.parse(
        {
            "model": {"import": "tests.hf_models:bn_resnet", "input_shape": [3, 16, 16]},
            "init": {"weight": weight},
            "data": {"batch_size": 8},
            "run": {"device": "cpu"},
        }
    )
    return run_probe(spec)


def test_outputs_that_feed_a_normalization_are_found_from_what_runs() -> None:
    spec = spec_mod.parse({"model": {"import": "tests.models_for_tests:feeds_norm", "input_shape": [4, 6, 6]}})
    rows = {x.name: x for x in run_probe(spec).layers}
    assert rows["direct"].normalized and rows["channels_last"].normalized
    # (after_relu, whose output meets a ReLU first, is blind too, which its gradient shows at a scale
    # where the BatchNorm's eps is negligible: test_weights_whose_scale_the_loss_cannot_see_...)
    assert not rows["residual"].normalized  # added to the stream before the LayerNorm
    assert not any(x.normalized for x in rows.values() if x.role == "norm")


def test_n01_weights_under_batchnorm_are_invisible_forward_and_fail_weight_scale() -> None:
    he, large = _bn_resnet("he_normal"), _bn_resnet("large")
    # the same seed draws the same standard normals: N(0, 1) is He's draw times sqrt(fan_in / 2)
    # per layer, and every normalized layer computes the same function, so the forward statistics
    # agree to float rounding, and the gradients differ by one factor throughout (the linear head,
    # which no normalization follows, is twice as large: its N(0, 1) over He's sqrt(2 / 8))
    pairs = [(a, b) for a, b in zip(he.layers, large.layers, strict=True) if a.role == "norm" or a.role == "activation"]
    factor = pairs[0][1].grad_std / pairs[0][0].grad_std
    assert factor == pytest.approx(2.0, rel=0.05)
    for a, b in pairs:
        assert b.std == pytest.approx(a.std, rel=1e-3), a.name
        assert b.grad_std == pytest.approx(a.grad_std * factor, rel=1e-3), a.name
    convs = [x for x in large.layers if x.module_type == "Conv2d"]
    assert convs and all(x.normalized for x in convs)
    for x in convs:
        fan_in = 3 * 9 if x.name == "0" else 8 * 9
        # N(0, 1): rms over n elements is 1 within ~1/sqrt(2 n); He normal: rms sqrt(2 / fan_in)
        n = x.weight_size or 0
        tolerance = 4 / math.sqrt(2 * n)
        assert x.weight_scale == pytest.approx(math.sqrt(fan_in / 2), rel=tolerance), x.name
    he_convs = [x for x in he.layers if x.module_type == "Conv2d"]
    assert all(x.weight_scale == pytest.approx(1.0, rel=4 / math.sqrt(2 * (x.weight_size or 1))) for x in he_convs)

    verdict = evaluate(large)
    (problem,) = [p for p in verdict.problems if p.rule == "weight_scale"]
    assert problem.severity == "error"
    assert problem.value == pytest.approx(math.sqrt(8 * 9 / 2), rel=0.1)  # the 3x3 convs of width 8: 6
    healthy = evaluate(he)
    assert healthy.healthy and not any(p.rule == "weight_scale" for p in (*healthy.problems, *healthy.warnings))


def test_a_minority_of_oversized_normalized_weights_is_not_sgds_failure() -> None:
    pytest.importorskip("transformers")
    # ConvNeXt with N(0, 1) weights: its depthwise convs feed a LayerNorm and sit ~5x above He's
    # scale, but they hold 6% of the weights: He's reading (SGD's) is the median's, below its line
    report = run_probe(spec_mod.load("tests/corpus_specs/convnext_normal1.yaml"))
    oversized = [x for x in report.layers if x.normalized and (x.weight_scale or 0) > 4]
    weighed = [x for x in report.layers if x.weight_size and x.weight_scale is not None and x.role != "embedding"]
    # the depthwise convs, the patch embedding and the downsampling convs (blind to their scale
    # through the stream's next LayerNorm, which only their gradient shows)
    assert oversized and all("dwconv" in x.name or "patch" in x.name or "downsampl" in x.name for x in oversized)
    assert sum(x.weight_size or 0 for x in oversized) < sum(x.weight_size or 0 for x in weighed) / 2
    sgd_gate = replace(report.spec.gate, optimizer="sgd")
    sgd = evaluate(replace(report, spec=replace(report.spec, gate=sgd_gate)))
    assert sgd.healthy and not any(p.rule == "weight_scale" for p in (*sgd.problems, *sgd.warnings))
    # Adam's reading counts every weight: the pointwise convs, N(0, 1) too, are the rest, and
    # Adam's steps move them about 1/5 of their size in 200 steps. It trained on the teacher
    # task all the same, on its LayerNorms, LayerScales and head (benchmarks/trainability.json:
    # weights moved 0.035 of their norm, gain 1.04 of its default's): a known false alarm,
    # docs/corpus.md
    (problem,) = [p for p in evaluate(report).problems if p.rule == "weight_scale"]
    assert problem.gate_key == "max_weight_turn" and "pwconv" in problem.layer


def test_check_fails_a_normalized_mlp_with_large_weights(cli: Callable[..., Any], tmp_path: Any) -> None:
    spec = tmp_path / "bn_large.yaml"
    spec.write_text(
        "model: {kind: mlp, depth: 4, width: 64, norm: batchnorm}\ninit: {weight: large}\ndata: {batch_size: 64}\n"
    )
    failed = cli("check", str(spec))
    assert failed.exit_code == 1 and "weight_scale" in failed.output
    assert cli("check", str(spec), "--set", "init.weight=he").exit_code == 0
    assert cli("check", str(spec), "--gate", "max_weight_scale=inf").exit_code == 0
    rows = json.loads(cli("run", str(spec), "-f", "json").output)["layers"]
    hidden = [r for r in rows if r["name"] != "layer1"]
    # width 64: N(0, 1) is sqrt(64 / 2) = 5.66 times He's scale
    assert all(r["normalized"] and r["weight_scale"] == pytest.approx(math.sqrt(32), rel=0.05) for r in hidden)


def test_advice_for_a_model_whose_own_init_is_too_large_names_a_fan_scaled_init() -> None:
    from probe.judge import advice

    spec = spec_mod.load("tests/corpus_specs/bn_resnet_normal1.yaml")  # its factory draws N(0, 1)
    verdict = evaluate(run_probe(spec))
    assert [p.rule for p in verdict.problems] == ["weight_scale"]
    hint = advice.suggestion(spec, verdict) or ""
    assert "init.weight: he_normal" in hint and "own init" not in hint
    fixed = spec_mod.parse({**spec_mod.to_dict(spec), "init": {"weight": "he_normal"}})
    assert evaluate(run_probe(fixed)).healthy


class _PatchEmbed:
    """Built lazily (torch is imported inside tests): a conv patch embedding plus a position table of
    its own, (1, positions, dim) at N(0, 0.02^2) as ViT-like libraries hold it, cropped to the
    patches and added (``add``) or, as a control, multiplied in (``add=False``); a LayerNorm after."""

    @staticmethod
    def model(add: bool) -> Any:
        import torch
        from torch import nn

        class Embed(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.proj = nn.Conv2d(3, 32, 4, stride=4)
                self.table = nn.Parameter(0.02 * torch.randn(1, 1024, 32))

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                patches = self.proj(x).flatten(2).transpose(1, 2)
                table = self.table[:, : patches.shape[1]]
                return patches + table if add else patches * table

        return nn.Sequential(Embed(), nn.LayerNorm(32), nn.Flatten(), nn.Linear(16 * 32, 10))


@pytest.mark.parametrize("add", [True, False])
def test_a_table_added_to_the_signal_has_no_fan_in_and_no_weight_scale(add: bool) -> None:
    """A position table only ever added to what the module computes (from parameters alone: a crop
    or an interpolation on the way) has no fan-in: torch's fan-in of a (1, 1024, 32) tensor is
    1024 x 32, which made SAM 3's 7056-position table read 6.7 times He's scale and, as the largest
    weight of the network, fail the median. A weight the module multiplies in keeps its scale."""
    import torch

    import probe

    torch.manual_seed(0)
    report = probe.measure(_PatchEmbed.model(add), torch.randn(16, 3, 16, 16), batch_size=16, seed=0)
    embed = report.layer("0")
    assert embed.normalized  # a LayerNorm reads it: weight_scale would judge it
    if add:
        assert embed.weight_scale is None
        assert "weight_scale" not in {p.rule for p in report.problems}
    else:
        # torch's fan-in, 1024 x 32; the draw's rms within 1% of 0.02 (32768 values)
        assert embed.weight_scale == pytest.approx(0.02 / math.sqrt(2 / (1024 * 32)), rel=0.02)


def _functional_norms(weight: str, lr: float = 1e-3) -> Stats:
    spec = spec_mod.parse(
        {
            "model": {"import": "tests.models_for_tests:functional_norms", "input_shape": [32]},
            "init": {"weight": weight},
            "data": {"batch_size": 16},
            "run": {"device": "cpu", "lr": lr},
        }
    )
    return run_probe(spec)


def test_weights_whose_scale_the_loss_cannot_see_are_found_by_their_gradient() -> None:
    from probe.measurement.signal_path import SCALE_BLIND_COS

    # F.layer_norm and a hand-written RMS norm are no modules: only the gradient shows that the
    # loss is flat along a and b's own direction (<dL/dW, W> = dL/d log scale = 0); c, added to the
    # stream it reads, and the head read |cos| about cos(delta, y) / sqrt(fan_in), here 0.03-0.1
    for weight in ("large", "he_normal"):
        rows = {x.name: x for x in _functional_norms(weight).layers}
        for name in ("a", "b"):
            assert rows[name].normalized and (rows[name].weight_grad_cos or 1.0) < SCALE_BLIND_COS, (weight, name)
        for name in ("c", "head"):
            assert not rows[name].normalized and (rows[name].weight_grad_cos or 0.0) > 1e3 * SCALE_BLIND_COS
    # a ReLU between a layer and its BatchNorm is positively homogeneous: the layer is blind too
    spec = {
        "model": {"import": "tests.models_for_tests:feeds_norm", "input_shape": [4, 6, 6]},
        "init": {"weight": "large"},
    }
    rows = {x.name: x for x in run_probe(spec_mod.parse(spec)).layers}
    assert rows["after_relu"].normalized and not rows["residual"].normalized


def test_adam_cannot_turn_n01_weights_that_a_normalization_hides(cli: Callable[..., Any], tmp_path: Any) -> None:
    # width 32: N(0, 1) is sqrt(32 / 2) = 4 times He's scale, on the He rule's line, and Adam's
    # steps of lr = 1e-3 move an rms-1 weight by its own size in 1000 steps: 5 times TURN_STEPS
    from probe.judge.readings import TURN_STEPS

    report = _functional_norms("large")
    (problem,) = [p for p in evaluate(report).problems if p.rule == "weight_scale"]
    assert problem.gate_key == "max_weight_turn" and problem.severity == "error"
    n = next(x.weight_size for x in report.layers if x.name == "a") or 1
    assert problem.value == pytest.approx(1 / (1e-3 * TURN_STEPS), rel=4 / math.sqrt(2 * n))
    # He's scale is what the learning rate was chosen for: never too large, at any lr
    for lr in (1e-3, 1e-5):
        verdict = evaluate(_functional_norms("he_normal", lr))
        assert not any(p.rule == "weight_scale" for p in (*verdict.problems, *verdict.warnings)), lr
    spec = tmp_path / "functional.yaml"
    spec.write_text(
        "model: {import: 'tests.models_for_tests:functional_norms', input_shape: [32]}\n"
        "init: {weight: large}\ndata: {batch_size: 16}\ngate: {disable: [logit_scale, exploding]}\n"
    )
    failed = cli("check", str(spec))
    assert failed.exit_code == 1 and "lr x 200 steps" in failed.output
    # SGD's steps scale with the gradient, which shrinks as 1 / ||W||: the He rule decides there
    assert cli("check", str(spec), "--optimizer", "sgd").exit_code == 0


def test_weights_a_norm_hides_only_jointly_count_for_adam() -> None:
    import torch
    import torch.nn.functional as F

    import probe
    from probe.judge.readings import TURN_STEPS
    from tests.models_for_tests import gated_behind_norm

    def measure(large: bool) -> probe.Report:
        torch.manual_seed(0)
        return probe.measure(gated_behind_norm(large), torch.randn(64, 8), batch_size=64, seed=0)

    large, default = measure(True), measure(False)
    rows = {x.name: x for x in large.layers}
    # neither gate nor up is blind to its own scale, and the one normalized weight (down) is at
    # its default: a reading over the normalized weights alone would see nothing
    assert rows["down"].normalized and not rows["gate"].normalized and not rows["up"].normalized
    assert (rows["down"].weight_scale or 0.0) < 1.0
    (problem,) = [p for p in large.verdict.problems if p.rule == "weight_scale"]
    assert problem.gate_key == "max_weight_turn"
    n = rows["gate"].weight_size or 1
    assert problem.value == pytest.approx(1 / (1e-3 * TURN_STEPS), rel=4 / math.sqrt(2 * n))
    assert default.verdict.healthy

    # the mechanism: Adam's steps of about lr per element move an rms-1 weight by at most
    # lr x steps / rms = 1 / problem.value of its norm in TURN_STEPS steps, ten times less than
    # they move the same weight at its default scale (rms 0.1)
    def moved(large: bool) -> float:
        torch.manual_seed(0)
        model = gated_behind_norm(large)
        teacher = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.Tanh(), torch.nn.Linear(64, 4))
        start = model.gate.weight.detach().clone()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
        for _ in range(TURN_STEPS):
            x = torch.randn(64, 8)
            loss = F.mse_loss(model(x), teacher(x).detach())
            opt.zero_grad()
            loss.backward()
            opt.step()
        return float((model.gate.weight.detach() - start).norm() / start.norm())

    stuck, free = moved(True), moved(False)
    assert stuck < 1 / problem.value and stuck < free / 3


def test_a_decoder_whose_branches_end_in_norms_fails_weight_scale_at_n01() -> None:
    pytest.importorskip("transformers")
    import probe
    from tests import zoo

    # OLMo 2 normalizes q and k and each branch's output: v_proj, up_proj and o_proj are blind to
    # their scale though no norm reads them directly; at N(0, 1) it does not train (gain 0.04 of
    # its default's, benchmarks/zoo_trainability.json)
    verdicts = {}
    for init in ("default", "normal1"):
        model, inputs, _ = zoo.ZOO["hf/olmo2"].build(init)
        verdicts[init] = probe.measure(model, inputs, batch_size=16, seed=0).verdict
    assert verdicts["default"].healthy
    # (its median weight sits on the He rule's line, 4.0 at width 32; Adam's reading is 5)
    assert [p.rule for p in verdicts["normal1"].problems] == ["weight_scale"]


def test_the_scale_cosine_is_exact_across_chunks() -> None:
    import torch

    from probe.measurement.signal_path import DOT_CHUNK, scale_cosine

    # a weight over 48 chunks and its gradient made orthogonal to it exactly (in float64, then
    # rounded to float32: |cos| of the rounding, about 6e-8 / sqrt(n) per element's relative error)
    n = 48 * DOT_CHUNK + 5
    gen = torch.Generator().manual_seed(0)
    w64, g64 = torch.randn(n, generator=gen, dtype=torch.float64), torch.randn(n, generator=gen, dtype=torch.float64)
    g64 -= (g64 @ w64) / (w64 @ w64) * w64
    w, g = w64.float(), g64.float()
    assert float(scale_cosine(g, w, torch.float64)) < 1e-6
    # the float32 norms of 12.6 million values are good to about 1e-3 (a cosine of 1e-6 by 1e-9)
    assert float(scale_cosine(w, w, torch.float64)) == pytest.approx(1.0, rel=1e-2)
    # 1 where a norm is 0 (nothing to tell)
    assert float(scale_cosine(torch.zeros(4), torch.ones(4), torch.float64)) == 1.0


def test_a_computed_weight_is_watched_through_the_parameter_it_is_made_of() -> None:
    import torch
    from torch import nn

    from probe.model.discovery_pass import weight_of

    # what the optimizer moves: weight_norm's direction v (both APIs), spectral norm's original;
    # a plain Linear's own weight; the same with gradients off (discovery may look under no_grad)
    with warnings.catch_warnings():  # deprecated in favour of the parametrization (a FutureWarning in 2.x)
        warnings.simplefilter("ignore")
        old_style = nn.utils.weight_norm(nn.Linear(4, 3))
    cases = {
        "parametrizations.weight.original1": nn.utils.parametrizations.weight_norm(nn.Linear(4, 3)),
        "weight_v": old_style,
        "parametrizations.weight.original": nn.utils.parametrizations.spectral_norm(nn.Linear(4, 3)),
        "weight": nn.Linear(4, 3),
    }
    for expected, module in cases.items():
        names = {id(p): n for n, p in module.named_parameters()}
        with torch.no_grad():
            assert names.get(id(weight_of(module))) == expected
        assert names.get(id(weight_of(module))) == expected
