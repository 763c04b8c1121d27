"""probe.measure(model, inputs) on a model object: the same numbers as the CLI's user-model path,
every kind of input, the options, the Report object, and the caller's model left as found."""

from __future__ import annotations

import io
import json
import math
import random
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import probe
from probe.api import Image, Report, measure
from probe.errors import ProbeError, SpecError
from tests import models_for_tests as mft
from tests.conftest import REPO


def small_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))


def bn_dropout_net() -> nn.Module:
    """BatchNorm (running statistics change in train mode) and dropout (draws random numbers)."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 2))


# ---- the same path as the CLI ------------------------------------------------------------------


def test_same_numbers_as_the_cli_user_model_path(cli: Any) -> None:
    result = cli("run", "--model", "tests.models_for_tests:awkward", "--input-shape", "3,8,8", "--format", "json")
    assert result.exit_code == 0, result.output
    expected = json.loads(result.stdout)
    torch.manual_seed(0)  # the CLI builds the factory's model under run.seed 0
    report = measure(mft.awkward(), (3, 8, 8))
    got = report.to_dict()
    assert got["format"] == "probe.report/1"
    # the same weights, inputs and statistics; the CLI may run a different number of threads, so
    # float32 sums may add in another order: agreement to float32 rounding, not bit for bit
    assert len(got["layers"]) == len(expected["layers"])
    for ours, theirs in zip(got["layers"], expected["layers"], strict=True):
        assert ours.keys() == theirs.keys()
        for key, value in theirs.items():
            assert ours[key] == (pytest.approx(value, rel=1e-5, abs=1e-9) if isinstance(value, float) else value)
    assert got["verdict"]["healthy"] == expected["verdict"]["healthy"]
    assert [p["rule"] for p in got["verdict"]["problems"]] == [p["rule"] for p in expected["verdict"]["problems"]]


def test_report_attributes_match_its_json() -> None:
    report = measure(small_mlp(), torch.randn(32, 8))
    doc = json.loads(report.to_json())
    assert [x.name for x in report.layers] == [row["name"] for row in doc["layers"]] == ["0", "1", "2", "3", "4"]
    for layer, row in zip(report.layers, doc["layers"], strict=True):
        for key, value in row.items():
            assert getattr(layer, key) == value, key
    assert report.healthy is report.verdict.healthy is doc["verdict"]["healthy"]
    assert report.layer("2").units == 16
    with pytest.raises(KeyError, match="layers: 0, 1, 2, 3, 4"):
        report.layer("nope")


def test_problems_carry_rule_layer_value_threshold_message() -> None:
    report = measure(small_mlp(), torch.randn(32, 8), gate={"min_std": 100.0})
    assert not report.verdict.healthy
    vanishing = [p for p in report.verdict.problems if p.rule == "vanishing"]
    assert vanishing and vanishing[0].threshold == 100.0
    first = vanishing[0]
    assert first.value == pytest.approx(report.layer(first.layer).std) and first.value < 100.0
    assert any(line.startswith(f"vanishing at {first.layer}: value ") for line in report.verdict_lines())


# ---- inputs --------------------------------------------------------------------------------------


def test_every_kind_of_input() -> None:
    tensor = measure(small_mlp(), torch.randn(16, 8))
    assert tensor.spec.data.batch_size == 16 and tensor.layers[0].count == 16 * 16
    shape = measure(small_mlp(), (8,), batch_size=24)
    assert shape.layers[0].count == 24 * 16
    fn = measure(small_mlp(), lambda n: torch.randn(n, 8), batch_size=10, batches=3)
    assert fn.layers[0].count == 3 * 10 * 16
    x = torch.randn(12, 8)
    assert measure(small_mlp(), (x,)).to_dict()["layers"] == measure(small_mlp(), x).to_dict()["layers"]
    as_dict = measure(mft.two_inputs(), mft.make_two_inputs(12))  # keyword-only argument
    assert [x.name for x in as_dict.layers] == ["a", "b"]
    assert as_dict.spec.data.batch_size == 12 and as_dict.layers[0].count == 12 * 8


def test_token_ids_for_a_shape_with_vocab_size() -> None:
    report = measure(mft.token_lstm(vocab=20, width=8), (6,), vocab_size=20, batch_size=8)
    assert report.spec.model.vocab_size == 20
    assert report.layers and all(math.isfinite(x.std) for x in report.layers)


def test_callable_inputs_drawing_from_torch_are_reproducible() -> None:
    a = measure(small_mlp(), lambda n: torch.randn(n, 8), batch_size=16, seed=3)
    b = measure(small_mlp(), lambda n: torch.randn(n, 8), batch_size=16, seed=3)
    c = measure(small_mlp(), lambda n: torch.randn(n, 8), batch_size=16, seed=4)
    assert a.to_dict()["layers"] == b.to_dict()["layers"] != c.to_dict()["layers"]


@pytest.mark.parametrize(
    ("inputs", "options", "error", "match"),
    [
        (None, {}, SpecError, "inputs: give a tensor"),
        ("text", {}, SpecError, "cannot feed a str"),
        ((8,), {"batchsize": 4}, SpecError, "unknown option 'batchsize'.*did you mean 'batch_size'"),
        ((8,), {"batch_size": 1}, SpecError, "data.batch_size: must be >= 2"),
        ((8,), {"gate": {"min_sdt": 1}}, SpecError, "did you mean 'min_std'"),
        ((5,), {}, ProbeError, "the model rejected its inputs"),
        (lambda n: 1 / 0, {}, ProbeError, r"inputs: .*raised ZeroDivisionError"),
    ],
    ids=["none", "string", "unknown-option", "batch-of-1", "gate-typo", "wrong-shape", "failing-fn"],
)
def test_bad_inputs_and_options_are_one_line_errors(inputs: Any, options: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        measure(small_mlp(), inputs, **options)


# ---- options -------------------------------------------------------------------------------------


def test_options_backward_batches_layers_and_seed() -> None:
    forward_only = measure(small_mlp(), (8,), batch_size=16, backward=False)
    assert all(x.grad_std is None for x in forward_only.layers)
    only = measure(small_mlp(), (8,), batch_size=16, layers="[24]")
    assert [x.name for x in only.layers] == ["2", "4"]
    same = [measure(small_mlp(), (8,), batch_size=16, seed=s).layers[0].std for s in (5, 5, 6)]
    assert same[0] == same[1] != same[2]


def test_another_dtype_probes_a_copy_and_leaves_the_model_as_it_was() -> None:
    model = small_mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = measure(model, (8,), batch_size=16, dtype=torch.float64, device=torch.device("cpu"))
    assert report.stats.dtype == "float64" and report.spec.run.dtype == "float64"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_spec_path_or_spec_object_also_works() -> None:
    path = REPO / "configs" / "lab1_he_relu.yaml"
    by_path = measure(path, batch_size=32, device="cpu")
    by_spec = measure(probe.load(path), batch_size=32, device="cpu")
    assert by_path.to_dict()["layers"] == by_spec.to_dict()["layers"]
    assert by_path.spec.data.batch_size == 32
    with pytest.raises(SpecError, match="inputs with a model object only"):
        measure(path, torch.randn(4, 32))


def test_theory_for_a_spec_and_its_reason_for_a_model_object() -> None:
    spec_report = measure(REPO / "configs" / "lab1_he_relu.yaml", theory=True, batch_size=64, device="cpu")
    assert spec_report.prediction is not None and spec_report.prediction.available
    assert "expected_std" in json.dumps(spec_report.to_dict())
    obj = measure(small_mlp(), (8,), batch_size=16, theory=True)
    assert obj.prediction is not None and not obj.prediction.available
    assert "user model" in (obj.prediction.reason or "")


# ---- the caller's model, as found --------------------------------------------------------------


def test_weights_and_buffers_are_unchanged_after_a_train_mode_run() -> None:
    model = bn_dropout_net().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    measure(model, torch.randn(32, 8), batches=3)
    after = model.state_dict()
    assert after["1.num_batches_tracked"] == 0  # four forward passes in train mode would count 4
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_gradients_are_left_as_found() -> None:
    model = small_mlp()
    marks = {name: torch.full_like(p, 7.0) for name, p in model.named_parameters()}
    for name, p in model.named_parameters():
        p.grad = marks[name].clone()
    model[4].bias.grad = None  # a mix of set and unset gradients
    measure(model, torch.randn(16, 8))
    for name, p in model.named_parameters():
        if name == "4.bias":
            assert p.grad is None
        else:
            assert torch.equal(p.grad, marks[name]), name


def test_train_and_eval_flags_of_every_submodule_are_kept() -> None:
    model = bn_dropout_net().train()
    model[1].eval()  # a frozen BatchNorm inside a model in train mode
    flags = [m.training for m in model.modules()]
    report = measure(model, torch.randn(32, 8))
    assert [m.training for m in model.modules()] == flags
    assert report.layers
    model.eval()
    measure(model, torch.randn(32, 8))
    assert not any(m.training for m in model.modules())


class Recorder(nn.Module):
    """A layer that remembers the train/eval flag of each forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(self.training)
        return self.lin(x)


