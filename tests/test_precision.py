"""``run.precision`` / ``--precision``: each row's amax and underflow against a low-precision format,
checked against a real cast of the very tensors the probe measured, and the ``headroom`` rule
(probe/measurement/precision.py, probe/judge/headroom.py, docs/precision.md).

The counts must equal a real cast's exactly (tolerance 0): a float32 value becomes 0 in a round-to-
nearest cast exactly when its magnitude is at or below half the smallest subnormal, and inf exactly
from the overflow point on, and the probe counts with those very comparisons."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from torch import nn

import probe
from probe.judge.headroom import overflow, underflow
from probe.records import Range
from probe.spec.precision import FORMATS, precision_format

WIDTH = 4
INPUT_MAX = 1024.0  # the inputs' largest magnitude (a power of 2: scale / INPUT_MAX * INPUT_MAX is exact)
# fp16 heads' amax: 1, exactly the largest value, two values that round down to it, the overflow
# point (a tie, rounded to even: inf) and above
FP16_AMAX = (1.0, 65504.0, 65510.0, 65519.0, 65520.0, 1e5)


class Heads(nn.Module):
    """Parallel diagonal Linear heads, head ``k`` scaling its input by ``scales[k]``: its output's
    amax is ``scales[k] * max|x|``, exactly."""

    def __init__(self, scales: tuple[float, ...] = FP16_AMAX, divide: float = INPUT_MAX) -> None:
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(WIDTH, WIDTH, bias=False) for _ in scales)
        with torch.no_grad():
            for head, s in zip(self.heads, scales, strict=True):
                head.weight.copy_(torch.eye(WIDTH) * (s / divide))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([h(x) for h in self.heads], dim=1)


def heads() -> nn.Module:
    """``--model tests.test_precision:heads``: on N(0, 1) inputs heads 1 to 5 overflow in fp16."""
    return Heads(divide=1.0)


def _inputs(batch: int = 32) -> torch.Tensor:
    x = (torch.rand(batch, WIDTH, generator=torch.Generator().manual_seed(0)) * 2 - 1) * (INPUT_MAX - 1)
    x[0, 0] = INPUT_MAX
    return x


def _capture(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[Any]]:
    """The last output and output gradient of every module, as the probe's own pass made them."""
    outputs: dict[str, torch.Tensor] = {}
    grads: dict[str, torch.Tensor] = {}

    def hook(name: str) -> Any:
        def record(_m: Any, _i: Any, out: torch.Tensor) -> None:
            outputs[name] = out.detach().clone()
            if out.requires_grad:
                out.register_hook(lambda g: grads.__setitem__(name, g.detach().clone()))

        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in model.named_modules()]
    return outputs, grads, handles


def _probe(model: nn.Module, precision: str, x: torch.Tensor) -> tuple[Any, dict[str, torch.Tensor], dict[str, Any]]:
    outputs, grads, handles = _capture(model)
    try:
        report = probe.measure(model, x, precision=precision, batches=1)
    finally:
        for h in handles:
            h.remove()
    return report, outputs, grads


@pytest.mark.parametrize("name", list(FORMATS))
def test_the_format_bounds_are_where_a_real_cast_changes_a_value(name: str) -> None:
    f = FORMATS[name]
    dtype = getattr(torch, f.dtype)
    info = torch.finfo(dtype)
    assert (f.max, f.normal, f.subnormal) == (info.max, info.smallest_normal, info.smallest_normal * info.eps)

    def cast(v: float) -> float:
        return float(torch.tensor(v, dtype=torch.float32).to(dtype).float())

    def below(v: float) -> float:
        return float(torch.nextafter(torch.tensor(v), torch.tensor(0.0)))

    assert cast(below(f.overflow)) == f.max
    assert cast(f.overflow) == (f.max if f.saturates else float("inf"))
    assert cast(f.flush) == 0.0 and cast(float(torch.nextafter(torch.tensor(f.flush), torch.tensor(1.0)))) > 0
    assert precision_format("fp8") == FORMATS["fp8_e4m3"] and precision_format("none") is None


