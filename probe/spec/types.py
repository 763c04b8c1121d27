"""The typed ``Spec`` and the tables of its keys: names, defaults, bounds, help.

Every key has a default, so ``{}`` is a valid spec: the seed lab's 8-layer He + ReLU network.
Errors are ``SpecError`` values carrying the dotted key path, the valid choices and a
"did you mean" suggestion; YAML syntax errors carry line and column.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from probe.spec import inits
from probe.spec.precision import PRECISIONS
from probe.spec.schema import Param

RULE_NAMES = (
    "vanishing",
    "exploding",
    "saturation",
    "dead_units",
    "symmetry",
    "nonfinite",
    "gradient_vanishing",
    "gradient_exploding",
    "collapse",
    "attention_saturation",
    "weight_scale",
    "logit_scale",
    "stalled",
    "headroom",
    "rank_one_step",
)

MODEL_KINDS = ("mlp", "conv", "residual", "transformer", "lstm", "gru")
NORMS = ("none", "batchnorm", "layernorm")
BLOCKS = ("mlp", "conv")
NORM_POSITIONS = ("post", "pre")
ZERO_INITS = ("none", "rezero", "last_norm")
POOLS = ("none", "max", "avg")
PARAMETRIZATIONS = ("sp", "mup")  # standard; muP (Tensor Programs V, microsoft/mup's MuReadout + MuAdam)
RULE_TARGETS = ("weight", "bias", "weight_ih", "weight_hh", "bias_ih", "bias_hh")
DTYPES = ("float32", "float64", "bfloat16", "float16")
SHARDS = ("none", "fsdp")  # run.shard: how torchrun ranks hold the model
DISTRIBUTIONS = ("normal", "uniform")
BIAS_STRATEGIES = tuple(n for n, s in inits.STRATEGIES.items() if not s.needs_fan)
SEVERITIES = ("error", "warning")  # gate.fail_on: the least severe problem that fails the gate
OPTIMIZERS = ("any", "sgd", "adam")  # gate.optimizer: how much moderate vanishing matters
# ASCII digits, at most 4 (a device index, not a number torch would overflow on); matched whole (fullmatch)
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:[0-9]{1,4})?)$")


@dataclass(frozen=True)
class Choice:
    """A named entry of a registry with its validated parameters (an activation, a strategy)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def label(self, schema: Mapping[str, Param] | None = None) -> str:
        """``leaky_relu(negative_slope=0.2)``: the name and the parameters that differ from the
        defaults in ``schema`` (all non-null ones when no schema is given)."""
        shown = {
            k: v
            for k, v in self.params.items()
            if v is not None and (schema is None or k not in schema or schema[k].default != v)
        }
        if not shown:
            return self.name
        return self.name + "(" + ", ".join(f"{k}={v}" for k, v in shown.items()) + ")"


@dataclass(frozen=True)
class ModelSpec:
    kind: str
    input_dim: int
    width: int
    depth: int
    output_dim: int | None
    activation: Choice
    bias: bool
    norm: str
    # conv and residual-conv (width is the channel count)
    in_channels: int = 3
    image_size: int = 32
    kernel_size: int = 3
    stride: int = 1
    padding: int | None = None
    pool: str = "none"
    pool_every: int = 2
    # residual
    block: str = "mlp"
    norm_position: str = "post"
    branch_scale: float | str = 1.0  # a number, or "depth" = 1/sqrt(2 * depth)
    zero_init: str = "none"
    # transformer (width is d_model) and lstm/gru (width is the hidden size)
    heads: int = 4
    ff_width: int | None = None
    norm_first: bool = True
    dropout: float = 0.0
    vocab_size: int | None = None
    seq_len: int = 16
    # a user model: "package.module:factory" with keyword arguments, and its inputs
    factory: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    input_shape: tuple[int, ...] | None = None
    inputs: str | None = None
    # a transformers model: a model type ("llama") or a local config.json; kwargs override its fields
    hf: str | None = None
    # mlp and transformer: "mup" scales init, multipliers and Adam's learning rates with width / base_width
    parametrization: str = "sp"
    base_width: int = 128

    @property
    def own_model(self) -> bool:
        """The network is the user's (``model.import``) or a transformers model (``model.hf``),
        initialized by its own code unless the spec's ``init`` says otherwise."""
        return self.factory is not None or self.hf is not None

    def branch_multiplier(self) -> float:
        """The number residual branches are multiplied by (``depth`` -> 1/sqrt(2 depth))."""
        if self.branch_scale == "depth":
            return float((2 * self.depth) ** -0.5)
        return float(self.branch_scale)


