"""probe's verdict on every zoo architecture (``tests/zoo``): which are called healthy, and why not.

Probes each entry with the public API, ``probe.measure(model, inputs_fn, batch_size=16, seed=0)``,
at its default init (``--inits all``: also zeros, normal1, tiny), prints one line per case as it
goes and a table at the end (id, family, healthy, the failing rules with row and value), and
writes ``benchmarks/zoo_verdicts.json``.

The zoo is loaded by its file path, so ``probe`` comes from ``PYTHONPATH``: another branch's rules
judge the same zoo with

    PYTHONPATH=/work/wt/OTHER OMP_NUM_THREADS=1 /work/main/.venv/bin/python /work/wt/zoo/benchmarks/zoo_check.py

``--only ID,ID`` (ids or families, or a prefix ending in ``/``, e.g. ``hw/``), ``--inits``,
``--json PATH`` (the JSON of a partial run goes there only), ``--batch-size``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import sys
import time
import traceback
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
ZOO_DIR = HERE.parent / "tests" / "zoo"
JSON_PATH = HERE / "zoo_verdicts.json"
FORMAT = "probe.zoo_verdicts/1"
BATCH_SIZE = 16
SEED = 0


def quiet_zoo() -> ModuleType:
    """``load_zoo`` for a sweep: one thread (the machine is shared; the numbers do not depend on it)
    and transformers' warnings off."""
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(1)
    hf_logging.set_verbosity_error()
    return load_zoo()


def load_zoo() -> ModuleType:
    """``tests/zoo`` imported from this file's tree by path (as ``zoo``), whatever ``PYTHONPATH`` holds."""
    if "zoo" in sys.modules and getattr(sys.modules["zoo"], "__file__", "") == str(ZOO_DIR / "__init__.py"):
        return sys.modules["zoo"]
    spec = importlib.util.spec_from_file_location(
        "zoo", ZOO_DIR / "__init__.py", submodule_search_locations=[str(ZOO_DIR)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["zoo"] = module
    spec.loader.exec_module(module)
    return module


def select(zoo: ModuleType, only: str) -> list[str]:
    """The ids ``--only`` names: ids, families, or prefixes ending in ``/``; all when empty."""
    if not only:
        return list(zoo.ZOO)
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    ids = [
        i
        for i, e in zoo.ZOO.items()
        if any(i == w or e.family == w or (w.endswith("/") and i.startswith(w)) for w in wanted)
    ]
    unknown = [w for w in wanted if not any(i == w or zoo.ZOO[i].family == w or i.startswith(w) for i in zoo.ZOO)]
    if unknown:
        raise SystemExit(f"--only: unknown {', '.join(unknown)}")
    return ids


def problem_dict(p: Any) -> dict[str, Any]:
    return {"rule": p.rule, "layer": p.layer, "value": p.value, "threshold": p.threshold, "severity": p.severity}


def check_one(zoo: ModuleType, entry_id: str, init: str, batch_size: int = BATCH_SIZE) -> dict[str, Any]:
    """Build one zoo case and probe it; the verdict as a plain dict (``error`` set when the probe raised)."""
    import torch

    import probe

    entry = zoo.ZOO[entry_id]
    torch.manual_seed(SEED)
    start = time.perf_counter()
    out: dict[str, Any] = {"id": entry_id, "init": init, "family": entry.family, "source": entry.source}
    out["kind"], out["head"], out["split"] = entry.kind, entry.head, zoo.split(entry.family)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, inputs, _ = entry.build(init)
            report = probe.measure(model, inputs, batch_size=batch_size, seed=SEED, name=entry_id)
        verdict = report.verdict
        out["healthy"] = bool(verdict.healthy)
        out["problems"] = [problem_dict(p) for p in verdict.problems]
        out["warnings"] = [problem_dict(p) for p in verdict.warnings]
        out["rows"] = len(report.layers)
    except Exception as e:
        out["healthy"] = None
        out["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        out["traceback"] = traceback.format_exc(limit=-3)
    out["seconds"] = round(time.perf_counter() - start, 3)
    return out


def fmt_problems(problems: list[dict[str, Any]], limit: int = 3) -> str:
    parts = [f"{p['rule']}@{p['layer']}={p['value']:.3g}" for p in problems[:limit]]
    if len(problems) > limit:
        parts.append(f"+{len(problems) - limit}")
    return "; ".join(parts)


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| id | init | family | healthy | failing rules (rule@row=value) |", "|---|---|---|---|---|"]
    for r in results:
        healthy = {True: "yes", False: "**no**", None: "error"}[r["healthy"]]
        detail = r.get("error") or fmt_problems(r.get("problems", []), limit=4)
        lines.append(f"| {r['id']} | {r['init']} | {r['family']} | {healthy} | {detail} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated ids, families, or prefixes ending in '/'")
    parser.add_argument("--inits", default="default", help="comma-separated inits, or 'all' (default: default)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--json", type=Path, default=None, help=f"where to write the JSON (default {JSON_PATH})")
    parser.add_argument("--quiet", action="store_true", help="no table at the end")
    args = parser.parse_args(argv)

    import torch

    import probe

    zoo = quiet_zoo()
    ids = select(zoo, args.only)
    inits = list(zoo.INITS) if args.inits == "all" else [i for i in args.inits.split(",") if i]
    print(f"probe from {Path(probe.__file__).parent}; {len(ids)} architectures x {len(inits)} inits", file=sys.stderr)
    results: list[dict[str, Any]] = []
    start = time.perf_counter()
    n = len(ids) * len(inits)
    for k, (entry_id, init) in enumerate(((i, j) for i in ids for j in inits), 1):
        r = check_one(zoo, entry_id, init, args.batch_size)
        results.append(r)
        status = {True: "healthy", False: "UNHEALTHY", None: "ERROR"}[r["healthy"]]
        detail = r.get("error") or fmt_problems(r.get("problems", []))
        print(f"[{k}/{n}] {entry_id} {init}: {status} {detail} ({r['seconds']:.2f} s)", file=sys.stderr, flush=True)
    total = time.perf_counter() - start
    if not args.quiet:
        print(table(results))
    by_init: dict[str, list[int]] = {}
    for r in results:
        c = by_init.setdefault(r["init"], [0, 0, 0])
        c[{True: 0, False: 1, None: 2}[r["healthy"]]] += 1
    for init, (h, u, e) in by_init.items():
        print(f"{init}: {h} healthy, {u} unhealthy, {e} errors")
    print(f"total {total:.0f} s")
    complete = not args.only and args.batch_size == BATCH_SIZE
    out = args.json or (JSON_PATH if complete else None)
    if out is not None:
        doc = {
            "format": FORMAT,
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "probe": str(Path(probe.__file__).parent),
            "torch": torch.__version__,
            "batch_size": args.batch_size,
            "seed": SEED,
            "inits": inits,
            "total_s": round(total, 1),
            "results": [{k: v for k, v in r.items() if k != "traceback"} for r in results],
        }
        out.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
