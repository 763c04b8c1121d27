"""Initialize a built or imported model: the flat ``init.weight``/``init.bias``, then ``init.rules``.

A rule matches modules by class name (any class in the module's MRO, so ``Linear`` also matches
``MultiheadAttention``'s ``out_proj``) and/or by an fnmatch pattern on the qualified name, and
fills the module's own parameters:

- ``weight``: every parameter of the module whose name contains ``weight`` (``weight``,
  ``in_proj_weight``, an LSTM's ``weight_ih_l0`` and ``weight_hh_l0``); ``bias`` likewise.
- ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``: the recurrent families only (they
  override ``weight``/``bias`` of the same rule).
- ``forget_bias``: an LSTM's forget-gate quarter of ``bias_ih`` (gate order i, f, g, o).

Rules apply in order; a later rule overwrites what an earlier one filled. The returned
``InitLog`` says which rule filled each parameter, for the report.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from probe.errors import BuildError
from probe.spec import Choice, InitRule, InitSpec, RuleTarget, inits

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass
class InitLog:
    """Parameter qualified name -> what initialized it (``init.rules[0] he_normal``)."""

    by_param: dict[str, str] = field(default_factory=dict)
    # parameter -> (strategy, factor it was multiplied by); None: no single strategy gives its std
    strategies: dict[str, tuple[Choice, float] | None] = field(default_factory=dict)

    def for_tensor(self, model: nn.Module, tensor: torch.Tensor | None) -> str | None:
        if tensor is None:
            return None
        for name, p in model.named_parameters(remove_duplicate=False):
            if p is tensor:
                return self.by_param.get(name)
        return None


def type_names(module: nn.Module) -> list[str]:
    """The class names a ``match.type`` may use for ``module`` (its class and its bases)."""
    return [c.__name__ for c in type(module).__mro__ if c.__name__ not in ("Module", "object")]


@dataclass(frozen=True)
class InitStep:
    """One action of a build's init program after the constructors: ``fill()`` writes tensors of
    ``module`` (its own), read when it runs (a meta-device build gives them new storage in between)."""

    module: nn.Module
    fill: Callable[[], None]


def flat_steps(
    model: nn.Module, init: InitSpec, ctx: inits.InitContext, log: InitLog, every_weight: bool = False
) -> list[InitStep]:
    """``init.weight``/``init.bias`` on every Linear and ConvNd (what a spec network has always
    done); with ``every_weight`` (a user or transformers model), on every weight matrix a module
    holds itself, whatever the module: ``reachable`` says which. One step per module filled, in
    ``named_modules`` order."""
    from torch import nn

    if init.weight.name == "reset":
        return reset_steps(model, log)
    steps = []
    for qual, module in model.named_modules():
        if every_weight:
            names = reachable(module)
        elif isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            names = ["weight"]
        else:
            names = []
        if names:
            steps.append(InitStep(module, partial(_flat_fill, qual, module, names, init, ctx, log)))
    return steps


def reset_steps(model: nn.Module, log: InitLog) -> list[InitStep]:
    """``init.weight: reset``: every module's own init drawn again: a ``transformers`` model's
    ``_init_weights`` on each of its modules (the library's init), else the module's own
    ``reset_parameters`` (PyTorch's default; ``nn.MultiheadAttention``'s ``_reset_parameters``).
    Biases come back with their modules (``init.bias`` is not applied)."""
    steps: list[InitStep] = []
    covered: set[int] = set()
    for qual, module in model.named_modules():
        if id(module) in covered:
            continue
        library = _library_init(module)
        if library is not None:  # a transformers PreTrainedModel: its init reaches its modules
            subs = list(module.named_modules(prefix=qual))
            covered.update(id(m) for _, m in subs)
            calls = [(q, m, partial(library, m)) for q, m in subs]
            steps.append(InitStep(module, partial(_reset, calls, "the library's _init_weights", log)))
            continue
        reset = getattr(module, "reset_parameters", None) or getattr(module, "_reset_parameters", None)
        if callable(reset) and any(True for _ in module.parameters(recurse=False)):
            steps.append(InitStep(module, partial(_reset, [(qual, module, reset)], "reset_parameters", log)))
    return steps


def _library_init(module: nn.Module) -> Callable[[nn.Module], None] | None:
    """A ``transformers`` model's per-module init, told by its base class (no import of the library)."""
    if any(c.__name__ == "PreTrainedModel" for c in type(module).__mro__):
        init = getattr(module, "_init_weights", None)
        return init if callable(init) else None
    return None


def _reset(calls: Sequence[tuple[str, nn.Module, Callable[[], object]]], how: str, log: InitLog) -> None:
    """Run each module's own init and log what it filled."""
    for qual, module, call in calls:
        call()
        _log_reset(qual, module, log, how)


def _log_reset(qual: str, module: nn.Module, log: InitLog, how: str) -> None:
    for pname, _ in module.named_parameters(recurse=False):
        log.by_param[_join(qual, pname)] = f"init.weight reset ({how})"
        log.strategies[_join(qual, pname)] = None  # the module's own law: no single strategy


def reachable(module: nn.Module) -> list[str]:
    """The parameters of ``module`` (its own) that ``init.weight`` fills in a user model: every
    parameter named like a weight with two or more dimensions (``weight``, ``nn.MultiheadAttention``'s
    packed ``in_proj_weight`` and ``q_proj_weight``, a recurrent layer's ``weight_ih_l0``/``weight_hh_l0``,
    ``transformers``' Conv1D, grouped and depthwise convolutions, a custom layer's ``weight``),
    except an embedding's table: a lookup, not a fan-in map (``init.rules`` fills one on request)."""
    from torch import nn

    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return []
    return [n for n, p in module.named_parameters(recurse=False) if "weight" in n and p.dim() >= 2]


def _flat_fill(
    qual: str, module: nn.Module, names: list[str], init: InitSpec, ctx: inits.InitContext, log: InitLog
) -> None:
    from torch import nn

    params = dict(module.named_parameters(recurse=False))
    for name in names:
        weight = params[name]
        inits.apply(oriented(module, weight) if name == "weight" else weight, init.weight.name, init.weight.params, ctx)
        log.by_param[_join(qual, name)] = f"init.weight {init.weight.name}"
        log.strategies[_join(qual, name)] = (init.weight, 1.0)
    biases = ["bias"] if isinstance(params.get("bias"), nn.Parameter) else []
    if names != ["weight"]:  # in_proj_bias, bias_ih_l0, ...: the biases beside those weights
        biases = [n for n, p in params.items() if "bias" in n and p.dim() == 1]
    for name in biases:
        inits.apply(params[name], init.bias.name, init.bias.params, ctx)
        log.by_param[_join(qual, name)] = f"init.bias {init.bias.name}"
        log.strategies[_join(qual, name)] = (init.bias, 1.0)


def unreached(model: nn.Module, log: InitLog, limit: int = 4) -> str | None:
    """One line naming the parameters of two or more dimensions that neither ``init.weight`` nor
    ``init.rules`` filled (embedding tables, a class token, a position table, a raw parameter not
    named like a weight), or None when every one was filled. One-dimensional parameters (norm
    scales, biases) are not listed: no fan-in strategy applies to them."""
    filled = {id(p) for name, p in model.named_parameters(remove_duplicate=False) if name in log.by_param}
    missed = [
        f"{name} {tuple(p.shape)}" for name, p in model.named_parameters() if p.dim() >= 2 and id(p) not in filled
    ]
    if not missed:
        return None
    more = f" and {len(missed) - limit} more" if len(missed) > limit else ""
    return (
        f"init left {len(missed)} parameter(s) of 2+ dimensions as the model made them: "
        f"{', '.join(missed[:limit])}{more}; to set one, add an init.rules entry matching its module "
        f"(match: {{name: ...}}) and, for a parameter not named like a weight, its name (match: {{param: ...}})"
    )


def apply_flat(
    model: nn.Module, init: InitSpec, ctx: inits.InitContext, log: InitLog, every_weight: bool = False
) -> int:
    """Run ``flat_steps``; returns how many weights it filled."""
    steps = flat_steps(model, init, ctx, log, every_weight)
    for step in steps:
        step.fill()
    return len(steps)


def oriented(module: nn.Module, weight: torch.Tensor) -> torch.Tensor:
    """``weight`` as torch.nn.init expects it, (out, in, ...): a 2-D weight stored (in, out), as
    ``transformers``' Conv1D does, is told apart by its bias, whose length is the output size."""
    import torch

    bias = getattr(module, "bias", None)
    if (
        weight.dim() == 2
        and isinstance(bias, torch.Tensor)
        and bias.dim() == 1
        and bias.shape[0] == weight.shape[1] != weight.shape[0]
    ):
        return weight.t()
    return weight


def apply_rules(
    model: nn.Module, rules: Iterable[InitRule], ctx: inits.InitContext, depth: int | None, log: InitLog
) -> None:
    """Apply ``init.rules`` in order. ``depth`` is L for ``depth_scale: true`` (1/sqrt(2 L));
    ``None`` (a user model) takes L = the number of modules the rule matches."""
    for step in rule_fills(model, rules, ctx, depth, log):
        step.fill()


def rule_fills(
    model: nn.Module, rules: Iterable[InitRule], ctx: inits.InitContext, depth: int | None, log: InitLog
) -> list[InitStep]:
    """``apply_rules``' fills, one per (rule, module), in its order."""
    return [InitStep(step.module, partial(apply_rule, step, ctx, depth, log)) for step in rule_steps(model, rules)]


@dataclass(frozen=True)
class RuleStep:
    """One rule applied to one module it matches; ``matched``: how many modules the rule matches."""

    rule: InitRule
    qual: str
    module: nn.Module
    matched: int


def rule_steps(model: nn.Module, rules: Iterable[InitRule]) -> list[RuleStep]:
    """Every (rule, module) fill ``apply_rules`` makes, in its order; a BuildError for a rule that
    matches nothing. Matching reads names and types only, so it works on a meta-device model."""
    modules = [(q, m) for q, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]
    steps = []
    for rule in rules:
        matched = [(q, m) for q, m in modules if _matches(rule, q, m)]
        if not matched:
            types = sorted({type(m).__name__ for _, m in modules})
            names = [q for q, _ in modules]
            shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
            raise BuildError(
                f"{rule.label}.match: matches no module with parameters (types: {', '.join(types)}; names: {shown})"
            )
        steps += [RuleStep(rule, q, m, len(matched)) for q, m in matched]
    return steps


def apply_rule(step: RuleStep, ctx: inits.InitContext, depth: int | None, log: InitLog) -> None:
    """Fill the parameters of one matched module as its rule says."""
    rule, qual, module = step.rule, step.qual, step.module
    # generic families first, so weight_hh overrides weight within one rule
    for target in sorted(rule.targets, key=lambda t: t.target not in ("weight", "bias")):
        _fill(rule, target, qual, module, ctx, depth if depth is not None else step.matched, log)
    if rule.forget_bias is not None:
        _forget_bias(rule, qual, module, log)


def _matches(rule: InitRule, qual: str, module: nn.Module) -> bool:
    if rule.match_type is not None and rule.match_type not in type_names(module):
        return False
    if rule.match_param is not None and not any(
        fnmatch.fnmatchcase(n, rule.match_param) for n, _ in module.named_parameters(recurse=False)
    ):
        return False
    return rule.match_name is None or fnmatch.fnmatchcase(qual, rule.match_name)


def _selected(rule: InitRule, target: str, pname: str) -> bool:
    if rule.match_param is not None and not fnmatch.fnmatchcase(pname, rule.match_param):
        return False
    if target in ("weight", "bias"):  # match.param names the parameters itself: a raw 'w' is a weight too
        return rule.match_param is not None or target in pname
    return pname.startswith(target)


def _fill(
    rule: InitRule, target: RuleTarget, qual: str, module: nn.Module, ctx: inits.InitContext, depth: int, log: InitLog
) -> None:
    import torch

    params = [(n, p) for n, p in module.named_parameters(recurse=False) if _selected(rule, target.target, n)]
    if not params:
        have = ", ".join(n for n, _ in module.named_parameters(recurse=False))
        raise BuildError(
            f"{rule.label}.{target.target}: module '{qual}' ({type(module).__name__}) has no such parameter "
            f"(it has: {have})"
        )
    strategy: Choice = target.strategy
    for pname, p in params:
        if inits.STRATEGIES[strategy.name].needs_fan and p.dim() < 2:
            raise BuildError(
                f"{rule.label}.{target.target}: '{strategy.name}' needs fan-in/fan-out but "
                f"'{_join(qual, pname)}' is 1-D (use normal, ones, zeros, constant, ...)"
            )
        inits.apply(oriented(module, p) if pname == "weight" else p, strategy.name, strategy.params, ctx)
        label = f"{rule.label} {strategy.name}"
        factor = 1.0
        if target.depth_scale is not False:
            n = 2 * depth if target.depth_scale is True else float(target.depth_scale)
            factor = n**-0.5
            with torch.no_grad():
                p.mul_(factor)
            label += f" / sqrt({n:g})"
        log.by_param[_join(qual, pname)] = label
        log.strategies[_join(qual, pname)] = (strategy, factor)


def _forget_bias(rule: InitRule, qual: str, module: nn.Module, log: InitLog) -> None:
    import torch
    from torch import nn

    if not isinstance(module, (nn.LSTM, nn.LSTMCell)):
        raise BuildError(f"{rule.label}.forget_bias: '{qual}' is a {type(module).__name__}, not an LSTM")
    for pname, p in module.named_parameters(recurse=False):
        if pname.startswith("bias_ih"):
            n = p.shape[0] // 4
            with torch.no_grad():
                p[n : 2 * n].fill_(float(rule.forget_bias or 0.0))
            name = _join(qual, pname)
            log.by_param[name] = log.by_param.get(name, "default") + f", {rule.label} forget_bias {rule.forget_bias:g}"
            log.strategies[name] = None  # one gate's quarter differs from the rest


def _join(qual: str, pname: str) -> str:
    return f"{qual}.{pname}" if qual else pname
