"""Ground truth for probe's verdicts on the corpus: does each case train as its library default does?

Every case of ``tests/corpus.py`` (8 models x 3 inits: ``default``, ``zeros``, ``normal1``) gets
the same short run, and the loss it reaches is set beside the default init's:

- token models: next-token prediction on sequences of a fixed random Markov chain of order two
  that skips a position: the token at t+1 is drawn from a fixed random distribution (4 likely
  successors, Dirichlet(1) weights, of 64 ids) given the token at t-1, and does not depend on the
  token at t. A network must move information between positions (attention) to beat the
  constant-prediction baseline. A plain first-order chain was tried first and was a poor judge:
  the token at t alone predicts it, so embedding -> final norm -> head is a bigram model, and
  GPT-2 and Llama with every weight zero trained as well as their default init (1.24 and 1.21
  against 1.27 and 1.23 after 200 steps) while the weights of every block stayed exactly zero (an
  all-zero MLP or attention is a saddle: each weight's gradient is a product with the other's zero
  weight; only the output biases and the embeddings move, and weight decay keeps zeros at zero).
  BERT trains as a causal model (``bert(init, causal=True)``: the same modules and the same weight
  draw, attention masked to the past), since a bidirectional encoder asked for the next token
  would read it. (Its own masked-token task was tried too: at the default init it sat on a plateau
  near the baseline for ~350 of 400 steps at lr 1e-3 and 3e-3: too slow a signal for a short run.)
- vision models: 10-way classification of 2048 fixed smooth random images labelled by a fixed
  random teacher (conv 5x5 -> ReLU -> global average pool -> linear, argmax, logits centred over
  the images so no class dominates), a function a conv net with a pooled head can represent.

A linear head (``nn.Linear``, PyTorch's default init, the same draw for every init of a model)
maps the corpus model's output (last hidden state, or pooled features) to the logits. AdamW (lr
1e-3, weight decay 0.01, no clipping), batch 32, 300 steps for the token task and 200 for the
vision task (``--steps N`` sets both), one thread, fixed seeds: the model, the head and the data
have their own seeds, so the three inits of one model see the same head and batches.

"Trains", precisely. ``loss`` is the mean cross-entropy on a fixed evaluation set (512 fresh
sequences for the token task; the first 512 of the 2048 training images for the vision task: the
question is whether the optimizer can fit, not generalization), in train mode (BatchNorm on batch
statistics), after the last step. ``baseline`` is the loss of the best *constant* prediction,
the entropy of the evaluation targets' label frequencies: a network whose output does not depend
on its input (an all-zero body, a dead network) still reaches it through the head's bias, so
falling to it is not learning the task. ``gain = baseline - loss`` (nats) is what the network
learned beyond that, and a case trains when

    gain >= 0.5 * gain of the same model at its default init    (and its losses are finite)

i.e. within the same budget it captures at least half of what the library's own init captures.
The starting loss is reported but not used: a broken init often starts far above the baseline
(N(0, 1) weights give huge logits), and falling from there to the baseline is recovering, not
learning. The rule also needs the default itself to learn (``gain`` >= 0.25 nats); a model whose
default does not is reported as ``task not learned`` and judged on nothing.

Each run also records ``moved``: the median over the body's weight tensors of
||W_end - W_start|| / ||W_start||, how far training turned the weights (the BatchNorm networks
with N(0, 1) weights reach part of their gain with weights that barely moved: docs/corpus.md).

Writes ``benchmarks/trainability.json`` (with the date, torch and transformers versions and the
settings) and prints a table. ``--only gpt2,swin``, ``--inits``, ``--seed N`` (another replicate)
and ``--steps`` change the run; the JSON of such a run is written only to ``--json PATH``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests import corpus  # noqa: E402

JSON_PATH = REPO / "benchmarks" / "trainability.json"
FORMAT = "probe.trainability/1"

# steps per task: BERT's default init leaves its plateau on the skip chain only after ~150-200 steps
STEPS = {"tokens": 300, "images": 200}
BATCH = 32
LR = 1e-3
WEIGHT_DECAY = 0.01
TRAINS_FRACTION = 0.5  # of the default init's gain
MIN_DEFAULT_GAIN = 0.25  # nats: below it the default did not learn the task either
EVAL_EVERY = 50

MODEL_SEED = 0
HEAD_SEED = 1
DATA_SEED = 2
SEED_STRIDE = 10  # --seed N adds N * 10 to all three: another draw of model, head, chain/teacher and data

# token task
STATES = corpus.VOCAB_SIZE
SUCCESSORS = 4
EVAL_SEQUENCES = 512
# vision task
CLASSES = 10
IMAGES = 2048
EVAL_IMAGES = 512  # the first 512 training images
LOW_RES = 8
TEACHER_CHANNELS = 16


# ---- tasks -------------------------------------------------------------------------------------


class SkipChain:
    """A fixed random chain over ``STATES`` ids in which the token at t+1 depends on the token at t-1 only.

    Each id has ``SUCCESSORS`` random successors with Dirichlet(1) weights; the first two tokens are
    uniform.
    """

    def __init__(self, generator: torch.Generator) -> None:
        probs = torch.zeros(STATES, STATES)
        for s in range(STATES):
            succ = torch.randperm(STATES, generator=generator)[:SUCCESSORS]
            w = -torch.log(torch.rand(SUCCESSORS, generator=generator))  # Dirichlet(1) = normalized Exp(1)
            probs[s, succ] = w / w.sum()
        self.probs = probs

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        seq = torch.empty(n, corpus.SEQ_LEN, dtype=torch.long)
        seq[:, :2] = torch.randint(0, STATES, (n, 2), generator=generator)
        for t in range(2, corpus.SEQ_LEN):
            seq[:, t] = torch.multinomial(self.probs[seq[:, t - 2]], 1, generator=generator).squeeze(1)
        return seq


@dataclass
class Batch:
    inputs: dict[str, torch.Tensor]
    targets: torch.Tensor  # class ids; -100 where no loss is taken


class TokenTask:
    """Next-token prediction on the chain's sequences (the last position has no target)."""

    def __init__(self, seed: int = 0) -> None:
        self.gen = torch.Generator().manual_seed(DATA_SEED + SEED_STRIDE * seed)
        self.chain = SkipChain(self.gen)
        self.eval_batch = self._make(self.chain.sample(EVAL_SEQUENCES, self.gen))

    def _make(self, seq: torch.Tensor) -> Batch:
        targets = torch.cat([seq[:, 1:], torch.full_like(seq[:, :1], -100)], dim=1)
        return Batch({"input_ids": seq, "attention_mask": torch.ones_like(seq)}, targets)

    def train_batch(self) -> Batch:
        return self._make(self.chain.sample(BATCH, self.gen))

    def eval_batches(self) -> list[Batch]:
        return [self.eval_batch]

    @property
    def classes(self) -> int:
        return corpus.VOCAB_SIZE


