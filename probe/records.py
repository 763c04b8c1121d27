"""Plain typed objects passed between stages: per-layer statistics, the report, the verdict.

No torch here: a ``Stats`` is numbers, so rules and renderers can be tested without a network.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from probe.spec import Spec


@dataclass(frozen=True)
class LayerHistograms:
    """Per-layer histograms of activation magnitudes on one batch (``probe.measurement.histograms``)."""

    label: str
    layers: tuple[str, ...]
    edges: tuple[float, ...]  # bins + 1 edges in log10 |value|
    fractions: tuple[tuple[float, ...], ...]  # per layer: fraction of its values in each bin
    zero_fractions: tuple[float, ...]  # per layer: fraction of exact zeros

    def only(self, names: set[str] | frozenset[str]) -> LayerHistograms:
        """The layers whose name is in ``names`` (the rows a report shows), in order."""
        keep = [i for i, n in enumerate(self.layers) if n in names]
        return LayerHistograms(
            self.label,
            tuple(self.layers[i] for i in keep),
            self.edges,
            tuple(self.fractions[i] for i in keep),
            tuple(self.zero_fractions[i] for i in keep),
        )


@dataclass(frozen=True)
class LayerStats:
    """Statistics of one watched layer's output, accumulated over every batch of a run.

    ``None`` means "does not apply": no saturating tail, no backward pass, no weight.
    """

    name: str
    index: int  # 1-based position among the watched layers
    kind: str  # "hidden" or "output"
    units: int
    count: int  # values measured (all batches)
    mean: float
    std: float
    zero_ratio: float  # fraction of values exactly 0
    dead_units: float  # fraction of units that are 0 on every sample
    saturation_ratio: float | None  # fraction of values on a flat tail of the activation
    nonfinite: int  # count of nan/inf values
    unit_spread: float | None  # sqrt(mean over samples of variance across units / variance)
    grad_std: float | None  # std of d loss / d (this output)
    weight_grad_norm: float | None  # norm of d loss / d weight, RMS over batches
    weight_grad_std: float | None
    module_type: str | None = None  # non-MLP models: the class of the watched module
    init_rule: str | None = None  # non-MLP models: what initialized its weight
    grad_nonfinite: int | None = None  # nan/inf in d loss / d output and d loss / d weight (None: no backward)
    # what the row is in the network (stream, branch, activation, norm, embedding, head; see
    # probe/model/roles.py): the rules judge each role by what it means
    role: str = "stream"
    # per sample, ||output|| * ||d loss / d output||, averaged over samples: the backward signal in
    # a form that pooling and broadcasting do not change (docs/verdicts.md derives it)
    grad_scale: float | None = None
    # per sample, ||sum_p x_p g_p^T|| over positions p: the weight gradient a position-wise map
    # reading this row receives, positions summed as it sums them (at most grad_scale, the
    # triangle inequality's bound; equal with one position); gradient_exploding reads it
    coherent_grad_scale: float | None = None
    # ||d loss / d weight|| / ||weight||: how fast this layer's weight moves relative to its size
    weight_grad_ratio: float | None = None
    # rms(weight) / sqrt(2 / fan_in): the weight's scale in units of He's variance rule (1 = He)
    weight_scale: float | None = None
    weight_size: int | None = None  # elements in the weight (weighs layers in the weight_scale rule)
    weight_rms: float | None = None  # rms(weight): Adam's steps of about lr turn it by lr / weight_rms
    # the loss cannot see its weight's scale: its output goes straight into a normalization, or its
    # gradient is orthogonal to the weight (weight_grad_cos)
    normalized: bool = False
    # |cos| between the first batch's d loss / d weight and the weight: 0 (to about 1e-7) where no
    # scale of the weight changes the loss (docs/verdicts.md); None for tables (role embedding)
    weight_grad_cos: float | None = None
    # the normalization reading this row's output where every module reading it normalizes it (a
    # pre-norm stream): the scale the network sees is that row's (docs/verdicts.md)
    norm_reader: str | None = None
    # a residual block's rms(output - input) / rms(input): how much its branch adds to the stream
    branch_ratio: float | None = None
    # collapse: the mean over pairs of samples of the squared cosine between their centered
    # (batch mean subtracted) flattened outputs, as an excess over independent directions (0) up to
    # 1 = every sample differs from the others along one line; None: fewer than two varying samples
    correlation: float | None = None
    # for (samples, tokens, units) outputs: the same between the tokens of a sequence (centered on
    # the sequence's mean token)
    token_correlation: float | None = None
    # the std of what varies between samples: each value's spread across the batch's first samples
    # (correlation.py), without what every sample shares (biases, a position's mean)
    sample_std: float | None = None
    # the mean of the row's input, all values of all batches (the network's output row only: the
    # rate at which Adam's head weights remove a logit offset every sample shares, logit_scale)
    input_mean: float | None = None
    # collapse was measured and no sample differed from the batch mean beyond rounding: every sample
    # gives this row the same values (with std or mean not 0: a constant, input-independent output)
    samples_identical: bool = False
    # fraction of units whose output is 0 for every sample (dead_units also asks that they receive
    # no gradient: a zero-initialized layer's units output 0 and are not dead)
    zero_units: float | None = None
    # spread across units of the weight rows and of the weight-gradient rows, the larger: 0 = tied
    # units (same weights, same gradients: no step can tell them apart); None: no weight
    tied_spread: float | None = None
    # every value of d loss / d (this output) is exactly 0 (blocked downstream, e.g. by a
    # zero-initialized layer)
    gradient_blocked: bool = False
    # its own parameters require a gradient, yet no gradient reached them nor its output (cut by
    # torch.no_grad, .detach(), a reentrant checkpoint on inputs without one): they do not train
    detached: bool = False
    # a parameter of this row (its weight, a bias, a LayerScale's gamma, a block's scalar gain) is
    # exactly 0 while its gradient is not: a zero-initialized layer the first step moves
    zero_moving: bool = False
    # the largest ||d loss / d p|| / ||p|| over the row's own nonzero parameters (first batch)
    step_ratio: float | None = None
    # two or more multiplying parameters of this row, every one exactly 0 with a gradient exactly
    # 0 (each gradient a product with another of them: LoRA's A and B both 0): no step moves them
    zero_product: bool = False
    # on the last row: the network outputs' per-sample sum over positions of ||y_p|| * ||r_p||, the
    # gradient rules' reference (docs/verdicts.md)
    output_grad_scale: float | None = None
    # on the last row: the same for the network output with the least of it (a model returning a
    # sequence and a pooled vector): below it a row's gradient cannot be said to vanish
    least_output_grad_scale: float | None = None
    # on the last row: the outputs' sum of coherent_grad_scale's measure with the loss's direction
    output_coherent_grad_scale: float | None = None
    # the first backward's weight gradient: the share of sign(dL/dW) (units x fan-in) on its top
    # singular direction, sigma_1^2 / ||sign||^2: Adam's first update is lr * that sign matrix, and
    # 1 means it is rank one (probe/measurement/first_update.py, rule rank_one_step)
    update_rank_share: float | None = None
    # the row whose output tensor this row returns unchanged (a model or wrapper returning its
    # head's logits): the same values, so the rules judge them at that row only; "" for its own.
    # Its own parameters (a class token, a final affine) act elsewhere in the network
    output_of: str = ""
    # the row whose output tensor this row returns, a block's included (``output_of`` without the
    # roles' and blocks' exclusions): the vanishing rule's excuse for a mover covers it
    returns: str = ""


@dataclass(frozen=True)
class AttentionStats:
    """One module's attention, pooled over its calls and every head and query row."""

    name: str  # the module that computed it (qualified name in the model)
    calls: int
    logit_std: float  # root mean square over rows of the logits' std across keys
    entropy: float  # mean over rows of entropy / log(keys): 1 uniform, 0 one-hot
    # mean over rows of how much the routing depends on the sample: (entropy of the weights averaged
    # over the samples - the samples' mean entropy) / log(samples); 0 every sample attends the same
    # way (a position bias), 1 each its own (probe/measurement/attention.py); None: one sample
    routing: float | None = None


