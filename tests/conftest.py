"""Shared fixtures: small specs and a CLI runner that invokes the real typer app."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from probe import spec as spec_mod
from probe.spec import Spec

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"


@pytest.fixture
def make_spec() -> Callable[..., Spec]:
    """``make_spec(model={...}, init={...}, ...)``: a CPU spec from plain sections."""

    def make(**sections: Any) -> Spec:
        raw: dict[str, Any] = {k: v for k, v in sections.items()}
        raw.setdefault("run", {})
        raw["run"] = {"device": "cpu", **raw["run"]}
        return spec_mod.parse(raw)

    return make


@pytest.fixture
def cli() -> Callable[..., Any]:
    """Run the CLI as a user would (``probe ARGS``); returns click's Result (exit_code, stdout, stderr)."""
    from probe.cli import app

    runner = CliRunner()

    def invoke(*args: str) -> Any:
        return runner.invoke(app, list(args), env={"COLUMNS": "160"})

    return invoke
