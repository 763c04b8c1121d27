"""The pipelines of the commands around the probe: ``sweep``, ``train``, ``fix``, ``inspect``,
``advise``, ``depth`` and ``schema``. Each guards memory, runs its experiment and returns plain
result objects that ``probe.render`` turns into text; the commands only parse and render.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from probe.api.pipeline import probe_spec
from probe.api.probing import Say, _quiet, guard_memory, guard_run
from probe.errors import SpecError
from probe.spec import Spec

if TYPE_CHECKING:
    from probe.experiments.fix import FixResult
    from probe.experiments.inspect_params import Inspection
    from probe.experiments.sweep import SweepResult
    from probe.experiments.train import TrainResult, TrainSettings
    from probe.judge.advice import Advice
    from probe.judge.depth import DepthReport
    from probe.records import Verdict


def sweep_grid(depth: str | None, width: str | None, coordinate_check: bool) -> tuple[tuple[int, ...] | None, ...]:
    """``--depth D1,D2,...`` and ``--width W1,W2,...`` read and checked: (depths, widths)."""
    from probe.experiments.sweep import parse_ints

    depths = parse_ints(depth, "--depth") if depth else None
    widths = parse_ints(width, "--width") if width else None
    if depths is None and widths is None:
        raise SpecError("give --depth D1,D2,... and/or --width W1,W2,...")
    if coordinate_check and (widths is None or len(widths) < 2):
        raise SpecError("the coordinate check compares widths: give --width W1,W2,... (2 or more)", "--steps")
    return depths, widths


def sweep(
    base: Spec,
    entries: Sequence[str],
    depths: Sequence[int] | None,
    widths: Sequence[int] | None,
    step: Callable[[str], None] | None = None,
    *,
    jobs: int = 1,
    max_memory: float | None = None,
    say: Say = _quiet,
) -> SweepResult:
    """``probe sweep``: every (depth, width, entry) cell probed (``step(label)`` as each begins)."""
    from probe.experiments import sweep as sw

    guard_memory(sw.grid(base, entries, depths, widths), max_memory, jobs, say=say)
    return sw.sweep(base, entries, depths, widths, step, jobs)


def sweep_passes(result: SweepResult) -> bool:
    """Whether the coordinate check (a width sweep with steps) passes: True for any other sweep."""
    from probe.experiments.coord_check import coord_checks

    return all(c.passes for c in coord_checks(result))


def train_settings(**values: Any) -> TrainSettings:
    """``probe train``'s data and optimizer settings, checked (a SpecError names the option)."""
    from probe.experiments.train import TrainSettings

    settings = TrainSettings(**values)
    settings.check()
    return settings


def train_base(overrides: dict[str, Any], path: Any = None) -> Spec:
    """The network ``probe train`` trains: ``path``'s spec, else the seed's Lab 2 MLP."""
    from probe import spec as spec_mod
    from probe.experiments.train import lab2_spec

    if path:
        return spec_mod.load(path, overrides)
    return spec_mod.parse(spec_mod.to_dict(lab2_spec()), overrides, "lab2")


def train_network(base: Spec) -> Spec:
    """The spec ``probe train`` builds from ``base`` (its input and output sizes set to the task's)."""
    from probe.experiments.train import train_spec

    return train_spec(base, base.init.weight.name)


def train(
    base: Spec,
    entries: Sequence[str],
    settings: TrainSettings,
    step: Callable[[str], None] | None = None,
    on_step: Callable[[int], None] | None = None,
    say: Say = _quiet,
) -> list[TrainResult]:
    """``probe train``: ``base`` trained once per entry on the two-moons task."""
    from probe.experiments.train import train_many

    guard_memory([base], None, say=say)  # the default guard: refuse what does not fit the memory available
    return train_many(base, entries, settings, step, on_step)


def fix(
    spec: Spec,
    start: str | None,
    tolerance: float,
    max_iter: int,
    step: Callable[[str], None] | None = None,
    say: Say = _quiet,
) -> FixResult:
    """``probe fix``: LSUV from ``start``, probed before and after (``step(label)`` as each begins)."""
    from probe.experiments import fix as fx

    return fx.fix(spec, start, tolerance, max_iter, step, check=guard_run(spec, None, say=say))


def weights_bytes(state_dict: dict[str, Any]) -> bytes:
    """A state dict as ``torch.save`` writes it (``probe fix --save``)."""
    from probe.experiments.fix import weights_bytes as as_bytes

    return as_bytes(state_dict)


def inspect(spec: Spec, say: Say = _quiet) -> Inspection:
    """``probe inspect``: each parameter against its init rule, and a forward pass of scales."""
    from probe.experiments.inspect_params import inspect as inspect_spec

    return inspect_spec(spec, check=guard_run(spec, None, say=say))


def advise(spec: Spec, probe_run: bool = True, say: Say = _quiet) -> tuple[Advice, Verdict | None]:
    """``probe advise``: the init advice, and with ``probe_run`` the probe's verdict and a fix to try."""
    from probe.judge.advice import advise as advise_spec

    if not probe_run:
        return advise_spec(spec), None
    report = probe_spec(spec, check=guard_run(spec, None, say=say))
    return report.advice or advise_spec(spec, report.verdict), report.verdict


def advised(spec: Spec, change: dict[str, Any], before: Verdict, source: str) -> tuple[Spec, str]:
    """``advise --apply``: the spec with ``change`` written over it, and its YAML text (headed by
    what changed from ``source``); refused where the network is healthy or the change is not a spec key's."""
    import yaml

    from probe import spec as spec_mod
    from probe.judge.advice import change_text

    if before.healthy:
        raise SpecError("--apply: the network is healthy, there is nothing to apply")
    if not change:
        raise SpecError("--apply: the suggestion is a change to the model's code, not to a spec key")
    changed = replace(spec_mod.parse(spec_mod.to_dict(spec), dict(change)), trust=spec.trust)
    text = f"# {source} with probe advise's change: {change_text(change)}\n"
    return changed, text + yaml.safe_dump(spec_mod.to_dict(changed), sort_keys=False)


def verdict_of(spec: Spec, say: Say = _quiet) -> Verdict:
    """The probe's verdict on ``spec`` (memory guarded)."""
    return probe_spec(spec, check=guard_run(spec, None, say=say)).verdict


def depth(spec: Spec, strategies: Sequence[str] | None, max_depth: int) -> DepthReport:
    """``probe depth``: mean-field depth limits per strategy (unknown names fail first)."""
    from probe import spec as spec_mod
    from probe.judge.depth import analyze

    for name in strategies or []:
        spec_mod.parse({"init": {"weight": name}})
    return analyze(spec, strategies, max_depth)


def spec_schema() -> dict[str, Any]:
    """The JSON Schema of a spec (``probe schema``)."""
    from probe.spec.jsonschema import spec_schema as schema

    return schema()


def summary(spec: Spec, per_row: Sequence[str] = ()) -> str:
    """The one-line description of ``spec``'s network, leaving out what ``per_row`` varies."""
    from probe.spec import summary as describe

    return describe(spec, tuple(per_row))
