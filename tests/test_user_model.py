"""``probe run --model module:factory``: models written elsewhere, with the features that break
naive hooks (in-place ops, reused modules, functional activations, BatchNorm, dict/tuple outputs,
eval mode), token and function inputs, ``--layers``, the summarized table and exit-2 errors.

The models live in ``tests/models_for_tests.py``; the CLI runs from the repository root.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from probe.cli import app

# Tiny networks on a shared machine: one intra-op thread avoids oversubscription (a 40x slowdown
# was measured under load) and changes no result beyond float rounding.
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
M = "tests.models_for_tests"
SMALL = ["--set", "data.batch_size=8", "--set", "run.device=cpu"]


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def probe(*args: str) -> Any:
    return CliRunner().invoke(app, ["run", *args], env={"COLUMNS": "200"})


def probe_json(*args: str) -> dict[str, Any]:
    result = probe(*args, *SMALL, "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in report["layers"]}


def test_awkward_model_with_dict_output() -> None:
    report = probe_json("--model", f"{M}:awkward", "--input-shape", "3,8,8")
    by_name = rows(report)
    # every module with parameters, every activation module and every repeated block that ran, in
    # the order they finished (issue 14: a block's output is the stream, so it gets a row)
    assert list(by_name) == [
        "stem",
        "blocks.0.conv",
        "blocks.0.bn",
        "blocks.0.relu",
        "blocks.0",
        "blocks.1.conv",
        "blocks.1.bn",
        "blocks.1.relu",
        "blocks.1",
        "head",
    ]
    assert [by_name[n]["role"] for n in ("stem", "blocks.0.conv", "blocks.0.bn", "blocks.0.relu", "blocks.0")] == [
        "stream",
        "branch",
        "norm",
        "activation",
        "stream",
    ]
    assert by_name["head"]["role"] == "head"
    # the reused conv pools both calls: 2 x (8 samples x 4 channels x 8 x 8) values
    assert by_name["blocks.0.conv"]["module_type"] == "Conv2d"
    # BatchNorm in train mode normalizes with the batch statistics: std 1 up to n/(n-1)
    assert by_name["blocks.0.bn"]["std"] == pytest.approx(1.0, abs=0.01)
    # the in-place ReLU zeroes about half of its (symmetric) input
    assert 0.3 < by_name["blocks.0.relu"]["zero_ratio"] < 0.7
    # every row got a gradient: the loss used both floating-point outputs (logits, features)
    assert all(r["grad_std"] and r["grad_std"] > 0 for r in report["layers"])
    notes = " ".join(report["notes"])
    assert "blocks.0.conv runs 2 times" in notes
    assert "not watched: unused" in notes
    assert by_name["stem"]["init_rule"] == "own"


def test_in_place_ops_measure_the_same_as_out_of_place() -> None:
    # the same weights, inputs and directions with nn.ReLU(inplace=False) and `out = out + x`:
    # hooks must see identical values and gradients (the hook's gradient is with respect to the
    # value the module returned, before the in-place op changed it)
    args = ["--model", f"{M}:awkward", "--input-shape", "3,8,8", "--set", "run.dtype=float64"]
    inplace = rows(probe_json(*args))
    plain = rows(probe_json(*args, "--model-arg", "inplace=false"))
    assert list(inplace) == list(plain)
    for name, row in inplace.items():
        for key in ("mean", "std", "zero_ratio", "grad_std", "weight_grad_norm"):
            expected = plain[name][key]
            assert row[key] == (None if expected is None else pytest.approx(expected, rel=1e-9, abs=1e-12)), (name, key)


def test_tuple_output_and_factory_kwargs() -> None:
    report = probe_json(
        "--model", f"{M}:awkward", "--model-arg", "output=tuple", "--model-arg", "classes=3", "--input-shape", "3,8,8"
    )
    assert rows(report)["head"]["units"] == 3


def test_eval_mode_model_keeps_its_mode() -> None:
    # in eval mode BatchNorm uses its running statistics (mean 0, var 1 at init): the output is
    # not renormalized to std 1 as in train mode
    report = probe_json("--model", f"{M}:awkward_eval", "--input-shape", "3,8,8")
    assert abs(rows(report)["blocks.0.bn"]["std"] - 1.0) > 0.05


def test_token_inputs_and_tuple_returning_lstm() -> None:
    report = probe_json("--model", f"{M}:token_lstm", "--set", "model.vocab_size=50", "--set", "model.seq_len=6")
    by_name = rows(report)
    assert list(by_name) == ["embed", "lstm", "head"]
    assert by_name["lstm"]["units"] == 8 and by_name["lstm"]["grad_std"] > 0


def test_inputs_function_with_keyword_arguments() -> None:
    report = probe_json("--model", f"{M}:two_inputs", "--inputs", f"{M}:make_two_inputs")
    assert set(rows(report)) == {"a", "b"}


def test_modules_run_under_torch_vmap_are_noted_not_measured() -> None:
    # their outputs are vmap's batched wrappers (in-place and out= ops have no batching rule there,
    # and their values are one sample's): the probe runs, the rows outside the transform are
    # measured and the note says why the others are not
    report = probe_json("--model", f"{M}:vmapped_mixer", "--input-shape", "4,8")
    by_name = rows(report)
    assert set(by_name) == {"embed", "head"}
    assert by_name["embed"]["grad_std"] > 0 and by_name["head"]["std"] > 0
    notes = " ".join(report["notes"])
    assert "mix.0 (Linear) not watched: it runs under a function transform (torch.vmap" in notes


def test_spec_file_with_model_import(tmp_path: Path) -> None:
    spec = tmp_path / "user.yaml"
    spec.write_text(
        f"model:\n  import: {M}:awkward\n  kwargs: {{channels: 6}}\n  input_shape: [3, 8, 8]\n"
        "init:\n  rules:\n    - {match: {type: Conv2d}, weight: he_normal}\n"
    )
    report = probe_json(str(spec))
    assert rows(report)["stem"]["units"] == 6
    assert rows(report)["stem"]["init_rule"] == "init.rules[0] he_normal"
    assert rows(report)["head"]["init_rule"] == "own"


def test_layers_filter_keeps_matching_rows() -> None:
    report = probe_json("--model", f"{M}:awkward", "--input-shape", "3,8,8", "--layers", "blocks.1.*")
    assert list(rows(report)) == ["blocks.1.conv", "blocks.1.bn", "blocks.1.relu"]
    report = probe_json("--model", f"{M}:awkward", "--input-shape", "3,8,8", "--layers", "bn")
    assert list(rows(report)) == ["blocks.0.bn", "blocks.1.bn"]


def test_large_models_get_a_summarized_table() -> None:
    args = ["--model", f"{M}:deep_tanh_mlp", "--input-shape", "16", *SMALL]
    summarized, full = probe(*args), probe(*args, "--all-layers")
    assert summarized.exit_code == 0 and full.exit_code == 0, summarized.output
    assert "showing" in summarized.stdout and "of 120 layers" in summarized.stdout
    assert "showing" not in full.stdout
    # 120 rows (60 Linear + 60 Tanh) in the full table; the summary keeps first, last and extremes
    assert full.stdout.count("│ Tanh") == 60
    assert summarized.stdout.count("│") < full.stdout.count("│")
    names = [line.split(" ", 1)[0] for line in summarized.stdout.splitlines()]
    assert "0" in names and "119" in names  # the first and last rows are always kept


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "no_such_pkg.mod:f", "--input-shape", "3"], "model.import: cannot import 'no_such_pkg.mod'"),
        (["--model", f"{M}:awkwrd", "--input-shape", "3"], "has no attribute 'awkwrd'; did you mean 'awkward'"),
        (["--model", f"{M}", "--input-shape", "3"], "expected 'package.module:factory'"),
        (
            ["--model", f"{M}:failing", "--model-arg", "size=7", "--input-shape", "3"],
            "raised ValueError: cannot build a model of size 7",
        ),
        (["--model", f"{M}:not_a_module", "--input-shape", "3"], "returned a str, not an nn.Module"),
        (["--model", f"{M}:awkward", "--input-shape", "5,8,8"], "the model rejected its inputs (shape [5, 8, 8])"),
        (["--model", f"{M}:awkward"], "a user model needs its inputs"),
        (["--model", f"{M}:awkward", "--input-shape", "3,x"], "model.input_shape: expected comma-separated integers"),
        (["--model", f"{M}:two_inputs", "--inputs", f"{M}:nothing"], "model.inputs: 'tests.models_for_tests' has no"),
        (["--model", f"{M}:awkward", "--input-shape", "3,8,8", "--layers", "zzz"], "--layers 'zzz' matches no layer"),
        ([], "give a SPEC.yaml, --model MODULE:FACTORY or --hf"),
        (["--model", f"{M}:all_vmapped", "--input-shape", "4,8"], "outside torch.vmap (3 ran only inside a function"),
        (
            ["--model", f"{M}:vmapped_mixer", "--input-shape", "4,8", "--layer-by-layer"],
            "--layer-by-layer: the model calls block mix.0 inside torch.vmap",
        ),
    ],
    ids=[
        "no-module",
        "typo",
        "no-colon",
        "factory-raises",
        "not-module",
        "bad-shape",
        "no-inputs",
        "shape-syntax",
        "inputs-missing",
        "layers-none",
        "nothing",
        "all-under-vmap",
        "layer-by-layer-vmap",
    ],
)
def test_user_errors_exit_2_with_one_clear_line(args: list[str], message: str) -> None:
    result = probe(*args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_python_m_probe_imports_from_the_working_directory() -> None:
    import subprocess
    import sys

    env = {**os.environ, "COLUMNS": "200"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "probe",
            "run",
            "--model",
            f"{M}:two_inputs",
            "--inputs",
            f"{M}:make_two_inputs",
            "-f",
            "csv",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith("run,name,")


def test_summary_keeps_first_last_offenders_and_stays_bounded() -> None:
    from probe import spec as spec_mod
    from probe.judge.rules import evaluate
    from probe.measurement.run import run_probe
    from probe.render import report as rp

    # an exploding 60-block residual stack: most rows break a rule, the summary stays short
    spec = spec_mod.parse(
        {"model": {"kind": "residual", "depth": 60, "width": 8}, "data": {"batch_size": 8}, "run": {"dtype": "float64"}}
    )
    report = run_probe(spec)
    verdict = evaluate(report)
    shown = [x.name for x in rp.summary_layers(report, verdict, limit=20)]
    assert len(report.layers) == 61 and len(shown) <= 20 + len(verdict.problems)
    assert shown[0] == "stem" and shown[-1] == "block60"
    assert {p.layer for p in verdict.problems} <= set(shown)
    assert [x.name for x in rp.summary_layers(report, verdict, limit=100)] == [x.name for x in report.layers]


def test_compare_applies_each_strategy_to_a_user_model() -> None:
    result = CliRunner().invoke(
        app,
        ["compare", "zeros", "he_normal", "--config", str(ROOT / "tests" / "awkward.yaml"), "-f", "json"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)["runs"]
    by_label = {r["label"]: rows(r) for r in runs}
    # zero weights in every conv and linear: the stem outputs only its (zero) bias
    assert by_label["zeros"]["stem"]["std"] == 0.0
    assert by_label["he_normal"]["stem"]["std"] > 0.1


def test_compiled_models_are_probed_eagerly() -> None:
    # under torch.compile dynamo traces every hook (a graph break each, recompiles per module and
    # input: 19 s for a 5-layer MLP); the probe runs the eager modules under the wrapper, a compiled
    # child and a module compiled in place, with the same parameters, and says so
    report = probe_json("--model", f"{M}:compiled", "--input-shape", "8")
    assert list(rows(report)) == ["stem", "body.0", "body.1", "body.2", "head"]
    assert all(r["grad_std"] > 0 for r in report["layers"])
    notes = " ".join(report["notes"])
    assert "torch.compile: probed eagerly" in notes and "the model, body, head" in notes


def test_measure_probes_a_compiled_model_as_its_eager_one_and_puts_it_back() -> None:
    import probe as api
    from tests.models_for_tests import compiled

    torch.manual_seed(0)
    model = compiled()
    eager = model._orig_mod
    wrapped_body, head_call = eager.body, eager.head._compiled_call_impl
    got = api.measure(model, (8,), batch_size=8, seed=0)
    want = api.measure(_eager_copy(eager), (8,), batch_size=8, seed=0)
    assert (
        [r.name for r in got.layers] == [r.name for r in want.layers] == ["stem", "body.0", "body.1", "body.2", "head"]
    )
    assert [r.std for r in got.layers] == [r.std for r in want.layers]  # the same modules, the same numbers
    assert any("torch.compile: probed eagerly" in n for n in got.stats.notes)
    # the caller's model is as it was: the compiled child and the in-place compiled call are back
    assert eager.body is wrapped_body and eager.head._compiled_call_impl is head_call


def _eager_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The same layers, copied, with nothing compiled (``nn.Sequential`` runs them in order)."""
    import copy

    twin = torch.nn.Sequential(
        copy.deepcopy(model.stem), copy.deepcopy(model.body._orig_mod), copy.deepcopy(model.head)
    )
    twin[2]._compiled_call_impl = None
    return torch.nn.Sequential(OrderedDict(stem=twin[0], body=twin[1], head=twin[2]))


