"""Structure from what runs (issue 18, mechanisms 6-8): blocks are the module calls whose output is
their input plus something computed from it (``probe.model.trace``), norms are the modules whose
output does not change when their input is scaled (``roles.acts_as_norm``), a weight whose scale
the output cannot see is ``normalized`` (``roles.hides_weight_scale``), and the layers that map
the sample's one vector to the output are the head. One small hand-written model per case; the
roles of named rows are asserted."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import probe
from probe.model import discovery
from probe.model.inputs import InputSpec
from probe.model.network import Watched

torch.set_num_threads(1)

D = 8


def discover(model: nn.Module, inputs: InputSpec) -> dict[str, Watched]:
    torch.manual_seed(0)
    watched, _ = discovery.discover(model, inputs, "normal")
    return {w.name: w for w in watched}


def roles(rows: dict[str, Watched], *names: str) -> list[str]:
    return [rows[n].role for n in names]


# ---- mechanism 6: blocks held as attributes ------------------------------------------------------


class MLPBlock(nn.Module):
    def __init__(self, width: int = D) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, 4 * width)
        self.act = nn.GELU()
        self.down = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(self.act(self.up(self.norm(x))))


class AttributeBlocks(nn.Module):
    """Two blocks held as ``self.block1``, ``self.block2``: no container anywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(4, D)
        self.block1 = MLPBlock()
        self.block2 = MLPBlock()
        self.out = nn.Linear(D, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.block2(self.block1(self.inp(x))))


def test_blocks_held_as_attributes_are_blocks() -> None:
    rows = discover(AttributeBlocks(), InputSpec("shape", (4,)))
    assert roles(rows, "inp", "block1", "block2", "out") == ["stream", "stream", "stream", "head"]
    assert roles(rows, "block1.norm", "block1.up", "block1.act", "block1.down") == [
        "norm",
        "branch",
        "activation",
        "branch",
    ]
    assert rows["block1"].residual and rows["block2"].residual and rows["block1"].stream_input == 0
    # the branch's last layer: its output is what the residual add adds
    assert [n for n, w in rows.items() if w.branch_end] == ["block1.down", "block2.down"]


# ---- mechanism 6: a block on two inputs (class attention) -----------------------------------------


class ClassAttention(nn.Module):
    """CaiT's class-attention block: the class token attends to itself and the patch tokens; the
    stream is ``x_cls``, the input whose shape the output has."""

    def __init__(self) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(D)
        self.q = nn.Linear(D, D)
        self.kv = nn.Linear(D, 2 * D)
        self.proj = nn.Linear(D, D)
        self.norm2 = nn.LayerNorm(D)
        self.mlp = nn.Linear(D, D)

    def forward(self, x: torch.Tensor, x_cls: torch.Tensor) -> torch.Tensor:
        u = self.norm1(torch.cat([x_cls, x], dim=1))
        k, v = self.kv(u).chunk(2, dim=-1)
        attn = (self.q(u[:, :1]) @ k.transpose(1, 2) / math.sqrt(D)).softmax(-1)
        x_cls = x_cls + self.proj(attn @ v)
        return x_cls + self.mlp(self.norm2(x_cls))


class CaiTLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.patches = nn.Linear(6, D)
        self.blocks = nn.ModuleList(MLPBlock() for _ in range(2))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.blocks_token_only = nn.ModuleList(ClassAttention() for _ in range(2))
        self.head = nn.Linear(D, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patches(x)
        for block in self.blocks:
            x = block(x)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        for block in self.blocks_token_only:
            cls = block(x, cls)
        return self.head(cls[:, 0])


def test_a_block_on_two_inputs_continues_the_input_of_its_output_shape() -> None:
    rows = discover(CaiTLike(), InputSpec("shape", (5, 6)))
    assert roles(rows, "patches", "blocks.0", "blocks.1", "blocks_token_only.0", "blocks_token_only.1", "head") == [
        "stream",
        "stream",
        "stream",
        "stream",
        "stream",
        "head",
    ]
    ca = rows["blocks_token_only.1"]
    assert ca.residual and ca.stream_input == 1  # x_cls, the second argument
    assert roles(rows, "blocks_token_only.0.q", "blocks_token_only.0.kv", "blocks_token_only.0.proj") == ["branch"] * 3
    assert rows["blocks_token_only.0.proj"].branch_end and rows["blocks_token_only.0.mlp"].branch_end


# ---- mechanism 6: in-place adds, a dict output, and a Sequential(Linear, BatchNorm) -----------------


class DictBlock(nn.Module):
    """A BatchNorm ResNet block that adds in place and returns a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(D, D, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(D)
        self.conv2 = nn.Conv2d(D, D, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(D)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        out += x
        out = F.relu(out, inplace=True)
        return {"pooled": out.mean(dim=(2, 3)), "out": out}


class DictResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, D, 3, padding=1)
        self.stage = nn.ModuleDict({"a": DictBlock(), "b": DictBlock()})
        self.fc = nn.Linear(D, 5)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(x)
        for block in self.stage.values():
            x = block(x)["out"]
        return {"logits": self.fc(x.mean(dim=(2, 3)))}


def test_in_place_adds_and_dict_outputs() -> None:
    rows = discover(DictResNet(), InputSpec("shape", (3, 8, 8)))
    assert roles(rows, "stem", "stage.a", "stage.b", "fc") == ["stream", "stream", "stream", "head"]
    assert roles(rows, "stage.a.conv1", "stage.a.bn1", "stage.a.conv2", "stage.a.bn2") == [
        "branch",
        "norm",
        "branch",
        "norm",
    ]
    assert rows["stage.a.bn2"].branch_end and not rows["stage.a.bn1"].branch_end
    assert rows["stage.a.conv1"].normalized and rows["stage.a.conv2"].normalized


def test_a_block_with_a_dict_output_is_measured_on_its_stream() -> None:
    # the rows of blocks returning a dict read the dict's stream tensor (not its pooled one, and not
    # nothing): each block's output has a nonzero std and a measured branch
    report = probe.measure(DictResNet(), (3, 8, 8), batch_size=8, device="cpu")
    rows = {x.name: x for x in report.layers}
    for name in ("stage.a", "stage.b"):
        assert rows[name].std is not None and rows[name].std > 0.1, name
        assert rows[name].branch_ratio is not None and rows[name].branch_ratio > 0.1, name
    assert report.healthy, [(p.rule, p.layer, p.value) for p in report.problems]


def test_a_two_input_block_measures_its_branch_against_its_stream_input() -> None:
    report = probe.measure(CaiTLike(), (5, 6), batch_size=8, device="cpu")
    rows = {x.name: x for x in report.layers}
    # branch_ratio = rms(output - x_cls) / rms(x_cls): x_cls is the zero class token at the first
    # block, so only the second class-attention block has a finite ratio
    assert rows["blocks_token_only.1"].branch_ratio is not None
    assert rows["blocks.0"].branch_ratio is not None


class LinearBN(nn.Module):
    """Repeated Sequential(Linear, BatchNorm1d) that keep their input's shape: no residual add."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(D, D), nn.BatchNorm1d(D)) for _ in range(3))
        self.out = nn.Linear(D, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = F.relu(layer(x))
        return self.out(x)


def test_a_sequential_of_linear_and_batchnorm_is_not_a_block() -> None:
    rows = discover(LinearBN(), InputSpec("shape", (D,)))
    assert "layers.0" not in rows and not any(w.residual for w in rows.values())
    assert roles(rows, "layers.0.0", "layers.0.1", "layers.2.0", "out") == ["stream", "norm", "stream", "head"]
    assert rows["layers.0.0"].normalized


# ---- mechanism 7: norms by what they do -------------------------------------------------------------


class BatchNormAct(nn.BatchNorm2d):
    """A fused BatchNorm + activation (the activation a child module, as in image-model libraries)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


class LayerScale(nn.Module):
    def __init__(self, width: int, value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((width,), value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


def fused_net(weight: str = "default", last: str = "layerscale") -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, D, 3, padding=1, bias=False),
        BatchNormAct(D),
        nn.Conv2d(D, D, 3, padding=1, bias=False),
        BatchNormAct(D),
        nn.Conv2d(D, D, 3, padding=1, bias=False),
        # zero at init: a vector parameter that multiplies is not a norm
        LayerScale(D, 0.0) if last == "layerscale" else BatchNormAct(D),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(D, 10),
    )
    if weight == "normal":
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.Conv2d):
                    m.weight.normal_(0.0, 1.0)
    return model


def test_a_fused_batchnorm_activation_is_a_norm_and_a_layerscale_is_not() -> None:
    rows = discover(fused_net(), InputSpec("shape", (3, 8, 8)))
    assert roles(rows, "1", "3") == ["norm", "norm"]
    assert rows["0"].normalized and rows["2"].normalized  # each feeds a fused norm
    assert rows["5"].role != "norm" and not rows["4"].normalized  # the LayerScale, and the conv it scales


def test_n01_weights_before_a_fused_norm_fail_weight_scale() -> None:
    # conv weights N(0, 1) where He's is sqrt(2 / fan_in): a scale sqrt(fan_in / 2), invisible forward
    # (the 3x3 convs of width D hold most of the weights: the median is theirs); at He's scale the
    # same network passes
    report = probe.measure(fused_net("normal", last="norm"), (3, 8, 8), batch_size=8, device="cpu")
    problems = [p for p in report.problems if p.rule == "weight_scale"]
    assert problems, [p.rule for p in report.problems]
    assert problems[0].value == pytest.approx(math.sqrt(D * 9 / 2), rel=0.1)
    assert all(x.normalized for x in report.layers if x.module_type == "Conv2d")
    default = probe.measure(fused_net(last="norm"), (3, 8, 8), batch_size=8, device="cpu")
    assert not [p for p in (*default.verdict.problems, *default.verdict.warnings) if p.rule == "weight_scale"]


class StdConv2d(nn.Conv2d):
    """A weight-standardized convolution: the weight is centered and scaled to unit variance per
    output channel in forward, so its scale is invisible forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w.std(dim=(1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


def test_a_weight_standardized_convolution_is_normalized() -> None:
    model = nn.Sequential(
        StdConv2d(3, D, 3, padding=1),
        nn.ReLU(),
        StdConv2d(D, D, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(D, D, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(D, 10),
    )
    rows = discover(model, InputSpec("shape", (3, 8, 8)))
    assert rows["0"].normalized and rows["2"].normalized
    assert not rows["4"].normalized and not rows["8"].normalized
    assert roles(rows, "0", "2", "4") == ["stream"] * 3  # a convolution, not a norm


# ---- mechanism 8: the head of a network without blocks ----------------------------------------------


def plain_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 32),
        nn.ReLU(),
        nn.Linear(32, 10),
    )


def test_the_classifier_of_a_plain_cnn_is_the_head() -> None:
    rows = discover(plain_cnn(), InputSpec("shape", (3, 16, 16)))
    assert roles(rows, "0", "1", "3", "4", "7", "8", "9") == [
        "stream",
        "activation",
        "stream",
        "activation",
        "head",
        "activation",
        "head",
    ]


def test_a_plain_mlp_has_its_last_layer_as_head() -> None:
    model = nn.Sequential(nn.Linear(4, D), nn.ReLU(), nn.Linear(D, D), nn.ReLU(), nn.Linear(D, 3))
    rows = discover(model, InputSpec("shape", (4,)))
    assert roles(rows, "0", "2", "4") == ["stream", "stream", "head"]


# ---- a stock transformer encoder with a learned position table --------------------------------------

T, VOCAB = 12, 40


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 16)
        self.position = nn.Parameter(torch.randn(1, T, 16) * 0.02)
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, VOCAB)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.encoder(self.embed(ids) + self.position)))


