"""Several probes in one call: ``compare`` (one network, several strategies) and ``check``
(several specs). Both return ``report.Run`` records; the CLI only renders them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from probe import activations, inits
from probe import spec as spec_mod
from probe.report import Run
from probe.rules import evaluate
from probe.run import run_probe
from probe.schema import unknown
from probe.spec import Choice, Spec

Step = Callable[[str], None]  # called with the label of each run as it starts


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


def compare(base: Spec, entries: Sequence[Entry], step: Step | None = None) -> list[Run]:
    """Probe ``base`` once per entry with the same seed, data and gate."""
    runs = []
    for entry in entries:
        if step:
            step(entry.text)
        spec = entry_spec(base, entry)
        report = run_probe(spec)
        runs.append(Run(entry.text, report, evaluate(report), entry.strategy, spec.model.activation.name))
    return runs


def check(paths: Sequence[str | Path], overrides: dict[str, Any] | None = None, step: Step | None = None) -> list[Run]:
    """Load every spec first (so bad input fails before any run), then probe each."""
    specs = [spec_mod.load(p, overrides) for p in paths]
    runs = []
    for path, spec in zip(paths, specs, strict=False):
        if step:
            step(str(path))
        report = run_probe(spec)
        runs.append(Run(str(path), report, evaluate(report), spec.init.weight.name, spec.model.activation.name))
    return runs
