"""torchrun: 2 CPU ranks on gloo give the single-process numbers (replicated with DDP and sharded
with FSDP2), a unit is dead only if dead on every rank, the merge is two collectives whatever the
batch count, and rank 0 alone prints. The ranks are started by torchrun itself, in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from probe import spec as spec_mod
from probe.model.inputs import Batch
from probe.records import LayerStats
from tests.conftest import CONFIGS, REPO
from tests.dist_worker import COMPARE_BASE, COMPARE_ENTRIES, SPECS

dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

# Rows computed in a batch of 5 or 6 instead of 11 go through a differently blocked GEMM: each
# float32 value may differ by a few ulps (eps 1.2e-7 times a fan-in of 8-16, about 2e-6 relative),
# and the engines sum the two ranks' weight gradients in another order. Counts are exact.
REL = 1e-5
EXACT = ("name", "count", "zero_ratio", "dead_units", "nonfinite", "units")
CLOSE = ("mean", "std", "unit_spread", "grad_std", "weight_grad_norm", "weight_grad_std", "saturation_ratio")


def _torchrun(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "COLUMNS": "100"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout_s)


@pytest.fixture(scope="module")
def ranked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every case of tests/dist_worker.py, run once by 2 torchrun ranks."""
    out = tmp_path_factory.mktemp("dist") / "results.json"
    done = _torchrun(str(REPO / "tests" / "dist_worker.py"), str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    results: dict[str, Any] = json.loads(out.read_text())
    return results


def _single(name: str, batches: int) -> list[LayerStats]:
    from probe.measurement.run import run_probe

    raw = SPECS[name]
    return list(run_probe(spec_mod.parse({**raw, "data": {**raw["data"], "batches": batches}})).layers)


def _same(ranked_layers: list[dict[str, Any]], single: list[dict[str, Any]]) -> None:
    assert [x["name"] for x in ranked_layers] == [x["name"] for x in single]
    for got, want in zip(ranked_layers, single, strict=True):
        for key in EXACT:
            assert got[key] == want[key], (got["name"], key)
        for key in CLOSE:
            if want[key] is None:
                assert got[key] is None, (got["name"], key)
            else:
                assert got[key] == pytest.approx(want[key], rel=REL, abs=1e-12), (got["name"], key)


CASES = [(name, batches) for name, raw in SPECS.items() for batches in (1, raw["data"]["batches"])]


@pytest.mark.parametrize(("name", "batches"), CASES, ids=[f"{n}-{b}batch" for n, b in CASES])
def test_two_ranks_equal_one_process(ranked: dict[str, Any], name: str, batches: int) -> None:
    import dataclasses

    case = ranked[f"{name}/none/{batches}"]
    assert case["world_size"] == 2
    _same(case["layers"], [dataclasses.asdict(x) for x in _single(name, batches)])


@pytest.mark.parametrize(("name", "batches"), CASES, ids=[f"{n}-{b}batch" for n, b in CASES])
def test_fsdp_equals_replicated(ranked: dict[str, Any], name: str, batches: int) -> None:
    replicated, sharded = ranked[f"{name}/none/{batches}"], ranked[f"{name}/fsdp/{batches}"]
    assert sharded["world_size"] == 2
    assert any(x["weight_grad_norm"] for x in sharded["layers"])  # the shards' gradients were measured
    _same(sharded["layers"], replicated["layers"])


@pytest.mark.parametrize("name", ["mlp", "stacked"])
def test_fsdp_holds_one_block_whole_at_a_time(ranked: dict[str, Any], name: str) -> None:
    """The promise of run.shard: fsdp, a model that does not fit one rank: while each rank builds
    and shards it, the most bytes of whole (unsharded) parameters alive at once are one block's or
    those outside the blocks, whichever is more; never the whole model."""
    case = ranked[f"{name}/fsdp/1"]
    assert any("built on the meta device" in note for note in case["notes"]), case["notes"]
    for rank in case["memory"]:
        bound = max(rank["largest_block"], rank["outside_blocks"])
        assert rank["params"] >= 2.5 * bound, rank  # blocks of about equal size: the bound is well below the whole
        # (a block's parameters lie in one reused buffer, each aligned to 64 bytes: measured, exactly the bound)
        assert 0 < rank["peak_whole"] <= 1.25 * bound, rank


def test_fsdp_builds_whole_what_the_meta_device_cannot_rebuild(ranked: dict[str, Any]) -> None:
    """rarely_firing copies values into a bias in its constructor, which no replayed init step
    repeats: built whole, as before, and said so; the same measure then sees the whole model."""
    case = ranked["user/fsdp/1"]
    notes = [n for n in case["notes"] if n.startswith("run.shard: fsdp built the whole model on each rank")]
    assert len(notes) == 1 and "hidden.bias" in notes[0], case["notes"]
    for rank in case["memory"]:
        assert rank["peak_whole"] >= rank["params"], rank


def test_compare_under_torchrun_equals_one_process(ranked: dict[str, Any]) -> None:
    import dataclasses

    from probe.experiments import batch

    runs = batch.compare(spec_mod.parse(COMPARE_BASE), [batch.parse_entry(e) for e in COMPARE_ENTRIES])
    assert list(ranked["compare"]) == [run.label for run in runs]
    for run in runs:
        _same(ranked["compare"][run.label], [dataclasses.asdict(x) for x in run.report.layers])


def test_a_unit_is_dead_only_if_dead_on_every_rank(ranked: dict[str, Any]) -> None:
    case = ranked["user/none/1"]
    act = [x["name"] for x in case["layers"] if x["dead_units"] is not None].index("act")
    merged = case["layers"][act]["dead_units"]
    per_rank = [rank[0][act] for rank in case["local_dead"]]
    # some unit fired on one rank's rows only: each rank alone sees more dead units than the whole
    assert 0 < merged < min(per_rank)


def test_the_merge_is_two_collectives_whatever_the_batches(ranked: dict[str, Any]) -> None:
    for name, raw in SPECS.items():
        for batches in (1, raw["data"]["batches"]):
            calls = ranked[f"{name}/none/{batches}"]["collectives"]
            assert len(calls) == 2 and calls[-1] == "all_reduce", (name, batches, calls)
            assert calls[0] in ("all_gather_single", "all_gather_into_tensor")


def test_check_under_torchrun_prints_once_and_exits_1(tmp_path: Path) -> None:
    junit = tmp_path / "probe.xml"
    done = _torchrun(
        "-m",
        "probe",
        "check",
        str(CONFIGS / "lab1_tiny_relu.yaml"),
        "--set",
        "model.depth=3",
        "--set",
        "model.width=16",
        "--set",
        "data.batch_size=16",
        "--set",
        "run.device=cpu",
        "--format",
        "json",
        "--junit",
        str(junit),
    )
    assert done.returncode == 1, done.stderr[-3000:]  # unhealthy on every rank: torchrun exits 1
    report = json.loads(done.stdout)  # one JSON document: rank 1 printed nothing
    assert report["healthy"] is False
    assert report["runs"][0]["environment"]["world_size"] == 2
    assert junit.exists()


# ---- the pieces, in one process --------------------------------------------------------------


def _share(rank: int, rows: int = 11, world_size: int = 2) -> Any:
    import torch

    from probe.measurement.distributed import Share

    bounds = [rows * r // world_size for r in range(world_size + 1)]
    return Share(rank, world_size, rank, torch.device("cpu"), "none", None, slice(bounds[rank], bounds[rank + 1]), rows)


@pytest.mark.parametrize("shape", [(11, 3), (11,), (2, 11, 4)], ids=["batch-first", "vector", "batch-second"])
def test_the_ranks_directions_make_the_single_process_one(shape: tuple[int, ...]) -> None:
    import torch

    from probe.measurement.distributed import direction

    whole = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    dim = 1 if len(shape) == 3 else 0
    parts = []
    for rank in (0, 1):
        share = _share(rank)
        local = list(shape)
        local[dim] = share.rows.stop - share.rows.start
        parts.append(direction(tuple(local), torch.Generator().manual_seed(3), share))
    assert torch.equal(torch.cat(parts, dim=dim), whole)


def test_the_ranks_batches_make_the_single_process_one() -> None:
    import torch

    from probe.measurement.distributed import slice_batch

    x, ids, flag = torch.randn(11, 3), torch.arange(11), torch.ones(2)
    parts = [slice_batch(Batch((x,), {"ids": ids, "flag": flag}), _share(rank)) for rank in (0, 1)]
    assert [p.args[0].shape[0] for p in parts] == [5, 6]
    assert torch.equal(torch.cat([p.args[0] for p in parts]), x)
    assert torch.equal(torch.cat([p.kwargs["ids"] for p in parts]), ids)
    assert all(p.kwargs["flag"] is flag for p in parts)  # not a batch: every rank gets it whole


def test_a_weight_gradient_is_measured_in_disjoint_parts() -> None:
    import torch

    grad = torch.randn(5, 3)
    parts = [_share(rank).weight_grad_part(grad) for rank in (0, 1)]
    # DDP averages the ranks' sums: the whole batch's gradient is world_size times that
    assert torch.equal(torch.cat(parts), grad.reshape(-1) * 2)


def test_no_output_with_a_batch_dimension_is_a_run_error() -> None:
    import torch

    from probe.errors import RunError
    from probe.measurement.distributed import direction

    with pytest.raises(RunError, match="no batch dimension"):
        direction((3, 4), torch.Generator(), _share(0))


@pytest.mark.parametrize(
    ("model", "blocks"),
    [({"kind": "mlp", "depth": 3}, 3), ({"kind": "residual", "depth": 2}, 2), ({"kind": "transformer", "depth": 2}, 2)],
    ids=["mlp-linears", "residual-blocks", "transformer-layers"],
)
def test_fsdp_shards_the_repeated_blocks(make_spec: Callable[..., Any], model: dict[str, Any], blocks: int) -> None:
    from probe.measurement.distributed_engine import blocks as find_blocks
    from probe.model.build import build

    built = build(make_spec(model={**model, "width": 8, "heads": 2, "seq_len": 4, "input_dim": 4}))
    assert len(find_blocks(built.model)) >= blocks


def test_shard_fsdp_in_one_process_is_a_note(cli: Callable[..., Any]) -> None:
    result = cli("run", str(CONFIGS / "lab1_he_relu.yaml"), "--set", "model.depth=2", "--set", "run.shard=fsdp",
                 "--set", "run.device=cpu", "-f", "json")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["environment"]["world_size"] == 1
    assert any("torchrun" in note for note in report["notes"])


def test_unknown_shard_exits_2(cli: Callable[..., Any]) -> None:
    result = cli("run", str(CONFIGS / "lab1_he_relu.yaml"), "--set", "run.shard=zero3")
    assert result.exit_code == 2
    assert "run.shard" in result.stderr and "fsdp" in result.stderr


def test_jobs_under_torchrun_exits_2(cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    result = cli("compare", "he", "xavier", "--jobs", "2", "--depth", "2")
    assert result.exit_code == 2
    assert "drop --jobs" in result.stderr


def test_the_table_says_how_many_ranks(make_spec: Callable[..., Any]) -> None:
    import dataclasses

    from probe.judge.rules import evaluate
    from probe.measurement.run import run_probe
    from probe.render.run_view import run_doc
    from probe.render.writers import plain_text

    report = run_probe(make_spec(model={"depth": 2, "width": 8}, data={"batch_size": 4}))

    def text(r: Any) -> str:
        return plain_text(run_doc(r, evaluate(r)), 200)

    assert "ranks" not in text(report)
    assert "seed 0; 2 ranks" in text(dataclasses.replace(report, world_size=2))
