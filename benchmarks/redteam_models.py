"""A red-team corpus: 35 models written fresh, the way different users write them, none in tests/zoo.

Written to check that probe's verdict holds on architectures it has never seen (issue 18's hidden
corpus). Each is at its author's default init (PyTorch's unless the code says otherwise); the zoo's
``apply_init`` gives the zeros, normal1 and tiny variants. ``MODELS`` maps an id to ``(kind,
factory, head)`` with the zoo's kinds: image (B, 3, 32, 32) ``pixel_values``, token (B, 16)
``input_ids`` below 64, vector (B, 32) ``x``; ``head``: ends in its own classifier.
``benchmarks/redteam.py`` probes and trains them; ``benchmarks/redteam.md`` has the results.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

VOCAB = 64
CLASSES = 10


# 1 newcomer CNN with BN2d, Dropout, BatchNorm1d head
class NewcomerCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(64)
        self.pool = nn.MaxPool2d(2, 2)
        self.fc1 = nn.Linear(64 * 8 * 8, 128)
        self.bn3 = nn.BatchNorm1d(128)
        self.dropout = nn.Dropout(0.5)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, pixel_values):
        x = self.pool(F.relu(self.bn1(self.conv1(pixel_values))))
        x = self.pool(F.relu(self.bn2(self.conv2(x))))
        x = x.view(x.size(0), -1)
        x = self.dropout(F.relu(self.bn3(self.fc1(x))))
        return self.fc2(x)


# 2 U-Net for segmentation with skip concatenations (output per-pixel logits)
def double_conv(i, o):
    return nn.Sequential(
        nn.Conv2d(i, o, 3, padding=1, bias=False),
        nn.BatchNorm2d(o),
        nn.ReLU(inplace=True),
        nn.Conv2d(o, o, 3, padding=1, bias=False),
        nn.BatchNorm2d(o),
        nn.ReLU(inplace=True),
    )


class UNetSeg(nn.Module):
    def __init__(self, n_classes=4):
        super().__init__()
        self.inc = double_conv(3, 16)
        self.down1 = nn.Sequential(nn.MaxPool2d(2), double_conv(16, 32))
        self.down2 = nn.Sequential(nn.MaxPool2d(2), double_conv(32, 64))
        self.up1 = nn.ConvTranspose2d(64, 32, 2, stride=2)
        self.conv_up1 = double_conv(64, 32)
        self.up2 = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.conv_up2 = double_conv(32, 16)
        self.outc = nn.Conv2d(16, n_classes, 1)

    def forward(self, pixel_values):
        x1 = self.inc(pixel_values)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x = self.conv_up1(torch.cat([x2, self.up1(x3)], dim=1))
        x = self.conv_up2(torch.cat([x1, self.up2(x)], dim=1))
        return self.outc(x)


# 3 VAE on vectors returning a dict
class VAE(nn.Module):
    def __init__(self, d=32, h=64, z=8):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU())
        self.mu = nn.Linear(h, z)
        self.logvar = nn.Linear(h, z)
        self.dec = nn.Sequential(nn.Linear(z, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, d))

    def forward(self, x):
        h = self.enc(x)
        mu, logvar = self.mu(h), self.logvar(h)
        std = torch.exp(0.5 * logvar)
        z = mu + std * torch.randn_like(std)
        return {"recon": self.dec(z), "mu": mu, "logvar": logvar}


# 4 upsample+conv generator with InstanceNorm, LeakyReLU, Tanh
class UpsampleGenerator(nn.Module):
    def __init__(self, z=32):
        super().__init__()
        self.fc = nn.Linear(z, 128 * 4 * 4)
        blocks = []
        ch = 128
        for out in (64, 32, 16):
            blocks += [
                nn.Upsample(scale_factor=2),
                nn.Conv2d(ch, out, 3, padding=1),
                nn.InstanceNorm2d(out, affine=True),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            ch = out
        self.body = nn.Sequential(*blocks)
        self.out = nn.Conv2d(16, 3, 3, padding=1)

    def forward(self, x):
        h = self.fc(x).view(-1, 128, 4, 4)
        return torch.tanh(self.out(self.body(h)))


# 5 GNN-style message passing on a dense adjacency: 8 nodes x 4 features from the vector
class DenseGNN(nn.Module):
    def __init__(self, nodes=8, feat=4, hidden=32, layers=3):
        super().__init__()
        g = torch.Generator().manual_seed(123)
        a = (torch.rand(nodes, nodes, generator=g) < 0.4).float()
        a = ((a + a.t()) > 0).float() + torch.eye(nodes)
        deg = a.sum(1)
        self.register_buffer("adj", a / torch.sqrt(deg[:, None] * deg[None, :]))
        self.nodes, self.feat = nodes, feat
        self.inp = nn.Linear(feat, hidden)
        self.msg = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.upd = nn.ModuleList(
            nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden)) for _ in range(layers)
        )
        self.head = nn.Linear(hidden, CLASSES)

    def forward(self, x):
        h = F.relu(self.inp(x.view(-1, self.nodes, self.feat)))
        for m, u in zip(self.msg, self.upd, strict=False):
            agg = torch.einsum("ij,bjd->bid", self.adj, m(h))
            h = h + u(torch.cat([h, agg], dim=-1))
        return self.head(h.mean(1))


# 6 TCN with dilated causal convs and weight_norm
class TemporalBlock(nn.Module):
    def __init__(self, i, o, dilation, k=3):
        super().__init__()
        wn = nn.utils.parametrizations.weight_norm
        self.pad = (k - 1) * dilation
        self.conv1 = wn(nn.Conv1d(i, o, k, dilation=dilation))
        self.conv2 = wn(nn.Conv1d(o, o, k, dilation=dilation))
        self.drop = nn.Dropout(0.1)
        self.down = nn.Conv1d(i, o, 1) if i != o else None
        for c in (self.conv1, self.conv2):
            c.weight.data.normal_(0, 0.01)  # the reference code's init

    def forward(self, x):
        y = self.drop(F.relu(self.conv1(F.pad(x, (self.pad, 0)))))
        y = self.drop(F.relu(self.conv2(F.pad(y, (self.pad, 0)))))
        res = x if self.down is None else self.down(x)
        return F.relu(y + res)


class TCN(nn.Module):
    def __init__(self, emb=32, ch=(48, 48, 48, 48)):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, emb)
        layers = []
        i = emb
        for n, o in enumerate(ch):
            layers.append(TemporalBlock(i, o, 2**n))
            i = o
        self.tcn = nn.Sequential(*layers)
        self.out = nn.Linear(i, VOCAB)

    def forward(self, input_ids):
        x = self.emb(input_ids).transpose(1, 2)
        return self.out(self.tcn(x).transpose(1, 2))


# 7 Transformer from scratch with nn.MultiheadAttention, pre-norm, causal
class PreNormBlock(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x, mask):
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.ff(self.ln2(x))


class ScratchGPT(nn.Module):
    def __init__(self, d=64, heads=4, layers=3, ctx=64):
        super().__init__()
        self.tok = nn.Embedding(VOCAB, d)
        self.pos = nn.Parameter(torch.zeros(1, ctx, d))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(PreNormBlock(d, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, VOCAB)

    def forward(self, input_ids):
        t = input_ids.shape[1]
        x = self.tok(input_ids) + self.pos[:, :t]
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool, device=x.device), 1)
        for b in self.blocks:
            x = b(x, mask)
        return self.head(self.ln(x))


# 8 seq2seq GRU with Bahdanau attention (decoder reads its input shifted)
class Seq2SeqAttn(nn.Module):
    def __init__(self, emb=32, hid=48):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, emb)
        self.encoder = nn.GRU(emb, hid, batch_first=True, bidirectional=True)
        self.bridge = nn.Linear(2 * hid, hid)
        self.W_enc = nn.Linear(2 * hid, hid, bias=False)
        self.W_dec = nn.Linear(hid, hid)
        self.v = nn.Linear(hid, 1, bias=False)
        self.dec_cell = nn.GRUCell(emb + 2 * hid, hid)
        self.out = nn.Linear(hid + 2 * hid, VOCAB)

    def forward(self, input_ids):
        src = self.emb(input_ids)
        enc, _ = self.encoder(src)
        h = torch.tanh(self.bridge(enc.mean(1)))
        dec_in = F.pad(input_ids[:, :-1], (1, 0), value=0)
        demb = self.emb(dec_in)
        keys = self.W_enc(enc)
        outs = []
        for t in range(input_ids.shape[1]):
            score = self.v(torch.tanh(keys + self.W_dec(h)[:, None])).squeeze(-1)
            a = torch.softmax(score, dim=1)
            ctx = torch.bmm(a[:, None], enc).squeeze(1)
            h = self.dec_cell(torch.cat([demb[:, t], ctx], -1), h)
            outs.append(self.out(torch.cat([h, ctx], -1)))
        return torch.stack(outs, 1)


# 9 WaveNet-like gated conv stack with residual and skip connections
class WaveNet(nn.Module):
    def __init__(self, res=32, skip=32, layers=6):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, res)
        self.dil = nn.ModuleList()
        self.res = nn.ModuleList()
        self.skip = nn.ModuleList()
        self.dilations = [2 ** (i % 3) for i in range(layers)]
        for _ in range(layers):
            self.dil.append(nn.Conv1d(res, 2 * res, 2))
            self.res.append(nn.Conv1d(res, res, 1))
            self.skip.append(nn.Conv1d(res, skip, 1))
        self.post1 = nn.Conv1d(skip, skip, 1)
        self.post2 = nn.Conv1d(skip, VOCAB, 1)

    def forward(self, input_ids):
        x = self.emb(input_ids).transpose(1, 2)
        skips = 0
        for conv, r, s, d in zip(self.dil, self.res, self.skip, self.dilations, strict=False):
            y = F.conv1d(F.pad(x, (d, 0)), conv.weight, conv.bias, dilation=d)
            a, b = y.chunk(2, dim=1)
            z = torch.tanh(a) * torch.sigmoid(b)
            x = x + r(z)
            skips = skips + s(z)
        out = self.post2(F.relu(self.post1(F.relu(skips))))
        return out.transpose(1, 2)


# 10 Perceiver-style cross-attention from a latent array to image patches
class Perceiver(nn.Module):
    def __init__(self, d=64, latents=16, heads=4, layers=2):
        super().__init__()
        self.patch = nn.Conv2d(3, d, 4, stride=4)
        self.pos = nn.Parameter(torch.randn(1, 64, d) * 0.02)
        self.latents = nn.Parameter(torch.randn(latents, d) * 0.02)
        self.cross_ln_q = nn.LayerNorm(d)
        self.cross_ln_kv = nn.LayerNorm(d)
        self.cross = nn.MultiheadAttention(d, 1, batch_first=True)
        self.cross_ff = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.self_layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d, heads, 2 * d, dropout=0.0, batch_first=True, norm_first=True, activation="gelu"
            )
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, CLASSES)

    def forward(self, pixel_values):
        x = self.patch(pixel_values).flatten(2).transpose(1, 2) + self.pos
        lat = self.latents.expand(x.shape[0], -1, -1)
        kv = self.cross_ln_kv(x)
        lat = lat + self.cross(self.cross_ln_q(lat), kv, kv, need_weights=False)[0]
        lat = lat + self.cross_ff(lat)
        for layer in self.self_layers:
            lat = layer(lat)
        return self.head(self.norm(lat).mean(1))


# 11 MoE layer with a top-2 router
class MoE(nn.Module):
    def __init__(self, d=64, experts=4, k=2):
        super().__init__()
        self.router = nn.Linear(d, experts, bias=False)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(d, 2 * d), nn.SiLU(), nn.Linear(2 * d, d)) for _ in range(experts)
        )
        self.k = k

    def forward(self, x):
        logits = self.router(x)
        w, idx = logits.topk(self.k, dim=-1)
        w = torch.softmax(w, dim=-1)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            sel = idx == e
            gate = (w * sel).sum(-1, keepdim=True)
            rows = sel.any(-1)
            if rows.any():
                out[rows] = out[rows] + gate[rows] * expert(x[rows])
        return out


class MoENet(nn.Module):
    def __init__(self, d=64, layers=2):
        super().__init__()
        self.inp = nn.Linear(32, d)
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(layers))
        self.moes = nn.ModuleList(MoE(d) for _ in range(layers))
        self.head = nn.Linear(d, CLASSES)

    def forward(self, x):
        h = self.inp(x)
        for n, m in zip(self.norms, self.moes, strict=False):
            h = h + m(n(h))
        return self.head(h)


# 12 Capsule-ish net: primary capsules, squash, dynamic routing; returns capsule lengths
def squash(s, dim=-1):
    n2 = (s * s).sum(dim, keepdim=True)
    return n2 / (1 + n2) * s / torch.sqrt(n2 + 1e-8)


class CapsNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 5, stride=2)  # 14x14
        self.primary = nn.Conv2d(64, 8 * 8, 5, stride=2)  # 5x5, 8 capsule types x 8 dims
        self.n_in = 8 * 5 * 5
        self.W = nn.Parameter(0.01 * torch.randn(1, self.n_in, CLASSES, 16, 8))

    def forward(self, pixel_values):
        b = pixel_values.shape[0]
        x = F.relu(self.conv1(pixel_values))
        u = self.primary(x).view(b, 8, 8, 5, 5).permute(0, 1, 3, 4, 2).reshape(b, self.n_in, 8)
        u = squash(u)
        u_hat = (self.W @ u[:, :, None, :, None]).squeeze(-1)  # b, n_in, 10, 16
        logits = torch.zeros(b, self.n_in, CLASSES, device=u.device)
        for it in range(3):
            c = torch.softmax(logits, dim=2)
            v = squash((c[..., None] * u_hat).sum(1))
            if it < 2:
                logits = logits + (u_hat * v[:, None]).sum(-1)
        return v.norm(dim=-1)


# 13 Embedding + LSTM + tied weights
class TiedLSTM(nn.Module):
    def __init__(self, d=64):
        super().__init__()
        self.enc = nn.Embedding(VOCAB, d)
        self.rnn = nn.LSTM(d, d, num_layers=2, batch_first=True, dropout=0.2)
        self.drop = nn.Dropout(0.2)
        self.dec = nn.Linear(d, VOCAB)
        self.dec.weight = self.enc.weight
        initrange = 0.1  # the PyTorch word_language_model example
        self.enc.weight.data.uniform_(-initrange, initrange)
        self.dec.bias.data.zero_()

    def forward(self, input_ids):
        out, _ = self.rnn(self.drop(self.enc(input_ids)))
        return self.dec(self.drop(out))


# 14 1D ResNet for time series (the 32-vector as one channel of 32 steps)
class Res1D(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c1 = nn.Conv1d(c, c, 7, padding=3)
        self.b1 = nn.BatchNorm1d(c)
        self.c2 = nn.Conv1d(c, c, 5, padding=2)
        self.b2 = nn.BatchNorm1d(c)
        self.c3 = nn.Conv1d(c, c, 3, padding=1)
        self.b3 = nn.BatchNorm1d(c)

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        y = F.relu(self.b2(self.c2(y)))
        y = self.b3(self.c3(y))
        return F.relu(x + y)


class ResNet1D(nn.Module):
    def __init__(self, c=32, blocks=3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(1, c, 7, padding=3), nn.BatchNorm1d(c), nn.ReLU())
        self.blocks = nn.Sequential(*[Res1D(c) for _ in range(blocks)])
        self.fc = nn.Linear(c, CLASSES)

    def forward(self, x):
        h = self.blocks(self.stem(x.unsqueeze(1)))
        return self.fc(h.mean(-1))


# 15 Siamese net returning a tuple (two views of the vector)
class Siamese(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 16))

    def forward(self, x):
        return self.encoder(x), self.encoder(x.flip(-1))


# 16 CNN returning a dict, in-place ops everywhere
class DictInplaceCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.b1 = nn.Sequential(
            nn.Conv2d(32, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.BatchNorm2d(32),
        )
        self.b2 = nn.Sequential(
            nn.Conv2d(32, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.BatchNorm2d(32),
        )
        self.head = nn.Linear(32, CLASSES)

    def forward(self, pixel_values):
        x = F.relu_(self.stem(pixel_values))
        for b in (self.b1, self.b2):
            y = b(x)
            y += x
            x = y.relu_()
        feats = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return {"logits": self.head(feats), "features": feats}


# 17 MLP with mixed activations, no norms, PyTorch default init
class ActZoo(nn.Module):
    def __init__(self):
        super().__init__()
        acts = [nn.GELU(), nn.SiLU(), nn.Mish(), nn.Hardswish(), nn.ELU(), nn.Softplus()]
        layers = []
        w = 32
        for a in acts:
            layers += [nn.Linear(w, 96), a]
            w = 96
        self.net = nn.Sequential(*layers, nn.Linear(96, CLASSES))

    def forward(self, x):
        return self.net(x)


# 18 GroupNorm + SiLU residual CNN (diffusion-style ResBlocks, zero-init last conv)
class GNResBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.n1 = nn.GroupNorm(8, c)
        self.c1 = nn.Conv2d(c, c, 3, padding=1)
        self.n2 = nn.GroupNorm(8, c)
        self.c2 = nn.Conv2d(c, c, 3, padding=1)
        nn.init.zeros_(self.c2.weight)
        nn.init.zeros_(self.c2.bias)

    def forward(self, x):
        h = self.c1(F.silu(self.n1(x)))
        h = self.c2(F.silu(self.n2(h)))
        return x + h


class GNResNet(nn.Module):
    def __init__(self, c=32):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.blocks = nn.Sequential(
            GNResBlock(c), nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), GNResBlock(2 * c), GNResBlock(2 * c)
        )
        self.norm = nn.GroupNorm(8, 2 * c)
        self.head = nn.Linear(2 * c, CLASSES)

    def forward(self, pixel_values):
        h = F.silu(self.norm(self.blocks(self.stem(pixel_values))))
        return self.head(h.mean((2, 3)))


# 19 InstanceNorm style-transfer net (image to image)
class StyleNet(nn.Module):
    def __init__(self):
        super().__init__()

        def cin(i, o, k, s):
            return nn.Sequential(
                nn.ReflectionPad2d(k // 2), nn.Conv2d(i, o, k, s), nn.InstanceNorm2d(o, affine=True), nn.ReLU()
            )

        self.down = nn.Sequential(cin(3, 16, 9, 1), cin(16, 32, 3, 2), cin(32, 64, 3, 2))
        self.res = nn.ModuleList(
            nn.Sequential(
                nn.ReflectionPad2d(1),
                nn.Conv2d(64, 64, 3),
                nn.InstanceNorm2d(64, affine=True),
                nn.ReLU(),
                nn.ReflectionPad2d(1),
                nn.Conv2d(64, 64, 3),
                nn.InstanceNorm2d(64, affine=True),
            )
            for _ in range(3)
        )
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2), cin(64, 32, 3, 1), nn.Upsample(scale_factor=2), cin(32, 16, 3, 1)
        )
        self.out = nn.Sequential(nn.ReflectionPad2d(4), nn.Conv2d(16, 3, 9))

    def forward(self, pixel_values):
        x = self.down(pixel_values)
        for r in self.res:
            x = x + r(x)
        return self.out(self.up(x))


# 20 Deep plain ReLU MLP at PyTorch default init (10 hidden layers)
def deep_mlp():
    layers = [nn.Linear(32, 64), nn.ReLU()]
    for _ in range(9):
        layers += [nn.Linear(64, 64), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(64, CLASSES))


# 21 Deep plain CNN, LeakyReLU, Dropout2d, AvgPool, no BN, default init
class PlainDeepCNN(nn.Module):
    def __init__(self):
        super().__init__()
        chans = [3, 16, 16, 32, 32, 64, 64]
        layers = []
        for n, (i, o) in enumerate(itertools.pairwise(chans)):
            layers += [nn.Conv2d(i, o, 3, padding=1), nn.LeakyReLU(0.1)]
            if n % 2 == 1:
                layers += [nn.AvgPool2d(2), nn.Dropout2d(0.1)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(64 * 4 * 4, CLASSES)

    def forward(self, pixel_values):
        return self.classifier(torch.flatten(self.features(pixel_values), 1))


# 22 EmbeddingBag text classifier (fastText-like)
class FastText(nn.Module):
    def __init__(self, d=32):
        super().__init__()
        self.emb = nn.EmbeddingBag(VOCAB, d, mode="mean")
        self.fc = nn.Linear(d, CLASSES)
        self.emb.weight.data.uniform_(-0.5, 0.5)
        self.fc.weight.data.uniform_(-0.5, 0.5)
        self.fc.bias.data.zero_()

    def forward(self, input_ids):
        return self.fc(self.emb(input_ids))


# 23 Llama from scratch: RMSNorm, SwiGLU, RoPE, F.scaled_dot_product_attention
class Rope(nn.Module):
    def __init__(self, hd, ctx=64):
        super().__init__()
        inv = 1.0 / (10000 ** (torch.arange(0, hd, 2).float() / hd))
        t = torch.arange(ctx).float()
        f = torch.outer(t, inv)
        self.register_buffer("cos", f.cos(), persistent=False)
        self.register_buffer("sin", f.sin(), persistent=False)

    def forward(self, x):
        t = x.shape[-2]
        x1, x2 = x[..., ::2], x[..., 1::2]
        c, s = self.cos[:t], self.sin[:t]
        return torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], -1).flatten(-2)


class LlamaBlock(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.h = heads
        self.n1 = nn.RMSNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        self.n2 = nn.RMSNorm(d)
        self.w1 = nn.Linear(d, 3 * d, bias=False)
        self.w3 = nn.Linear(d, 3 * d, bias=False)
        self.w2 = nn.Linear(3 * d, d, bias=False)
        self.rope = Rope(d // heads)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.n1(x)).view(b, t, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)
        q, k = self.rope(q), self.rope(k)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(a.transpose(1, 2).reshape(b, t, d))
        h = self.n2(x)
        return x + self.w2(F.silu(self.w1(h)) * self.w3(h))


class ScratchLlama(nn.Module):
    def __init__(self, d=64, heads=4, layers=3):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, d)
        self.layers = nn.ModuleList(LlamaBlock(d, heads) for _ in range(layers))
        self.norm = nn.RMSNorm(d)
        self.lm_head = nn.Linear(d, VOCAB, bias=False)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, input_ids):
        x = self.emb(input_ids)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.norm(x))


# 24 Squeeze-excite net with Hardsigmoid gates and ELU, no residual; LayerNorm-in-channels (ConvNeXt style)
class LayerNorm2d(nn.LayerNorm):
    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class SEHard(nn.Module):
    def __init__(self, c, r=4):
        super().__init__()
        self.fc1 = nn.Conv2d(c, c // r, 1)
        self.fc2 = nn.Conv2d(c // r, c, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))


class SEHardNet(nn.Module):
    def __init__(self):
        super().__init__()
        layers = []
        ch = 3
        for o in (24, 48, 96):
            layers += [nn.Conv2d(ch, o, 3, stride=2, padding=1), LayerNorm2d(o), nn.ELU(), SEHard(o)]
            ch = o
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(96, CLASSES))

    def forward(self, pixel_values):
        return self.head(self.body(pixel_values))


# 25 Conv-LSTM-ish CRNN (image rows as a sequence) with bidirectional GRU
class CRNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.cnn = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d((2, 1)),
        )
        self.rnn = nn.GRU(64 * 8, 64, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(128, CLASSES)

    def forward(self, pixel_values):
        f = self.cnn(pixel_values)  # b, 64, 8, 16
        b, c, h, w = f.shape
        seq = f.permute(0, 3, 1, 2).reshape(b, w, c * h)
        out, _ = self.rnn(seq)
        return self.fc(out[:, -1])


class SELUNet(nn.Module):  # self-normalizing net, lecun normal, AlphaDropout
    def __init__(self, depth=8, w=64):
        super().__init__()
        layers, d = [], 32
        for _ in range(depth):
            lin = nn.Linear(d, w)
            nn.init.normal_(lin.weight, std=1 / math.sqrt(d))
            nn.init.zeros_(lin.bias)
            layers += [lin, nn.SELU(), nn.AlphaDropout(0.05)]
            d = w
        self.net = nn.Sequential(*layers, nn.Linear(w, CLASSES))

    def forward(self, x):
        return self.net(x)


class UniversalTransformer(nn.Module):  # one block applied 6 times (shared weights)
    def __init__(self, d=64, steps=6):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, d)
        self.pos = nn.Embedding(32, d)
        self.block = nn.TransformerEncoderLayer(d, 4, 128, dropout=0.0, batch_first=True, norm_first=True)
        self.steps = steps
        self.out = nn.Linear(d, VOCAB)

    def forward(self, input_ids):
        t = input_ids.shape[1]
        x = self.emb(input_ids) + self.pos(torch.arange(t, device=input_ids.device))
        mask = nn.Transformer.generate_square_subsequent_mask(t)
        for _ in range(self.steps):
            x = self.block(x, src_mask=mask, is_causal=True)
        return self.out(x)


class ShuffleNetLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 24, 3, 2, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU(inplace=True))
        self.units = nn.ModuleList(self._unit(24) for _ in range(3))
        self.head = nn.Linear(24, CLASSES)

    @staticmethod
    def _unit(c):
        h = c // 2
        return nn.Sequential(
            nn.Conv2d(h, h, 1, bias=False),
            nn.BatchNorm2d(h),
            nn.ReLU(inplace=True),
            nn.Conv2d(h, h, 3, 1, 1, groups=h, bias=False),
            nn.BatchNorm2d(h),
            nn.Conv2d(h, h, 1, bias=False),
            nn.BatchNorm2d(h),
            nn.ReLU(inplace=True),
        )

    def forward(self, pixel_values):
        x = self.stem(pixel_values)
        for u in self.units:
            a, b = x.chunk(2, dim=1)
            x = torch.cat([a, u(b)], 1)
            n, c, hh, ww = x.shape
            x = x.view(n, 2, c // 2, hh, ww).transpose(1, 2).reshape(n, c, hh, ww)
        return self.head(x.mean((2, 3)))


class ESPCN(nn.Module):  # super-resolution with PixelShuffle, image -> image
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 64, 5, padding=2),
            nn.Tanh(),
            nn.Conv2d(64, 32, 3, padding=1),
            nn.Tanh(),
            nn.Conv2d(32, 3 * 4, 3, padding=1),
            nn.PixelShuffle(2),
        )

    def forward(self, pixel_values):
        return self.body(pixel_values)


class Captioner(
    nn.Module
):  # CNN encoder + nn.TransformerDecoder over tokens; takes the image only, decodes a fixed prompt
    def __init__(self, d=64):
        super().__init__()
        self.cnn = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, d, 3, 2, 1), nn.ReLU())
        self.tok = nn.Embedding(VOCAB, d)
        self.pos = nn.Parameter(torch.randn(1, 8, d) * 0.02)
        self.dec = nn.TransformerDecoder(nn.TransformerDecoderLayer(d, 4, 128, dropout=0.0, batch_first=True), 2)
        self.head = nn.Linear(d, CLASSES)

    def forward(self, pixel_values):
        mem = self.cnn(pixel_values).flatten(2).transpose(1, 2)
        q = self.tok(torch.zeros(pixel_values.shape[0], 8, dtype=torch.long)) + self.pos
        return self.head(self.dec(q, mem).mean(1))


class GLUMLP(nn.Module):  # gated MLP, no norms, PReLU/RReLU mix
    def __init__(self):
        super().__init__()
        self.l1 = nn.Linear(32, 128)
        self.l2 = nn.Linear(64, 128)
        self.l3 = nn.Linear(64, 64)
        self.act = nn.PReLU()
        self.head = nn.Linear(64, CLASSES)

    def forward(self, x):
        h = F.glu(self.l1(x))
        h = F.glu(self.l2(h))
        h = self.act(self.l3(h))
        return self.head(h)


class LSTMAutoencoder(nn.Module):  # token seq -> embedding -> LSTM enc -> repeat -> LSTM dec -> vocab
    def __init__(self, d=32, h=48):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, d)
        self.enc = nn.LSTM(d, h, batch_first=True)
        self.dec = nn.LSTM(h, h, batch_first=True)
        self.out = nn.Linear(h, VOCAB)

    def forward(self, input_ids):
        _, (hn, _) = self.enc(self.emb(input_ids))
        z = hn[-1].unsqueeze(1).repeat(1, input_ids.shape[1], 1)
        y, _ = self.dec(z)
        return self.out(y)


class EulerODE(nn.Module):  # neural ODE by fixed Euler steps, one shared vector field
    def __init__(self, d=64, steps=10):
        super().__init__()
        self.inp = nn.Linear(32, d)
        self.f = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, d))
        self.steps = steps
        self.head = nn.Linear(d, CLASSES)

    def forward(self, x):
        h = self.inp(x)
        for _ in range(self.steps):
            h = h + self.f(h) / self.steps
        return self.head(h)


class BilinearNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(16, 32)
        self.b = nn.Linear(16, 32)
        self.bil = nn.Bilinear(32, 32, 64)
        self.head = nn.Linear(64, CLASSES)

    def forward(self, x):
        u, v = x[:, :16], x[:, 16:]
        return self.head(F.relu(self.bil(torch.tanh(self.a(u)), torch.tanh(self.b(v)))))


class ConformerBlockNet(nn.Module):
    def __init__(self, d=64):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, d)
        self.ff1 = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.SiLU(), nn.Linear(4 * d, d))
        self.ln_att = nn.LayerNorm(d)
        self.att = nn.MultiheadAttention(d, 4, batch_first=True)
        self.ln_conv = nn.LayerNorm(d)
        self.pw1 = nn.Conv1d(d, 2 * d, 1)
        self.dw = nn.Conv1d(d, d, 7, padding=3, groups=d)
        self.bn = nn.BatchNorm1d(d)
        self.pw2 = nn.Conv1d(d, d, 1)
        self.ff2 = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.SiLU(), nn.Linear(4 * d, d))
        self.ln = nn.LayerNorm(d)
        self.out = nn.Linear(d, CLASSES)

    def forward(self, input_ids):
        x = self.emb(input_ids)
        x = x + 0.5 * self.ff1(x)
        h = self.ln_att(x)
        x = x + self.att(h, h, h, need_weights=False)[0]
        c = self.ln_conv(x).transpose(1, 2)
        c = self.pw2(F.silu(self.bn(self.dw(F.glu(self.pw1(c), dim=1)))))
        x = x + c.transpose(1, 2)
        x = self.ln(x + 0.5 * self.ff2(x))
        return self.out(x.mean(1))


MODELS = {
    "rt/newcomer_cnn": ("image", NewcomerCNN, True),
    "rt/unet_seg": ("image", UNetSeg, False),
    "rt/vae": ("vector", VAE, False),
    "rt/upsample_gen": ("vector", UpsampleGenerator, False),
    "rt/dense_gnn": ("vector", DenseGNN, True),
    "rt/tcn": ("token", TCN, True),
    "rt/scratch_gpt": ("token", ScratchGPT, True),
    "rt/seq2seq_attn": ("token", Seq2SeqAttn, True),
    "rt/wavenet": ("token", WaveNet, True),
    "rt/perceiver": ("image", Perceiver, True),
    "rt/moe": ("vector", MoENet, True),
    "rt/capsnet": ("image", CapsNet, True),
    "rt/tied_lstm": ("token", TiedLSTM, True),
    "rt/resnet1d": ("vector", ResNet1D, True),
    "rt/siamese": ("vector", Siamese, False),
    "rt/dict_inplace_cnn": ("image", DictInplaceCNN, True),
    "rt/act_zoo": ("vector", ActZoo, True),
    "rt/gn_resnet": ("image", GNResNet, True),
    "rt/style_net": ("image", StyleNet, False),
    "rt/deep_mlp": ("vector", deep_mlp, True),
    "rt/plain_deep_cnn": ("image", PlainDeepCNN, True),
    "rt/fasttext": ("token", FastText, True),
    "rt/scratch_llama": ("token", ScratchLlama, True),
    "rt/se_hard": ("image", SEHardNet, True),
    "rt/crnn": ("image", CRNN, True),
    "rt/selu_net": ("vector", SELUNet, True),
    "rt/universal_transformer": ("token", UniversalTransformer, True),
    "rt/shufflenet": ("image", ShuffleNetLike, True),
    "rt/espcn": ("image", ESPCN, False),
    "rt/captioner": ("image", Captioner, True),
    "rt/glu_mlp": ("vector", GLUMLP, True),
    "rt/lstm_autoencoder": ("token", LSTMAutoencoder, True),
    "rt/euler_ode": ("vector", EulerODE, True),
    "rt/bilinear": ("vector", BilinearNet, True),
    "rt/conformer": ("token", ConformerBlockNet, True),
}