@dataclass(frozen=True)
class RuleTarget:
    """One parameter family of a matched module and the strategy that fills it."""

    target: str  # one of RULE_TARGETS
    strategy: Choice
    depth_scale: float | bool = False  # true: divide by sqrt(2 L); a number: divide by sqrt(number)


@dataclass(frozen=True)
class InitRule:
    """``init.rules[i]``: modules matched by type and/or qualified-name pattern, and what to fill."""

    label: str  # "init.rules[0]"
    match_type: str | None
    match_name: str | None
    targets: tuple[RuleTarget, ...]
    forget_bias: float | None = None  # LSTM: the forget-gate quarter of bias_ih
    match_param: str | None = None  # fnmatch on the parameter's own name: fills exactly those


@dataclass(frozen=True)
class InitSpec:
    weight: Choice
    bias: Choice
    rules: tuple[InitRule, ...] = ()
    # weight or bias was written in the spec (user models keep their own init otherwise); not part
    # of equality, so a spec equals its to_dict round trip
    explicit: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class DataSpec:
    batch_size: int
    batches: int
    distribution: str


@dataclass(frozen=True)
class RunSpec:
    device: str
    dtype: str
    seed: int
    backward: bool
    shard: str = "none"  # under torchrun: "none" replicates the model (DDP), "fsdp" shards it (FSDP2)
    steps: int = 0  # optimizer steps after the step-0 measurement (probe/measurement/steps.py)
    lr: float = 1e-3  # the AdamW learning rate of those steps
    precision: str = "none"  # a low-precision format whose headroom each row is measured against


@dataclass(frozen=True)
class GateSpec:
    """Thresholds of the health rules (see ``rules.py``); ``disable`` skips rules by name."""

    min_std: float
    min_std_ratio: float
    max_std: float
    max_std_ratio: float
    max_saturation: float
    max_dead_units: float
    min_unit_spread: float
    max_nonfinite: int
    min_grad_ratio: float
    max_grad_ratio: float
    max_branch_ratio: float = 10.0
    max_correlation: float = 0.25
    min_attention_entropy: float = 0.2
    max_weight_scale: float = 4.0
    max_weight_turn: float = 1.0  # weight_scale under Adam: rms / (lr x 200 steps) (probe/judge/readings.py)
    max_loss_ratio: float = 3.0
    max_token_correlation: float = 0.98
    min_step_progress: float = 0.0035  # stalled: (1 / sqrt 2) / 200, rounded (probe/judge/stalled.py)
    max_amax_ratio: float = 1.0  # headroom: a row's amax / the format's largest value (probe/judge/headroom.py)
    max_underflow: float = 0.5  # headroom: share of a row's nonzero values the cast flushes to 0
    max_rank_one_share: float = 0.5  # rank_one_step: a weight's share on one direction after Adam's first step
    disable: tuple[str, ...] = ()
    fail_on: str = "error"  # "warning": warnings fail the gate too
    optimizer: str = "any"  # sgd: moderate vanishing is an error; adam: only vanishing by many decades
    # the nonfinite rule was disabled by the caller (the command line, probe.measure's gate=), not by
    # the spec's text: only then may a network whose statistics are nan pass (rules.py)
    nan_accepted: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class Trust:
    """What the user, not the spec's text, lets ``model.import``/``model.inputs`` name
    (``probe.model.imports``): the folder the spec was read from and the modules allowed on the
    command line (``probe --allow-import PKG``). No spec key or ``--set`` reaches it."""

    folders: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()


@dataclass(frozen=True)
class Spec:
    model: ModelSpec
    init: InitSpec
    data: DataSpec
    run: RunSpec
    gate: GateSpec
    name: str = "probe"
    trust: Trust = field(default=Trust(), compare=False)  # not part of the spec's text or equality


# ---- the schema: every key, its type, default and bounds -------------------------------------

