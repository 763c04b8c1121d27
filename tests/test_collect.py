"""The collector's statistics against a direct (slow, plain torch) computation on a small net."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from probe.measurement.collect import Collector
from probe.model.network import Watched
from probe.spec import activations

ACTS = {
    "relu": (nn.ReLU, {}),
    "tanh": (nn.Tanh, {}),
    "sigmoid": (nn.Sigmoid, {}),
    "elu": (nn.ELU, {"alpha": 1.0}),
    "gelu": (nn.GELU, {"approximate": "none"}),
    "softplus": (nn.Softplus, {"beta": 1.0}),
}


def _net(act: str, inplace: bool = False) -> tuple[nn.Sequential, list[Watched]]:
    torch.manual_seed(0)
    cls, params = ACTS[act]
    mods: list[nn.Module] = []
    watched = []
    fan = 6
    for i in range(3):
        lin = nn.Linear(fan, 10)
        nn.init.normal_(lin.weight, std=1.5)  # large enough that tails saturate
        a = cls(inplace=True) if inplace else cls()
        mods += [lin, a]
        sat = activations.saturation(act, params)
        watched.append(Watched(f"layer{i + 1}", i + 1, "hidden", a, lin.weight, 10, -1, sat))
        fan = 10
    return nn.Sequential(*mods), watched


def _reference(model: nn.Sequential, watched: list[Watched], batches: list[torch.Tensor], direction: torch.Tensor):
    """Plain computation: keep every activation and its gradient, then reduce."""
    outs: dict[str, list[torch.Tensor]] = {w.name: [] for w in watched}
    grads: dict[str, list[torch.Tensor]] = {w.name: [] for w in watched}
    wgrads: dict[str, list[torch.Tensor]] = {w.name: [] for w in watched}
    ins: dict[str, list[torch.Tensor]] = {w.name: [] for w in watched}
    for x in batches:
        h = x
        kept = []
        for lin, act in zip(model[0::2], model[1::2], strict=False):
            z = lin(h)
            ins_name = watched[len(kept)].name
            ins[ins_name].append(z.detach().clone())
            h = act(z)
            h.retain_grad()
            kept.append(h)
        model.zero_grad()
        (h * direction).sum().backward()
        for w, t in zip(watched, kept, strict=False):
            outs[w.name].append(t.detach())
            grads[w.name].append(t.grad.detach())
            wgrads[w.name].append(w.weight.grad.detach().clone())
    ref = {}
    for w in watched:
        y = torch.cat(outs[w.name]).double()
        g = torch.cat(grads[w.name]).double()
        z = torch.cat(ins[w.name]).double()
        sat = w.saturation
        if sat is None:
            saturation = None
        else:
            src = z if sat.space == "input" else y
            mask = torch.zeros_like(src, dtype=torch.bool)
            if sat.low is not None:
                mask |= src < sat.low
            if sat.high is not None:
                mask |= src > sat.high
            saturation = mask.double().mean().item()
        ref[w.name] = {
            "mean": y.mean().item(),
            "std": y.std().item(),
            "zero_ratio": (y == 0).double().mean().item(),
            "dead_units": (~(y != 0).any(dim=0)).double().mean().item(),
            "saturation_ratio": saturation,
            "unit_spread": (y.var(dim=1, correction=0).mean() / y.var(correction=0)).sqrt().item(),
            "grad_std": g.std().item(),
            "weight_grad_norm": torch.stack([wg.double().pow(2).sum() for wg in wgrads[w.name]]).mean().sqrt().item(),
        }
    return ref


def _collect(model: nn.Sequential, watched: list[Watched], batches: list[torch.Tensor], direction: torch.Tensor):
    model.zero_grad(set_to_none=True)
    collector = Collector(watched, torch.device("cpu"))
    with collector.hooks():
        for x in batches:
            (model(x) * direction).sum().backward()
            collector.after_backward()
            model.zero_grad(set_to_none=True)
    return {s.name: s for s in collector.finish()}


@pytest.mark.parametrize("act", list(ACTS))
@pytest.mark.parametrize("n_batches", [1, 3])
def test_statistics_match_direct_computation(act: str, n_batches: int) -> None:
    model, watched = _net(act)
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(40, 6, generator=gen) for _ in range(n_batches)]
    direction = torch.randn(40, 10, generator=gen)
    ref = _reference(model, watched, batches, direction)
    got = _collect(model, watched, batches, direction)
    for name, expected in ref.items():
        stats = got[name]
        assert stats.count == 40 * 10 * n_batches
        for key, value in expected.items():
            measured = getattr(stats, key)
            if value is None:
                assert measured is None, (name, key)
            else:
                assert measured == pytest.approx(value, rel=1e-5, abs=1e-7), (name, key)


def test_saturation_is_exactly_the_seed_tanh_rule() -> None:
    sat = activations.saturation("tanh", {})
    assert sat is not None and sat.space == "output"
    assert (sat.low, sat.high) == pytest.approx((-0.98, 0.98))


def test_piecewise_linear_activations_have_no_saturation() -> None:
    for name in ("relu", "leaky_relu", "identity"):
        assert activations.saturation(name, {"negative_slope": 0.01}) is None


def test_inplace_activations_work_and_match_out_of_place() -> None:
    gen = torch.Generator().manual_seed(2)
    batches = [torch.randn(32, 6, generator=gen)]
    direction = torch.randn(32, 10, generator=gen)
    plain = _collect(*_net("relu"), batches, direction)
    inplace = _collect(*_net("relu", inplace=True), batches, direction)
    for name in plain:
        assert inplace[name] == plain[name]


def test_hooks_are_removed_afterwards() -> None:
    _model, watched = _net("tanh")
    collector = Collector(watched, torch.device("cpu"))
    with collector.hooks():
        assert all(len(w.module._forward_hooks) == 1 for w in watched)
    assert all(len(w.module._forward_hooks) == 0 for w in watched)


def test_nonfinite_values_are_counted() -> None:
    lin = nn.Linear(4, 3)
    act = nn.Identity()
    watched = [Watched("layer1", 1, "hidden", act, lin.weight, 3, -1, None)]
    model = nn.Sequential(lin, act)
    x = torch.randn(5, 4)
    x[0, 0] = float("nan")  # poisons every unit of sample 0
    x[1, 1] = float("inf")
    collector = Collector(watched, torch.device("cpu"))
    with collector.hooks(), torch.no_grad():
        model(x)
    (stats,) = collector.finish()
    assert stats.nonfinite == 6
    assert stats.grad_std is None  # no backward pass ran


def test_finite_values_whose_sums_overflow_are_not_counted_nonfinite() -> None:
    """On the CPU a finite sum of squares spares the count (``counts.finite_on_cpu``); values near
    float32's maximum overflow it to inf without being inf themselves: then they are counted, as 0."""
    lin = nn.Linear(4, 3)
    watched = [Watched("layer1", 1, "hidden", lin, lin.weight, 3, -1, None)]
    x = torch.randn(5, 4)
    with torch.no_grad():
        lin.weight.fill_(3e37)  # outputs about 1e38: finite, their squares are not
    collector = Collector(watched, torch.device("cpu"))
    with collector.hooks():
        out = lin(x)
        out.sum().backward()
        collector.after_backward()
    (stats,) = collector.finish()
    assert torch.isfinite(out).all() and stats.nonfinite == 0
    assert stats.grad_nonfinite == 0


