"""Run under torchrun by tests/test_distributed.py: ``python -m torch.distributed.run
--nproc_per_node 2 tests/dist_worker.py OUT.json``. Rank 0 writes, per case, the merged per-layer
numbers, each rank's dead-unit fractions before the merge, and the collectives the probe called."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.models_for_tests

import torch.distributed as dist

from probe import spec as spec_mod
from probe.measure import distributed
from probe.measure.run import run_probe

# every collective a probe could call from Python (DDP's gradient all-reduce runs in C++ and is
# the engine's own, once per backward, as in training)
COLLECTIVES = (
    "all_reduce",
    "all_gather",
    "all_gather_single",
    "all_gather_into_tensor",
    "all_gather_object",
    "broadcast",
    "broadcast_object_list",
    "reduce",
    "reduce_scatter",
    "reduce_scatter_tensor",
    "gather",
    "scatter",
    "all_to_all",
    "all_to_all_single",
    "barrier",
)

SPECS: dict[str, dict[str, Any]] = {
    "mlp": {
        "model": {"depth": 3, "width": 16, "input_dim": 8, "activation": "tanh", "output_dim": 4},
        "data": {"batch_size": 11, "batches": 3},  # 11 rows: ranks get 5 and 6
    },
    "user": {
        "model": {"import": "tests.models_for_tests:rarely_firing", "input_shape": [8]},
        "data": {"batch_size": 11, "batches": 3},
    },
}

COMPARE_BASE: dict[str, Any] = {"model": {"depth": 2, "width": 8, "input_dim": 4}, "data": {"batch_size": 6}}
COMPARE_ENTRIES = ("he", "xavier:tanh")


@contextmanager
def counted() -> Iterator[list[str]]:
    calls: list[str] = []
    originals = {name: getattr(dist, name) for name in COLLECTIVES if hasattr(dist, name)}

    def wrap(name: str, fn: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return fn(*args, **kwargs)

        return call

    for name, fn in originals.items():
        setattr(dist, name, wrap(name, fn))
    try:
        yield calls
    finally:
        for name, fn in originals.items():
            setattr(dist, name, fn)


def main() -> None:
    out = Path(sys.argv[1])
    local_dead: list[list[float]] = []
    merge = distributed.merge_ranks

    def spy(c: Any, share: Any) -> None:  # each rank's dead units before the merge
        local_dead.append([float((layer.alive == 0).float().mean()) for layer in c.layers if layer.alive is not None])
        merge(c, share)

    distributed.merge_ranks = spy  # type: ignore[assignment]
    results: dict[str, Any] = {}
    for name, raw in SPECS.items():
        for shard in ("none", "fsdp"):
            for batches in (1, raw["data"]["batches"]):
                spec = spec_mod.parse({**raw, "data": {**raw["data"], "batches": batches}, "run": {"shard": shard}})
                local_dead.clear()
                with counted() as calls:
                    report = run_probe(spec)
                everyone: list[Any] = [None] * dist.get_world_size()
                dist.all_gather_object(everyone, list(local_dead))
                results[f"{name}/{shard}/{batches}"] = {
                    "layers": [dataclasses.asdict(x) for x in report.layers],
                    "world_size": report.world_size,
                    "notes": list(report.notes),
                    "collectives": [c for c in calls if shard == "none"],  # FSDP2's own calls are in Python
                    "local_dead": everyone,
                }
    # probe compare: several runs in a row share the process group
    from probe.experiments import batch

    runs = batch.compare(spec_mod.parse(COMPARE_BASE), [batch.parse_entry(e) for e in COMPARE_ENTRIES])
    results["compare"] = {run.label: [dataclasses.asdict(x) for x in run.report.layers] for run in runs}
    if int(os.environ["RANK"]) == 0:
        out.write_text(json.dumps(results))


if __name__ == "__main__":
    main()