MODEL_PARAMS: dict[str, Param] = {
    "kind": Param("str", "mlp", choices=MODEL_KINDS, help="network family"),
    "input_dim": Param("int", 32, minimum=1, help="features of each random input"),
    "width": Param("int", 128, minimum=1, help="units of each hidden layer"),
    "depth": Param("int", 8, minimum=1, help="hidden layers, each Linear -> [norm] -> activation"),
    "output_dim": Param("int", None, nullable=True, minimum=1, help="null: no head; else a final Linear"),
    "bias": Param("bool", True, help="Linear layers have a bias"),
    "norm": Param("str", "none", choices=NORMS, help="normalization after each Linear"),
    "in_channels": Param("int", 3, minimum=1, help="conv: channels of each random input image"),
    "image_size": Param("int", 32, minimum=1, help="conv: height and width of each input image"),
    "kernel_size": Param("int", 3, minimum=1, help="conv: kernel size"),
    "stride": Param("int", 1, minimum=1, help="conv: stride"),
    "padding": Param("int", None, nullable=True, minimum=0, help="conv: null = kernel_size // 2"),
    "pool": Param("str", "none", choices=POOLS, help="conv: 2x2 pooling after every pool_every layers"),
    "pool_every": Param("int", 2, minimum=1, help="conv: layers between poolings"),
    "block": Param("str", "mlp", choices=BLOCKS, help="residual: branch made of Linear or Conv2d layers"),
    "norm_position": Param("str", "post", choices=NORM_POSITIONS, help="residual: norm inside the branch"),
    "zero_init": Param("str", "none", choices=ZERO_INITS, help="residual: rezero alpha = 0 or last norm gamma = 0"),
    "heads": Param("int", 4, minimum=1, help="transformer: attention heads"),
    "ff_width": Param("int", None, nullable=True, minimum=1, help="transformer: null = 4 * width"),
    "norm_first": Param("bool", True, help="transformer: pre-LN blocks"),
    "dropout": Param("float", 0.0, minimum=0.0, maximum=1.0, help="transformer: dropout (0 for the probe)"),
    "vocab_size": Param("int", None, nullable=True, minimum=2, help="token-id inputs (transformer, user model)"),
    "seq_len": Param("int", 16, minimum=1, help="transformer/lstm/gru/token inputs: time steps"),
    "kwargs": Param("mapping", {}, help="user model: keyword arguments of the factory; model.hf: config fields"),
    "input_shape": Param("shape", None, nullable=True, help="user model: one sample's shape, e.g. [3, 32, 32]"),
    "inputs": Param("str", None, nullable=True, help="user model: 'module:function' returning example inputs"),
    "parametrization": Param(
        "str", "sp", choices=PARAMETRIZATIONS, help="mlp/transformer: sp, or mup (muP's init, multipliers, Adam lr)"
    ),
    "base_width": Param("int", 128, minimum=1, help="mup: the width at which muP equals sp"),
}
MODEL_KEYS = (*MODEL_PARAMS, "activation", "branch_scale", "import", "hf")
DATA_PARAMS: dict[str, Param] = {
    "batch_size": Param("int", 512, minimum=2, help="samples per batch (a std needs 2)"),
    "batches": Param("int", 1, minimum=1, help="statistics accumulate over all batches"),
    "distribution": Param("str", "normal", choices=DISTRIBUTIONS, help="unit-variance inputs"),
}
RUN_PARAMS: dict[str, Param] = {
    "device": Param("str", "auto", help="auto, cpu, cuda, cuda:N or mps"),
    "dtype": Param("str", "float32", choices=DTYPES),
    "seed": Param("int", 0, minimum=0, help="same spec and seed -> identical numbers"),
    "backward": Param("bool", True, help="also measure gradients"),
    "shard": Param("str", "none", choices=SHARDS, help="under torchrun: none = replicate (DDP), fsdp = FSDP2"),
    "steps": Param(
        "int", 0, minimum=0, help="AdamW steps after the step-0 measurement, then weights restored (0: none)"
    ),
    "lr": Param("float", 1e-3, minimum=0.0, help="learning rate of the run.steps AdamW steps"),
    "precision": Param(
        "str",
        "none",
        choices=PRECISIONS,
        help="measure each row's amax and underflow against this format (fp8 = fp8_e4m3); the headroom rule",
    ),
}
SECTIONS = ("name", "model", "init", "data", "run", "gate")
