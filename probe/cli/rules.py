"""probe rules: the health rules and their gate keys."""

# No `from __future__ import annotations`: typer reads the annotations at import (see common.py).

from probe.cli.common import EXIT_OK, PANEL_REFERENCE, Command, Format, FormatOpt, OutputOpt, app, guard, render


@app.command("rules", cls=Command, rich_help_panel=PANEL_REFERENCE)
def rules_cmd(fmt: FormatOpt = Format.table, output: OutputOpt = None) -> None:
    """List the health rules, their gate thresholds and defaults."""

    def body() -> int:
        from probe.render.views import rules_doc

        render(fmt, output, rules_doc)
        return EXIT_OK

    guard(body)
