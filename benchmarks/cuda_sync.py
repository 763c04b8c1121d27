"""On CUDA: no host synchronization inside the hooks (checked with
``torch.cuda.set_sync_debug_mode("error")``, which raises on any synchronizing call), and one
device-to-host transfer per run (in ``Collector.finish``). Skipped when no CUDA device exists."""

from __future__ import annotations

import torch
from common import Result, built_model, mlp_spec

from probe.measurement.collect import Collector
from probe.measurement.merge import PENDING_PER_LAYER


def results() -> list[Result]:
    if not torch.cuda.is_available():
        return [Result("cuda: no host sync inside hooks", 0.0, 0.0, skipped=True, note="no CUDA device: skipped")]
    device = torch.device("cuda")
    spec = mlp_spec(8, 128, 512, activation="tanh")
    built = built_model(spec, device)
    x = torch.randn(512, 128, device=device)
    direction = torch.randn(512, 128, device=device)
    collector = Collector(built.watched, device)
    torch.cuda.synchronize()
    syncs = 0
    torch.cuda.set_sync_debug_mode("error")
    batches = 3 * PENDING_PER_LAYER  # several device merges run inside the checked region too
    try:
        with collector.hooks():
            for _ in range(batches):
                (built.model(x) * direction).sum().backward()
                collector.after_backward()
                built.model.zero_grad(set_to_none=True)
            with torch.no_grad():  # forward-only: merges are triggered from inside a forward hook
                for _ in range(batches):
                    built.model(x)
    except RuntimeError as exc:
        syncs = 1
        print(f"    sync inside hooks: {exc}")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    collector.finish()
    return [
        Result(
            f"cuda: host syncs inside hooks ({2 * batches} batches)",
            float(syncs),
            0.0,
            unit="",
            note="set_sync_debug_mode",
        )
    ]


if __name__ == "__main__":
    for r in results():
        print(r.line())
