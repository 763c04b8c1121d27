"""Discovery: the one forward pass (traced, ``probe.model.discovery_pass``) that finds a model's
rows to watch, what each row is (``probe.model.roles``) and which module calls are blocks
(``probe.model.trace``, ``probe.model.structure``); token models take two short passes where
they agree (``probe.model.short_passes``). What cannot be watched becomes a note.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from probe.errors import BuildError, ForwardError, RunError, first_line, user_code_error
from probe.model.discovery_pass import Seen, discovery_pass, weight_of
from probe.model.inputs import InputSpec
from probe.model.network import Watched, is_recurrent
from probe.model.registration import held_modules
from probe.model.short_passes import short_passes

if TYPE_CHECKING:
    from torch import nn


def module_modes(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    """Every submodule's train/eval flag: ``model.train(flag)`` alone would flatten a model
    whose parts differ (a frozen BatchNorm in eval inside a model in train mode)."""
    return [(m, m.training) for m in model.modules()]


def restore_modes(modes: list[tuple[nn.Module, bool]]) -> None:
    for module, training in modes:
        module.training = training


def discover(
    model: nn.Module, inputs: InputSpec, distribution: str, own_modes: bool = False
) -> tuple[list[Watched], list[str]]:
    """One forward pass to learn which candidate modules run and the shape of their outputs
    (token ids: two passes on short sequences where they show the same, see ``short_passes``).
    ``own_modes``: the measured pass keeps each module's train/eval flag as found (a user's model);
    else it trains them all."""
    import torch

    from probe.model import roles, structure

    computing_weights = _computing_weights(model)
    candidates = {
        id(m): (q, m) for q, m in model.named_modules() if q and _is_candidate(m) and id(m) not in computing_weights
    }
    if _is_candidate(model) and (not candidates or any(True for _ in model.parameters(recurse=False))):
        # a model that is one module (torch.nn:Linear), or whose own parameters act: watch it too
        candidates[id(model)] = (type(model).__name__, model)
    try:
        kept = {id(m): m.training for m in model.modules()} if own_modes else None
        seen = short_passes(model, candidates, inputs, distribution, kept)
        if seen is None:
            seen = discovery_pass(model, candidates, inputs, distribution, kept=kept)
    except (BuildError, RunError):  # probe's own (a layer-by-layer block it cannot run), as they are
        raise
    except Exception as exc:
        raise ForwardError(
            f"the model rejected its inputs ({inputs.describe()}): {type(exc).__name__}: {first_line(exc)}"
        ) from None
    except BaseException as exc:
        raise user_code_error(exc, f"the forward pass of {type(model).__name__}") from None

    rows = [e for e in sorted(seen.values(), key=lambda e: e.order) if e.candidate or e.block]
    ran = {e.qual: roles.Ran(e.order, e.in_shape, e.shape, e.int_input) for e in rows}
    block_quals = [e.qual for e in rows if e.block]
    # the model's own call is a row where it holds parameters of its own (a position table, a class
    # token, a temperature): it finishes last, but the maps to the output are the rows inside it
    root = next((e.qual for e in rows if e.module is model), None)
    shaped = [(e.qual, ran[e.qual]) for e in rows if e.shape is not None]
    head = roles.heads([r for r in shaped if r[0] != root] or shaped, block_quals)
    role_of = {
        e.qual: roles.role(
            e.qual,
            e.module,
            ran[e.qual],
            block=bool(e.block),
            inside=e.inside,
            norm=e.norm,
            head=e.qual in head,
            independent=e.independent,
        )
        for e in rows
    }
    watched: list[Watched] = []
    notes: list[str] = []
    for entry in rows:
        if entry.shape is None:
            notes.append(f"{entry.qual} ({type(entry.module).__name__}) not watched: {entry.why_not}")
            continue
        unit_dim = _unit_dim(entry.module, len(entry.shape))
        units = entry.shape[unit_dim] if entry.shape else 1
        widths = {units, *(s[unit_dim] if len(s) == len(entry.shape) else -1 for s in entry.other_shapes)}
        if len(widths) > 1:  # one activation module shared by layers of different widths
            shown = " and ".join(str(w) if w >= 0 else "other ranks" for w in sorted(widths))
            notes.append(
                f"{entry.qual} ({type(entry.module).__name__}) not watched: its {entry.calls} calls per forward "
                f"pass output {shown} units, which one row cannot pool"
            )
            continue
        if entry.calls > 1:
            notes.append(f"{entry.qual} runs {entry.calls} times per forward pass; its row pools every call")
        watched.append(
            Watched(
                entry.qual,
                len(watched) + 1,
                "hidden",
                entry.module,
                weight_of(entry.module),
                units,
                unit_dim,
                _saturation(entry.module),
                module_type=type(entry.module).__name__,
                role=role_of[entry.qual],
                # batch size 1 out of a batch of DISCOVERY_BATCH: one table row shared by every sample
                broadcast=len(entry.shape) >= 2 and entry.shape[0] == 1,
                samples_first=entry.samples_first,
                residual=entry.block == structure.RESIDUAL,
                # read by a normalization only once (a module called again may feed something
                # else), or blind to its own weight's scale (a weight-standardized convolution)
                normalized=(entry.calls == 1 and any(role_of.get(c) == "norm" for c in entry.consumers))
                or entry.hides_weight,
                norm_reader=_norm_reader(entry, role_of, set(block_quals)),
                added_table=entry.weight_added,
                inputs_of=entry.inputs_of,
                branch_end=entry.branch_end,
                stream_input=entry.stream_key if entry.block == structure.RESIDUAL else None,
                output_index=entry.output_index,
                output_of="" if entry.block else entry.output_of or "",
                returns=entry.output_of or "",
            )
        )
    # a row returning another row's output, in the same role (a model returning its head's logits),
    # measures that row's values: one row judges them, the one that made them. Not a block (the
    # stream row whose output its last activation made) nor where one row measures another tensor;
    # the model's own row in any role (its parameters' role, a position table's, is not its output's)
    rows_by_name = {w.name: w for w in watched}
    for w in watched:
        maker_row = rows_by_name.get(w.output_of)
        if (
            maker_row is None
            or (maker_row.role != w.role and w.name != root)
            or w.output_index
            or maker_row.output_index
        ):
            w.output_of = ""
    never = [q for key, (q, _) in candidates.items() if key not in seen]
    scripted = {n for n, m in model.named_modules() if isinstance(m, torch.jit.ScriptModule)}
    in_script = [q for q in never if any(q == n or q.startswith(n + ".") or not n for n in scripted)]
    for what, names in (
        ("inside a TorchScript module (torch.jit), which takes no hooks, so not watched", in_script),
        ("not called in the forward pass, so not watched", [q for q in never if q not in in_script]),
    ):
        if names:
            shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
            notes.append(f"{what}: {shown}")
    if not watched:
        inside = sum("function transform" in n for n in notes)
        why = f" outside torch.vmap ({inside} ran only inside a function transform)" if inside else ""
        if "" in scripted:
            why += (
                " (it is a TorchScript module, which takes no hooks: probe the module before torch.jit.script or trace)"
            )
        elif held := held_modules(model):
            why += f" (it keeps {', '.join(held[:4])} in a plain list or dict: use nn.ModuleList or nn.ModuleDict)"
        raise BuildError(
            f"the model has no module with parameters or activation module that ran{why}; nothing to watch"
        )
    return watched, notes


def _norm_reader(entry: Seen, role_of: dict[str, str], blocks: set[str]) -> str | None:
    """The normalization reading ``entry``'s output, where every module reading it is one or is a
    residual block (whose own norm reads it): a pre-norm stream, which no module reads at its own
    scale. None where a module reads it as it is, or where it runs more than once."""
    norms = [c for c in entry.consumers if role_of.get(c) == "norm"]
    if entry.calls != 1 or not norms or any(c not in blocks and role_of.get(c) != "norm" for c in entry.consumers):
        return None
    return norms[0]


def _computing_weights(model: nn.Module) -> set[int]:
    """The modules of ``torch.nn.utils.parametrize`` that compute a parametrized weight (each
    ``parametrizations.<name>`` list and what it holds): their output is a weight, not a signal."""
    from torch.nn.utils.parametrize import ParametrizationList

    return {id(m) for p in model.modules() if isinstance(p, ParametrizationList) for m in p.modules()}


def _is_candidate(module: nn.Module) -> bool:
    from torch import nn
    from torch.nn.utils import parametrize

    if isinstance(module, nn.MultiheadAttention) or any(True for _ in module.parameters(recurse=False)):
        return True
    if parametrize.is_parametrized(module):  # its weight is computed from parameters it holds (nGPT's norm)
        return True
    return type(module).__module__ == "torch.nn.modules.activation" and not list(module.children())


def _unit_dim(module: nn.Module, ndim: int) -> int:
    """Channels-first for conv-like outputs (N, C, ...), last dimension otherwise."""
    from torch import nn

    channel_first = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm)
    if ndim <= 1:
        return 0
    if isinstance(module, channel_first) or ndim >= 4:
        return 1
    return ndim - 1


def _saturation(module: nn.Module) -> Any:
    from torch import nn

    from probe.spec import activations

    if isinstance(module, nn.Tanh):
        return activations.saturation("tanh", {})
    if isinstance(module, nn.Sigmoid):
        return activations.saturation("sigmoid", {})
    if is_recurrent(module):  # its gates, inside a fused kernel
        return activations.Saturation("recurrent", None, None)
    return None
