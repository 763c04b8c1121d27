"""The low-precision headroom tables of docs/precision.md: GPT-2 small and a ResNet-50 at their
default (transformers) init, each probed in fp16 and fp8 (E4M3) with ``probe.measure(...,
precision=...)``.

Both are built offline from a default config (``GPT2Config()``: 12 layers, width 768, 50257 tokens,
124M parameters; ``ResNetConfig()``: ResNet-50, 25.6M parameters), seeded, and probed on random
inputs (token ids; N(0, 1) images). For each model and format: the headroom rule's verdict, each
tensor kind's largest amax / max and share of nonzero values flushed to 0, and the rows nearest
overflow and with the most underflow. ``--small`` builds 2-layer versions (what the test runs);
``--write`` replaces the part of docs/precision.md between its ``headroom-tables`` markers.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 /work/main/.venv/bin/python scripts/headroom_table.py --write
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "precision.md"
START, END = "<!-- headroom-tables:start -->", "<!-- headroom-tables:end -->"
FORMATS = ("fp16", "fp8")
TOP = 5  # rows shown per ranking


def gpt2(small: bool) -> tuple[Any, Any, dict[str, Any], str]:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(use_cache=False)
    if small:
        config = GPT2Config(use_cache=False, n_layer=2, n_embd=64, n_head=2, vocab_size=256, n_positions=64)
    model = GPT2LMHeadModel(config)
    seq = 16 if small else 128
    what = f"GPT2Config() defaults{' (small: 2 layers, width 64)' if small else ''}; {{batch}} x {seq} random tokens"
    return model, (seq,), {"vocab_size": config.vocab_size}, what


def resnet(small: bool) -> tuple[Any, Any, dict[str, Any], str]:
    from transformers import ResNetConfig, ResNetForImageClassification

    config = ResNetConfig()
    if small:
        config = ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic")
    model = ResNetForImageClassification(config)
    size = 32 if small else 224
    what = (
        f"ResNetConfig() defaults (ResNet-50){' (small: 2 stages)' if small else ''}; {{batch}} x 3 x {size}^2 N(0, 1)"
    )
    return model, (3, size, size), {}, what


MODELS = {"GPT-2 small": gpt2, "ResNet-50": resnet}


def probe_model(name: str, small: bool, batch: int) -> dict[str, Any]:
    import torch

    import probe

    torch.manual_seed(0)
    model, inputs, options, what = MODELS[name](small)
    runs = {}
    for fmt in FORMATS:
        started = time.perf_counter()
        report = probe.measure(model, inputs, batch_size=batch, precision=fmt, seed=0, **options)
        runs[fmt] = (report, time.perf_counter() - started)
    return {"name": name, "what": what.format(batch=batch), "runs": runs}


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def _worst(rows: list[tuple[str, Any]], kind: str, key: str) -> tuple[float | None, str]:
    values = [(getattr(getattr(h, kind), key), n) for n, h in rows if getattr(h, kind) is not None]
    values = [(v, n) for v, n in values if v is not None]
    return max(values) if values else (None, "-")


def model_section(result: dict[str, Any]) -> list[str]:
    from probe.spec.precision import precision_format

    lines = [f"### {result['name']}", "", result["what"] + ".", ""]
    for fmt_name, (report, seconds) in result["runs"].items():
        stats = report.stats
        fmt = precision_format(fmt_name)
        assert fmt is not None and stats.headroom is not None
        rows = [(h.name, h) for h in stats.headroom.rows]
        found = [p for p in (*report.verdict.problems, *report.verdict.warnings) if p.rule == "headroom"]
        verdict = "; ".join(f"{p.severity}: {p.message}" for p in found) or "nothing flagged"
        lines += [f"**{fmt.name}** (largest {fmt.max:g}, flushes at or below {fmt.flush:.3g}): {verdict}.", ""]
        lines += ["| tensors | largest amax / max | at | most flushed | at |", "|---|---|---|---|---|"]
        for kind in ("activation", "gradient", "weight_gradient", "weight"):
            amax, at = _worst(rows, kind, "amax")
            share, where = max(
                ((getattr(h, kind).underflow, n) for n, h in rows if getattr(h, kind) is not None),
                key=lambda item: -1.0 if item[0] is None else item[0],
                default=(None, "-"),
            )
            ratio = None if amax is None else amax / fmt.max
            where = where if share else "-"  # nothing flushed anywhere: no row to name
            lines.append(f"| {kind.replace('_', ' ')}s | {_fmt(ratio)} | `{at}` | {_fmt(share)} | `{where}` |")
        lines += ["", f"({len(rows)} rows; probed in {seconds:.1f} s wall time)", ""]
    return lines


def rows_table(result: dict[str, Any]) -> list[str]:
    """The rows nearest overflow and with the most flushed activations, in each format."""
    lines = [
        f"Rows of {result['name']} nearest overflow (activation amax / max) and with the most flushed "
        "activations, per format:",
        "",
        "| format | row | act amax/max | act flushed | act subnormal | W amax/max | W flushed |",
        "|---|---|---|---|---|---|---|",
    ]
    for fmt_name, (report, _) in result["runs"].items():
        from probe.spec.precision import precision_format

        fmt = precision_format(fmt_name)
        assert fmt is not None and report.stats.headroom is not None
        rows = [h for h in report.stats.headroom.rows if h.activation is not None]
        near = sorted(rows, key=lambda h: -h.activation.amax)[:TOP]
        low = sorted(rows, key=lambda h: -(h.activation.underflow or 0.0))[:TOP]
        for h in dict.fromkeys([*near, *low]):
            a, w = h.activation, h.weight
            lines.append(
                f"| {fmt.name} | `{h.name}` | {_fmt(a.amax / fmt.max)} | {_fmt(a.underflow)} | "
                f"{_fmt(a.subnormal_share)} | {_fmt(None if w is None else w.amax / fmt.max)} | "
                f"{_fmt(None if w is None else w.underflow)} |"
            )
    return [*lines, ""]


def markdown(results: list[dict[str, Any]], command: str) -> str:
    lines = [f"Generated by `{command}`.", ""]
    for result in results:
        lines += model_section(result) + rows_table(result)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="2-layer models (seconds; what the test runs)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 8 (4 with --small)")
    parser.add_argument("--write", action="store_true", help="replace the tables in docs/precision.md")
    parser.add_argument("--doc", type=Path, default=DOC, help="the page --write edits (default docs/precision.md)")
    args = parser.parse_args(argv)
    batch = args.batch_size or (4 if args.small else 8)
    warnings.filterwarnings("ignore")
    results = [probe_model(name, args.small, batch) for name in MODELS]
    command = "python scripts/headroom_table.py" + (" --small" if args.small else "") + " --write"
    text = markdown(results, command)
    if args.write:
        doc = args.doc.read_text()
        head, rest = doc.split(START, 1)
        _, tail = rest.split(END, 1)
        args.doc.write_text(f"{head}{START}\n{text}{END}{tail}")
        print(f"wrote {args.doc}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
