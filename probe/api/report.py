"""The result of a probe, as the Python face gives it: ``Report`` (statistics, verdict, advice,
prediction) with its text, HTML and notebook views, and ``Image`` for a plot."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from probe.records import LayerStats, Problem, Stats, Verdict
from probe.spec import Spec

if TYPE_CHECKING:
    from probe.judge.advice import Advice
    from probe.judge.theory import Comparison, Prediction


@dataclass(frozen=True, repr=False)
class Report:
    """A probe result: the per-layer statistics (``stats``) and the health ``verdict``.

    ``layers`` holds one ``LayerStats`` per watched row with every field of the JSON rows
    (``name``, ``mean``, ``std``, ``zero_ratio``, ``dead_units``, ``saturation_ratio``,
    ``nonfinite``, ``unit_spread``, ``grad_std``, ``weight_grad_norm``, ...); ``verdict.problems``
    holds the broken rules as ``Problem(rule, layer, value, threshold, message)``.
    """

    stats: Stats
    verdict: Verdict
    advice: Advice | None = None
    prediction: Prediction | None = None  # with theory=True
    comparisons: tuple[Comparison, ...] = field(default=())

    @property
    def healthy(self) -> bool:
        return self.verdict.healthy

    @property
    def problems(self) -> tuple[Problem, ...]:
        return self.verdict.problems

    @property
    def layers(self) -> tuple[LayerStats, ...]:
        return self.stats.layers

    @property
    def spec(self) -> Spec:
        return self.stats.spec

    @property
    def notes(self) -> tuple[str, ...]:
        return self.stats.notes

    def layer(self, name: str) -> LayerStats:
        """The row called ``name``; ``KeyError`` naming the rows there are."""
        for x in self.layers:
            if x.name == name:
                return x
        raise KeyError(f"no layer '{name}' (layers: {', '.join(x.name for x in self.layers)})")

    def to_dict(self) -> dict[str, Any]:
        """The ``probe.report/1`` document, as ``probe run --format json`` writes it."""
        from probe.render import report as rp

        out = rp.report_dict(self.stats, self.verdict)
        if self.advice is not None:
            out["advice"] = self.advice.to_dict()
        if self.prediction is not None:
            from probe.judge import theory as th

            out = th.annotate(out, self.prediction, self.comparisons)
        return out

    def to_json(self) -> str:
        from probe.render.report import dumps

        return dumps(self.to_dict())

    def verdict_lines(self) -> list[str]:
        """One line per broken rule: ``rule at layer: value ... threshold ...: message``."""
        return [problem_line(p) for p in self.verdict.problems]

    def doc(self) -> Any:
        """The output as data (``probe.render.doc.Doc``): what every format is written from."""
        if self.prediction is not None:
            from probe.render.theory import theory_doc

            return theory_doc(self.stats, self.verdict, self.prediction, list(self.comparisons))
        from probe.render.run_view import run_doc
        from probe.render.views import advice_doc

        shown = run_doc(self.stats, self.verdict)
        advice = self.advice
        return shown + advice_doc(advice) if advice is not None and (advice.mismatch or advice.suggestion) else shown

    def __rich__(self) -> Any:
        from probe.render.writers import rich_renderable

        return rich_renderable(self.doc(), None)[0]

    def text(self, width: int | None = None, color: bool = False) -> str:
        """The table as ``probe run`` prints it, fitted to ``width`` columns (default: the
        terminal's, else 120; nothing is cut), with ANSI colors if ``color``."""
        import shutil

        from probe.render.writers import rich_renderable

        renderable, used = rich_renderable(self.doc(), width or shutil.get_terminal_size((120, 24)).columns)
        console = _console(used, color)
        console.print(renderable)
        return str(console.file.getvalue())

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:
        state = "healthy" if self.healthy else "UNHEALTHY: " + ", ".join(dict.fromkeys(p.rule for p in self.problems))
        return f"<probe.Report {self.spec.name}: {len(self.layers)} layers, {state}>"

    def _repr_html_(self) -> str:
        """The terminal table in HTML for Jupyter, colored as rich colors it in a terminal, at its
        natural width (a notebook scrolls: nothing is cut)."""
        from probe.render.writers import rich_renderable

        renderable, used = rich_renderable(self.doc(), None)
        console = _console(used, True, record=True)
        console.print(renderable)
        return str(console.export_html(inline_styles=True, code_format=_HTML_PRE))

    def plot(self, path: str | Path | None = None) -> Path | Image:
        """Activation and gradient std per layer (log scale). With ``path`` (.png, .svg, .pdf) the
        picture is written there and its path returned; without, an ``Image`` a notebook shows.
        Needs matplotlib (``pip install 'probe[plot]'``)."""
        from probe.records import Run
        from probe.render.plot import _pyplot, runs_figure, svg_text

        runs = [Run(self.spec.name, self.stats, self.verdict)]
        if path is not None:
            return runs_figure(runs, Path(path))
        _pyplot()  # the install hint as a SpecError, not None
        svg = svg_text(runs_figure, runs)
        assert svg is not None
        return Image(svg)


@dataclass(frozen=True)
class Image:
    """An SVG picture; Jupyter shows it, ``save`` writes it."""

    svg: str

    def _repr_svg_(self) -> str:
        return self.svg

    def save(self, path: str | Path) -> Path:
        from probe.render.output import write_text

        return write_text(Path(path), self.svg, "save")  # the one output writer (atomic, devices, links)


_HTML_PRE = "<pre style=\"font-family:Menlo,'DejaVu Sans Mono',consolas,monospace;line-height:1.3\">{code}</pre>"


def _console(width: int, color: bool, record: bool = False) -> Any:
    import io

    from rich.console import Console

    return Console(
        file=io.StringIO(),
        width=width,
        record=record,
        force_terminal=color,
        color_system="truecolor" if color else None,
        highlight=False,
        emoji=False,
        # in a notebook rich would send what it prints to the notebook's display, not to ``file``:
        # print(report) / report.text() came back empty and every report was displayed twice
        force_jupyter=False,
    )


def problem_line(p: Problem) -> str:
    """``vanishing at layer7: value 0.0031, threshold 0.01: <message>``."""
    from probe.render.numbers import fmt

    return f"{p.rule} at {p.layer}: value {fmt(p.value)}, threshold {fmt(p.threshold)}: {p.message}"