def mixed_mode_net() -> nn.Module:
    """A model in train mode whose last layer is in eval (importable as a --model factory)."""
    net = nn.Sequential(Recorder(), nn.ReLU(), Recorder()).train()
    net[2].eval()
    return net


def test_each_submodule_is_measured_in_the_mode_it_was_left_in() -> None:
    net = mixed_mode_net()
    measure(net, (8,), batch_size=4, batches=2)
    # the discovery pass runs in eval; the two measured batches in the caller's modes
    assert net[0].seen == [False, True, True]
    assert net[2].seen == [False, False, False]


def test_a_factory_models_modes_survive_discovery(make_spec: Any) -> None:
    from probe.model.build import build

    built = build(make_spec(model={"import": "tests.test_api:mixed_mode_net", "input_shape": [8]}))
    assert [m.training for m in built.model] == [True, True, False]


def test_no_hooks_are_left_and_the_callers_own_hooks_stay() -> None:
    model = small_mlp()
    seen: list[int] = []
    handle = model[0].register_forward_hook(lambda m, i, o: seen.append(1))

    def hook_counts() -> list[int]:
        return [
            len(m._forward_hooks)
            + len(m._forward_pre_hooks)
            + len(m._backward_hooks)
            + len(m._forward_hooks_with_kwargs)
            for m in model.modules()
        ]

    counts = hook_counts()
    measure(model, torch.randn(16, 8))
    assert hook_counts() == counts
    assert seen  # the caller's hook ran during the probe and is still registered
    handle.remove()
    assert sum(hook_counts()) == 0


