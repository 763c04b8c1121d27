"""Run under torchrun by tests/test_distributed.py: ``python -m torch.distributed.run
--nproc_per_node 2 tests/dist_worker.py OUT.json``. Rank 0 writes, per case, the merged per-layer
numbers, each rank's dead-unit fractions before the merge, the collectives the probe called, and
with FSDP2 each rank's most bytes of whole parameters alive at once while the model was built."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.models_for_tests

import torch.distributed as dist

from probe import spec as spec_mod
from probe.measurement import distributed_engine, distributed_merge
from probe.measurement.run import run_probe

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
    # writes its bias in the constructor (no init step replays it): FSDP2 builds it whole
    "user": {
        "model": {"import": "tests.models_for_tests:rarely_firing", "input_shape": [8]},
        "data": {"batch_size": 11, "batches": 3},
    },
    "stacked": {  # six equal blocks in a ModuleList: FSDP2 builds them one at a time
        "model": {"import": "tests.models_for_tests:stacked", "input_shape": [8]},
        "data": {"batch_size": 11, "batches": 2},
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


@contextmanager
def whole_parameters() -> Iterator[list[int]]:
    """The most bytes of whole parameters (real storage, not an FSDP2 shard) alive at once while the
    body runs: every ``nn.Parameter`` made in it is followed until it is freed; the sum of their
    storages is read each time one is made (the only time it can grow) and at the end."""
    from torch import nn
    from torch.distributed.tensor import DTensor

    made: list[weakref.ref[Any]] = []
    peak = [0]
    original = nn.Parameter.__new__

    def sample() -> None:
        live = [p for p in (ref() for ref in made) if p is not None]
        storages = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in live}
        peak[0] = max(peak[0], sum(storages.values()))

    def new(cls: Any, data: Any = None, requires_grad: bool = True) -> Any:
        p = original(cls, data, requires_grad)
        if not isinstance(p, DTensor) and p.device.type != "meta":
            made.append(weakref.ref(p))
            sample()
        return p

    nn.Parameter.__new__ = staticmethod(new)  # type: ignore[method-assign,assignment]
    try:
        yield peak
        sample()
    finally:
        nn.Parameter.__new__ = staticmethod(original)  # type: ignore[method-assign,assignment]


def main() -> None:
    out = Path(sys.argv[1])
    memory: list[dict[str, int]] = []
    prepare = distributed_engine.prepare

    def measured(spec: Any, share: Any, *args: Any, **kwargs: Any) -> Any:
        with whole_parameters() as peak:
            model, built = prepare(spec, share, *args, **kwargs)

        def size(module: Any) -> int:  # a DTensor's numel is the whole parameter's
            return sum(p.numel() * p.element_size() for p in module.parameters())

        blocks = [size(b) for b in distributed_engine.blocks(model)]
        whole = size(model)
        memory.append(
            {"peak_whole": peak[0], "params": whole, "largest_block": max(blocks, default=0),
             "outside_blocks": whole - sum(blocks)}
        )  # fmt: skip
        return model, built

    distributed_engine.prepare = measured  # type: ignore[assignment]
    local_dead: list[list[float]] = []
    merge = distributed_merge.merge_ranks

    def spy(c: Any, share: Any) -> None:  # each rank's dead units before the merge
        local_dead.append([float((layer.alive == 0).float().mean()) for layer in c.layers if layer.alive is not None])
        merge(c, share)

    distributed_merge.merge_ranks = spy  # type: ignore[assignment]
    results: dict[str, Any] = {}
    for name, raw in SPECS.items():
        for shard in ("none", "fsdp"):
            for batches in (1, raw["data"]["batches"]):
                spec = spec_mod.parse({**raw, "data": {**raw["data"], "batches": batches}, "run": {"shard": shard}})
                local_dead.clear()
                memory.clear()
                with counted() as calls:
                    report = run_probe(spec)
                everyone: list[Any] = [None] * dist.get_world_size()
                dist.all_gather_object(everyone, list(local_dead))
                memories: list[Any] = [None] * dist.get_world_size()
                dist.all_gather_object(memories, memory[0])
                results[f"{name}/{shard}/{batches}"] = {
                    "layers": [dataclasses.asdict(x) for x in report.layers],
                    "world_size": report.world_size,
                    "notes": list(report.notes),
                    "collectives": [c for c in calls if shard == "none"],  # FSDP2's own calls are in Python
                    "local_dead": everyone,
                    "memory": memories,
                }
    # probe compare: several runs in a row share the process group
    from probe.experiments import batch

    runs = batch.compare(spec_mod.parse(COMPARE_BASE), [batch.parse_entry(e) for e in COMPARE_ENTRIES])
    results["compare"] = {run.label: [dataclasses.asdict(x) for x in run.report.layers] for run in runs}
    if int(os.environ["RANK"]) == 0:
        out.write_text(json.dumps(results))


if __name__ == "__main__":
    main()
