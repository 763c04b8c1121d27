"""Several probes in one call: ``compare`` (one network, several strategies) and ``check``
(several specs). Both return ``report.Run`` records; the CLI only renders them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from probe import spec as spec_mod
from probe.errors import SpecError
from probe.spec import Choice, Spec, activations, inits
from probe.spec.schema import unknown

if TYPE_CHECKING:  # imported where used: a bad entry fails without loading the probe machinery
    from probe.records import Run, Stats, Verdict

Step = Callable[[str], None]  # called with the label of each run as it starts
R = TypeVar("R")


@dataclass(frozen=True)
class Entry:
    """``STRATEGY[:ACTIVATION]`` from the command line, e.g. ``xavier:tanh``."""

    text: str
    strategy: str
    activation: str | None


def parse_entry(text: str) -> Entry:
    name, _, act = text.partition(":")
    name, act = name.strip(), act.strip()
    canonical = inits.canonical(name)
    if canonical not in inits.STRATEGIES:
        raise unknown("init strategy", name, inits.all_names(), f"'{text}'")
    if act and act not in activations.ACTIVATIONS:
        raise unknown("activation", act, activations.ACTIVATIONS, f"'{text}'")
    return Entry(text, name, act or None)


def entry_spec(base: Spec, entry: Entry) -> Spec:
    """``base`` with the entry's weight strategy (default parameters) and activation."""
    model = base.model
    if entry.activation is not None:
        act_params = spec_mod.parse({"model": {"activation": entry.activation}}).model.activation.params
        model = replace(model, activation=Choice(entry.activation, act_params))
    weight = spec_mod.parse({"init": {"weight": entry.strategy}}).init.weight
    # Per-module rules keep their matching and their bias/scale settings, but every weight they
    # fill takes the entry's strategy: otherwise the rules would hide the difference compared.
    rules = tuple(
        replace(
            rule,
            targets=tuple(replace(t, strategy=weight) if t.target.startswith("weight") else t for t in rule.targets),
        )
        for rule in base.init.rules
    )
    # explicit: a user model (--model) gets the strategy too instead of keeping its own init
    init = replace(base.init, weight=weight, rules=rules, explicit=True)
    return replace(base, model=model, init=init, name=entry.text)


def compare(
    base: Spec,
    entries: Sequence[Entry],
    step: Step | None = None,
    jobs: int = 1,
    histograms: bool = False,
    check: Callable[[Spec], Any] | None = None,
) -> list[Run]:
    """Probe ``base`` once per entry with the same seed, data and gate (``jobs`` worker processes);
    ``histograms``: each run's first-batch histograms, binned in its measured pass; ``check(spec)``:
    the memory check each run is given (in this process: ``jobs`` 1), or None."""
    specs = [entry_spec(base, entry) for entry in entries]
    labels = [entry.text for entry in entries]
    return _run_all(specs, labels, [entry.strategy for entry in entries], step, jobs, histograms, check)


def check(
    paths: Sequence[str | Path], overrides: dict[str, Any] | None = None, step: Step | None = None, jobs: int = 1
) -> list[Run]:
    """Load every spec first (so bad input fails before any run), then probe each."""
    return check_specs([spec_mod.load(p, overrides) for p in paths], [str(p) for p in paths], step, jobs)


def check_specs(specs: Sequence[Spec], labels: Sequence[str], step: Step | None = None, jobs: int = 1) -> list[Run]:
    """Probe specs already loaded (a spec read from a pipe, such as /dev/stdin, can be read once)."""
    return _run_all(list(specs), list(labels), [s.init.weight.name for s in specs], step, jobs)


@dataclass(frozen=True)
class Failure:
    """A spec ``probe check`` could not probe: its label, the exit code it stands for, and why."""

    label: str
    exit_code: int
    message: str


