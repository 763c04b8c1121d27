"""Every zoo architecture (tests/zoo) at its library's default init is healthy; every all-zero variant is not.

The defaults today's rules still call unhealthy though they train are listed in ``KNOWN_FALSE_ALARMS``
with the reason (the first failing rule @ row = value from ``benchmarks/zoo_check.py``), and their test
is an expected failure (``xfail``); the defaults measured not to train (``DEFAULTS_THAT_DO_NOT_TRAIN``)
must be called unhealthy. When a fix makes one healthy, its test fails until it is taken out of
the set, so the set always says what the rules do.
``KNOWN_ZEROS_MISSES`` lists the zeros variants not called unhealthy: none today.
``benchmarks/zoo_trainability.json`` trains 107 of the zoo's cases (default, zeros, N(0, 1), x 1e-3);
``benchmarks/zoo_table.py`` sets probe's verdicts beside them (docs/corpus.md).

Each case probes one small model (16 samples, one batch): the file's 719 cases take 110 s on the
two-core machine (180 s of CPU).
"""

from __future__ import annotations

import warnings

import pytest
import torch

import probe
from tests.zoo import ZOO

# id -> why today's rules call its default init unhealthy (first rule @ row = value, from
# benchmarks/zoo_check.py); 1 of 359, down from 61 plus 5 probe errors before issue 18's rules. Each trains
# (benchmarks/trainability.py --zoo), so the verdict is wrong there.
KNOWN_FALSE_ALARMS: dict[str, str] = {
    "hf/mobilevit": "vanishing in the first block (4.37e-04): HF's BatchNorm gammas N(0, 0.02) on N(0, 0.02) convs put "
    "the BatchNorms' input variance below eps (no renormalizing), a true small signal; it trains (AdamW gain 0.45 in "
    "150 steps, zeros -0.01), not under SGD (-0.02: right for SGD, but `any` is judged by AdamW's runs; docs/corpus.md)",
}

# id -> why a library's own default init does not train (measured): probe must call these unhealthy
DEFAULTS_THAT_DO_NOT_TRAIN: dict[str, str] = {
    "hf/cpmant": "transformers' init_std 1.0 gives N(0, 1) weights (the original CPM-Ant divides by sqrt(fan_in) in "
    "its forward, the port does not); its default did not learn the token task in 200 steps (gain 0.003); "
    "exploding @ encoder.layers.0 = 2.23e+03, every attention module one-hot",
    "hf/efficientnet": "its default did not learn the image task in 150 steps (gain -0.01); HF's N(0, 0.02) "
    "BatchNorm gammas and convs with eps 1e-3: each conv + BatchNorm shrinks the signal to exactly 0 by blocks.4 "
    "(vanishing @ encoder.blocks.0 = 2.93e-06)",
}

# id -> why today's rules call its all-zero variant healthy: none (every zeros variant is unhealthy)
KNOWN_ZEROS_MISSES: dict[str, str] = {}


def verdict(entry_id: str, init: str) -> probe.Report:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, inputs, _ = ZOO[entry_id].build(init)
        return probe.measure(model, inputs, batch_size=16, seed=0)


def _check(entry_id: str, init: str, want_healthy: bool, known: dict[str, str]) -> None:
    try:
        report = verdict(entry_id, init)
    except probe.ProbeError as e:
        if entry_id in known:
            pytest.xfail(f"{known[entry_id]}: {e}")
        raise
    if report.healthy is want_healthy:
        # the known sets say what today's rules do: one that no longer fails is taken out of them
        assert entry_id not in known, f"{entry_id} ({init}) is now as it should be: remove it from the known set"
        return
    if entry_id in known:
        pytest.xfail(known[entry_id])
    lines = "\n".join(report.verdict_lines()) or "(no problem)"
    raise AssertionError(f"{entry_id} at init {init!r}: healthy={report.healthy}\n{lines}")


def test_known_ids_are_in_the_zoo() -> None:
    # the diffusers models join the zoo only where diffusers is installed (the dev extras)
    optional = {i for i in (*KNOWN_FALSE_ALARMS, *KNOWN_ZEROS_MISSES) if i.startswith("diffusers/")}
    assert set(KNOWN_FALSE_ALARMS) - optional <= set(ZOO)
    assert set(DEFAULTS_THAT_DO_NOT_TRAIN) <= set(ZOO) and not set(DEFAULTS_THAT_DO_NOT_TRAIN) & set(KNOWN_FALSE_ALARMS)
    assert set(KNOWN_ZEROS_MISSES) - optional <= set(ZOO)
    assert not optional - set(ZOO) or not any(i.startswith("diffusers/") for i in ZOO)


@pytest.mark.parametrize("entry_id", list(ZOO))
def test_default_init_is_healthy(entry_id: str) -> None:
    # healthy, unless the library's own default was measured not to train: then unhealthy
    _check(entry_id, "default", entry_id not in DEFAULTS_THAT_DO_NOT_TRAIN, KNOWN_FALSE_ALARMS)


@pytest.mark.parametrize("entry_id", list(ZOO))
def test_zeros_are_unhealthy(entry_id: str) -> None:
    _check(entry_id, "zeros", False, KNOWN_ZEROS_MISSES)