class ImageTask:
    """Smooth random images, labelled by a fixed random conv teacher; batches drawn from a fixed set."""

    def __init__(self, seed: int = 0) -> None:
        self.gen = torch.Generator().manual_seed(DATA_SEED + SEED_STRIDE * seed)
        low = torch.randn(IMAGES, corpus.CHANNELS, LOW_RES, LOW_RES, generator=self.gen)
        images = F.interpolate(low, size=corpus.IMAGE_SIZE, mode="bilinear", align_corners=False)
        self.images = images / images.std()
        conv = torch.randn(TEACHER_CHANNELS, corpus.CHANNELS, 5, 5, generator=self.gen) * math.sqrt(
            2 / (corpus.CHANNELS * 25)
        )
        readout = torch.randn(CLASSES, TEACHER_CHANNELS, generator=self.gen)
        features = F.relu(F.conv2d(self.images, conv, padding=2)).mean(dim=(2, 3))
        features = (features - features.mean(0)) / features.std(0)
        logits = features @ readout.T
        self.labels = (logits - logits.mean(0)).argmax(1)

    def train_batch(self) -> Batch:
        idx = torch.randint(0, IMAGES, (BATCH,), generator=self.gen)
        return Batch({"pixel_values": self.images[idx]}, self.labels[idx])

    def eval_batches(self) -> list[Batch]:
        return [
            Batch({"pixel_values": self.images[i : i + 256]}, self.labels[i : i + 256])
            for i in range(0, EVAL_IMAGES, 256)
        ]

    @property
    def classes(self) -> int:
        return CLASSES


def make_task(case: corpus.Case, seed: int = 0) -> TokenTask | ImageTask:
    return TokenTask(seed) if case.kind == "tokens" else ImageTask(seed)


def build_body(case: corpus.Case, init: str) -> nn.Module:
    """The corpus model at ``init``; BERT with its attention masked to the past (see the docstring)."""
    if case.name == "bert":
        return corpus.bert(init=init, causal=True)
    return case.factory(init=init)