@pytest.mark.parametrize("name", ["fp16", "fp8_e5m2"])
def test_the_rows_that_overflow_are_the_rows_whose_cast_gives_inf(name: str) -> None:
    f = FORMATS[name]
    dtype = getattr(torch, f.dtype)
    scales = FP16_AMAX if name == "fp16" else (1.0, 57344.0, 60000.0, 61439.0, 61440.0, 1e5)
    report, outputs, _ = _probe(Heads(scales), name, _inputs())
    modules = dict(Heads(scales).named_modules())
    flagged = {x.name for x, v in overflow(report.stats) if v is not None and v > 1.0}
    rows = [x.name for x in report.stats.layers]
    assert set(rows) <= set(outputs) and set(rows) <= set(modules)
    inf = {n for n in rows if torch.isinf(outputs[n].to(dtype).float()).any()}
    assert flagged == inf
    assert {"heads.4", "heads.5"} <= inf and not {"heads.1", "heads.2", "heads.3"} & inf  # (max, overflow) rounds down
    problems = [p for p in report.verdict.problems if p.rule == "headroom"]
    assert problems and problems[0].severity == "error" and not report.verdict.healthy
    # the amax is the measured tensor's, exactly
    by_name = {h.name: h for h in report.stats.headroom.rows}
    for n in rows:
        assert by_name[n].activation.amax == float(outputs[n].abs().max())


def _matches(r: Range | None, t: torch.Tensor, dtype: torch.dtype) -> None:
    assert r is not None
    nonzero = t != 0
    cast = t.to(dtype).float()
    assert r.values == t.numel() and r.nonzero == int(nonzero.sum())
    assert r.flushed == int((nonzero & (cast == 0)).sum())
    assert r.subnormal == int((nonzero & (t.abs() < torch.finfo(dtype).smallest_normal)).sum())
    assert r.amax == float(t.abs().max())


@pytest.mark.parametrize("name", list(FORMATS))
def test_underflow_counts_equal_a_real_casts_zeros(name: str) -> None:
    """Activations, output gradients, weights: the flushed count is the cast's new zeros, exactly."""
    f = FORMATS[name]
    dtype = getattr(torch, f.dtype)
    # N(0, 1) inputs through heads scaled to put the values around the flush point
    scales = (1.0, f.flush * 1e3, f.flush * 3, f.flush, f.flush / 4)
    x = torch.randn(64, WIDTH, generator=torch.Generator().manual_seed(1))
    x[0, 0] = 0.0  # a zero stays a zero: not counted as flushed
    model = Heads(scales, divide=1.0)
    report, outputs, grads = _probe(model, name, x)
    by_name = {h.name: h for h in report.stats.headroom.rows}
    assert report.stats.headroom.format == name
    shares = []
    for n, module in model.named_modules():
        if not n.startswith("heads."):
            continue
        h = by_name[n]
        _matches(h.activation, outputs[n], dtype)
        _matches(h.gradient, grads[n], dtype)
        _matches(h.weight, module.weight.detach(), dtype)
        shares.append(h.activation.underflow)
    assert shares[0] == 0.0 and shares[-1] == 1.0 and 0 < shares[2] < 1  # the counts do vary
    heavy = [p for p in report.verdict.warnings if p.rule == "headroom" and p.gate_key == "max_underflow"]
    assert heavy and all(p.rule != "headroom" for p in report.verdict.problems)  # a warning, not an error
    assert {x.name for x, v in underflow(report.stats) if v is not None and v > 0.5} >= {"heads.4"}


def test_without_precision_nothing_is_counted_and_the_verdict_is_the_same() -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    plain = probe.measure(model, (8,), batch_size=16)
    counted = probe.measure(model, (8,), batch_size=16, precision="bf16")
    assert plain.stats.headroom is None and counted.stats.headroom is not None
    assert plain.stats.layers == counted.stats.layers  # the same statistics, bit for bit
    assert plain.verdict.healthy and counted.verdict.healthy