def test_nonfinite_values_of_a_tensor_past_float32s_exact_range_are_counted_exactly() -> None:
    """A weight gradient of 2**24 values or more (GPT-2's embedding: 38.6M) is counted in chunks
    whose float32 sums are exact, not by a float64 copy of it: nan, inf and -inf in every
    chunk and in the remainder, at the chunk edges, each counted once."""
    from probe.measurement import counts

    n = counts.LARGE + 12345  # past float32's exact range: whole chunks and a remainder
    g = torch.zeros(n)
    bad = [0, 7, counts.CHUNK - 1, counts.CHUNK, 2 * counts.CHUNK - 1, n - 1]
    g[bad] = torch.tensor([float("nan"), float("inf"), float("-inf"), float("nan"), float("inf"), float("nan")])
    count = counts.nonfinite(g, torch.empty_like(g))
    assert count.dtype == torch.float64 and count.item() == len(bad)
    assert counts.nonfinite(torch.ones(n), torch.empty(n)).item() == 0


def test_dead_units_and_symmetry_of_an_all_zero_layer() -> None:
    lin = nn.Linear(4, 8)
    nn.init.zeros_(lin.weight)
    nn.init.zeros_(lin.bias)
    act = nn.ReLU()
    watched = [Watched("layer1", 1, "hidden", act, lin.weight, 8, -1, None)]
    collector = Collector(watched, torch.device("cpu"))
    with collector.hooks():
        nn.Sequential(lin, act)(torch.randn(16, 4))
    (stats,) = collector.finish()
    assert stats.dead_units == 1.0
    assert stats.zero_ratio == 1.0
    assert stats.unit_spread == 0.0


