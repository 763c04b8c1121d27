"""A spec alone cannot run a shell through an installed package (issue 23, item 1).

``model.import`` may name the project's own code, model classes of the model libraries, or what
the user allows on the command line (``probe --allow-import PKG``, ``PROBE_ALLOW_IMPORT``); each
attack below is refused with exit 2 before its module is imported, and its file is never made.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from probe.cli import app
from probe.errors import BuildError
from probe.model.user_model import load_object

ROOT = Path(__file__).resolve().parents[1]


def _attacks(folder: Path) -> dict[str, str]:
    """Each spec would create ``folder/PWNED_<name>`` if its factory were called."""
    hub = folder / "hub"
    hub.mkdir(exist_ok=True)
    (hub / "hubconf.py").write_text(f"open({str(folder / 'PWNED_hub')!r}, 'w').close()\ndef m():\n    pass\n")
    touch = f"touch {folder / 'PWNED_yaml'}"
    return {
        "yaml": (
            "model:\n  import: 'yaml:unsafe_load'\n  input_shape: [4]\n"
            f"  kwargs: {{stream: \"!!python/object/apply:os.system ['{touch}']\"}}\n"
        ),
        "sympy": (
            "model:\n  import: 'sympy:sympify'\n  input_shape: [4]\n"
            f"  kwargs: {{a: \"__import__('os').system('touch {folder / 'PWNED_sympy'}')\"}}\n"
        ),
        "hub": (
            "model:\n  import: 'torch.hub:load'\n  input_shape: [4]\n"
            f"  kwargs: {{repo_or_dir: '{hub}', model: m, source: local}}\n"
        ),
        "reexport": (  # the project's own module re-exporting an installed package's function
            "model:\n  import: 'mine:unsafe_load'\n  input_shape: [4]\n"
            f"  kwargs: {{stream: \"!!python/object/apply:os.system ['touch {folder / 'PWNED_reexport'}']\"}}\n"
        ),
        "through": (  # an installed package reached through an attribute of the project's module
            "model:\n  import: 'mine:yaml.unsafe_load'\n  input_shape: [4]\n"
            f"  kwargs: {{stream: \"!!python/object/apply:os.system ['touch {folder / 'PWNED_through'}']\"}}\n"
        ),
    }


@pytest.mark.parametrize("attack", ["yaml", "sympy", "hub", "reexport", "through"])
def test_a_spec_alone_cannot_run_a_shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, attack: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.py").write_text("import yaml\nfrom yaml import unsafe_load\n")
    spec = tmp_path / f"{attack}.yaml"
    spec.write_text(_attacks(tmp_path)[attack])
    result = CliRunner().invoke(app, ["check", str(spec)], env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert "refusing to import" in result.output or "reaches module" in result.output
    if attack != "through":
        assert "--allow-import" in result.output  # the way to allow it
    assert not list(tmp_path.glob("PWNED*"))


def test_the_attacks_in_a_real_process(tmp_path: Path) -> None:
    """``probe check`` as CI runs it, all attacks in one command: each fails to run, exit 2, nothing created."""
    (tmp_path / "mine.py").write_text("import yaml\nfrom yaml import unsafe_load\n")
    paths = []
    for name, text in _attacks(tmp_path).items():
        (tmp_path / f"{name}.yaml").write_text(text)
        paths.append(f"{name}.yaml")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "probe", "check", *paths], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 2, done.stderr
    said = " ".join(done.stderr.split())
    assert f"0 healthy, 0 unhealthy, {len(paths)} failed to run" in " ".join(done.stdout.split()), done.stdout
    assert said.count("refusing to import") + said.count("reaches module") >= len(paths)
    assert not list(tmp_path.glob("PWNED*"))


def test_a_spec_cannot_grant_itself(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("model: {import: 'yaml:unsafe_load', input_shape: [4]}\ntrust: {modules: [yaml]}\n")
    result = CliRunner().invoke(app, ["check", str(spec)])
    assert result.exit_code == 2 and "trust" in result.output
    result = CliRunner().invoke(app, ["check", str(spec), "--set", "trust.modules=yaml"])
    assert result.exit_code == 2


def _outside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A model package outside the project (importable, like an installed one), and a spec for it."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "extmodels.py").write_text(
        "from torch import nn\n\ndef build():\n    return nn.Sequential(nn.Linear(4, 4), nn.Tanh())\n"
    )
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.syspath_prepend(str(lib))
    for name in ("extmodels", "specmodels"):  # imported by an earlier test from its own folder
        monkeypatch.delitem(sys.modules, name, raising=False)
    spec = tmp_path / "specs" / "s.yaml"
    spec.parent.mkdir()
    spec.write_text("model: {import: 'extmodels:build', input_shape: [4]}\ndata: {batch_size: 8}\nrun: {device: cpu}\n")
    return spec


def test_allow_import_on_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _outside(tmp_path, monkeypatch)
    refused = CliRunner().invoke(app, ["run", str(spec)], env={"COLUMNS": "300"})
    assert refused.exit_code == 2 and "probe --allow-import 'extmodels'" in refused.output
    allowed = CliRunner().invoke(app, ["--allow-import", "extmodels", "run", str(spec)], env={"COLUMNS": "300"})
    assert allowed.exit_code in (0, 1), allowed.output
    assert "0.weight" in allowed.output or "0 " in allowed.output
    by_env = CliRunner().invoke(
        app, ["run", str(spec)], env={"COLUMNS": "300", "PROBE_ALLOW_IMPORT": "other,extmodels"}
    )
    assert by_env.exit_code in (0, 1), by_env.output


def test_allow_import_after_the_command_gets_a_hint(cli: Callable[..., Any]) -> None:
    result = cli("run", "configs/lab1_tiny_relu.yaml", "--allow-import", "yaml")
    assert result.exit_code == 2
    assert "give it before the command, probe --allow-import MODULE run ..." in " ".join(result.output.split())


def test_code_in_the_spec_folder_or_on_pythonpath_is_the_projects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _outside(tmp_path, monkeypatch)
    (spec.parent / "specmodels.py").write_text((tmp_path / "lib" / "extmodels.py").read_text())
    monkeypatch.syspath_prepend(str(spec.parent))
    spec.write_text(spec.read_text().replace("extmodels:build", "specmodels:build"))
    assert CliRunner().invoke(app, ["run", str(spec)]).exit_code in (0, 1)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "lib"))
    assert callable(load_object("extmodels:build", "model.import"))


@pytest.mark.parametrize(
    "path",
    [
        "torch.nn:Linear",
        "torch.nn:TransformerEncoderLayer",
        "transformers:GPT2Model",
        "transformers:AutoModel.from_config",
    ],
)
def test_model_classes_of_the_model_libraries_are_allowed(path: str) -> None:
    assert callable(load_object(path, "model.import"))


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("torch.nn:Module.register_module", "defined in 'torch.nn.modules.module'"),
        ("torch.nn.functional:relu", "defined in 'torch.nn.functional'"),
        ("torch:load", "'torch' is not a module of your project"),
        ("tests.models_for_tests:__builtins__", "special attribute"),
        ("transformers:AutoModel.from_pretrained", "defined in 'transformers"),
    ],
)
def test_other_callables_of_the_model_libraries_are_not(path: str, why: str) -> None:
    with pytest.raises(BuildError, match=why):
        load_object(path, "model.import")