@dataclass(frozen=True)
class StepRow:
    """One row after the first optimizer steps (``run.steps``; probe/measurement/steps.py)."""

    name: str
    update_ratio: float | None  # ||W_K - W_0|| / ||W_0|| of the row's weight (None: no weight)
    output_change: float | None  # ||y_K - y_0|| / ||y_0|| of its output on the steps' batch
    amax: float | None = None  # the largest magnitude of its output after the steps (run.precision's headroom)
    weight_amax: float | None = None  # and of its weight
    change_rms: float | None = None  # rms of y_K - y_0 per coordinate (the coordinate check's size)
    adam_rms: float | None = None  # Adam's update RMS of its weight, the largest over the steps (step_signals.py)


@dataclass(frozen=True)
class StepStats:
    """K AdamW steps fitting a fixed random target of the output's own scale on one batch."""

    steps: int
    lr: float
    progress: float  # 1 - loss_K / loss_0: the share of the distance to the target the steps closed
    output_change: float | None  # ||out_K - out_0|| / ||out_0|| of the network's outputs
    losses: tuple[float, ...]  # the objective before each step and after the last
    rows: tuple[StepRow, ...]
    elapsed_s: float
    baseline: float | None = None  # the objective of the best constant prediction of the target
    log_z: tuple[float | None, ...] = ()  # the output's mean log-partition before each step and after the last
    adam_rms: tuple[float | None, ...] = ()  # per step, Adam's largest update RMS over the rows' weights
    attention_max: tuple[float | None, ...] = ()  # the largest attention logit, as log_z (empty: no attention)


