"""--tensorboard DIR on run, compare, sweep and train: event files read back with TensorBoard's own
reader hold the numbers the JSON output holds."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from probe.render.tensorboard import folder_names
from tests.conftest import CONFIGS

SMALL = ["--set", "data.batch_size=32", "--set", "run.device=cpu", "--set", "model.width=16", "--set", "model.depth=4"]


def events(folder: Path) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalars(acc: EventAccumulator, tag: str) -> dict[int, float]:
    return {e.step: e.value for e in acc.Scalars(tag)}


def test_run_writes_layer_scalars_and_histograms(cli: Any, tmp_path: Path) -> None:
    tb = tmp_path / "tb"
    result = cli("run", str(CONFIGS / "lab1_he_relu.yaml"), *SMALL, "--format", "json", "--tensorboard", str(tb))
    assert result.exit_code == 0, result.output
    assert f"wrote {tb / 'lab1_he_relu'}" in result.stderr
    doc = json.loads(result.stdout)
    acc = events(tb / "lab1_he_relu")
    for field in ("std", "mean", "zero_ratio", "correlation", "grad_std", "weight_grad_norm"):
        got = scalars(acc, f"layers/{field}")
        want = {row["index"]: row[field] for row in doc["layers"]}
        assert got.keys() == want.keys()
        for step, value in want.items():  # event files hold float32
            assert got[step] == pytest.approx(value, rel=1e-6, abs=1e-30), (field, step)
    assert scalars(acc, "summary/healthy") == {0: 1.0}
    hists = {e.step: e.histogram_value for e in acc.Histograms("activations/log10_abs")}
    assert sorted(hists) == [row["index"] for row in doc["layers"]]
    for row in doc["layers"]:
        # every nonzero value of the (single) batch lands in a bin: ReLU zeros have no logarithm
        per_batch = row["units"] * 32
        assert hists[row["index"]].num == pytest.approx(per_batch * (1 - row["zero_ratio"]), rel=1e-6)
        assert -12 <= hists[row["index"]].min < hists[row["index"]].max <= 4


def test_compare_writes_one_folder_per_entry(cli: Any, tmp_path: Path) -> None:
    tb = tmp_path / "tb"
    args = ["compare", "he:relu", "xavier:tanh", "--depth", "3", "--width", "16", "--batch-size", "32"]
    result = cli(*args, "--device", "cpu", "--format", "json", "--tensorboard", str(tb))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert sorted(p.name for p in tb.iterdir()) == ["he_relu", "xavier_tanh"]
    for run, folder in zip(doc["runs"], ["he_relu", "xavier_tanh"], strict=True):
        stds = scalars(events(tb / folder), "layers/std")
        assert [stds[row["index"]] for row in run["layers"]] == pytest.approx([row["std"] for row in run["layers"]])


def test_sweep_writes_last_std_against_depth(cli: Any, tmp_path: Path) -> None:
    tb = tmp_path / "tb"
    args = ["sweep", "--depth", "2,5", "he", "--set", "model.width=16", "--set", "data.batch_size=32"]
    result = cli(*args, "--set", "run.device=cpu", "--format", "json", "--tensorboard", str(tb))
    assert result.exit_code == 0, result.output
    cells = json.loads(result.stdout)["cells"]
    last = scalars(events(tb / "he"), "sweep/last_std")
    assert last == pytest.approx({c["depth"]: c["last_std"] for c in cells})
    per_layer = scalars(events(tb / "he" / "depth5_width16"), "layers/std")
    assert sorted(per_layer) == [1, 2, 3, 4, 5]


def test_train_writes_the_loss_curve(cli: Any, tmp_path: Path) -> None:
    tb = tmp_path / "tb"
    result = cli("train", "he", "--steps", "4", "--format", "json", "--tensorboard", str(tb))
    assert result.exit_code == 0, result.output
    run = json.loads(result.stdout)["runs"][0]
    loss = scalars(events(tb / "he"), "train/loss")
    assert loss[0] == pytest.approx(run["start_loss"]) and loss[max(loss)] == pytest.approx(run["end_loss"])
    assert sorted(loss) == list(range(5))  # before each of 4 steps, then after the last


def test_a_file_in_place_of_the_folder_is_exit_2(cli: Any, tmp_path: Path) -> None:
    taken = tmp_path / "file"
    taken.write_text("")
    result = cli("run", str(CONFIGS / "lab1_he_relu.yaml"), *SMALL, "--tensorboard", str(taken))
    assert result.exit_code == 2 and "--tensorboard: " in result.stderr and "is a file" in result.stderr


def test_without_tensorboard_installed_the_hint_is_exit_2(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import -> ImportError
    result = cli("run", str(CONFIGS / "lab1_he_relu.yaml"), *SMALL, "--tensorboard", str(tmp_path / "tb"))
    assert result.exit_code == 2 and "pip install 'probe[tensorboard]'" in result.stderr
    assert not (tmp_path / "tb").exists()


def test_folder_names_are_safe_and_distinct() -> None:
    assert folder_names(["xavier:tanh", "xavier:tanh", "a/b", "..", "ok-1.2_x"]) == [
        "xavier_tanh",
        "xavier_tanh_2",
        "a_b",
        "run",
        "ok-1.2_x",
    ]


def test_a_file_where_the_runs_folder_goes_is_refused_before_the_run(cli: Any, tmp_path: Path) -> None:
    tb = tmp_path / "tb"
    tb.mkdir()
    (tb / "lab1_he_relu").write_text("not a folder")
    result = cli("run", str(CONFIGS / "lab1_he_relu.yaml"), *SMALL, "--tensorboard", str(tb))
    assert result.exit_code == 2
    assert f"{tb / 'lab1_he_relu'} is a file where the run's folder goes" in result.output


def test_a_long_run_name_gets_a_short_distinct_folder(cli: Any, tmp_path: Path) -> None:
    tb = tmp_path / "tb"
    names = folder_names(["x" * 300 + "a", "x" * 300 + "b"])
    assert all(len(n) <= 100 for n in names) and names[0] != names[1]
    result = cli(
        "run", str(CONFIGS / "lab1_he_relu.yaml"), *SMALL, "--set", f"name={'n' * 300}", "--tensorboard", str(tb)
    )
    assert result.exit_code == 0, result.output
    (folder,) = tb.iterdir()
    assert len(folder.name) <= 100


def test_a_folder_that_fails_after_the_run_keeps_the_report_and_says_why(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written after -o: the report is there, and the failure is one line, exit 3."""
    from probe.render import tensorboard

    class Refusing:
        def __init__(self, log_dir: str) -> None:
            raise PermissionError(13, "Permission denied", log_dir)

    out = tmp_path / "report.json"
    tb = tmp_path / "tb"
    real = tensorboard.writer_class
    calls = iter([real, lambda: Refusing])  # the check before the run sees tensorboard; the write does not

    monkeypatch.setattr(tensorboard, "writer_class", lambda: next(calls)())
    result = cli(
        "run", str(CONFIGS / "lab1_he_relu.yaml"), *SMALL, "-f", "json", "-o", str(out), "--tensorboard", str(tb)
    )
    assert result.exit_code == 3, result.output
    assert f"--tensorboard: cannot write {tb}: Permission denied" in result.output
    assert json.loads(out.read_text())["verdict"]["healthy"] is True