def test_hooks_never_read_a_value_to_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 2: statistics stay on the device; the host reads them once, in finish()."""
    model, watched = _net("tanh")
    x = torch.randn(16, 6)
    x[0, 0] = float("nan")  # the non-finite path too
    collector = Collector(watched, torch.device("cpu"))

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a hook read a tensor value to the host")

    with collector.hooks(), monkeypatch.context() as m:
        for name in ("item", "tolist", "__float__", "__int__", "__bool__"):
            m.setattr(torch.Tensor, name, forbidden)
        # on the CPU a finite sum spares the nan/inf count (counts.finite_on_cpu reads it: no sync
        # there); here the CPU stands in for an accelerator, where nothing is read
        m.setattr("probe.measurement.counts.finite_on_cpu", lambda total: False)
        out = model(x)
        loss = (out * torch.ones_like(out)).sum()
        loss.backward()
        collector.after_backward()
    stats = collector.finish()
    assert stats[0].nonfinite > 0


@pytest.mark.parametrize("backward", [True, False], ids=["forward+backward", "forward-only"])
def test_hooks_and_merges_never_copy_host_data_to_the_device(monkeypatch: pytest.MonkeyPatch, backward: bool) -> None:
    """Issue 6: on an accelerator, building a tensor from host data (``torch.tensor(list)``) is a
    host-to-device copy that synchronizes. On the meta device (no data at all, so any host read
    raises too) the hooks, the periodic merges and after_backward must run without one."""
    from probe.measurement import merge

    model, watched = _net("tanh")
    meta = torch.device("meta")
    model.to(meta)
    collector = Collector(watched, meta)
    x = torch.randn(16, 6, device=meta)

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("host data copied to the device during the run")

    batches = 3 * merge.PENDING_PER_LAYER  # enough for several merges inside the run
    with collector.hooks(), monkeypatch.context() as m:
        for name in ("tensor", "as_tensor", "from_numpy"):
            m.setattr(torch, name, forbidden)
        for _ in range(batches):
            if backward:
                (model(x) * torch.ones(16, 10, device=meta)).sum().backward()
                collector.after_backward()
                model.zero_grad(set_to_none=True)
            else:
                with torch.no_grad():
                    model(x)
        assert collector.pending._keyed, "no merge ran inside the checked region"


def test_gradient_std_keeps_its_precision_when_the_gradient_has_a_mean() -> None:
    """Gradient records are (sum, sum of squares), centred in float64 at the merge. Float32 sums
    of n values carry a relative error of about sqrt(n) * 6e-8, and a mean k standard deviations
    from 0 multiplies the M2's relative error by 1 + k^2: for k = 3 and n = 400 about 1e-5 on the
    M2, 6e-6 on the std. probe's random-direction gradients have k ~ 0; this checks k = 3."""
    model, watched = _net("tanh")
    gen = torch.Generator().manual_seed(2)
    batches = [torch.randn(40, 6, generator=gen) for _ in range(2)]
    direction = 3.0 + torch.randn(40, 10, generator=gen)
    ref = _reference(model, watched, batches, direction)
    got = _collect(model, watched, batches, direction)
    last = watched[-1].name  # its gradient is the direction itself: mean 3, std 1
    assert got[last].grad_std == pytest.approx(ref[last]["grad_std"], rel=1e-4)
    for name, expected in ref.items():
        assert got[name].grad_std == pytest.approx(expected["grad_std"], rel=1e-4)
        assert got[name].weight_grad_norm == pytest.approx(expected["weight_grad_norm"], rel=1e-5)


@pytest.mark.parametrize(
    ("units", "positions", "how"), [(4, 9, "exact"), (12, 5, "gram"), (96, 80, "sketch"), (4, 9, "first samples")]
)
def test_the_coherent_gradient_scale_sums_the_positions_rank_one_gradients(
    units: int, positions: int, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from probe.measurement import coherence

    gen = torch.Generator().manual_seed(0)
    # (samples, units, positions) laid out as a row's output with its units on dim 1 (an image row)
    x = torch.randn(32, units, positions, 1, generator=gen, dtype=torch.float64)
    g = torch.randn(32, units, positions, 1, generator=gen, dtype=torch.float64)
    per_sample = min(units, positions, coherence.COHERENT_SKETCH) * positions * x.element_size()
    if how == "sketch":  # room for every sample's sketch, not for its exact record
        monkeypatch.setattr(coherence, "COHERENT_BYTES", 32 * per_sample)
    if how == "first samples":  # room for 4 samples' exact record
        monkeypatch.setattr(coherence, "COHERENT_BYTES", 4 * per_sample)
    kept = coherence.kept_for_coherence(x, 1, {})
    assert kept is not None and kept.how == {"first samples": "exact"}.get(how, how)
    got = coherence.coherent_norms(kept, g, 1)
    brute = torch.stack([torch.linalg.matrix_norm(xb[..., 0] @ gb[..., 0].T) for xb, gb in zip(x, g, strict=True)])
    bound = (x.norm(dim=1) * g.norm(dim=1)).flatten(1).sum(1)  # grad_scale's: the triangle inequality
    assert bool((brute <= bound + 1e-9).all())
    if how == "sketch":
        # a Gaussian sketch of k = 64 directions: E ||R M||^2 = ||M||^2, relative std sqrt(2 / k) on
        # each square, the mean over 32 samples within 4 standard errors
        k = coherence.COHERENT_SKETCH
        ratio = float((got**2 / brute**2).mean())
        assert abs(ratio - 1) < 4 * math.sqrt(2 / k) / math.sqrt(32) + 0.05
    else:
        assert torch.allclose(got, brute[: len(got)], rtol=1e-9) and len(got) == (4 if how == "first samples" else 32)
    # one position per sample: nothing is kept, the per-position value is the coherent one
    assert coherence.kept_for_coherence(x[:, :, :1, 0], 1, {}) is None