def test_a_torch_transformer_encoder_gets_sensible_roles() -> None:
    torch.manual_seed(0)
    rows = discover(Encoder(), InputSpec("tokens", (T,), vocab_size=VOCAB))
    assert roles(rows, "embed", "encoder.layers.0", "encoder.layers.1", "norm", "head") == [
        "embedding",
        "stream",
        "stream",
        "norm",
        "head",
    ]
    inner = ["self_attn", "linear1", "linear2"]
    assert roles(rows, *(f"encoder.layers.0.{n}" for n in inner)) == ["branch"] * 3
    assert roles(rows, "encoder.layers.0.norm1", "encoder.layers.0.norm2") == ["norm", "norm"]


def test_a_torch_transformer_encoder_at_default_init_is_healthy() -> None:
    torch.manual_seed(0)
    report = probe.measure(Encoder(), (T,), vocab_size=VOCAB, batch_size=8, device="cpu")
    assert report.healthy, [(p.rule, p.layer, p.value) for p in report.problems]


# ---- rows that do not depend on the input, and modules shared across widths --------------------------


class RelativeBias(nn.Module):
    """An MLP on fixed relative coordinates (Swin v2's continuous position bias): its rows are the
    same for every sample by design, so they are tables (role ``embedding``), not signal rows."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("coords", torch.linspace(-1, 1, 5).unsqueeze(1))
        self.bias_mlp = nn.Sequential(nn.Linear(1, D), nn.ReLU(), nn.Linear(D, 1))
        self.proj = nn.Linear(5, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) + self.bias_mlp(self.coords).squeeze(1)


def test_rows_computed_from_no_input_are_tables() -> None:
    rows = discover(RelativeBias(), InputSpec("shape", (5,)))
    assert roles(rows, "bias_mlp.0", "bias_mlp.1", "bias_mlp.2") == ["embedding"] * 3
    assert rows["proj"].role in ("stream", "head")


def test_an_activation_shared_by_layers_of_different_widths_is_not_watched() -> None:
    act = nn.SiLU()
    model = nn.Sequential(nn.Linear(4, 8), act, nn.Linear(8, 16), act, nn.Linear(16, 2))
    watched, notes = discovery.discover(model, InputSpec("shape", (4,)), "normal")
    assert [w.name for w in watched] == ["0", "2", "4"]
    assert any("1 (SiLU) not watched" in n and "8 and 16 units" in n for n in notes), notes
    report = probe.measure(model, (4,), batch_size=8, device="cpu")  # measured without a crash
    assert [x.name for x in report.layers] == ["0", "2", "4"]


# ---- residual adds written inline ---------------------------------------------------------------


class InlineResidualNet(nn.Module):
    """A CNN whose blocks are its branches: ``x = relu(x + block(x))`` in the model's own forward,
    the blocks a ModuleList of Sequential(conv, fused BN + ReLU, conv, BatchNorm)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, D, 3, padding=1, bias=False), BatchNormAct(D))
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(D, D, 3, padding=1, bias=False),
                BatchNormAct(D),
                nn.Conv2d(D, D, 3, padding=1, bias=False),
                nn.BatchNorm2d(D),
            )
            for _ in range(3)
        )
        self.head = nn.Linear(D, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = F.relu(x + block(x))
        return self.head(x.mean(dim=(2, 3)))


def test_inline_residual_adds_make_their_branches_branch_rows() -> None:
    rows = discover(InlineResidualNet(), InputSpec("shape", (3, 8, 8)))
    # what ran between the module reading the stream and the add is the branch; a fused norm is
    # never taken for a block, even where the container rule decides which rows are blocks
    assert roles(rows, "blocks.0.0", "blocks.0.1", "blocks.0.2", "blocks.0.3") == ["branch", "norm", "branch", "norm"]
    assert roles(rows, "stem.0", "stem.1", "head") == ["stream", "norm", "head"]
    assert all(rows[f"blocks.{i}.{j}"].normalized for i in range(3) for j in (0, 2))


def test_n01_weights_in_an_inline_residual_net_with_fused_norms_fail_weight_scale() -> None:
    torch.manual_seed(0)
    model = InlineResidualNet()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.normal_(0.0, 1.0)
    report = probe.measure(model, (3, 8, 8), batch_size=8, device="cpu")
    assert [p.rule for p in report.problems if p.rule == "weight_scale"] == ["weight_scale"]


class TraceShy(nn.Module):
    """A forward that refuses to run under a torch function mode (as some compiled code may)."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MLPBlock() for _ in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch._C._is_torch_function_mode_enabled():
            raise RuntimeError("not under a mode")
        for block in self.blocks:
            x = block(x)
        return x


def test_a_forward_that_fails_under_the_trace_is_discovered_without_it() -> None:
    rows = discover(TraceShy(), InputSpec("shape", (D,)))
    # the container rule decides: the repeated blocks that keep their input's shape
    assert roles(rows, "blocks.0", "blocks.1", "blocks.0.up") == ["stream", "stream", "branch"]


def test_a_batchnorm_on_a_1x1_map_is_a_norm() -> None:
    """A ResNet's last stage sees a 1x1 map: the discovery's 2 samples give BatchNorm 2 values per
    channel, where eps rules a channel whose two are close. The behaviour test draws 16 samples, so
    the conv before it is still `normalized` (weight_scale reads it: HF ResNet's N(0, 1) stage 3)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 256, 1), nn.BatchNorm2d(256), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10))
    report = probe.measure(model, (3, 1, 1), batch_size=32)
    assert report.layer("0").normalized


def test_a_batchnorm_kept_in_eval_mode_is_an_affine_not_a_norm() -> None:
    """Norms are found by what they do in the mode they run. A user's model that keeps its
    BatchNorms in eval mode (``model.eval()`` on them, kept through ``train()``) runs them as an
    affine of their running statistics (fresh ones: the identity), so the stream before them is read
    at its own size and the conv before them is not ``normalized``; a LayerNorm normalizes in either
    mode. Red team 4's 6-conv CNN so built reads std 0.57 -> 0.0047 and trains at 0.34 of the same
    CNN with working BatchNorms."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.LayerNorm(8 * 6 * 6))
    model[1].eval()
    report = probe.measure(model, (3, 8, 8), batch_size=16)
    assert report.layer("1").role != "norm" and not report.layer("0").normalized
    assert report.layer("4").role == "norm"
    model[1].train()
    assert probe.measure(model, (3, 8, 8), batch_size=16).layer("1").role == "norm"
    assert not model.training or model[1].training  # modes as the caller left them


def test_the_norm_test_reads_float32_norms_and_float64_where_they_overflow() -> None:
    """``roles._invariant`` compares the output on 3 z with the output on z in their own precision
    first (a float64 copy of a ResNet's BatchNorm inputs cost twice its two forwards) and in
    float64 where a float32 norm overflows or meets a non-finite value: the same answers."""
    from probe.model.roles import INVARIANT, _invariant

    g = torch.Generator().manual_seed(0)
    one = torch.randn(16, 64, 8, 8, generator=g)
    for rel in (0.5 * INVARIANT, 2 * INVARIANT):  # either side of the line
        noise = torch.randn(one.shape, generator=g)
        three = one + noise * (rel * float((one - one.mean()).norm()) / float(noise.norm()))
        assert _invariant(one, three) == (rel < INVARIANT)
    huge = one * 1e30  # float32 sums of squares overflow; float64 ones do not
    assert _invariant(huge, huge.clone()) and not _invariant(huge, huge * 3)
    assert not _invariant(torch.full((4, 4), float("nan")), torch.zeros(4, 4))
    assert not _invariant(one, torch.full_like(one, float("inf")))
