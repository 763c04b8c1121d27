"""Mean-field predictions: closed forms, quadrature, and theory beside measurement on wide networks."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from probe.cli import app
from probe.judge import gaussian, theory
from probe.measurement.run import run_probe
from probe.spec import Choice, activations, inits, parse


def _spec(activation: str = "relu", weight: object = "he_normal", **model: object) -> object:
    raw_model = {"input_dim": 64, "width": 64, "depth": 6, "activation": activation, **model}
    return parse({"model": raw_model, "init": {"weight": weight, "bias": "zeros"}, "data": {"batch_size": 256}})


def _raw(spec: object) -> dict:
    from probe.spec import to_dict

    raw = to_dict(spec)  # type: ignore[arg-type]
    return {k: raw[k] for k in ("model", "init")}


# ---- quadrature against closed forms ---------------------------------------------------------


@pytest.mark.parametrize(("mean", "var"), [(0.0, 1.0), (0.7, 0.25), (-1.3, 4.0), (2.0, 1e-4)], ids=str)
def test_relu_moments_match_the_closed_form(mean: float, var: float) -> None:
    s = math.sqrt(var)
    a = mean / s
    cdf, pdf = 0.5 * (1 + math.erf(a / math.sqrt(2))), math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    g = gaussian.gaussian_moments(Choice("relu", {"inplace": False}), mean, var)
    assert g.mean == pytest.approx(mean * cdf + s * pdf, rel=1e-10, abs=1e-14)
    assert g.second == pytest.approx((mean * mean + var) * cdf + mean * s * pdf, rel=1e-10, abs=1e-14)
    assert g.grad2 == pytest.approx(cdf, rel=1e-10, abs=1e-14)


def test_tanh_and_sigmoid_symmetries() -> None:
    t = gaussian.gaussian_moments(Choice("tanh"), 0.0, 2.0)
    assert t.mean == pytest.approx(0.0, abs=1e-14)
    s = gaussian.gaussian_moments(Choice("sigmoid"), 0.0, 2.0)
    assert s.mean == pytest.approx(0.5, abs=1e-14)  # sigmoid(z) - 1/2 is odd
    # sigmoid(z) = (1 + tanh(z/2)) / 2: its second moment follows from tanh's at a quarter of the variance
    t4 = gaussian.gaussian_moments(Choice("tanh"), 0.0, 0.5)
    assert s.second == pytest.approx(0.25 * (1 + t4.second), rel=1e-12)


# ---- the variance map: closed forms ----------------------------------------------------------


def test_relu_with_he_keeps_q_constant() -> None:
    p = theory.predict(_spec("relu", "he_normal"))
    assert p.available
    q = [t.q for t in p.layers]
    assert q[0] == pytest.approx(2.0, rel=1e-12)  # sigma_w^2 = 2, E[x^2] = 1
    assert q == pytest.approx([q[0]] * len(q), rel=1e-12)
    # post-activation std over all values: E[relu^2] - E[relu]^2 = q (1/2 - 1/(2 pi)), not q / 2
    for t in p.layers:
        assert t.expected_std == pytest.approx(math.sqrt(2.0 * (0.5 - 0.5 / math.pi)), rel=1e-12)
        assert t.chi == pytest.approx(1.0, rel=1e-12)
        assert t.expected_grad_std == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize(
    ("weight", "var_w"),
    [
        ({"name": "normal", "std": 0.2}, 0.04),
        ({"name": "uniform", "a": 0.3}, 0.09 / 3),
        ("xavier_normal", 2.0 / (64 + 64)),
        ("lecun_normal", 1.0 / 64),
        ({"name": "he_uniform", "nonlinearity": "relu"}, 2.0 / 64),
        ("tiny", 1e-4),
        ("default", 1.0 / (3 * 64)),
    ],
    ids=lambda v: v if isinstance(v, str) else (v["name"] if isinstance(v, dict) else f"{v:.3g}"),
)
def test_linear_network_multiplies_variance_by_fan_in_var_w(weight: object, var_w: float) -> None:
    p = theory.predict(_spec("identity", weight))
    gain = 64 * var_w
    for layer, t in enumerate(p.layers, start=1):
        assert t.q == pytest.approx(gain**layer, rel=1e-10)
        assert t.expected_std == pytest.approx(gain ** (layer / 2), rel=1e-10)
        assert t.chi == pytest.approx(gain, rel=1e-10)
        # backward: each layer above multiplies the gradient variance by fan_out * Var(W)
        assert t.expected_grad_std == pytest.approx(gain ** ((len(p.layers) - layer) / 2), rel=1e-10)


def test_tanh_at_small_q_is_linear() -> None:
    p = theory.predict(_spec("tanh", {"name": "normal", "std": 0.02}, depth=4))
    sigma_w2 = 64 * 0.02**2
    for prev, t in zip(p.layers, p.layers[1:], strict=False):
        # E[tanh(z)^2] = q - 2 q^2 + O(q^3): the map is linear up to a relative 2q
        assert t.q / prev.q == pytest.approx(sigma_w2, rel=2.5 * prev.q)
        assert t.chi == pytest.approx(sigma_w2, rel=5 * t.q)  # E[tanh'^2] = 1 - 4q + O(q^2)


def test_head_output_is_gaussian_with_the_head_fan() -> None:
    p = theory.predict(_spec("relu", "he_normal", output_dim=10))
    head = p.layers[-1]
    assert head.kind == "output" and head.name == "output"
    assert head.q == pytest.approx(2.0 * 0.5 * 2.0, rel=1e-12)  # sigma_w^2 E[relu(z)^2] with q = 2
    assert head.expected_grad_std == pytest.approx(1.0)
    # the last hidden layer's gradient: fan_out * Var(W) = 10 * 2 / 64
    assert p.layers[-2].expected_grad_std == pytest.approx(math.sqrt(10 * 2 / 64), rel=1e-12)


@pytest.mark.parametrize("weight", theory.IID_STRATEGIES)
@pytest.mark.parametrize("activation", sorted(activations.ACTIVATIONS))
def test_every_activation_and_iid_strategy_has_a_finite_prediction(activation: str, weight: str) -> None:
    p = theory.predict(_spec(activation, weight, depth=3))
    assert p.available, p.reason
    for t in p.layers:
        assert math.isfinite(t.expected_std) and t.expected_std > 0
        assert t.chi >= 0 and math.isfinite(t.chi)
        assert t.expected_grad_std is not None and math.isfinite(t.expected_grad_std)
    # and the first layer's prediction is what a wide layer measures: 2,048 units x 128 samples,
    # each unit's weights a draw of the strategy. The measured std varies with the weights by
    # about sqrt(2 / fan_in) / sqrt(units) (|w|^2 of one unit: relative std sqrt(2 / 64)) and with
    # the samples by the predicted std_error; 5% is over 10 of those standard deviations.
    wide = _spec(activation, weight, depth=1, width=2048)
    wide = parse({**_raw(wide), "data": {"batch_size": 128}, "run": {"device": "cpu", "backward": False}})
    measured = run_probe(wide).layers[0].std
    expected = theory.predict(wide).layers[0].expected_std
    assert measured == pytest.approx(expected, rel=0.05)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"model": {"norm": "batchnorm"}}, "normalization"),
        ({"init": {"weight": "ones"}}, "mean 1"),
        ({"init": {"weight": {"name": "constant", "value": 0.5}}}, "mean 0.5"),
        ({"init": {"weight": "lsuv"}}, "fitted to data"),
    ],
    ids=["batchnorm", "ones", "constant", "lsuv"],
)
def test_no_prediction_is_said_not_crashed(changes: dict[str, dict[str, object]], reason: str) -> None:
    raw: dict[str, dict[str, object]] = {"model": {"depth": 3, "width": 32}, "data": {"batch_size": 64}}
    for section, values in changes.items():
        raw.setdefault(section, {}).update(values)
    spec = parse(raw)
    p = theory.predict(spec)
    assert not p.available and p.reason is not None and reason in p.reason
    comparisons = theory.compare(run_probe(spec), p)
    assert all(c.expected_std is None and c.std_z is None and not c.departs for c in comparisons)


def test_trunc_normal_variance_is_the_truncated_one() -> None:
    # cut at +-2 std: variance factor 1 - 2 * 2 phi(2) / (2 Phi(2) - 1)
    m = inits.moments(
        "trunc_normal", {"std": 1.0, "mean": 0.0, "a": None, "b": None}, inits.InitContext(), (10, 10), 10
    )
    assert m is not None
    phi2 = math.exp(-2) / math.sqrt(2 * math.pi)
    assert m.var == pytest.approx(1 - 4 * phi2 / math.erf(2 / math.sqrt(2)), rel=1e-12)


# ---- theory beside measurement ---------------------------------------------------------------

WIDE = {"input_dim": 256, "width": 1024, "depth": 3}


@pytest.mark.parametrize(
    ("activation", "weight"),
    [("relu", "he_normal"), ("tanh", "xavier_normal"), ("gelu", "default"), ("sigmoid", "large")],
    ids=lambda v: str(v),
)
def test_wide_network_matches_within_sampling_error(activation: str, weight: str) -> None:
    spec = parse(
        {
            "model": {**WIDE, "activation": activation},
            "init": {"weight": weight, "bias": "zeros"},
            "data": {"batch_size": 512},
            "run": {"seed": 3},
        }
    )
    report = run_probe(spec)
    prediction = theory.predict(spec)
    for c in theory.compare(report, prediction):
        assert c.std_z is not None and c.std_z <= theory.DEPARTURE_Z, c
        assert c.grad_z is not None and c.grad_z <= theory.DEPARTURE_Z, c
        assert not c.departs


def test_prediction_follows_init_rules() -> None:
    """A rule that fills one layer with N(0, 1) changes that layer's prediction (issue 12, item 10),
    and a rule's depth factor counts too: the measured network matches the prediction."""
    rules = [
        {"match": {"name": "linear2"}, "weight": "large"},
        {"match": {"name": "linear3"}, "weight": {"name": "he_normal", "depth_scale": 4}},
    ]
    model = {**WIDE, "activation": "tanh"}
    init = {"weight": "xavier_normal", "bias": "zeros"}
    spec = parse({"model": model, "init": {**init, "rules": rules}, "data": {"batch_size": 512}, "run": {"seed": 3}})
    plain = theory.predict(parse({"model": model, "init": init}))
    p = theory.predict(spec)
    assert p.available
    assert p.layers[0].sigma_w2 == pytest.approx(plain.layers[0].sigma_w2)  # xavier, as init.weight says
    assert p.layers[1].sigma_w2 == pytest.approx(WIDE["width"] * 1.0)  # N(0, 1): fan_in * 1
    assert p.layers[2].sigma_w2 == pytest.approx((5 / 3) ** 2 / 4)  # He with tanh's gain, / sqrt(4) squared
    comparisons = theory.compare(run_probe(spec), p)
    assert theory.departures(comparisons) == [], comparisons


