"""probe rules: the health rules and their gate keys."""

# No `from __future__ import annotations`: typer reads the annotations at import (see common.py).

from probe.cli.common import EXIT_OK, PANEL_REFERENCE, Command, app
from probe.cli.formats import render
from probe.cli.guard import guard
from probe.cli.options import Output, grouped


@app.command("rules", cls=Command, rich_help_panel=PANEL_REFERENCE)
@grouped
def rules_cmd(*, out: Output) -> None:
    """List the health rules, their gate thresholds and defaults."""

    def body() -> int:
        from probe.render.views import rules_doc

        render(out.fmt, out.output, rules_doc)
        return EXIT_OK

    guard(body)