@dataclass(frozen=True)
class Range:
    """One tensor's values against a low-precision format (``run.precision``; probe/spec/precision.py),
    over every batch: what a round-to-nearest cast to the format would keep."""

    amax: float  # the largest magnitude
    values: int
    nonzero: int
    flushed: int  # nonzero values the cast turns into 0 (at or below half the smallest subnormal)
    subnormal: int  # nonzero values below the smallest normal (the flushed ones included)

    @property
    def underflow(self) -> float | None:
        """The share of the nonzero values the cast flushes to 0 (None: every value is 0)."""
        return self.flushed / self.nonzero if self.nonzero else None

    @property
    def subnormal_share(self) -> float | None:
        """The share of the nonzero values below the smallest normal (fewer significant bits)."""
        return self.subnormal / self.nonzero if self.nonzero else None


@dataclass(frozen=True)
class HeadroomRow:
    """One row's tensors against the format; None: not measured (no gradient, no weight)."""

    name: str
    activation: Range | None  # the row's output
    gradient: Range | None  # d loss / d output (the probe's direction's scale: docs/precision.md)
    weight_gradient: Range | None
    weight: Range | None


@dataclass(frozen=True)
class HeadroomStats:
    """Every row against ``run.precision``'s format (probe/measurement/precision.py)."""

    format: str  # a key of probe.spec.precision.FORMATS
    rows: tuple[HeadroomRow, ...]


@dataclass(frozen=True)
class Stats:
    spec: Spec
    layers: tuple[LayerStats, ...]
    device: str
    dtype: str
    torch_version: str
    elapsed_s: float
    notes: tuple[str, ...] = ()  # what could not be watched, and why
    world_size: int = 1  # torchrun ranks whose statistics were merged
    attention: tuple[AttentionStats, ...] = ()  # per module that computed attention (transformers)
    steps: StepStats | None = None  # after run.steps optimizer steps (None: not asked)
    headroom: HeadroomStats | None = None  # against run.precision's format (None: not asked)
    histograms: LayerHistograms | None = None  # the first batch's, where asked (``--plot``, ``--tensorboard``)
    # tensors the forward pass used with a gradient that model.parameters() does not hold (probe/model/registration.py)
    unregistered: tuple[str, ...] = ()
    unregistered_share: float = 0.0  # their share of the elements of every weight the forward used
    # the model's output holds probabilities along a dimension of this size (one process, not layer
    # by layer; 0: it does not, or not measured): a cross-entropy would read them as logits
    probability_classes: int = 0

    @property
    def first(self) -> LayerStats:
        return self.layers[0]

    @property
    def last(self) -> LayerStats:
        return self.layers[-1]

    def std_ratio(self) -> float | None:
        """Last layer's activation std over the first layer's."""
        return _ratio(self.last.std, self.first.std)

    def grad_ratio(self) -> float | None:
        """First layer's gradient std over the last layer's (how much backward signal survives)."""
        return _ratio(self.first.grad_std, self.last.grad_std)

    def signal(self) -> tuple[LayerStats, ...]:
        """The rows on the signal path (``stream``) and the head: what vanishing and exploding
        judge (a row returning another's output, ``output_of``, is judged at that row). A report
        without such rows (no role detected) judges every row."""
        rows = tuple(x for x in self.layers if x.role in ("stream", "head") and not x.output_of)
        return rows or self.layers


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den == 0 or den != den or num != num:
        return None
    return num / den


@dataclass(frozen=True)
class Problem:
    """One broken health rule: where, how much, and against which threshold."""

    rule: str
    layer: str
    value: float
    threshold: float
    message: str
    gate_key: str = ""  # the GateSpec field holding the threshold (what to override)
    # "error": stops or stalls training; "warning": slows it (or a hair past a threshold); "note"
    severity: str = "error"


@dataclass(frozen=True)
class Verdict:
    healthy: bool
    problems: tuple[Problem, ...] = ()
    warnings: tuple[Problem, ...] = field(default=())  # broken at warning severity, or near a threshold
    notes: tuple[Problem, ...] = field(default=())  # by design, not a failure (identity blocks)
    # (layer, LayerStats field, "fail" | "warn"): every table cell a rule (nearly) breaks under the
    # gate this verdict was evaluated with; renderers color cells from here, never re-judge
    flags: tuple[tuple[str, str, str], ...] = field(default=())

    def cell_flags(self) -> dict[str, dict[str, str]]:
        """``{layer name: {field: "fail" | "warn"}}``."""
        out: dict[str, dict[str, str]] = {}
        for layer, cell, level in self.flags:
            out.setdefault(layer, {})[cell] = level
        return out


@dataclass(frozen=True)
class Run:
    """One labeled probe result, as ``compare`` and ``check`` produce several of them."""

    label: str
    report: Stats
    verdict: Verdict
    strategy: str = ""
    activation: str = ""
