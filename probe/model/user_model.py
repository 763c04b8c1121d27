"""Any importable ``nn.Module``: ``model.import: "package.module:factory"`` (``--model`` on the CLI).

The factory is called with ``model.kwargs``; the model keeps its own initialization unless the
spec's ``init`` says otherwise (``init.weight``/``init.bias`` written explicitly, or
``init.rules``). The layers to watch are found by one discovery pass (eval mode, no gradients,
two samples; token ids: two passes on 5 and 7 tokens where they agree, see ``probe.model.short_passes``):
every module with parameters of its own, every activation module and every block that ran,
named by qualified name, in the order they first ran. The same pass, traced
(``probe.model.trace``), shows which module calls are blocks and what each row is
(``probe.model.roles``). What cannot be watched is reported as a note instead of failing the
probe.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from probe.errors import BuildError, RunError, UserCodeError, echo, first_line, user_code_error
from probe.model.discovery import discover, module_modes, restore_modes
from probe.model.inputs import InputSpec
from probe.model.network import Built, Plan
from probe.spec import Spec, Trust, inits

if TYPE_CHECKING:
    from torch import nn


def load_object(path: str, key: str, trust: Trust | None = None) -> Any:
    """``package.module:attr`` -> the object, if ``probe.model.imports`` allows it (checked before
    the module is imported); a clear ``BuildError`` for every way it can fail."""
    from probe.model import imports

    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise BuildError(f"{key}: expected 'package.module:name', got {echo(path)}")
    # like `python -m`, resolve modules relative to the working directory
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    trust = trust or Trust()
    rule = imports.policy(trust.folders, trust.modules)
    module = imports.import_named(module_name, path, key, rule)
    obj = imports.attribute(module, attr, path, key)
    imports.check_object(obj, module_name, path, key, rule)
    return obj


def make_model(spec: Spec) -> tuple[nn.Module, list[str]]:
    """Import the factory and call it with ``model.kwargs``: its model (under ``torch.compile``, the
    eager modules: ``probe.model.compiled``) and the notes that say so."""
    import torch
    from torch import nn

    from probe.model import compiled

    m = spec.model
    assert m.factory is not None
    factory = load_object(m.factory, "model.import", spec.trust)
    if not callable(factory):
        raise BuildError(f"model.import: '{m.factory}' is a {type(factory).__name__}, not a callable")
    try:
        model = factory(**m.kwargs)
    except (MemoryError, torch.OutOfMemoryError) as exc:  # a runtime limit, not bad input: exit 3
        raise RunError(f"model.import: {m.factory}(...) ran out of memory: {first_line(exc)}") from None
    except Exception as exc:
        if isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower():
            raise RunError(f"model.import: {m.factory}(...) ran out of memory: {first_line(exc)}") from None
        raise BuildError(f"model.import: {m.factory}(...) raised {type(exc).__name__}: {first_line(exc)}") from None
    except BaseException as exc:  # SystemExit, KeyboardInterrupt, ... from the factory
        raise user_code_error(exc, f"model.import: {m.factory}(...)") from None
    if not isinstance(model, nn.Module):
        raise BuildError(f"model.import: {m.factory}(...) returned a {type(model).__name__}, not an nn.Module")
    eager, notes, _ = compiled.unwrap(model)  # probe's own model: nothing to put back
    return eager, notes


def input_spec(spec: Spec) -> InputSpec:
    m = spec.model
    if m.inputs is not None:
        fn = load_object(m.inputs, "model.inputs", spec.trust)
        if not callable(fn):
            raise BuildError(f"model.inputs: '{m.inputs}' is not a callable")
        return InputSpec("function", function=_guarded(fn, m.inputs))
    if m.vocab_size is not None:
        return InputSpec("tokens", m.input_shape or (m.seq_len,), vocab_size=m.vocab_size)
    if m.input_shape is not None:
        return InputSpec("shape", m.input_shape)
    raise BuildError(
        "model.input_shape: a user model needs its inputs: --input-shape 3,32,32 (one sample), "
        "model.vocab_size with model.seq_len (token ids), or --inputs module:function"
    )


def plan(spec: Spec) -> Plan:
    """``build``'s plan for a user model: the factory's model, ``init.weight``/``init.bias`` (if
    given) and ``init.rules``, then discovery of its rows."""
    from probe.model import init_rules

    model, compile_notes = make_model(spec)
    modes = module_modes(model)
    inputs = input_spec(spec)
    log = init_rules.InitLog()
    ctx = inits.InitContext(spec.model.activation.name, spec.model.activation.params)
    steps: list[init_rules.InitStep] = []
    if spec.init.explicit:
        steps = init_rules.flat_steps(model, spec.init, ctx, log, every_weight=True)
        if not steps and spec.init.weight.name != "default":
            raise BuildError(
                f"init.weight: '{spec.init.weight.name}' fills nothing in {spec.model.factory} "
                f"({type(model).__name__}): no module holds a weight of two or more dimensions "
                "(embedding tables are filled only by init.rules)"
            )
    steps += init_rules.rule_fills(model, spec.init.rules, ctx, None, log)

    def finish() -> Built:
        try:
            watched, notes = discover(model, inputs, spec.data.distribution, own_modes=True)
        except UserCodeError as exc:  # say which spec and factory: check runs many
            raise UserCodeError(f"{spec.name} (model {spec.model.factory}): {exc}") from None
        for w in watched:
            w.init_rule = log.for_tensor(model, w.weight) or ("own" if w.weight is not None else None)
        restore_modes(modes)  # discovery ends with model.train(flag): the factory's modes, module by module
        left = init_rules.unreached(model, log) if steps else None
        notes = compile_notes + notes + ([left] if left else [])
        return Built(model, watched, inputs, notes, keep_mode=True, init_log=log)

    return Plan(model, steps, finish)


def from_object(model: nn.Module, inputs: InputSpec, distribution: str) -> Built:
    """A model the caller already holds (``probe.measure``): its rows, its own init and modes."""
    modes = module_modes(model)
    try:
        watched, notes = discover(model, inputs, distribution, own_modes=True)
    finally:
        restore_modes(modes)  # discovery ends with model.train(flag), which flattens mixed modes
    for w in watched:
        w.init_rule = "own" if w.weight is not None else None
    return Built(model, watched, inputs, notes, keep_mode=True)


def _guarded(fn: Callable[..., Any], path: str) -> Callable[[int], Any]:
    def call(batch_size: int) -> Any:
        try:
            return fn(batch_size)
        except Exception as exc:
            raise BuildError(
                f"model.inputs: {path}({batch_size}) raised {type(exc).__name__}: {first_line(exc)}"
            ) from None
        except BaseException as exc:
            raise user_code_error(exc, f"model.inputs: {path}({batch_size})") from None

    call.__qualname__ = path
    return call
