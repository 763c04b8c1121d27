"""The memory guard: before a spec runs, its estimate against the memory available (or
``--max-memory``); a run that would not fit is refused (exit 3), with the way out that fits.

No torch at import time: an MLP spec's estimate is arithmetic (``probe.measurement.estimate``);
other models are measured on the meta device (``estimate_meta``, ``estimate_hf``).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from probe.errors import ProbeError, RunError, first_line
from probe.measurement.estimate import MemoryEstimate, estimate_memory
from probe.measurement.estimate_hf import estimate_hf_memory
from probe.measurement.estimate_layerwise import estimate_blockwise_memory, estimate_layerwise_memory
from probe.measurement.estimate_meta import ShapeEstimateError, estimate_shapes_memory
from probe.spec import Spec


def estimate_any(spec: Spec) -> MemoryEstimate | None:
    """The estimate of ``spec``'s run: arithmetic for an MLP spec (no torch), the meta-device
    measure for every other model; ``None`` when a user model cannot run on the meta device."""
    if spec.model.hf is not None:  # their masks read values: not run on the meta device, but built there
        try:
            if _reads_shapes(spec):  # no mask: measured on the meta device, where the config's arithmetic
                return estimate_shapes_memory(spec)  # misreads hierarchical models (MobileViT's patches)
        except ShapeEstimateError:
            pass
        try:
            return estimate_hf_memory(spec)
        except ProbeError:  # the user's (an unknown type or field): as the real build would say it
            raise
        except Exception:  # a config this arithmetic does not know: no estimate, the real run decides
            return None
    if spec.model.factory is None and spec.model.kind == "mlp":
        return estimate_memory(spec)
    try:
        return estimate_shapes_memory(spec)
    except ShapeEstimateError:
        return None


def _reads_shapes(spec: Spec) -> bool:
    """Whether a transformers model reads values of a shape (pixels, a waveform, audio features),
    not token ids with a mask."""
    from probe.model import hf

    config, _ = hf.load_config(spec)
    return hf.input_spec(config, spec).kind == "shape"


def available_memory_bytes() -> int | None:
    """Memory the system can give this process now: ``MemAvailable`` of /proc/meminfo (Linux),
    else the free physical pages (``os.sysconf``), else ``None`` (unknown: no default guard)."""
    import os

    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(
    spec: Spec,
    max_memory_gib: float | None,
    *,
    layerwise: bool = False,
    offer_layerwise: bool = False,
    est: MemoryEstimate | None = None,
) -> MemoryEstimate | None:
    """The estimate, or a RunError (exit 3) when it exceeds ``max_memory_gib`` (``None``: the
    memory available now; ``inf``: no limit). ``layerwise``: the estimate of ``--layer-by-layer``;
    ``offer_layerwise``: a refusal names that mode when it fits."""
    if est is None and layerwise and spec.model.own_model:
        est = estimate_blockwise_memory(spec)
    if est is None:
        est = estimate_layerwise_memory(spec) if layerwise else estimate_any(spec)
    if est is None:
        return None
    if max_memory_gib is None:
        available = available_memory_bytes()
        limit, what = (
            (float(available), f"the memory available now ({available / 2**30:.2f} GiB)")
            if available
            else (math.inf, "")
        )
    else:
        limit, what = max_memory_gib * 2**30, f"--max-memory {max_memory_gib:g} GiB"
    if est.total > limit:
        sizes = "the config's sizes (--model-arg num_hidden_layers=N)" if spec.model.hf else "model.width/depth"
        advice = f"lower data.batch_size or {sizes}, set run.backward: false, or raise --max-memory"
        if layerwise:  # with backward, the boundaries grow with depth
            backward = "set run.backward: false, " if spec.run.backward else ""
            advice = f"lower data.batch_size or model.width, {backward}or raise --max-memory"
        elif offer_layerwise and not spec.model.own_model and spec.model.kind in ("mlp", "conv"):
            forward = replace(spec, run=replace(spec.run, backward=False))  # no boundaries kept
            for option, how in ((spec, ""), (forward, "the forward signal ")):
                one_block = estimate_layerwise_memory(option).total
                if one_block <= limit:
                    flag = " --set run.backward=false" if option is forward else ""
                    advice += f"; or probe {how}one block at a time with --layer-by-layer{flag} "
                    advice += f"(estimated {one_block / 2**30:.2f} GiB)"
                    break
        if max_memory_gib is None:
            advice += " (--max-memory GIB runs it anyway, e.g. with swap)"
        raise RunError(f"{spec.name}: {est.line()} exceeds {what}; {advice}")
    return est


# A run whose estimate is at least this large gets its estimate printed before it starts.
LARGE_RUN_BYTES = 2**30


def guard_memory(
    specs: list[Spec],
    max_memory_gib: float | None,
    jobs: int = 1,
    *,
    layerwise: bool = False,
    offer_layerwise: bool = False,
    later: Any = None,
) -> list[str]:
    """Lines worth printing before the runs (estimates of large runs); a RunError (exit 3) when a
    run, or the ``jobs`` largest runs side by side, would exceed ``max_memory_gib``. ``layerwise``
    and ``offer_layerwise`` as for ``check_memory``; a spec for which ``later(spec)`` is true is
    left to its run, which estimates the model it builds (``probe.measurement.once``)."""
    lines = []
    estimates = []
    for spec in specs:
        est = None
        if later is not None and later(spec):
            continue
        if len(specs) > 1 and not layerwise:  # several specs (check): one whose model fails to build
            try:  # is reported by name when it runs, and the others still run
                est = estimate_any(spec)
            except ProbeError as exc:
                lines.append(f"{spec.name}: no memory estimate ({first_line(exc)})")
                continue
            if est is None:
                lines.append(f"{spec.name}: no memory estimate (the model does not run on the meta device)")
                continue
        est = check_memory(spec, max_memory_gib, layerwise=layerwise, offer_layerwise=offer_layerwise, est=est)
        if est is None:
            lines.append(f"{spec.name}: no memory estimate (the model does not run on the meta device)")
            continue
        estimates.append(est.total)
        if est.total >= LARGE_RUN_BYTES:
            lines.append(f"{spec.name}: {est.line()}")
    side_by_side = sum(sorted(estimates, reverse=True)[: max(jobs, 1)])
    if max_memory_gib is not None and jobs > 1 and side_by_side > max_memory_gib * 2**30:
        raise RunError(
            f"{min(jobs, len(estimates))} runs side by side (--jobs {jobs}) need an estimated "
            f"{side_by_side / 2**30:.2f} GiB, over --max-memory {max_memory_gib:g} GiB; lower --jobs"
        )
    return lines
