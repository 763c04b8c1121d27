"""probe rules: the health rules and their gate keys."""

# No `from __future__ import annotations`: typer reads the annotations at import (see common.py).

from probe.cli.common import Command, app, show


@app.command("rules", cls=Command)
def rules_cmd() -> None:
    """List the health rules, their gate thresholds and defaults."""
    from rich.table import Table

    from probe.judge.rules import RULES
    from probe.spec import GATE_PARAMS

    table = Table(show_edge=False, header_style="bold", pad_edge=False)
    for col in ("rule", "gate key", "default", "meaning"):
        table.add_column(col)
    for rule in RULES.values():
        for i, key in enumerate(rule.thresholds):
            p = GATE_PARAMS[key]
            table.add_row(rule.name if i == 0 else "", key, f"{p.default:g}", p.help.split(": ", 1)[-1])
    show(table, None)
