"""The gate's keys: each threshold's type, default, bounds and help (``GateSpec`` holds the values;
``probe.judge.rules`` says which rule reads which key)."""

from __future__ import annotations

from probe.spec.schema import Param
from probe.spec.types import OPTIMIZERS, SEVERITIES

GATE_PARAMS: dict[str, Param] = {
    "min_std": Param("float", 1e-2, minimum=0.0, help="vanishing: any layer's activation std below this"),
    "min_std_ratio": Param("float", 1e-2, minimum=0.0, help="vanishing: last/first activation std below this"),
    "max_std": Param(
        "float", 1e2, minimum=0.0, allow_inf=True, help="exploding: any layer's activation std above this"
    ),
    "max_std_ratio": Param(
        "float", 1e2, minimum=0.0, allow_inf=True, help="exploding: last/first activation std above this"
    ),
    "max_saturation": Param(
        "float", 0.25, minimum=0.0, maximum=1.0, help="saturation: fraction of saturated values above this"
    ),
    "max_dead_units": Param(
        "float",
        0.25,
        minimum=0.0,
        maximum=1.0,
        help="dead_units: fraction of units zero on every sample and receiving no gradient above this",
    ),
    "min_unit_spread": Param(
        "float", 1e-3, minimum=0.0, help="symmetry: spread of weight and weight-gradient rows across units below this"
    ),
    "max_nonfinite": Param(
        "int", 0, minimum=0, help="nonfinite: count of nan/inf values (outputs or gradients) above this"
    ),
    "min_grad_ratio": Param(
        "float", 1e-2, minimum=0.0, help="gradient_vanishing: a layer's grad scale / output grad scale below this"
    ),
    "max_grad_ratio": Param(
        "float",
        1e2,
        minimum=0.0,
        allow_inf=True,
        help="gradient_exploding: a layer's weight-gradient scale (positions summed) / the outputs' above this",
    ),
    "max_branch_ratio": Param(
        "float",
        10.0,
        minimum=0.0,
        allow_inf=True,
        help="exploding: a residual block's branch adds more than this times its input",
    ),
    "fail_on": Param("str", "error", choices=SEVERITIES, help="the gate fails on errors, or on warnings too"),
    "optimizer": Param(
        "str", "any", choices=OPTIMIZERS, help="training optimizer hint: sgd tightens, adam relaxes vanishing"
    ),
    "max_correlation": Param(
        "float",
        0.25,
        minimum=0.0,
        maximum=1.0,
        help="collapse: squared cosine between samples' centered outputs above this",
    ),
    "min_attention_entropy": Param(
        "float",
        0.2,
        minimum=0.0,
        maximum=1.0,
        help="attention_saturation: every module's attention entropy / log(keys) below this (1 = uniform)",
    ),
    "max_weight_scale": Param(
        "float",
        4.0,
        minimum=0.0,
        allow_inf=True,
        help="weight_scale: most weights feed a normalization and sit above this many times He's scale",
    ),
    "max_weight_turn": Param(
        "float",
        1.0,
        minimum=0.0,
        allow_inf=True,
        help="weight_scale under Adam: most weights' rms / (lr x 200 steps) above this",
    ),
    "max_loss_ratio": Param(
        "float",
        3.0,
        minimum=1.0,
        allow_inf=True,
        help="logit_scale: the output's starting cross-entropy / log(classes) above this",
    ),
    "max_token_correlation": Param(
        "float",
        0.98,
        minimum=0.0,
        maximum=1.0,
        help="collapse: squared cosine between a sequence's tokens (centered per position) above this",
    ),
    "min_step_progress": Param(
        "float",
        0.0035,
        minimum=0.0,
        help="stalled (run.steps): share of the distance to the steps' target closed per step below this",
    ),
    "max_amax_ratio": Param(
        "float",
        1.0,
        minimum=0.0,
        allow_inf=True,
        help="headroom (run.precision): a row's amax / the format's largest value above this (1: the cast overflows)",
    ),
    "max_underflow": Param(
        "float",
        0.5,
        minimum=0.0,
        maximum=1.0,
        help="headroom (run.precision): share of a row's nonzero values the cast flushes to 0 above this (a warning)",
    ),
    "max_rank_one_share": Param(
        "float",
        0.5,
        minimum=0.0,
        maximum=1.0,
        help="rank_one_step: share of a signal-path weight on one direction after Adam's first step (run.lr) above this",
    ),
}
