"""One build, one pass (issue 21): how many times a probe calls the model's factory and runs the
model's forward, for each model kind and mode, counted through the CLI as a user runs it.

A user factory (``model.import``, ``--model``) runs once in every mode: the memory estimate is
made from the model the run builds. ``--plot`` and ``--tensorboard`` add no build and no forward
pass: their histograms come from the measured pass. A built-in spec and ``--hf`` are estimated on
a meta-device build of their own before the real one (no storage, no user code: see
``probe.measurement.once``); that meta build is counted apart and never runs forward for real.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from probe.measurement import memory
from probe.model import arch, hf, user_model

BATCHES = 2


def _on_meta(model: Any) -> bool:
    first = next(iter(model.parameters()), None)
    return first is not None and first.is_meta


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Counts of ``factory`` (a user factory's calls, on any device), ``build``/``meta build`` (a
    built-in or transformers network made for real / on the meta device) and ``forward`` (the
    built model's own forward on real tensors; meta-device passes are the estimate's)."""
    seen: Counter[str] = Counter()

    def count_forward(model: Any) -> Any:
        def hook(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            tensors = [a for a in (*args, *kwargs.values()) if hasattr(a, "is_meta")]
            if not any(t.is_meta for t in tensors):
                seen["forward"] += 1

        model.register_forward_pre_hook(hook, with_kwargs=True)
        return model

    real_load = user_model.load_object

    def load_object(path: str, key: str, trust: Any = None) -> Any:
        obj = real_load(path, key, trust)
        if key != "model.import":
            return obj

        def factory(*args: Any, **kwargs: Any) -> Any:
            seen["factory"] += 1
            return count_forward(obj(*args, **kwargs))

        return factory

    monkeypatch.setattr(user_model, "load_object", load_object)

    def counted(make: Callable[..., Any]) -> Callable[..., Any]:
        def build(*args: Any, **kwargs: Any) -> Any:
            out = make(*args, **kwargs)
            model = out[0] if isinstance(out, tuple) else out
            seen["meta build" if _on_meta(model) else "build"] += 1
            count_forward(model)
            return out

        return build

    monkeypatch.setattr(hf, "make_model", counted(hf.make_model))
    for kind in list(arch.BUILDERS):
        monkeypatch.setitem(arch.BUILDERS, kind, counted(arch.BUILDERS[kind]))
    yield seen


SMALL = ["--set", f"data.batches={BATCHES}", "--set", "data.batch_size=4", "--set", "run.device=cpu"]
FACTORY = ["--model", "tests.models_for_tests:stacked", "--model-arg", "width=8", "--input-shape", "8", *SMALL]
HF = ["--hf", "gpt2", "--model-arg", "n_layer=2", "--model-arg", "n_embd=16", "--model-arg", "n_head=2"]
HF += ["--model-arg", "vocab_size=50", "--set", "model.seq_len=6", *SMALL]


def _run(cli: Callable[..., Any], counts: Counter[str], *args: str) -> Counter[str]:
    counts.clear()
    result = cli("run", *args, "--format", "json")
    assert result.exit_code == 0, result.output
    return Counter(counts)


def _modes(tmp_path: Path) -> dict[str, list[str]]:
    return {
        "plain": [],
        "--plot": ["--plot", str(tmp_path / "plot.png")],
        "--tensorboard": ["--tensorboard", str(tmp_path / "tb")],
    }


def test_a_user_factory_runs_once_in_every_mode(cli: Callable[..., Any], counts: Counter[str], tmp_path: Path) -> None:
    spec = tmp_path / "factory.yaml"
    spec.write_text(
        "model:\n  import: tests.models_for_tests:stacked\n  kwargs: {width: 8}\n  input_shape: [8]\n", encoding="utf-8"
    )
    plain = _run(cli, counts, *FACTORY)
    # one discovery pass on two samples (shaped inputs), then the measured batches
    assert plain == Counter(factory=1, forward=1 + BATCHES)
    for name, extra in _modes(tmp_path).items():
        assert _run(cli, counts, *FACTORY, *extra) == plain, name
        assert _run(cli, counts, str(spec), *SMALL, *extra) == plain, f"model.import, {name}"
    # one block at a time: the factory once, on the meta device (no forward of the whole model for real
    # but the discovery pass)
    layerwise = _run(cli, counts, *FACTORY, "--layer-by-layer")
    assert layerwise["factory"] == 1 and layerwise["forward"] <= plain["forward"]


def test_a_refused_factory_model_ran_no_measured_pass(cli: Callable[..., Any], counts: Counter[str]) -> None:
    """The estimate of a factory's model comes from the model built once, before its measured pass."""
    counts.clear()
    result = cli("run", *FACTORY, "--max-memory", "0")
    assert result.exit_code == 3, result.output
    assert "exceeds --max-memory 0 GiB" in " ".join(result.output.split())
    assert counts == Counter(factory=1, forward=1)  # the discovery pass alone


def test_the_factory_model_estimate_equals_the_meta_build_estimate() -> None:
    """The estimate measured on the built model (its forward on meta copies) is the meta build's."""
    from probe import spec as spec_mod
    from probe.measurement.once import estimate_built
    from probe.model.build import build_initialized

    spec = spec_mod.parse({"model": {"import": "tests.models_for_tests:awkward", "input_shape": [3, 8, 8]}})
    assert estimate_built(spec, build_initialized(spec)) == memory.estimate_any(spec)


@pytest.mark.parametrize("kind", ["conv", "transformer"])
def test_a_built_in_spec_is_built_once_for_real(
    cli: Callable[..., Any], counts: Counter[str], tmp_path: Path, kind: str
) -> None:
    args = ["--set", f"model.kind={kind}", "--set", "model.depth=2", "--set", "model.width=8", *SMALL]
    plain = _run(cli, counts, "configs/lab1_tiny_relu.yaml", *args)
    assert plain["build"] == 1 and plain["forward"] == BATCHES
    assert plain["meta build"] == 1  # the estimate: probe's own builder on the meta device
    for name, extra in _modes(tmp_path).items():
        assert _run(cli, counts, "configs/lab1_tiny_relu.yaml", *args, *extra) == plain, name


def test_hf_is_built_once_for_real(cli: Callable[..., Any], counts: Counter[str], tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    plain = _run(cli, counts, *HF)
    assert plain["build"] == 1 and plain["meta build"] == 1  # the estimate's meta build: nothing allocated
    assert plain["forward"] > BATCHES  # discovery's short passes, then the measured batches
    for name, extra in _modes(tmp_path).items():
        assert _run(cli, counts, *HF, *extra) == plain, name
    layerwise = _run(cli, counts, *HF, "--layer-by-layer")
    assert layerwise["build"] == 0 and layerwise["meta build"] == 1  # one structure, estimated and probed


@pytest.mark.parametrize(
    "model",
    [
        {"kind": "mlp", "depth": 3, "width": 16, "norm": "batchnorm"},
        {"kind": "conv", "depth": 2, "width": 4},
        {"kind": "transformer", "depth": 2, "width": 16},
        {"import": "tests.models_for_tests:stacked", "kwargs": {"width": 8}, "input_shape": [8]},
    ],
    ids=lambda m: m.get("kind") or "model.import",
)
def test_the_measured_pass_bins_the_histograms_a_pass_of_their_own_would(model: dict[str, Any]) -> None:
    """On the CPU in float32 the histograms binned in the measured pass (what --plot and
    --tensorboard draw) are exactly those of a build and forward pass of their own."""
    from probe import spec as spec_mod
    from probe.measurement.histograms import histograms
    from probe.measurement.run import run_probe

    spec = spec_mod.parse({"model": model, "data": {"batch_size": 8, "batches": BATCHES}, "run": {"device": "cpu"}})
    binned = run_probe(spec, histograms=True).histograms
    assert binned is not None and binned.layers
    assert binned == histograms(spec)
    assert run_probe(spec).histograms is None  # not asked: nothing binned


def test_the_estimate_leaves_the_runs_draws_alone() -> None:
    """An input function drawing from torch's global generator (as ``make_two_inputs`` does) is
    called by the estimate too: the run's batches, hence its numbers, are those of a run without it."""
    from probe import spec as spec_mod
    from probe.measurement.run import run_probe

    spec = spec_mod.parse(
        {
            "model": {
                "import": "tests.models_for_tests:two_inputs",
                "inputs": "tests.models_for_tests:make_two_inputs",
            },
            "data": {"batch_size": 8, "batches": BATCHES},
            "run": {"device": "cpu"},
        }
    )
    estimates: list[Any] = []
    checked = run_probe(spec, check=estimates.append)
    assert len(estimates) == 1 and estimates[0] is not None and estimates[0].weights > 0
    assert checked.layers == run_probe(spec).layers


def test_check_calls_each_factory_once(cli: Callable[..., Any], counts: Counter[str], tmp_path: Path) -> None:
    """``probe check`` (one process) estimates a factory's model from the model its run builds; a
    refusal names the spec and the other specs still run."""
    spec = tmp_path / "factory.yaml"
    spec.write_text(
        "model:\n  import: tests.models_for_tests:stacked\n  kwargs: {width: 8}\n  input_shape: [8]\n"
        f"data: {{batch_size: 4, batches: {BATCHES}}}\nrun: {{device: cpu}}\n",
        encoding="utf-8",
    )
    result = cli("check", str(spec), "configs/lab1_tiny_relu.yaml", "--format", "json")
    assert result.exit_code in (0, 1), result.output
    assert counts["factory"] == 1 and counts["forward"] == 1 + BATCHES
    counts.clear()
    spec.write_text(spec.read_text(encoding="utf-8").replace("batch_size: 4", "batch_size: 4000000"), encoding="utf-8")
    refused = cli("check", str(spec), "configs/lab1_tiny_relu.yaml", "--max-memory", "1", "--format", "json")
    said = " ".join(refused.output.split())
    assert refused.exit_code == 3 and f"{spec}: " in said and "exceeds --max-memory 1 GiB" in said, said
    assert '"label": "configs/lab1_tiny_relu.yaml"' in refused.stdout  # the other spec ran
    assert counts == Counter(factory=1, forward=1)  # built once, discovered, refused before its measured pass


def test_compare_inspect_and_advise_call_a_factory_once_per_probe(
    cli: Callable[..., Any], counts: Counter[str], tmp_path: Path
) -> None:
    """The other commands that probe a factory's model estimate it from the model their run builds
    too: ``compare`` once per entry, ``inspect`` once (its parameters and its forward pass on the
    same build), ``advise`` once, ``fix`` once per build."""
    spec = tmp_path / "factory.yaml"
    spec.write_text(
        "model:\n  import: tests.models_for_tests:stacked\n  kwargs: {width: 8}\n  input_shape: [8]\n"
        f"data: {{batch_size: 4, batches: {BATCHES}}}\nrun: {{device: cpu}}\n",
        encoding="utf-8",
    )
    for command, args, probes in (
        ("compare", ["he", "xavier", "--config", str(spec)], 2),
        ("inspect", [str(spec)], 1),
        ("advise", [str(spec)], 1),
    ):
        counts.clear()
        result = cli(command, *args)
        assert result.exit_code in (0, 1), (command, result.output)
        assert counts["factory"] == probes, (command, counts)
        assert counts["forward"] == probes * (1 + BATCHES), (command, counts)  # discovery + measured batches
    # fix builds three models (the probe as written, LSUV's, the probe of LSUV's weights) and no meta one
    counts.clear()
    assert cli("fix", str(spec)).exit_code in (0, 1)
    assert counts["factory"] == 3, counts