def baseline_loss(task: TokenTask | ImageTask) -> float:
    """Cross-entropy of the best constant prediction: the entropy of the evaluation targets' frequencies."""
    targets = torch.cat([b.targets.flatten() for b in task.eval_batches()])
    targets = targets[targets >= 0]
    freq = torch.bincount(targets, minlength=task.classes).double() / targets.numel()
    freq = freq[freq > 0]
    return float(-(freq * freq.log()).sum())


# ---- training ----------------------------------------------------------------------------------


class Classifier(nn.Module):
    def __init__(self, body: nn.Module, features: int, classes: int, seed: int = 0) -> None:
        super().__init__()
        self.body = body
        with torch.random.fork_rng():
            torch.manual_seed(HEAD_SEED + SEED_STRIDE * seed)
            self.head = nn.Linear(features, classes)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.body(**inputs))


def loss_of(model: nn.Module, batch: Batch) -> torch.Tensor:
    logits = model(batch.inputs)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.targets.reshape(-1), ignore_index=-100)


@torch.no_grad()
def eval_loss(model: nn.Module, task: TokenTask | ImageTask) -> float:
    total, count = 0.0, 0
    for batch in task.eval_batches():
        n = int((batch.targets >= 0).sum())
        total += float(loss_of(model, batch)) * n
        count += n
    return total / count


@dataclass
class Run:
    model: str
    init: str
    kind: str
    task: str
    baseline: float
    initial_loss: float
    final_loss: float
    curve: list[tuple[int, float]] = field(default_factory=list)
    elapsed_s: float = 0.0  # wall clock, training and evaluation
    cpu_s: float = 0.0  # this process's CPU time: steadier than the wall clock on a shared machine
    gain: float = float("nan")
    default_gain: float = float("nan")
    gain_fraction: float = float("nan")
    trains: bool | None = None
    note: str = ""
    # median over the body's weight tensors (2-D or more) of ||W_end - W_start|| / ||W_start||: how
    # far training moved them (a network can reach its gain through its norms' scales and the head
    # with weights that barely turned)
    moved: float = float("nan")