def test_cli_precision_in_table_json_csv_and_markdown(cli: Any, tmp_path: Any) -> None:
    args = ("run", "--model", "tests.test_precision:heads", "--input-shape", "4", "--precision", "fp16")
    table = cli(*args)
    assert table.exit_code == 0, table.stderr
    assert "layer (fp16)" in table.stdout and "headroom:" in table.stdout  # the table and the verdict
    data = json.loads(cli(*args, "-f", "json").stdout)
    precision = data["precision"]
    assert precision["format"] == "fp16" and precision["max"] == 65504.0
    assert {r["name"] for r in precision["layers"]} >= {"heads.0", "heads.5"}
    assert any(p["rule"] == "headroom" for p in data["verdict"]["problems"])
    csv = cli(*args, "-f", "csv").stdout
    assert "act_amax_ratio" in csv.splitlines()[0] and "w_underflow" in csv.splitlines()[0]
    assert "layer (fp16)" in cli(*args, "-f", "markdown").stdout
    bad = cli(*args[:-1], "fp12")
    assert bad.exit_code == 2 and "fp8_e5m2" in bad.stderr
    layered = cli(*args, "--layer-by-layer")
    assert layered.exit_code == 2 and "precision" in layered.stderr
    check = cli("check", "--precision", "bf16", "configs/lab1_he_relu.yaml", "--set", "model.depth=2")
    assert check.exit_code == 0, check.stderr
    compare = cli("compare", "he:relu", "--precision", "fp8", "--set", "model.depth=2", "-f", "json")
    assert compare.exit_code == 0, compare.stderr
    assert json.loads(compare.stdout)["runs"][0]["precision"]["format"] == "fp8_e4m3"


def test_overflow_after_the_steps_is_an_error_as_at_init() -> None:
    """With ``--steps``, each row's output and weight after the last step are judged too: a row
    healthy at init whose amax the steps push past the overflow point fails."""
    from dataclasses import replace

    from probe.judge.rules import evaluate
    from probe.records import StepRow

    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    report = probe.measure(model, (8,), batch_size=16, precision="fp16", steps=2)
    steps = report.stats.steps
    assert steps is not None and all(r.amax is not None for r in steps.rows)
    assert [r.name for r in steps.rows if r.weight_amax is not None] == ["0", "2"]  # the ReLU has no weight
    assert report.verdict.healthy
    pushed = tuple(replace(r, amax=65520.0) if r.name == "2" else r for r in steps.rows)
    stats = replace(report.stats, steps=replace(steps, rows=pushed))
    verdict = evaluate(stats)
    assert [(p.rule, p.layer, p.severity) for p in verdict.problems] == [("headroom", "2", "error")]
    assert "after the steps" in verdict.problems[0].message
    rounded = tuple(replace(r, amax=65519.0) if r.name == "2" else r for r in steps.rows)  # rounds to 65504
    assert evaluate(replace(report.stats, steps=replace(steps, rows=rounded))).healthy
    assert StepRow("x", None, None).amax is None  # older step rows read as not measured


def test_the_docs_headroom_tables_command_runs_at_small_size(tmp_path: Any) -> None:
    """``scripts/headroom_table.py`` (docs/precision.md's GPT-2 small and ResNet-50 tables) with
    2-layer models: both models, both formats, each tensor kind, written between the markers."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    page = tmp_path / "precision.md"
    page.write_text("before\n<!-- headroom-tables:start -->\nold\n<!-- headroom-tables:end -->\nafter\n")
    env = {"PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    script = str(repo / "scripts" / "headroom_table.py")
    done = subprocess.run(
        [sys.executable, script, "--small", "--write", "--doc", str(page)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    text = page.read_text()
    assert text.startswith("before\n<!-- headroom-tables:start -->\nGenerated by") and text.endswith("after\n")
    assert "old" not in text
    for part in ("### GPT-2 small", "### ResNet-50", "**fp16**", "**fp8_e4m3**", "| weight gradients |"):
        assert part in text
    assert text.count("| activations |") == 4  # 2 models x 2 formats


def test_a_torchrun_run_refuses_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under torchrun the counts are not merged across ranks: refused before anything is built."""
    from types import SimpleNamespace

    from probe.errors import SpecError
    from probe.measurement import distributed
    from probe.measurement.run import run_probe
    from probe.spec import parse

    monkeypatch.setattr(distributed, "share_for", lambda *_: SimpleNamespace(device=torch.device("cpu")))
    with pytest.raises(SpecError, match="torchrun"):
        run_probe(parse({"run": {"precision": "fp16"}}))


def test_html_carries_the_headroom_table(cli: Any) -> None:
    result = cli("run", "configs/lab1_he_relu.yaml", "--set", "model.depth=2", "--precision", "bf16", "-f", "html")
    assert result.exit_code == 0 and "layer (bf16)" in result.stdout
