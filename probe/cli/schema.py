"""probe schema: the spec's JSON Schema, for editors (yaml-language-server) and validators."""

# No `from __future__ import annotations`: typer reads the annotations at import (see common.py).

from probe.cli.common import EXIT_OK, PANEL_REFERENCE, Command, app
from probe.cli.formats import _emit
from probe.cli.guard import guard
from probe.cli.options import OutputOpt


@app.command("schema", cls=Command, rich_help_panel=PANEL_REFERENCE)
def schema_cmd(output: OutputOpt = None) -> None:
    """Print the JSON Schema of a spec, generated from the tables the validator uses.

    With a first line `# yaml-language-server: $schema=PATH`, editors complete a spec's keys.

    Example: probe schema -o spec.schema.json
    """

    def body() -> int:
        import json

        from probe.api import spec_schema

        _emit(json.dumps(spec_schema(), indent=2) + "\n", output)
        return EXIT_OK

    guard(body)