@pytest.mark.parametrize(
    ("cut", "warned"), [("none", False), ("frozen", False), ("no_grad", True), ("reentrant", True)]
)
def test_parameters_cut_from_the_loss_are_a_warning(cut: str, warned: bool) -> None:
    # a body whose parameters require a gradient that never reaches them (torch.no_grad around it,
    # a reentrant checkpoint on the pixels: red team 4's CNN so wrapped gains 0.02 nats against 1.02)
    # never trains; a frozen one is meant. The head still trains, so it is a warning, not an error
    result = probe(
        "--model", f"{M}:body_and_head", "--model-arg", f"cut={cut}", "--input-shape", "3,16,16", *SMALL, "-f", "json"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    said = [w for w in report["verdict"]["warnings"] if "detached from the loss" in w["message"]]
    assert bool(said) == warned, report["verdict"]
    if warned:
        assert said[0]["layer"] == "body.0" and said[0]["rule"] == "gradient_vanishing"


@pytest.mark.parametrize(
    ("how", "held", "severity"),
    [
        ("modulelist", [], ""),
        ("list", ["layers[0].weight", "layers[0].bias", "layers[1].weight"], "error"),
        ("tensor", ["scale", "shift"], "warning"),
    ],
)
def test_weights_held_outside_the_parameters(how: str, held: list[str], severity: str) -> None:
    # layers in a plain list, or a weight kept as a tensor with requires_grad, take part in the
    # forward pass and get a gradient, but model.parameters() does not yield them: an optimizer
    # built from it never moves them. Found from the autograd graph's leaves, named by the
    # attributes that hold them. Most of the weights so held (the list: 2,656 of 2,986 elements;
    # AdamW gains -0.04 nats where the ModuleList twin gains 1.23) is an error; a few (the tensor:
    # 1,056 of 4,042; gains 1.02) a warning
    report = probe_json("--model", f"{M}:held_outside", "--model-arg", f"how={how}", "--input-shape", "16")
    verdict = report["verdict"]
    said = [w for w in verdict["problems"] + verdict["warnings"] if "outside model.parameters()" in w["message"]]
    assert len(said) == bool(held), verdict
    if held:
        assert said[0]["rule"] == "gradient_vanishing" and said[0]["layer"] == held[0]
        assert said[0]["severity"] == severity and verdict["healthy"] == (severity == "warning")
        assert f"({len(held) if how == 'tensor' else 6} layers)" in said[0]["message"]


def test_a_model_holding_every_layer_in_a_plain_dict_says_so() -> None:
    result = probe("--model", f"{M}:held_outside", "--model-arg", "how=dict", "--input-shape", "16")
    assert result.exit_code == 2, result.output
    assert "parts['hidden'][0]" in result.output and "nn.ModuleList or nn.ModuleDict" in result.output


def test_the_advice_for_weights_held_outside_is_to_register_them() -> None:
    result = probe("--model", f"{M}:held_outside", "--model-arg", "how=list", "--input-shape", "16", *SMALL)
    assert result.exit_code == 0, result.output  # run reports; check is the gate
    assert "try: register the weights the forward uses" in result.output


@pytest.mark.parametrize(("dead", "relu", "said"), [(3, True, True), (2, True, False), (3, False, False)])
def test_dead_output_units_are_said_as_outputs_that_never_change(dead: int, relu: bool, said: bool) -> None:
    # a dead output unit is a class whose logit is 0 for every sample and never moves (torchvision's
    # SqueezeNet 1.0 has 4 of 10 at its default init and does not learn, -0.08 nats; red team 4's
    # ReLU-on-logits MLP has 6 of 10 and learns 0.60 of its twin's gain): a warning past 0.25, named
    # as outputs, with the hidden layers' error line. 3 of 10 break it, 2 do not; without the ReLU
    # nothing is dead
    report = probe_json(
        "--model",
        f"{M}:relu_logits",
        "--model-arg",
        f"dead={dead}",
        "--model-arg",
        f"relu={relu}",
        "--input-shape",
        "16",
    )
    verdict = report["verdict"]
    found = [p for p in verdict["warnings"] if p["rule"] == "dead_units" and "output" in p["message"]]
    assert bool(found) == said and verdict["healthy"], verdict
    if said:
        assert found[0]["layer"] == "out" and found[0]["value"] == pytest.approx(0.3)


def test_a_model_whose_eval_forward_fails_is_discovered_in_its_own_mode() -> None:
    # discovery runs in eval mode (no running-stat updates, no dropout); a test-time pool that
    # needs a full-size map fails there at 16 x 16 (Cadene's DPN-68 was refused at every init).
    # The measured pass is train mode's, so discovery runs again in the model's own mode, and the
    # running statistics that pass moved are put back
    report = probe_json("--model", f"{M}:test_time_pool", "--input-shape", "3,16,16")
    assert [r["name"] for r in report["layers"]] == ["conv", "bn", "fc"]
    from tests.models_for_tests import test_time_pool

    model = test_time_pool()
    import probe as api

    api.measure(model, torch.randn(8, 3, 16, 16), seed=0)
    assert int(model.bn.num_batches_tracked) == 0 and torch.equal(model.bn.running_mean, torch.zeros(16))


def test_a_deep_residual_cnns_shared_logit_offset_is_a_warning_through_the_cli() -> None:
    """A newcomer's 32-block residual CNN at PyTorch's default init starts over 3 times a constant
    guess's loss, nearly all of it an offset every sample shares (its stream's growing mean through a
    random head), which Adam's head weights remove within tens of steps: the run passes the gate with
    a logit_scale warning, and the JSON carries the head's input mean it was judged from."""
    args = ["--model", f"{M}:residual_stack", "--model-arg", "blocks=32", "--input-shape", "3,32,32"]
    result = probe(*args, "--set", "data.batch_size=32", "--set", "run.device=cpu", "--format", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["verdict"]["healthy"]
    (warning,) = [w for w in doc["verdict"]["warnings"] if w["rule"] == "logit_scale"]
    assert warning["value"] > warning["threshold"]
    assert doc["layers"][-1]["input_mean"] > 1
    # the same start made by the head's bias on centered features is an error
    biased = probe(
        "--model", f"{M}:residual_stack", "--model-arg", "blocks=16", "--model-arg", "head_bias_std=8.0",
        "--input-shape", "3,32,32", "--set", "data.batch_size=32", "--set", "run.device=cpu",
    )  # fmt: skip
    assert biased.exit_code == 0, biased.output  # `probe run` reports; `probe check` gates
    assert "UNHEALTHY: logit_scale" in biased.output and "error logit_scale" in biased.output


def test_a_softmax_at_the_end_is_noted_through_the_cli() -> None:
    result = probe("--model", f"{M}:softmax_classifier", "--input-shape", "3,32,32", *SMALL)
    assert result.exit_code == 0, result.output
    assert "note: the model's output is probabilities" in " ".join(result.output.split())
    doc = probe_json("--model", f"{M}:softmax_classifier", "--input-shape", "3,32,32")
    assert [n["rule"] for n in doc["verdict"]["notes"]] == ["probability_output"]
