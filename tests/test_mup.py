"""model.parametrization: mup (probe/model/mup.py): muP's init, multipliers and Adam learning
rates relative to model.base_width, checked against what muP prescribes."""

from __future__ import annotations

import math

import pytest
import torch

from probe import spec as spec_mod
from probe.errors import SpecError
from probe.model import mup
from probe.model.build import build_initialized


def _spec(kind: str, width: int, parametrization: str, **model: object) -> spec_mod.Spec:
    extra = {"vocab_size": 50, "seq_len": 6, "heads": 4} if kind == "transformer" else {}
    return spec_mod.parse(
        {
            "model": {
                "kind": kind,
                "width": width,
                "depth": 2,
                "output_dim": 5,
                "base_width": 32,
                "parametrization": parametrization,
                **extra,
                **model,
            },
            "data": {"batch_size": 8},
        }
    )


def _inputs(kind: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randint(0, 50, (8, 6), generator=gen) if kind == "transformer" else torch.randn(8, 32, generator=gen)


@pytest.mark.parametrize("kind", ["mlp", "transformer"])
def test_mup_is_sp_at_the_base_width(kind: str) -> None:
    sp = build_initialized(_spec(kind, 32, "sp")).model
    mu = build_initialized(_spec(kind, 32, "mup"))
    assert mu.lr_scale == {}
    for (name, a), (_, b) in zip(sp.named_parameters(), mu.model.named_parameters(), strict=True):
        assert torch.equal(a, b), name
    x = _inputs(kind)
    # the transformer's query is then x * 1.0, projected on its own: equal up to float rounding
    torch.testing.assert_close(sp(x), mu.model(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["mlp", "transformer"])
def test_mup_at_four_times_the_base_width(kind: str) -> None:
    sp = build_initialized(_spec(kind, 128, "sp")).model
    built = build_initialized(_spec(kind, 128, "mup"))
    params = dict(built.model.named_parameters())
    # Adam's lr: 1/4 on tensors whose two dimensions grow with width (hidden matrices), 1 elsewhere
    assert set(built.lr_scale.values()) == {0.25}
    for name in built.lr_scale:
        assert params[name].dim() == 2 and min(params[name].shape) >= 128, name
    grows = {n for n, p in params.items() if p.dim() == 2 and min(p.shape) >= 128}
    assert set(built.lr_scale) == grows
    # the head: the same draws times sqrt(4) (mup's _rescale_parameters), input times 1/4
    torch.testing.assert_close(params["head.weight"], 2 * dict(sp.named_parameters())["head.weight"])
    assert mup.readout_multiplier(_spec(kind, 128, "mup").model) == 0.25
    x = _inputs(kind)
    with torch.no_grad():
        ratio = float(built.model(x).std() / sp(x).std())
    # effective head weight = 2 W / 4 = W / 2, and everything before the head is the same (the
    # MLP) or differs only in attention's scale (the transformer): half the SP output's size
    if kind == "mlp":
        assert ratio == pytest.approx(0.5, rel=1e-5)
    else:
        assert 0.3 < ratio < 0.7


def test_mup_param_groups_scale_adams_lr() -> None:
    built = build_initialized(_spec("mlp", 128, "mup"))
    groups = mup.param_groups(built.model, 1e-3, built.lr_scale)
    by_lr = {g["lr"]: len(g["params"]) for g in groups}
    # linear2 (128 x 128) at lr / 4; linear1, head and the biases at lr
    assert sorted(by_lr.items()) == [(2.5e-4, 1), (1e-3, 5)]


def test_mup_attention_logits_scale_like_one_over_d() -> None:
    """The query input is multiplied by sqrt(base / width): logits q.k * sqrt(d_B) / d."""
    built = build_initialized(_spec("transformer", 128, "mup"))
    layer = built.model.layers[0]
    assert layer.query_scale == pytest.approx(math.sqrt(32 / 128))


@pytest.mark.parametrize(
    ("model", "match"),
    [
        ({"kind": "conv", "parametrization": "mup"}, "mlp and transformer"),
        ({"kind": "transformer", "parametrization": "mup", "ff_width": 64}, "ff_width"),
        ({"parametrization": "ntk"}, "parametrization"),
    ],
)
def test_mup_spec_validation(model: dict[str, object], match: str) -> None:
    with pytest.raises(SpecError, match=match):
        spec_mod.parse({"model": model})


def test_mup_steps_use_adams_scaled_lr() -> None:
    """One AdamW step moves every element by lr * sign(g) (m / sqrt(v) = g / |g| at step 1), so
    ||dW|| = lr * sqrt(numel) whatever the gradient: muP's hidden matrix at 4x the base width
    moves exactly 1/4 as far as SP's (up to AdamW's decay, lr * 0.01 * W, and eps: < 1e-3), the
    input layer as far."""
    from dataclasses import replace

    from probe.measurement.run import run_probe

    moved = {}
    for parametrization in ("sp", "mup"):
        spec = _spec("mlp", 128, parametrization)
        spec = replace(spec, run=replace(spec.run, steps=1))
        rows = {r.name: r for r in run_probe(spec).steps.rows}
        assert all(r.change_rms is not None and r.change_rms > 0 for r in rows.values())
        moved[parametrization] = {name: r.update_ratio for name, r in rows.items()}
    assert moved["mup"]["layer2"] / moved["sp"]["layer2"] == pytest.approx(0.25, rel=1e-3)
    assert moved["mup"]["layer1"] / moved["sp"]["layer1"] == pytest.approx(1.0, rel=1e-3)


@pytest.mark.parametrize("kind", ["mlp", "transformer"])
def test_inspect_expects_the_mup_head(kind: str) -> None:
    """probe inspect reads the muP head's std against its strategy times sqrt(width / base)."""
    from typer.testing import CliRunner

    from probe.cli import app
    from tests.conftest import REPO

    args = ["--set", f"model.kind={kind}", "--set", "model.parametrization=mup", "--set", "model.width=512"]
    result = CliRunner().invoke(app, ["inspect", str(REPO / "configs" / "coord_check_mlp.yaml"), *args])
    assert result.exit_code == 0, result.output
    assert "every parameter matches its init rule" in result.stdout


def test_layer_by_layer_replays_the_mup_head() -> None:
    """--layer-by-layer rebuilds the MLP block by block: muP's head rescale is part of its program
    (the same numbers as a whole-network run, the head's included)."""
    import json

    from typer.testing import CliRunner

    from probe.cli import app
    from tests.conftest import REPO

    args = ["run", str(REPO / "configs" / "coord_check_mlp.yaml"), "--set", "model.parametrization=mup"]
    args += ["--set", "model.width=256", "-f", "json"]
    runs = [CliRunner().invoke(app, args + extra) for extra in ([], ["--layer-by-layer"])]
    assert all(r.exit_code == 0 for r in runs), runs[0].output + runs[1].output
    whole, layered = ([v for x in json.loads(r.stdout)["layers"] for v in (x["std"], x["grad_std"])] for r in runs)
    assert whole == pytest.approx(layered, rel=1e-6)


def test_no_mean_field_prediction_under_mup() -> None:
    """The mean-field map (probe/judge/theory.py) has no output multiplier: it says so rather than
    predict a muP head's std sqrt(width / base) times off."""
    from probe.judge.theory import unavailable_reason

    assert unavailable_reason(_spec("mlp", 128, "sp")) is None
    assert "mup" in (unavailable_reason(_spec("mlp", 128, "mup")) or "")