def test_the_mean_of_relu_matters_beyond_sampling_error() -> None:
    """The measured std is over all values, mean included: the root mean square would be wrong."""
    spec = parse({"model": {**WIDE, "activation": "relu"}, "init": {"weight": "he"}, "data": {"batch_size": 512}})
    report = run_probe(spec)
    t = theory.predict(spec).layers[-1]
    rms = math.sqrt(t.expected_std**2 + t.expected_mean**2)
    assert abs(report.last.std - rms) > 3 * t.std_error
    assert abs(report.last.std - t.expected_std) <= 3 * t.std_error


def test_a_wrong_prediction_is_flagged() -> None:
    spec = parse({"model": {"depth": 2, "width": 256}, "init": {"weight": "he"}, "data": {"batch_size": 512}})
    report = run_probe(spec)
    p = theory.predict(spec)
    doubled = theory.Prediction(
        layers=tuple(
            theory.LayerTheory(**{**t.__dict__, "expected_std": 2 * t.expected_std, "std_error": t.std_error})
            for t in p.layers
        )
    )
    assert theory.departures(theory.compare(report, doubled)) == ["layer1", "layer2"]
    assert theory.departures(theory.compare(report, p)) == []


# ---- CLI --------------------------------------------------------------------------------------

runner = CliRunner()


