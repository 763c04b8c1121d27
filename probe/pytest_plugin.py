"""pytest plugin (entry point ``pytest11``): the ``probe_report`` fixture and ``--probe-junit``.

::

    def test_model_at_init(probe_report):
        report = probe_report(MyModel(), torch.randn(32, 10))
        assert report.verdict.healthy, report.verdict_lines()

``probe_report(model, inputs, **options)`` is ``probe.measure`` (gate thresholds may be given as
keywords, as to ``assert_healthy``) and remembers every report of the session under the test's id:
``pytest --probe-junit probe.xml`` writes them as JUnit test cases (failed when unhealthy), and the
terminal summary counts them. Importing this module costs nothing: torch loads at the first probe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from probe.api import Report

_REPORTS = pytest.StashKey[list[tuple[str, "Report"]]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("probe", "probe: initialization health of models measured in tests")
    group.addoption(
        "--probe-junit",
        metavar="PATH",
        default=None,
        help="write every probe_report of the session to PATH as JUnit XML (one test case per report)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_REPORTS] = []


@pytest.fixture
def probe_report(request: pytest.FixtureRequest) -> Iterator[Callable[..., Report]]:
    """``probe_report(model, inputs, **options) -> Report``: probe a model and remember the report."""
    from probe.testing import split_options

    reports = request.config.stash[_REPORTS]
    made = 0

    def measure(model: Any, inputs: Any = None, **options: Any) -> Report:
        nonlocal made
        from probe.api import measure as run

        report = run(model, inputs, **split_options(dict(options)))
        made += 1
        label = request.node.nodeid if made == 1 else f"{request.node.nodeid}[{made}]"
        reports.append((label, report))
        return report

    yield measure


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    path = config.getoption("--probe-junit")
    reports = config.stash.get(_REPORTS, [])
    if path is None or getattr(config, "workerinput", None) is not None:
        return
    from probe.records import Run
    from probe.render.output import write_text
    from probe.render.report import junit_xml

    runs = [Run(label, r.stats, r.verdict) for label, r in reports]
    write_text(Path(path), junit_xml(runs), "--probe-junit")  # the one output writer (atomic, devices, links)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    reports = config.stash.get(_REPORTS, [])
    if not reports:
        return
    bad = [(label, r) for label, r in reports if not r.verdict.healthy]
    terminalreporter.write_sep("-", "probe")
    terminalreporter.write_line(f"{len(reports) - len(bad)} healthy, {len(bad)} unhealthy model(s) measured")
    for label, r in bad:
        rules = ", ".join(dict.fromkeys(p.rule for p in r.verdict.problems))
        terminalreporter.write_line(f"  {label}: {rules}")
    path = config.getoption("--probe-junit")
    if path is not None:
        terminalreporter.write_line(f"probe: wrote {path}")
