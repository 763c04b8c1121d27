"""Every `probe` command the README and the docs/ pages show in a bash block runs as written.

(The commands whose output a page shows are run by tests/test_docs.py, which also checks what they
print; this test covers the ones the text only names.)"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

PREFIXES = ("probe ", ".venv/bin/probe ")
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def _shown_with_output(text: str) -> set[str]:
    """The commands of the output blocks (probe-example markers), without their exit comment."""
    return {
        re.sub(r"\s+#\s*exit \d+\s*$", "", c).strip()
        for c in re.findall(r"^<!-- probe-example: (.+?) -->", text, flags=re.M)
    }


def _commands() -> list[tuple[str, str, int]]:
    """(document, command without the `probe`, expected exit code): 0 unless the comment says ``exit N``."""
    commands = []
    seen: set[str] = set()  # a command several documents show runs once
    for path in DOCUMENTS:
        text = path.read_text()
        checked = _shown_with_output(text)
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
            for line in block.splitlines():
                command, _, comment = line.partition("  #")
                command = command.strip()
                prefix = next((p for p in PREFIXES if command.startswith(p)), None)
                if prefix is None or f"probe {command[len(prefix) :]}" in checked or command[len(prefix) :] in seen:
                    continue
                seen.add(command[len(prefix) :])
                expected = re.search(r"\bexit (\d)", comment)
                code = int(expected.group(1)) if expected else 0
                commands.append((path.relative_to(REPO).as_posix(), command[len(prefix) :], code))
    return commands


COMMANDS = _commands()


def test_the_docs_show_every_command() -> None:
    with_output = set().union(*(_shown_with_output(path.read_text()) for path in DOCUMENTS))
    shown = {c.split()[0] for _, c, _ in COMMANDS} | {c.split()[1] for c in with_output if c.startswith("probe ")}
    assert {"run", "compare", "check", "rules", "train", "sweep", "inspect", "advise", "depth", "fix"} <= shown


@pytest.mark.parametrize(("document", "command", "expected"), COMMANDS, ids=[f"{d}: {c}" for d, c, _ in COMMANDS])
def test_documented_command_runs(
    document: str, command: str, expected: int, cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # run from a scratch folder that sees the repository's configs and test models; outputs land in tmp_path
    for name in ("configs", "tests"):
        (tmp_path / name).symlink_to(REPO / name)
    monkeypatch.chdir(tmp_path)
    # the repository's modules are importable here because pytest put it on sys.path: say so as a user
    # would, or probe (rightly) refuses code from outside the working folder and PYTHONPATH
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    result = cli(*shlex.split(command))
    assert result.exit_code == expected, f"{document}: probe {command}\n{result.output}"


def test_the_readmes_python_runs_as_written() -> None:
    """Each Python block of the README, run from the repository root as a reader would paste it."""
    import subprocess
    import sys

    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    assert blocks, "the README shows the Python API"
    for block in blocks:
        done = subprocess.run(
            [sys.executable, "-c", block], cwd=REPO, capture_output=True, text=True, timeout=300, env=_env()
        )
        assert done.returncode == 0, f"README python block failed:\n{block}\n{done.stderr[-2000:]}"


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