def test_run_theory_json_has_the_expected_keys() -> None:
    result = runner.invoke(app, ["run", "configs/lab1_xavier_tanh.yaml", "--theory", "-f", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["format"] == "probe.report/1"
    assert data["theory"]["available"] is True and data["theory"]["departures"] == []
    for row in data["layers"]:
        assert row["expected_std"] > 0 and row["std_error"] > 0 and row["expected_grad_std"] > 0
        assert abs(row["std"] - row["expected_std"]) <= 3 * row["std_error"]


def test_run_theory_table_and_no_prediction() -> None:
    result = runner.invoke(app, ["run", "configs/lab1_xavier_tanh.yaml", "--theory"])
    assert result.exit_code == 0, result.output
    assert "expected" in result.stdout and "within 3 standard errors" in result.stdout
    result = runner.invoke(
        app, ["run", "configs/lab1_he_relu.yaml", "--theory", "-f", "json", "--set", "model.norm=layernorm"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["theory"]["available"] is False and "normalization" in data["theory"]["reason"]
    assert all(row["expected_std"] is None for row in data["layers"])


def test_run_without_theory_keeps_the_plain_report() -> None:
    result = runner.invoke(app, ["run", "configs/lab1_he_relu.yaml", "-f", "json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert "theory" not in data and "expected_std" not in data["layers"][0]


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["configs/cnn_he.yaml", "--set", "model.depth=2", "--set", "data.batch_size=4"], "model.kind 'conv'"),
        (["--model", "tests.models_for_tests:awkward", "--input-shape", "3,8,8"], "a user model (model.import)"),
    ],
    ids=["conv", "user-model"],
)
def test_cli_theory_without_a_prediction_shows_the_run_table_and_the_reason(args: list[str], reason: str) -> None:
    # wide enough for the user model's type and role columns (tables that fit 80 columns: issue 11)
    result = runner.invoke(app, ["run", *args, "--theory"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert f"theory: no prediction for {reason}" in text
    assert "grad std" in text and "expected" not in text  # the measured table, no empty prediction columns
    data = json.loads(runner.invoke(app, ["run", *args, "--theory", "-f", "json"]).stdout)
    assert data["theory"]["available"] is False and all(x["expected_std"] is None for x in data["layers"])
    markdown = runner.invoke(app, ["run", *args, "--theory", "-f", "markdown"]).stdout
    assert f"theory: no prediction for {reason}" in markdown and "| expected" not in markdown


def test_cli_theory_csv_with_rows_that_have_no_init_rule() -> None:
    # a GRU's per-step rows have no weight (no init_rule), its cell rows do
    result = runner.invoke(app, ["run", "configs/gru.yaml", "--set", "data.batch_size=4", "--theory", "-f", "csv"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = lines[0].split(",")
    assert "init_rule" in header and "expected_std" in header
    assert all(len(line.split(",")) == len(header) for line in lines[1:])
