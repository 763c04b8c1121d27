"""The ``headroom`` rule (``--precision``) on the zoo: which cases a cast to the format overflows or
flushes, at each init.

Each case is built and probed as ``zoo_check.py`` does (``entry.build(init)``, ``probe.measure(model,
inputs, batch_size=16, seed=0)``) with ``precision=FORMAT``; it prints, per case, the headroom
rule's errors and warnings (the row, the value) and the largest activation and weight amax / max,
and at the end how many cases of each init the rule fails or warns on. The zoo's defaults are
networks people train in mixed precision: an overflow error there would be a false alarm.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 /work/main/.venv/bin/python benchmarks/zoo_headroom.py --precision fp16
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import zoo_check  # noqa: E402

SEED, BATCH = 0, 16


def probe_case(zoo: Any, entry_id: str, init: str, precision: str) -> dict[str, Any]:
    import torch

    import probe

    out: dict[str, Any] = {"id": entry_id, "init": init}
    torch.manual_seed(SEED)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, inputs, _ = zoo.ZOO[entry_id].build(init)
            report = probe.measure(model, inputs, batch_size=BATCH, seed=SEED, precision=precision)
    except Exception as e:  # a case that does not build or run is reported, not fatal
        out["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        return out
    found = [p for p in (*report.verdict.problems, *report.verdict.warnings) if p.rule == "headroom"]
    out["headroom"] = [{"severity": p.severity, "key": p.gate_key, "layer": p.layer, "value": p.value} for p in found]
    rows = report.stats.headroom.rows if report.stats.headroom is not None else ()
    from probe.spec.precision import precision_format

    fmt = precision_format(precision)
    assert fmt is not None
    for kind in ("activation", "weight"):
        amax = [getattr(h, kind).amax for h in rows if getattr(h, kind) is not None]
        out[f"{kind}_amax_ratio"] = max(amax) / fmt.max if amax else None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--precision", default="fp16")
    parser.add_argument("--only", default="", help="as zoo_check.py: ids, families, or prefixes ending in '/'")
    parser.add_argument("--inits", default="default", help="comma-separated inits (default: default)")
    parser.add_argument("--json", type=Path, default=None, help="write the per-case results here")
    args = parser.parse_args(argv)
    zoo = zoo_check.quiet_zoo()
    ids = zoo_check.select(zoo, args.only)
    inits = [i for i in args.inits.split(",") if i]
    results = []
    start = time.perf_counter()
    for entry_id in ids:
        for init in inits:
            r = probe_case(zoo, entry_id, init, args.precision)
            results.append(r)
            what = r.get("error") or "; ".join(
                f"{h['severity']} {h['key']}={h['value']:.3g}@{h['layer']}" for h in r["headroom"]
            )
            print(f"{entry_id} {init}: {what or 'ok'}", file=sys.stderr, flush=True)
    for init in inits:
        mine = [r for r in results if r["init"] == init and "error" not in r]
        errors = [r["id"] for r in mine if any(h["severity"] == "error" for h in r["headroom"])]
        warned = [r["id"] for r in mine if r["headroom"] and r["id"] not in errors]
        print(
            f"{init} ({args.precision}): {len(mine)} probed, {len(errors)} headroom errors {errors}, "
            f"{len(warned)} warnings only {warned}"
        )
    print(f"total {time.perf_counter() - start:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps({"precision": args.precision, "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