def train_case(case: corpus.Case, init: str, steps: int, seed: int = 0) -> Run:
    """Build ``case`` at ``init``, train it ``steps`` AdamW steps, and return its losses."""
    task = make_task(case, seed)
    torch.manual_seed(MODEL_SEED + SEED_STRIDE * seed)
    body = build_body(case, init)
    with torch.no_grad():
        features = body(**case.inputs(2)).shape[-1]
    model = Classifier(body, features, task.classes, seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    weights = [p for p in body.parameters() if p.dim() >= 2]
    at_start = [p.detach().clone() for p in weights]
    start, cpu_start = time.perf_counter(), time.process_time()
    initial = eval_loss(model, task)
    curve = [(0, initial)]
    for step in range(1, steps + 1):
        loss = loss_of(model, task.train_batch())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % EVAL_EVERY == 0 or step == steps:
            curve.append((step, eval_loss(model, task)))
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    name = "next-token skip chain" if case.kind == "tokens" else "teacher images"
    run = Run(case.name, init, case.kind, name, baseline_loss(task), initial, curve[-1][1], curve, elapsed, cpu)
    ratios = [
        float((p.detach() - w0).norm() / w0.norm()) for p, w0 in zip(weights, at_start, strict=True) if w0.norm() > 0
    ]
    run.moved = float(torch.tensor(ratios).median()) if ratios else float("nan")
    return run


def judge(runs: list[Run]) -> None:
    """Fill ``gain``, ``gain_fraction`` and ``trains`` for every run against its model's default run."""
    defaults = {r.model: r for r in runs if r.init == "default"}
    for r in runs:
        r.gain = r.baseline - r.final_loss
        ref = defaults.get(r.model)
        if ref is None:
            r.note = "no default run to compare with"
            continue
        r.default_gain = ref.baseline - ref.final_loss
        if not math.isfinite(r.default_gain) or r.default_gain < MIN_DEFAULT_GAIN:
            r.note = "task not learned at the default init"
            continue
        finite = all(math.isfinite(v) for _, v in r.curve)
        r.gain_fraction = r.gain / r.default_gain if finite else float("nan")
        r.trains = finite and r.gain_fraction >= TRAINS_FRACTION
        if not finite:
            r.note = "non-finite loss"


# ---- output ------------------------------------------------------------------------------------


def table(runs: list[Run]) -> str:
    lines = [
        "| model | init | task | baseline | loss at 0 | final loss | gain | of default | trains | weights moved | CPU time |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        verdict = {True: "yes", False: "**no**", None: "-"}[r.trains]
        frac = f"{r.gain_fraction:.2f}" if math.isfinite(r.gain_fraction) else "-"
        gain = f"{r.gain:+.3f}" if math.isfinite(r.gain) else "-"
        lines.append(
            f"| {r.model} | {r.init} | {r.task} | {r.baseline:.3f} | {r.initial_loss:.3g} | {r.final_loss:.3f} "
            f"| {gain} | {frac} | {verdict} | {r.moved:.3g} | {r.cpu_s:.1f} s |"
        )
    return "\n".join(lines)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def to_json(runs: list[Run], steps: dict[str, int], seed: int, total_s: float, total_cpu_s: float) -> dict[str, Any]:
    import transformers

    return {
        "format": FORMAT,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "environment": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "threads": torch.get_num_threads(),
        },
        "settings": {
            "steps": steps,
            "batch": BATCH,
            "optimizer": f"AdamW(lr={LR}, weight_decay={WEIGHT_DECAY})",
            "seeds": {
                k: v + SEED_STRIDE * seed for k, v in (("model", MODEL_SEED), ("head", HEAD_SEED), ("data", DATA_SEED))
            },
            "trains": f"gain >= {TRAINS_FRACTION} * default gain (gain = constant-prediction baseline - final loss)",
            "min_default_gain": MIN_DEFAULT_GAIN,
            "token_task": {
                "chain": "token t+1 drawn given token t-1",
                "states": STATES,
                "successors": SUCCESSORS,
                "seq_len": corpus.SEQ_LEN,
            },
            "image_task": {"classes": CLASSES, "images": IMAGES, "size": corpus.IMAGE_SIZE, "low_res": LOW_RES},
        },
        "total_s": round(total_s, 1),
        "total_cpu_s": round(total_cpu_s, 1),
        "runs": [_finite(asdict(r)) for r in runs],
    }


# ---- the zoo (tests/zoo) -------------------------------------------------------------------------
#
# ``--zoo`` trains a stratified subset of the zoo's architectures (``ZOO_CASES``: defaults, zeros,
# N(0, 1) and tiny weights across the families, and the mechanism cases of issue 18) with the same
# method: AdamW (lr 1e-3, weight decay 0.01), batch 32, fixed seeds, one thread, gain = baseline -
# final loss, "trains" when finite and gain >= 0.5 x the same architecture's default-init gain.
# Fewer steps than the corpus (``ZOO_STEPS``) to keep each case near 10 s of CPU. Tasks by kind:
#
# - token: the skip chain above over the zoo's 64 ids, sequences of ``ZOO_SEQ_LEN``: a model with its
#   own vocabulary head is trained on its logits, others get a linear head on each position. A
#   bidirectional encoder (BERT-like) sees the next token in its input: for it the task is to move
#   that token to the previous position, which still needs the blocks (an all-zero or dead body
#   cannot do it). An encoder-decoder reads the ids in its encoder and the ids shifted right in its
#   decoder, and predicts the token at each position (predicting the next one would make the skip
#   chain a bigram of the decoder's own input: an all-zero BART learned it through its embeddings
#   alone, gain 0.59 of its default's). A model whose own head has 10 classes (a
#   sequence classifier) gets a bag-of-words teacher: label = argmax of the sum of fixed random
#   10-way token scores, centred over the data set.
# - image: the corpus' teacher images (10 classes, 32x32); a model with its own 10-way head is
#   trained on its logits (a zero-init or N(0, 1) classifier is part of what is judged), others get a
#   linear head on their features averaged over positions.
# - vector: 2048 fixed N(0, 1) vectors of 32, labelled by a fixed random tanh teacher (argmax of 10
#   centred logits).
# - audio: 4000-sample waveforms, a sine of one of 10 frequencies (class) at a random phase plus
#   N(0, 0.5) noise; mean of the last hidden state over frames, linear head.

ZOO_JSON_PATH = REPO / "benchmarks" / "zoo_trainability.json"
ZOO_STEPS = {"token": 200, "image": 150, "vector": 200, "audio": 150}
ZOO_SEQ_LEN = 16
VECTOR_SAMPLES = 2048

# id -> inits: the stratified subset (mechanism cases first, then the families)
ZOO_CASES: dict[str, tuple[str, ...]] = {
    "hw/stock_cnn": ("default", "zeros", "normal1", "tiny"),  # M4: collapse at the logits
    "hw/mlp_mixer": ("default", "zeros", "normal1"),  # M2: zero-init classifier
    "hw/resmlp": ("default", "zeros", "normal1"),  # M2, and N(0, 1) ResMLP-like
    "hw/resnet_zero_gamma": ("default", "zeros", "normal1"),  # M1: zero-init last BN gamma
    "hw/nf_resnet": ("default", "zeros", "normal1"),  # M1: NF-ResNet zero gain
    "hw/vit": ("default", "zeros", "normal1", "tiny"),  # M3: class token
    "hw/vit_layerscale": ("default", "zeros"),  # M5: LayerScale 1e-5
    "hw/cait": ("default", "zeros"),  # M5, M6: class attention on (x, x_cls)
    "hw/se_cnn": ("default", "zeros", "normal1"),  # M4: squeeze-excitation
    "hw/convnext": ("default", "zeros", "normal1"),  # N(0, 1) ConvNeXt-like
    "hw/fused_bn_act": ("default", "zeros", "normal1"),  # M7: fused BN+act
    "hw/mlp_relu": ("default", "zeros", "normal1", "tiny"),  # M8: MLP head
    "hw/mlp_sigmoid": ("default", "zeros", "tiny"),  # M4: sigmoid stack
    "hw/char_lstm": ("default", "zeros", "normal1"),
    "torch/encoder_preln": ("default", "zeros"),
    "torch/gru_classifier": ("default", "zeros"),
    "hf/deit": ("default", "zeros", "normal1"),  # M3
    "hf/mobilenet_v2": ("default", "zeros"),  # M3: conv stem
    "hf/bart": ("default", "zeros"),  # collapse on the position table
    "hf/openai-gpt": ("default", "zeros"),  # first-block branch ratio over a N(0, 0.02) embedding
    "hf/glm4": ("default", "tiny"),
    "hf/llama": ("default", "zeros", "normal1", "tiny"),
    "hf/bert": ("default", "zeros"),
    "hf/wav2vec2": ("default", "zeros"),
    "hf/swinv2": ("default", "zeros"),
    "hf/mamba": ("default", "zeros"),
    "hf/regnet": ("default", "zeros"),
    "hf/squeezebert": ("default", "zeros"),
    # more of today's default-init alarms: do they train?
    "hw/highway": ("default", "zeros"),  # M4: sigmoid gate
    "hw/densenet": ("default", "zeros"),  # M4: head on pooled ReLU features
    "hw/stdconv_gn": ("default", "normal1"),  # M7: weight standardization
    "hw/mha_encoder": ("default", "zeros"),  # attention_saturation
    "hf/marian": ("default", "zeros"),  # collapse: sinusoidal positions
    "hf/xlnet": ("default", "zeros"),  # first-block branch ratio
    "hf/mobilenet_v1": ("default", "zeros"),  # M3: conv stem
    "hf/efficientnet": ("default", "zeros"),  # vanishing in the first MBConv
    "hf/focalnet": ("default", "zeros"),  # vanishing in the focal modulation
    "hf/convnext": ("default", "normal1"),  # N(0, 1) ConvNeXt (library)
    "hf/gemma3": ("default", "normal1", "tiny"),  # N(0, 1) and tiny called healthy
    # N(0, 1) variants called healthy, and families not covered above
    "hw/preact_resnet": ("default", "normal1"),
    "hw/efficientnet": ("default", "zeros", "normal1"),
    "hw/mlp_attr_blocks": ("default", "normal1"),
    "hw/seq2seq_gru": ("default", "normal1"),
    "hw/nanogpt": ("default", "zeros", "normal1"),
    "torch/rnn_tanh": ("default", "normal1"),
    "hf/olmo2": ("default", "normal1"),
    "hf/mixtral": ("default", "zeros", "normal1"),
    "hf/gpt2": ("default", "zeros", "normal1"),
    "hf/vit": ("default", "normal1", "tiny"),
    "hf/resnet": ("default", "normal1"),
}


class ZooTokenTask:
    """The skip chain over ``ZOO_SEQ_LEN`` tokens; targets: the next token (or a bag-of-words class)."""

    def __init__(self, entry: Any, seed: int = 0, classes: int | None = None) -> None:
        from tests import zoo

        self.gen = torch.Generator().manual_seed(DATA_SEED + SEED_STRIDE * seed)
        self.chain = SkipChain(self.gen)
        self.entry = entry
        self.n_classes = classes or zoo.hw.VOCAB
        self.bag = torch.randn(zoo.hw.VOCAB, 10, generator=self.gen) if classes == 10 else None
        if self.bag is not None:
            seq = self._sample(4096)
            self.bag_mean = self.bag[seq].sum(1).mean(0)
        self.eval_batch = self._make(self._sample(EVAL_SEQUENCES))

    def _sample(self, n: int) -> torch.Tensor:
        return self.chain.sample(n, self.gen)[:, :ZOO_SEQ_LEN]

    def _make(self, seq: torch.Tensor) -> Batch:
        if self.bag is not None:
            targets = (self.bag[seq].sum(1) - self.bag_mean).argmax(1)
        elif "decoder_input_ids" in self.entry.inputs(1):
            # an encoder-decoder: the decoder reads the ids shifted right, so the target at t is the
            # token at t (that token itself sits in the encoder's input; the decoder's own input at t
            # is token t - 1, which says nothing about token t: the blocks must carry it)
            targets = seq
        else:
            targets = torch.cat([seq[:, 1:], torch.full_like(seq[:, :1], -100)], dim=1)
        return Batch(self.entry_inputs(seq), targets)

    def entry_inputs(self, seq: torch.Tensor) -> dict[str, torch.Tensor]:
        template = self.entry.inputs(seq.shape[0])
        out = {"input_ids": seq}
        if "attention_mask" in template:
            out["attention_mask"] = torch.ones_like(seq)
        if "decoder_input_ids" in template:  # teacher forcing: the decoder reads the ids shifted right
            out["decoder_input_ids"] = F.pad(seq[:, :-1], (1, 0), value=1)
        return out

    def train_batch(self) -> Batch:
        return self._make(self._sample(BATCH))

    def eval_batches(self) -> list[Batch]:
        return [self.eval_batch]

    @property
    def classes(self) -> int:
        return self.n_classes


class VectorTask:
    """2048 fixed N(0, 1) vectors labelled by a fixed random tanh teacher (10 centred classes)."""

    def __init__(self, seed: int = 0) -> None:
        from tests import zoo

        self.gen = torch.Generator().manual_seed(DATA_SEED + SEED_STRIDE * seed)
        d = zoo.hw.VECTOR
        self.x = torch.randn(VECTOR_SAMPLES, d, generator=self.gen)
        w1 = torch.randn(d, 32, generator=self.gen) / math.sqrt(d)
        w2 = torch.randn(32, CLASSES, generator=self.gen)
        logits = torch.tanh(self.x @ w1) @ w2
        self.labels = (logits - logits.mean(0)).argmax(1)

    def train_batch(self) -> Batch:
        idx = torch.randint(0, VECTOR_SAMPLES, (BATCH,), generator=self.gen)
        return Batch({"x": self.x[idx]}, self.labels[idx])

    def eval_batches(self) -> list[Batch]:
        return [Batch({"x": self.x[:512]}, self.labels[:512])]

    @property
    def classes(self) -> int:
        return CLASSES


class AudioTask:
    """Waveforms: a sine of one of 10 frequencies (the class), random phase, N(0, 0.5) noise."""

    SAMPLES = 4000

    def __init__(self, seed: int = 0) -> None:
        self.gen = torch.Generator().manual_seed(DATA_SEED + SEED_STRIDE * seed)
        self.freqs = torch.linspace(0.01, 0.2, CLASSES)  # cycles per sample
        self.eval_batch = self._make(512)

    def _make(self, n: int) -> Batch:
        labels = torch.randint(0, CLASSES, (n,), generator=self.gen)
        phase = torch.rand(n, 1, generator=self.gen) * 2 * math.pi
        t = torch.arange(self.SAMPLES).float()
        wave = torch.sin(2 * math.pi * self.freqs[labels][:, None] * t + phase)
        wave = wave + 0.5 * torch.randn(n, self.SAMPLES, generator=self.gen)
        return Batch({"input_values": wave}, labels)

    def train_batch(self) -> Batch:
        return self._make(BATCH)

    def eval_batches(self) -> list[Batch]:
        return [self.eval_batch]

    @property
    def classes(self) -> int:
        return CLASSES


class ZooClassifier(nn.Module):
    """A zoo model and, unless it has its own head, a linear head on its features.

    Image, audio and vector features are averaged over every dimension after the channels (or the
    tokens) first; token features stay per position.
    """

    def __init__(
        self, body: nn.Module, kind: str, own_head: bool, positional: bool, features: int, classes: int, seed: int
    ) -> None:
        super().__init__()
        self.body = body
        self.kind = kind
        self.positional = positional  # the body takes its inputs positionally (an nn.Sequential)
        self.head: nn.Module | None = None
        if not own_head:
            with torch.random.fork_rng():
                torch.manual_seed(HEAD_SEED + SEED_STRIDE * seed)
                self.head = nn.Linear(features, classes)

    def features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        y = self.body(*inputs.values()) if self.positional else self.body(**inputs)
        if isinstance(y, dict):
            y = next(iter(y.values()))
        return y

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        y = self.features(inputs)
        if self.head is None:
            return y
        return self.head(pool(y, self.kind))


def pool(y: torch.Tensor, kind: str) -> torch.Tensor:
    """Features for a linear head: (B, C, H, W) and (B, T, D) pooled for image/audio/vector, kept per token for tokens."""
    if kind == "token" and y.dim() == 3:
        return y
    if y.dim() == 4:
        return y.mean(dim=(2, 3))
    if y.dim() == 3:
        return y.mean(dim=1)
    return y


def zoo_task(entry: Any, own_head_classes: int | None, seed: int) -> Any:
    if entry.kind == "token":
        return ZooTokenTask(entry, seed, own_head_classes)
    if entry.kind == "image":
        return ImageTask(seed)
    if entry.kind == "vector":
        return VectorTask(seed)
    if entry.kind == "audio":
        return AudioTask(seed)
    raise ValueError(f"no task for kind {entry.kind!r}")


def zoo_classifier(entry_id: str, init: str, seed: int = 0) -> tuple[Any, str, int | None, Any, ZooClassifier]:
    """Zoo entry ``entry_id`` at ``init`` with its task's head, in training mode: (body, kind, the
    body's own class count or None, the task, the classifier)."""
    from tests import zoo

    entry = zoo.ZOO[entry_id]
    torch.manual_seed(MODEL_SEED + SEED_STRIDE * seed)
    body, inputs_fn, kind = entry.build(init)
    positional = not isinstance(inputs_fn(2), dict)
    probe_inputs = entry.inputs(2)
    with torch.no_grad():
        y = body(*probe_inputs.values()) if positional else body(**probe_inputs)
        if isinstance(y, dict):
            y = next(iter(y.values()))
    own_classes = int(y.shape[-1]) if entry.head else None
    task = zoo_task(entry, own_classes, seed)
    features = int(pool(y, kind).shape[-1])
    model = ZooClassifier(body, kind, entry.head, positional, features, task.classes, seed)
    model.train()
    return body, kind, own_classes, task, model


def train_zoo_case(entry_id: str, init: str, steps: int | None = None, seed: int = 0) -> Run:
    """Build zoo entry ``entry_id`` at ``init``, train it, and return its losses (``model`` = the id)."""
    from tests import zoo

    entry = zoo.ZOO[entry_id]
    steps = steps or ZOO_STEPS[entry.kind]
    body, kind, own_classes, task, model = zoo_classifier(entry_id, init, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    weights = [p for p in body.parameters() if p.dim() >= 2]
    at_start = [p.detach().clone() for p in weights]
    start, cpu_start = time.perf_counter(), time.process_time()
    initial = eval_loss(model, task)
    curve = [(0, initial)]
    for step in range(1, steps + 1):
        loss = loss_of(model, task.train_batch())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % EVAL_EVERY == 0 or step == steps:
            curve.append((step, eval_loss(model, task)))
            if not math.isfinite(curve[-1][1]):
                break
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    names = {
        "token": "next-token skip chain",
        "image": "teacher images",
        "vector": "teacher vectors",
        "audio": "sine frequency",
    }
    name = "bag-of-words classes" if own_classes == 10 and kind == "token" else names[kind]
    run = Run(entry_id, init, kind, name, baseline_loss(task), initial, curve[-1][1], curve, elapsed, cpu)
    ratios = [
        float((p.detach() - w0).norm() / w0.norm()) for p, w0 in zip(weights, at_start, strict=True) if w0.norm() > 0
    ]
    run.moved = float(torch.tensor(ratios).median()) if ratios else float("nan")
    return run


def zoo_main(args: argparse.Namespace) -> int:
    """``--zoo``: train the stratified subset (or ``--only`` ids at ``--inits``) and write the zoo ground truth."""
    from tests import zoo

    cases = [(i, inits) for i, inits in ZOO_CASES.items()]
    if args.only:
        wanted = [n for n in args.only.split(",") if n]
        unknown = [n for n in wanted if n not in zoo.ZOO]
        if unknown:
            raise SystemExit(f"--only: unknown zoo ids {', '.join(unknown)}")
        inits = tuple(i for i in args.inits.split(",") if i) if args.inits else zoo.INITS
        cases = [(n, inits) for n in wanted]
    complete = not args.only and args.seed == 0 and args.steps is None
    out = args.json or (ZOO_JSON_PATH if complete else None)
    runs: list[Run] = []
    if args.resume and out is not None and out.exists():  # keep the runs already measured
        fields = {f for f in Run.__dataclass_fields__}
        for r in json.loads(out.read_text())["runs"]:
            kept = {k: (float("nan") if v is None and k != "trains" else v) for k, v in r.items() if k in fields}
            kept["curve"] = [(step, float("nan") if v is None else v) for step, v in kept["curve"]]
            runs.append(Run(**kept))
    done = {(r.model, r.init) for r in runs}
    start, cpu_start = time.perf_counter(), time.process_time()
    for entry_id, inits in cases:
        for init in inits:
            if (entry_id, init) in done:
                continue
            try:
                run = train_zoo_case(entry_id, init, args.steps, args.seed)
            except Exception as e:
                print(f"  {entry_id} {init}: FAILED {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                continue
            print(
                f"  {entry_id:22s} {init:8s} loss {run.initial_loss:9.3g} -> {run.final_loss:.3f}"
                f"  (baseline {run.baseline:.3f}, {run.cpu_s:.1f} s CPU)",
                file=sys.stderr,
                flush=True,
            )
            runs.append(run)
            if out is not None:  # after every run: a long sweep on a shared machine keeps what it measured
                _write_zoo_json(out, runs, args, time.perf_counter() - start, time.process_time() - cpu_start)
    judge(runs)
    total, total_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    print(table(runs))
    print(f"\ntotal {total:.0f} s wall, {total_cpu:.0f} s CPU")
    if out is not None:
        _write_zoo_json(out, runs, args, total, total_cpu)
        print(f"wrote {out}")
    return 0


def _write_zoo_json(out: Path, runs: list[Run], args: argparse.Namespace, total: float, total_cpu: float) -> None:
    judge(runs)
    steps = {k: args.steps or v for k, v in ZOO_STEPS.items()}
    doc = to_json(runs, steps, args.seed, total, total_cpu)
    doc["format"] = "probe.zoo_trainability/1"
    doc["settings"]["zoo"] = {
        "seq_len": ZOO_SEQ_LEN,
        "tasks": "token: skip chain (or bag-of-words classes for a 10-way head); image: teacher images; "
        "vector: tanh teacher; audio: sine frequency",
    }
    out.write_text(json.dumps(doc, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=None, help="steps for every task (default: 300 tokens, 200 images)"
    )
    parser.add_argument("--only", default="", help="comma-separated model names (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="another replicate: shifts every seed (default 0)")
    parser.add_argument("--inits", default=",".join(corpus.INITS), help="comma-separated inits (default: all)")
    parser.add_argument("--json", type=Path, default=None, help=f"where to write the JSON (default {JSON_PATH})")
    parser.add_argument("--resume", action="store_true", help="--zoo: keep the runs already in the JSON")
    parser.add_argument(
        "--zoo", action="store_true", help=f"train zoo cases (tests/zoo) instead; writes {ZOO_JSON_PATH.name}"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the machine is shared; and one thread gives the same numbers everywhere
    if args.zoo:
        if args.inits == ",".join(corpus.INITS):
            args.inits = ""
        return zoo_main(args)
    names = [n for n in args.only.split(",") if n] or list(corpus.CASES)
    inits = [i for i in args.inits.split(",") if i]
    unknown = [n for n in names if n not in corpus.CASES] + [i for i in inits if i not in corpus.INITS]
    if unknown:
        parser.error(
            f"unknown {', '.join(unknown)}; models: {', '.join(corpus.CASES)}; inits: {', '.join(corpus.INITS)}"
        )
    start, cpu_start = time.perf_counter(), time.process_time()
    runs: list[Run] = []
    for name in names:
        for init in inits:
            case = corpus.CASES[name]
            run = train_case(case, init, args.steps or STEPS[case.kind], args.seed)
            print(
                f"  {name:13s} {init:8s} loss {run.initial_loss:9.3g} -> {run.final_loss:.3f}  ({run.cpu_s:.1f} s CPU)",
                file=sys.stderr,
            )
            runs.append(run)
    judge(runs)
    total, total_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    print(table(runs))
    print(f"\ntotal {total:.0f} s wall, {total_cpu:.0f} s CPU")
    complete = not args.only and len(inits) == len(corpus.INITS) and args.seed == 0 and args.steps is None
    out = args.json or (JSON_PATH if complete else None)
    if out is not None:
        out.write_text(
            json.dumps(
                to_json(runs, {k: args.steps or v for k, v in STEPS.items()}, args.seed, total, total_cpu), indent=1
            )
            + "\n"
        )
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
