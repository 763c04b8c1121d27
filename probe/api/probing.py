"""The pipelines of ``probe run``, ``check`` and ``compare``: memory guard, measure (here or in a
child process that alone runs the user's code), judge. The commands parse and render; every step
between is here, so a Python caller gets the same results.

``say`` receives the lines worth printing before a run (large runs' memory estimates); progress
callbacks receive counts as they grow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from probe.api.pipeline import judge, probe_spec
from probe.api.report import Report
from probe.errors import RunError, SpecError
from probe.spec import Spec

if TYPE_CHECKING:
    from probe.experiments.batch import Failure
    from probe.measurement.memory import MemoryEstimate
    from probe.render.report import Run

Say = Callable[[str], None]


def _quiet(_line: str) -> None:
    return None


def _check_nan(max_memory: float | None) -> None:
    if max_memory is not None and max_memory != max_memory:  # NaN passes typer's min=0 check
        raise SpecError("expected a number of GiB (inf: no limit), got nan", "--max-memory")


def guard_memory(
    specs: Sequence[Spec],
    max_memory: float | None,
    jobs: int = 1,
    *,
    say: Say = _quiet,
    layerwise: bool = False,
    offer_layerwise: bool = False,
    later: Callable[[Spec], bool] | None = None,
) -> None:
    """Say the estimate of large runs and refuse (RunError, exit 3) those over ``max_memory`` GiB
    (default: the memory available now), before any run; a spec for which ``later(spec)`` holds is
    left to its run, which estimates the model it builds."""
    _check_nan(max_memory)
    from probe.measurement.memory import guard_memory as guard

    for line in guard(list(specs), max_memory, jobs, layerwise=layerwise, offer_layerwise=offer_layerwise, later=later):
        say(line)


def memory_check(
    spec: Spec, max_memory: float | None, *, say: Say = _quiet, layerwise: bool = False
) -> Callable[[MemoryEstimate | None], None]:
    """``guard_memory`` for a model its run builds (a user factory runs once): the callback refuses
    or says the estimate when the run has it, before its measured pass."""
    _check_nan(max_memory)

    def check(est: MemoryEstimate | None) -> None:
        from probe.measurement.once import guarded

        line = guarded(spec, est, max_memory, layerwise)
        if line is not None:
            say(line)

    return check


def guard_run(
    spec: Spec, max_memory: float | None, *, say: Say = _quiet, layerwise: bool = False, offer_layerwise: bool = False
) -> Callable[[MemoryEstimate | None], None] | None:
    """The memory guard of one run: the check to give the run where it estimates the model it
    builds (``built_once``: a user factory then runs once), else None after guarding the spec here,
    before anything is built (``offer_layerwise``: a refusal names ``--layer-by-layer``)."""
    if built_once(spec, layerwise):
        return memory_check(spec, max_memory, say=say, layerwise=layerwise)
    guard_memory([spec], max_memory, say=say, layerwise=layerwise, offer_layerwise=offer_layerwise)
    return None


def guard_each(
    specs: Sequence[Spec], max_memory: float | None, jobs: int, *, say: Say = _quiet
) -> Callable[[Spec], Callable[[MemoryEstimate | None], None] | None]:
    """``guard_run`` for specs run one after another: in one process a factory's model is estimated
    by its own run, from the model it builds (the factory runs once; the function returned gives
    each run its check); worker processes (``jobs`` > 1) are estimated here, side by side."""
    later = built_once if jobs <= 1 else None
    guard_memory(specs, max_memory, jobs, say=say, later=later)

    def each(s: Spec) -> Callable[[MemoryEstimate | None], None] | None:
        return memory_check(s, max_memory, say=say) if later is not None and built_once(s) else None

    return each


def built_once(spec: Spec, layerwise: bool = False) -> bool:
    """Whether a run of ``spec`` estimates the model it builds (its factory then runs once)."""
    from probe.measurement.once import built_once as once

    return once(spec, layerwise)


@dataclass(frozen=True)
class RunOptions:
    """How ``run`` probes one spec: ``weights`` loaded over the init, ``layer_by_layer``, the
    mean-field ``theory``, the ``layers`` kept, the memory limit, the rows' ``histograms``, and
    whether a child process runs it (``isolated``, with ``debug`` tracebacks)."""

    weights: Path | None = None
    layer_by_layer: bool = False
    theory: bool = False
    layers: str | None = None
    max_memory: float | None = None
    histograms: bool = False
    isolated: bool = False
    debug: bool = False


def run(
    spec: Spec, options: RunOptions, progress: Callable[[int, int], None] | None = None, say: Say = _quiet
) -> Report:
    """``probe run``: one spec measured (here, or in a child process) and judged. ``check_mode``
    (``api.pipeline``), called before, refuses what ``layer_by_layer`` cannot do."""
    if options.isolated:
        return _run_isolated(spec, options, progress, say)
    layerwise = options.layer_by_layer
    check = guard_run(spec, options.max_memory, say=say, layerwise=layerwise, offer_layerwise=not layerwise)
    state = None
    if options.weights is not None:
        from probe.experiments.fix import load_weights

        state = load_weights(options.weights)
    return probe_spec(
        spec,
        state_dict=state,
        layer_by_layer=layerwise,
        progress=progress,
        theory=options.theory,
        layers=None if options.theory else options.layers,
        check=check,
        histograms=options.histograms,
    )


def _run_isolated(spec: Spec, options: RunOptions, progress: Callable[[int, int], None] | None, say: Say) -> Report:
    """The report of a run in a child process (the user's code runs there only), judged here."""
    from probe.experiments.isolated import job_for, run_children, runs_user_code

    if not runs_user_code(spec):  # a user model's estimate calls its factory: the child makes it
        lw = options.layer_by_layer
        guard_memory([spec], options.max_memory, say=say, layerwise=lw, offer_layerwise=not lw)
    weights = None if options.weights is None else str(options.weights)
    job = job_for(
        spec,
        spec.name,
        options.max_memory,
        layer_by_layer=options.layer_by_layer,
        weights=weights,
        histograms=options.histograms,
        progress=True,
        debug=options.debug,
    )
    counted = (lambda _i, done, total: progress(done, total)) if progress else None
    outcome = run_children([job], 1, counted)[0]
    if outcome.failure is not None:
        failure = outcome.failure
        raise (RunError if failure.exit_code == 3 else SpecError)(f"{spec.name}: {failure.message}")
    assert outcome.stats is not None
    layers = None if options.theory else options.layers
    return judge(outcome.stats, spec, theory=options.theory, layers=layers, loaded=weights is not None)


def check(
    specs: Sequence[Spec],
    labels: Sequence[str],
    step: Callable[[str], None] | None = None,
    *,
    jobs: int = 1,
    max_memory: float | None = None,
    isolated: bool = False,
    debug: bool = False,
    say: Say = _quiet,
) -> tuple[list[Run], list[Failure]]:
    """``probe check``: each spec probed and judged (``step(label)`` as each begins); the specs that
    could not be probed come back as failures, by label, and the others still run."""
    from probe.experiments import batch

    if isolated:  # each spec in a child process; the rules run here (probe.experiments.isolated)
        from probe.experiments.isolated import check_isolated, runs_user_code

        from_here = [s for s in specs if not runs_user_code(s)]
        guard_memory(from_here, max_memory, jobs, say=say)
        return check_isolated(specs, labels, step, jobs, max_memory, debug)
    return batch.check_each(specs, labels, step, jobs, guard_each(specs, max_memory, jobs, say=say))


def entry_specs(base: Spec, entries: Sequence[str]) -> list[Spec]:
    """The spec of each ``STRATEGY[:ACTIVATION]`` entry over ``base`` (bad entries fail here)."""
    from probe.experiments import batch

    return [batch.entry_spec(base, batch.parse_entry(e)) for e in entries]


def compare(
    base: Spec,
    entries: Sequence[str],
    step: Callable[[str], None] | None = None,
    *,
    jobs: int = 1,
    max_memory: float | None = None,
    histograms: bool = False,
    say: Say = _quiet,
) -> list[Run]:
    """``probe compare``: ``base`` probed once per entry, same seed, data and gate."""
    from probe.experiments import batch

    parsed = [batch.parse_entry(e) for e in entries]
    each = guard_each([batch.entry_spec(base, e) for e in parsed], max_memory, jobs, say=say)
    return batch.compare(base, parsed, step, jobs, histograms=histograms, check=each)
