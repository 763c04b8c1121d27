"""Which code a spec may name: ``model.import`` and ``model.inputs`` are code execution.

A spec is data; naming a callable and its keyword arguments is enough to run a shell through
functions of packages that are always installed (``yaml:unsafe_load``, ``sympy:sympify``,
``torch.hub:load``), so no list of forbidden names can make it safe. The rule is an allow-list
instead, decided before anything is imported:

1. **Your own code**: a module whose file lies under the working folder, the folder holding the
   spec, or a folder on ``PYTHONPATH`` (never under site-packages or the standard library, even
   when a virtual environment sits inside the project).
2. **Model classes of the model libraries**: ``nn.Module`` subclasses defined in ``torch.nn``,
   ``transformers``, ``diffusers``, ``torchvision.models`` or ``timm``, and ``from_config`` of such a
   class or of a transformers ``AutoModel*`` class.
3. **What the user allowed on the command line**: ``probe --allow-import PKG`` (repeatable) or
   ``PROBE_ALLOW_IMPORT=PKG,PKG``: the module ``PKG`` and its submodules. A spec cannot grant this.

The object must come from the same place: it is reached by plain attribute names (no module in
between, no dunder), and the module that defines it (``__module__``) passes the same rule, so a
module of yours that re-exports ``yaml.unsafe_load`` does not make it yours.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from probe.errors import BuildError, echo

ENV_VAR = "PROBE_ALLOW_IMPORT"
# the model libraries whose nn.Module classes (and from_config) any spec may name
MODEL_LIBRARIES = ("torch.nn", "transformers", "diffusers", "torchvision.models", "timm")
AUTO_CLASSES = ("transformers.models.auto",)  # AutoModel*.from_config builds a model class from a config


@dataclass(frozen=True)
class Policy:
    roots: tuple[Path, ...]  # folders of your own code
    excluded: tuple[Path, ...]  # installed packages and the standard library, wherever they lie
    allowed: tuple[str, ...]  # modules allowed by the user (--allow-import, PROBE_ALLOW_IMPORT)

    def is_allowed(self, module: str) -> bool:
        return _under_name(module, self.allowed)

    def is_local_file(self, file: str | os.PathLike[str]) -> bool:
        """Under one of the roots as the path reads or as its links resolve (a folder of the project
        that links to code elsewhere is the project's), and in no installed place either way."""
        places = (Path(os.path.abspath(file)), Path(file).resolve())
        for where in places:
            if "site-packages" in where.parts or "dist-packages" in where.parts:
                return False
            if any(where.is_relative_to(p) for p in self.excluded):
                return False
        return any(where.is_relative_to(p) for where in places for p in self.roots)


def policy(folders: Iterable[str] = (), allowed: Iterable[str] = ()) -> Policy:
    """The rule for this run: the working folder, ``folders`` (the spec's own) and ``PYTHONPATH`` are
    your code; ``allowed`` and ``PROBE_ALLOW_IMPORT`` name the modules the user allows."""
    import sysconfig

    roots = [Path.cwd(), *(Path(f) for f in folders)]
    roots += [Path(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    excluded: list[Path] = []
    for base in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}:
        paths = sysconfig.get_paths(vars={"base": base, "platbase": base, "installed_base": base})
        excluded += [Path(paths[k]) for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths]
    names = [*allowed, *os.environ.get(ENV_VAR, "").split(",")]
    return Policy(
        tuple(_resolved(roots)),
        tuple(_resolved(excluded)),
        tuple(n.strip() for n in names if n.strip()),
    )


def check_module(module_name: str, path: str, key: str, rule: Policy) -> None:
    """Refuse (``BuildError``, exit 2) a module the rule does not allow, before it is imported."""
    if rule.is_allowed(module_name) or _under_name(module_name, MODEL_LIBRARIES):
        return
    parts = module_name.split(".")
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        files = _files_of(name)
        if files is None:
            return  # not found: the import that follows says so
        if not files or not all(rule.is_local_file(f) for f in files):
            where = "part of the Python standard library" if _is_standard(name) else "not a module of your project"
            raise BuildError(_refusal(path, key, f"'{name}' is {where}"))


def check_object(obj: Any, module_name: str, path: str, key: str, rule: Policy) -> None:
    """Refuse an object that does not come from where the rule allows (see the module's doc)."""
    defined_in = getattr(obj, "__module__", None)
    if not isinstance(defined_in, str):
        defined_in = module_name  # an instance without a module of its own: the module it was reached through
    if rule.is_allowed(defined_in) or _is_model_class(obj):
        return
    module = sys.modules.get(defined_in)
    file = getattr(module, "__file__", None)
    if file is not None and rule.is_local_file(file):
        return
    if _is_standard(defined_in):
        raise BuildError(_refusal(path, key, f"it is defined in '{defined_in}', part of the Python standard library"))
    what = "a model class of torch.nn, transformers, diffusers, torchvision or timm"
    raise BuildError(_refusal(path, key, f"it is defined in '{defined_in}', neither your project's code nor {what}"))


def attribute(module: ModuleType, attr: str, path: str, key: str) -> Any:
    """``module.attr`` by plain names: no dunder, and no module on the way (name that module)."""
    obj: Any = module
    for part in attr.split("."):
        if part.startswith("__") and part.endswith("__"):
            raise BuildError(f"{key}: {echo(path)} reaches the special attribute '{echo(part)}'; name a factory")
        if isinstance(obj, ModuleType) and obj is not module:
            raise BuildError(
                f"{key}: {echo(path)} reaches module '{obj.__name__}' through an attribute; "
                f"name it as '{obj.__name__}:...'"
            )
        if not hasattr(obj, part):
            names = [n for n in dir(module) if not n.startswith("_")]
            from probe.spec.schema import did_you_mean

            hint = did_you_mean(part, names)
            raise BuildError(
                f"{key}: '{module.__name__}' has no attribute '{part}'" + (f"; {hint.strip()}" if hint else "")
            )
        obj = getattr(obj, part)
    if isinstance(obj, ModuleType):
        raise BuildError(f"{key}: {echo(path)} is a module, not a callable")
    return obj


def _refusal(path: str, key: str, why: str) -> str:
    top = path.partition(":")[0].split(".")[0]
    return (
        f"{key}: refusing to import {echo(path)}: {why}. A spec names code to run, so it may name only "
        f"modules under the working folder, the spec's folder or PYTHONPATH, and model classes of the "
        f"model libraries; to allow an installed package, say so on the command line: "
        f"probe --allow-import {echo(top)} ... (or PROBE_ALLOW_IMPORT={echo(top)}); see docs/security.md"
    )


def _files_of(name: str) -> list[str] | None:
    """The files (or package folders) ``name`` is loaded from, without running it; None if not found.
    A module built into the interpreter, or a frozen one, has none (never your project's)."""
    module = sys.modules.get(name)
    if module is not None:
        file = getattr(module, "__file__", None)
        locations = list(getattr(module, "__path__", None) or [])
        return [file] if file else [str(p) for p in locations]
    try:
        found = importlib.util.find_spec(name)  # imports the parents, already checked
    except (ImportError, ValueError):
        return None
    if found is None:
        return None
    if found.has_location and found.origin:
        return [found.origin]
    return [str(p) for p in (found.submodule_search_locations or [])]


def _is_model_class(obj: Any) -> bool:
    """An nn.Module class of a model library, or ``from_config`` of one (or of an Auto class)."""
    import inspect

    owner = obj
    if inspect.ismethod(obj) and obj.__name__ == "from_config" and inspect.isclass(obj.__self__):
        owner = obj.__self__
        if _under_name(owner.__module__, AUTO_CLASSES):
            return True
    if not inspect.isclass(owner) or not _under_name(owner.__module__, MODEL_LIBRARIES):
        return False
    from torch import nn

    return issubclass(owner, nn.Module)


def _is_standard(name: str) -> bool:
    top = name.split(".")[0]
    return top in sys.builtin_module_names or top in sys.stdlib_module_names


def _under_name(module: str, names: Iterable[str]) -> bool:
    return any(module == n or module.startswith(n + ".") for n in names)


def _resolved(paths: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        try:
            out.append(p.resolve())
        except OSError:
            continue
    return out


def import_named(module_name: str, path: str, key: str, rule: Policy) -> ModuleType:
    """Check ``module_name`` against the rule, then import it."""
    check_module(module_name, path, key, rule)
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise BuildError(f"{key}: cannot import '{module_name}': {exc}") from None
    except Exception as exc:
        from probe.errors import first_line

        raise BuildError(f"{key}: importing '{module_name}' raised {type(exc).__name__}: {first_line(exc)}") from None