def test_global_random_state_is_restored() -> None:
    model = bn_dropout_net().train()
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    torch_state, py_state, np_state = torch.get_rng_state(), random.getstate(), np.random.get_state()

    def noisy_inputs(n: int) -> torch.Tensor:
        random.random()
        np.random.rand()
        return torch.randn(n, 8)

    measure(model, noisy_inputs, batch_size=16, batches=2)  # dropout draws too
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert random.getstate() == py_state
    restored = np.random.get_state()
    assert restored[0] == np_state[0] and np.array_equal(restored[1], np_state[1]) and restored[2:] == np_state[2:]


def test_the_model_is_left_as_found_when_the_forward_pass_fails() -> None:
    model = bn_dropout_net().train()
    model[1].eval()
    flags = [m.training for m in model.modules()]
    calls = {"n": 0}

    def inputs(n: int) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] > 1:  # discovery passes, the measured batch fails
            raise RuntimeError("data loader broke")
        return torch.randn(n, 8)

    with pytest.raises(ProbeError):
        measure(model, inputs, batch_size=8)
    assert [m.training for m in model.modules()] == flags
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


# ---- showing the report ------------------------------------------------------------------------


def test_rich_text_html_and_repr_show_the_table() -> None:
    report = measure(small_mlp(), torch.randn(32, 8), gate={"min_std": 100.0})
    text = report.text(width=120)
    assert "verdict: UNHEALTHY: vanishing" in text and "layer" in text
    assert repr(report).startswith("<probe.Report Sequential: 5 layers, UNHEALTHY: vanishing")
    from rich.console import Console
    from rich.terminal_theme import DEFAULT_TERMINAL_THEME

    html = report._repr_html_()
    # the terminal prints the verdict in rich's "bold red" and healthy rows in "green": the page
    # uses the same palette entries (ANSI red = 1, green = 2 in the theme rich exports with)
    red, green = (DEFAULT_TERMINAL_THEME.ansi_colors[i].hex for i in (1, 2))
    assert f"color: {red}" in html and "verdict: UNHEALTHY: vanishing" in html
    console = Console(file=io.StringIO(), force_terminal=True, color_system="truecolor", width=120)
    console.print(report)  # the rich renderable: what a terminal shows
    assert "\x1b[1;31mverdict: UNHEALTHY" in console.file.getvalue()
    healthy = measure(small_mlp(), torch.randn(32, 8))
    assert f"color: {green}" in healthy._repr_html_()


def test_plot_writes_a_file_or_returns_svg(tmp_path: Any) -> None:
    pytest.importorskip("matplotlib")
    report = measure(small_mlp(), torch.randn(16, 8))
    out = report.plot(tmp_path / "layers.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = report.plot()
    assert isinstance(image, Image) and image._repr_svg_().startswith("<svg")


def test_report_is_a_plain_frozen_object() -> None:
    report = measure(small_mlp(), torch.randn(16, 8))
    assert isinstance(report, Report)
    with pytest.raises(AttributeError):
        report.verdict = report.verdict  # type: ignore[misc]


def test_probe_measure_is_callable_whatever_was_imported_first() -> None:
    code = (
        "import probe, sys\n"
        "assert 'torch' not in sys.modules\n"
        "import probe.measurement.run\n"  # the stage package is set as probe.measure ...
        "import torch\n"
        "r = probe.measure(torch.nn.Sequential(torch.nn.Linear(4, 2)), (4,), batch_size=8)\n"  # ... callable
        "print(type(r).__name__, probe.measurement.run.run_probe.__name__, r.layers[0].units)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.split() == ["Report", "run_probe", "2"]


def test_measure_from_two_threads_gives_what_each_call_gives_alone() -> None:
    """Concurrent calls take turns: the reports equal sequential ones, the caller's random state and
    a shared model's train/eval flags are left as they were."""
    import threading

    from torch import nn

    torch.manual_seed(0)
    shared = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Dropout(0.1), nn.Linear(32, 8))
    shared.eval()
    other = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    alone = [probe.measure(m, (16,), batch_size=64, batches=3).to_dict()["layers"] for m in (shared, other, shared)]
    state = torch.get_rng_state()
    results: dict[int, Any] = {}
    errors: list[BaseException] = []

    def work(i: int, model: Any) -> None:
        try:
            results[i] = probe.measure(model, (16,), batch_size=64, batches=3).to_dict()["layers"]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i, m)) for i, m in enumerate((shared, other, shared))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert [results[i] for i in range(3)] == alone
    assert torch.equal(torch.get_rng_state(), state)
    assert not shared.training and all(not m.training for m in shared.modules())
