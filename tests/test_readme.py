"""Every `probe` command the README shows in a bash block runs as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

PREFIX = ".venv/bin/probe "


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith(PREFIX):
                commands.append(line[len(PREFIX) :])
    return commands


COMMANDS = _readme_commands()


def test_the_readme_shows_every_command() -> None:
    shown = {c.split()[0] for c in COMMANDS}
    assert {"run", "compare", "check", "rules"} <= shown


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_runs(command: str, cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # run from a scratch folder that sees the repository's configs, so outputs land in tmp_path
    (tmp_path / "configs").symlink_to(REPO / "configs")
    monkeypatch.chdir(tmp_path)
    result = cli(*shlex.split(command))
    expected = (
        1 if command.startswith("check") and "unhealthy" in result.stdout and "0 unhealthy" not in result.stdout else 0
    )
    assert result.exit_code == expected, f"{command}\n{result.output}"
