"""The corpus of real architectures (tests/corpus.py) builds offline and runs on its inputs."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("transformers")

import torch
import yaml
from torch import nn

from tests import corpus
from tests.conftest import REPO

SPECS = REPO / "tests" / "corpus_specs"


@pytest.mark.parametrize("name", list(corpus.CASES))
def test_every_factory_builds_and_runs_forward(name: str) -> None:
    case = corpus.CASES[name]
    torch.manual_seed(0)
    model = case.factory(init="default")
    out = model(**case.inputs(2))
    assert isinstance(out, torch.Tensor) and torch.isfinite(out).all()
    if case.kind == "tokens":
        assert out.shape[:2] == (2, corpus.SEQ_LEN)
    else:
        assert out.dim() == 2 and out.shape[0] == 2


def _filled(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, corpus._weighted_modules())]


@pytest.mark.parametrize("name", ["gpt2", "bn_resnet"])
def test_zeros_and_normal1_reach_every_weighted_layer(name: str) -> None:
    # gpt2: transformers' Conv1D must be filled too; bn_resnet: the hand-written model
    factory = corpus.CASES[name].factory
    zeros = _filled(factory(init="zeros"))
    assert zeros and all(bool((w == 0).all()) for w in zeros)
    normal1 = torch.cat([w.detach().flatten() for w in _filled(factory(init="normal1"))])
    assert abs(float(normal1.std()) - 1.0) < 0.05


def test_an_unknown_init_names_the_choices() -> None:
    with pytest.raises(ValueError, match="default, zeros, normal1"):
        corpus.bn_resnet(init="ones")


def test_the_causal_bert_has_the_same_weights() -> None:
    torch.manual_seed(0)
    encoder = corpus.bert()
    torch.manual_seed(0)
    decoder = corpus.bert(causal=True)
    assert all(torch.equal(a, b) for a, b in zip(encoder.parameters(), decoder.parameters(), strict=True))


def test_one_spec_per_case_points_at_its_factory() -> None:
    expected = {f"{name}_{init}.yaml" for name in corpus.CASES for init in corpus.INITS}
    assert {p.name for p in SPECS.glob("*.yaml")} == expected
    for name, case in corpus.CASES.items():
        for init in corpus.INITS:
            model = yaml.safe_load((SPECS / f"{name}_{init}.yaml").read_text())["model"]
            assert model == {"import": case.factory_path, "kwargs": {"init": init}, "inputs": case.inputs_path}