def check_each(
    specs: Sequence[Spec],
    labels: Sequence[str],
    step: Step | None = None,
    jobs: int = 1,
    check: Callable[[Spec], Any] | None = None,
) -> tuple[list[Run], list[Failure]]:
    """Probe every spec, going on past one that fails: the healthy/unhealthy runs, and a
    ``Failure`` naming each spec that raised (so one broken model does not hide the others).
    ``check(spec)``: the memory check its run is given (``run_probe(check=...)``, in this process:
    ``jobs`` 1), or None."""
    from probe.records import Run

    fn: Callable[[Spec], tuple[Stats, Verdict] | Failure] = _probe_or_failure
    if check is not None and jobs <= 1:
        fn = lambda spec: _probe_or_failure(spec, check(spec))  # noqa: E731
    results = run_each(fn, list(specs), list(labels), step, jobs)
    runs, failures = [], []
    for label, spec, result in zip(labels, specs, results, strict=True):
        if isinstance(result, Failure):
            failures.append(replace(result, label=label))
        else:
            runs.append(Run(label, *result, spec.init.weight.name, spec.model.activation.name))
    return runs, failures


def _probe_or_failure(spec: Spec, check: Any = None) -> tuple[Stats, Verdict] | Failure:
    """(report, verdict), or a ``Failure`` (its label filled in by the caller) when the probe
    raised; module-level, so workers run it. The exit code is 2 or 3, never one an exception
    carries otherwise (user code could raise a probe error whose ``exit_code`` is 0)."""
    from probe.errors import ProbeError, exit_code_of, first_line, is_probes_own

    try:
        return probe_and_evaluate(spec, check=check)
    except ProbeError as exc:
        return Failure("", exit_code_of(exc) if is_probes_own(exc) else 3, str(exc))
    except Exception as exc:
        return Failure("", 3, f"unexpected error: {type(exc).__name__}: {first_line(exc)}")


def probe_and_evaluate(spec: Spec, histograms: bool = False, check: Any = None) -> tuple[Stats, Verdict]:
    """One spec's report and verdict (module-level, so worker processes can run it)."""
    from probe.judge.rules import evaluate
    from probe.measurement.run import run_probe

    report = run_probe(spec, histograms=histograms, check=check)
    return report, evaluate(report)


def run_each(
    fn: Callable[[Spec], R], specs: Sequence[Spec], labels: Sequence[str], step: Step | None, jobs: int
) -> list[R]:
    """``[fn(spec) for spec in specs]`` in ``jobs`` worker processes, with progress: serially,
    ``step`` names each run as it starts; in parallel, each run as it finishes (in order)."""
    from probe.experiments.parallel import parallel_map
    from probe.measurement.distributed import launched_world_size

    if jobs > 1 and launched_world_size() > 1:
        # worker processes would inherit torchrun's rank and join (or hang on) its process group
        raise SpecError("--jobs starts worker processes; under torchrun the ranks already share each run: drop --jobs")
    if step and jobs == 1:
        results = []
        for spec, label in zip(specs, labels, strict=True):
            step(label)
            results.append(fn(spec))
        return results
    return parallel_map(fn, specs, jobs, (lambda i: step(labels[i])) if step else None)


def _run_all(
    specs: list[Spec],
    labels: list[str],
    strategies: list[str],
    step: Step | None,
    jobs: int,
    histograms: bool = False,
    check: Callable[[Spec], Any] | None = None,
) -> list[Run]:
    from functools import partial

    from probe.records import Run

    fn: Callable[[Spec], tuple[Stats, Verdict]] = partial(probe_and_evaluate, histograms=histograms)
    if check is not None and jobs <= 1:
        fn = lambda spec: probe_and_evaluate(spec, histograms, check(spec))  # noqa: E731
    results = run_each(fn, specs, labels, step, jobs)
    return [
        Run(label, report, verdict, strategy, spec.model.activation.name)
        for label, strategy, spec, (report, verdict) in zip(labels, strategies, specs, results, strict=True)
    ]
