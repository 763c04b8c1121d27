"""Every `probe` command the README shows in a bash block runs as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

PREFIX = ".venv/bin/probe "


def _readme_commands() -> list[tuple[str, int]]:
    """(command, expected exit code): 0 unless the line's comment says ``exit N``."""
    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            command, _, comment = line.partition("  #")
            command = command.strip()
            if command.startswith(PREFIX):
                expected = re.search(r"\bexit (\d)", comment)
                commands.append((command[len(PREFIX) :], int(expected.group(1)) if expected else 0))
    return commands


COMMANDS = _readme_commands()


def test_the_readme_shows_every_command() -> None:
    shown = {c.split()[0] for c, _ in COMMANDS}
    assert {"run", "compare", "check", "rules"} <= shown


@pytest.mark.parametrize(("command", "expected"), COMMANDS, ids=[c for c, _ in COMMANDS])
def test_readme_command_runs(
    command: str, expected: int, cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # run from a scratch folder that sees the repository's configs and test models; outputs land in tmp_path
    for name in ("configs", "tests"):
        (tmp_path / name).symlink_to(REPO / name)
    monkeypatch.chdir(tmp_path)
    result = cli(*shlex.split(command))
    assert result.exit_code == expected, f"{command}\n{result.output}"
