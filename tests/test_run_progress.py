"""Progress with a time left on long runs (issue 23, item 6): a deep stack moves within its one
batch, the bar waits until a run has taken a second, and a run in a child process reports it too."""

from __future__ import annotations

import io

import pytest

from probe import spec as spec_mod
from probe.measurement import run as run_mod


def _deep(batches: int = 1, steps: int = 0) -> spec_mod.Spec:
    return spec_mod.parse(
        {
            "model": {"depth": 120, "width": 4},
            "data": {"batch_size": 4, "batches": batches},
            "run": {"device": "cpu", "steps": steps},
        }
    )


def test_a_deep_stack_reports_progress_within_its_one_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_mod, "TICK_S", 0.0)
    seen: list[tuple[int, int]] = []
    run_mod.run_probe(_deep(), lambda done, total: seen.append((done, total)))
    total = seen[-1][1]
    assert seen[-1] == (total, total)
    # before: one call, (1, 1), when the batch was done; now each row pass of forward and backward
    assert len(seen) > 200 and total > 200
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert all(t == total for _, t in seen)


def test_the_build_then_batches_then_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    from probe.model.build import build_units

    monkeypatch.setattr(run_mod, "TICK_S", 0.0)
    spec = _deep(batches=2, steps=2)
    seen: list[tuple[int, int]] = []
    run_mod.run_probe(spec, lambda done, total: seen.append((done, total)))
    built, total = build_units(spec), seen[-1][1]
    assert built == 240  # 120 layers made, 120 filled: a deep stack's build moves too
    during = [d for d, _ in seen if d < built]
    assert len(during) > 100 and during == sorted(during)
    ends = [d for d, _ in seen]
    per_batch = (total - built) // 4  # 2 batches and 2 steps of the same row passes
    assert ends[-1] == total and (total - built) % 4 == 0
    assert [built + k * per_batch for k in (1, 2, 3)] == [
        d for d in ends if d > built and (d - built) % per_batch == 0
    ][:3]


def test_the_bar_shows_once_a_run_has_taken_a_while(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from probe.cli import progress

    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    monkeypatch.setattr(progress, "_err_console", lambda: console)
    with progress.batch_progress(10) as update:
        assert update is not None
        update(1, 10)  # too soon: nothing drawn
    assert console.file.getvalue() == ""
    monkeypatch.setattr(progress, "SHOW_AFTER_S", 0.0)
    with progress.batch_progress(10) as update:
        assert update is not None
        update(5, 400)  # the total the run reports (row passes) replaces the first guess
    shown = console.file.getvalue()
    assert "probing batches" in shown and "1%" in shown


def test_a_run_in_a_child_process_reports_its_progress() -> None:
    from probe.experiments.isolated import job_for, run_children
    from probe.model.build import build_units

    spec = _deep(batches=3)
    seen: list[tuple[int, int, int]] = []
    outcome = run_children([job_for(spec, "deep", progress=True)], 1, lambda *event: seen.append(event))
    assert outcome[0].stats is not None, outcome[0].failure
    built, total = build_units(spec), seen[-1][2]
    per_batch = (total - built) // 3
    ends = [e[1] for e in seen if e[1] > built and (e[1] - built) % per_batch == 0]
    assert ends == [built + per_batch, built + 2 * per_batch, total]  # each batch's end, as the child said
