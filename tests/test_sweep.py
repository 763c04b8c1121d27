"""probe sweep: depth grids (which init fails first) and width grids (muP-style coordinate check)."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from probe import spec as spec_mod
from probe.cli import app
from probe.errors import SpecError
from probe.experiments import sweep as sw
from probe.experiments.coord_check import MAX_CHANGE_SLOPE, coord_checks
from tests.conftest import REPO

BASE = spec_mod.parse({"model": {"width": 64}, "data": {"batch_size": 256}})


@pytest.fixture(scope="module")
def depth_sweep() -> sw.SweepResult:
    return sw.sweep(BASE, ["tiny", "he"], depths=[2, 4, 8, 16])


def test_tiny_fails_before_he(depth_sweep: sw.SweepResult) -> None:
    tiny = depth_sweep.first_failing_depth("tiny")
    he = depth_sweep.first_failing_depth("he")
    assert tiny is not None
    assert he is None or tiny < he
    # N(0, 0.01^2) on 64-wide ReLU layers shrinks the std by 0.01 * sqrt(64 / 2) = 0.057 per layer:
    # below the 0.01 gate by the second layer
    assert tiny == 2


def test_depth_sweep_cells(depth_sweep: sw.SweepResult) -> None:
    assert len(depth_sweep.cells) == 8
    tiny = [c for c in depth_sweep.cells if c.label == "tiny"]
    # the tiny signal falls monotonically with depth, by orders of magnitude
    stds = [c.last_std for c in tiny]
    assert all(b < a for a, b in itertools.pairwise(stds))
    assert "vanishing" in tiny[-1].problems
    he = [c for c in depth_sweep.cells if c.label == "he"]
    # He keeps the ReLU signal O(1) at every depth
    assert all(0.2 < c.last_std < 5.0 for c in he)
    assert all(len(c.layer_stds) == c.depth for c in depth_sweep.cells)


def test_width_sweep_slopes_match_the_scaling_law() -> None:
    result = sw.sweep(BASE, ["tiny", "he"], depths=[3], widths=[32, 64, 128, 256])
    slopes = {s.label: s for s in result.width_slopes()}
    # He: the std does not depend on width
    assert slopes["he"].drifts is False
    assert all(abs(x) < sw.MAX_WIDTH_SLOPE for x in slopes["he"].slopes)
    # fixed std 0.01: layer l's std scales like width^((l - 1) / 2) (layer 1 sees the 32 inputs)
    tiny = slopes["tiny"]
    assert tiny.drifts
    for layer, slope in enumerate(tiny.slopes, start=1):
        assert slope == pytest.approx((layer - 1) / 2, abs=0.15)


def test_slope_of_exact_power_law() -> None:
    xs = [math.log(w) for w in (10, 100, 1000)]
    assert sw.slope(xs, [0.5 * x + 3 for x in xs]) == pytest.approx(0.5)
    assert math.isnan(sw.slope(xs, [1.0, math.nan, 2.0]))


@pytest.mark.parametrize(("text", "expected"), [("4,8,16", (4, 8, 16)), (" 2 , 2,3", (2, 3))])
def test_parse_ints(text: str, expected: tuple[int, ...]) -> None:
    assert sw.parse_ints(text, "--depth") == expected


@pytest.mark.parametrize("text", ["4,x", "0", ","])
def test_parse_ints_rejects(text: str) -> None:
    with pytest.raises(SpecError, match="--depth"):
        sw.parse_ints(text, "--depth")


def test_cli_sweep_depth_table() -> None:
    result = CliRunner().invoke(
        app, ["sweep", "--depth", "2,4", "tiny", "he", "--width", "32", "--set", "data.batch_size=64"]
    )
    assert result.exit_code == 0, result.output
    assert "tiny: first fails at depth 2" in result.stdout
    assert "he: healthy at every depth 2..4" in result.stdout


def test_cli_sweep_json_width() -> None:
    result = CliRunner().invoke(
        app,
        ["sweep", "--width", "16,32,64", "he", "--set", "model.depth=2", "--set", "data.batch_size=64", "-f", "json"],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["format"] == "probe.sweep/1"
    assert len(doc["cells"]) == 3 and len(doc["width_slopes"]) == 1
    assert doc["width_slopes"][0]["drifts"] is False


def test_cli_sweep_needs_a_grid() -> None:
    result = CliRunner().invoke(app, ["sweep", "he"])
    assert result.exit_code == 2
    assert "--depth" in result.output


def _coord_check(config: str, entry: str, parametrization: str, widths: str) -> tuple[int, dict[str, float]]:
    args = ["sweep", entry, "--config", config, "--width", widths, "--steps", "3", "--seed", "0"]
    result = CliRunner().invoke(app, [*args, "--set", f"model.parametrization={parametrization}", "-f", "json"])
    assert result.exit_code in (0, 1), result.output
    (check,) = json.loads(result.stdout)["coord_check"]
    return result.exit_code, {m["name"]: m["slope"] for m in check["modules"]}


@pytest.mark.parametrize(
    ("config", "entry"), [("coord_check_mlp.yaml", "he"), ("coord_check_transformer.yaml", "xavier")]
)
def test_coordinate_check_sp_grows_with_width_mup_stays_flat(config: str, entry: str) -> None:
    """docs/verdicts.md's figure at small size (widths 32-128, 3 steps, seed 0): under Adam, SP's
    hidden and output changes grow like width^1 (each step moves every weight element by ~lr,
    aligned with its input: dW x sums width same-sign terms), muP's stay flat. The verdict's
    tolerance is 1/4 (coord_check.MAX_CHANGE_SLOPE); SP's output slope must exceed muP's by half the
    theoretical gap of 1 (measured: MLP 1.17 against -0.15, transformer 1.47 against 0.07), and muP
    pass where SP fails."""
    path = str(REPO / "configs" / config)
    sp_code, sp = _coord_check(path, entry, "sp", "32,64,128")
    mup_code, mup = _coord_check(path, entry, "mup", "32,64,128")
    assert sp["output"] > mup["output"] + 0.5
    assert sp["output"] > 0.5  # SP grows: near width^1
    assert all(abs(s) <= MAX_CHANGE_SLOPE for s in mup.values()), mup
    first = next(iter(sp))  # the input layer or embedding: its fan-in does not grow, flat in both
    assert abs(sp[first]) <= MAX_CHANGE_SLOPE
    assert (sp_code, mup_code) == (1, 0)


def test_coordinate_check_needs_two_widths() -> None:
    result = CliRunner().invoke(app, ["sweep", "he", "--depth", "2,3", "--steps", "3"])
    assert result.exit_code == 2
    assert "--width" in result.output


def test_coordinate_check_slopes_and_verdict() -> None:
    """CoordCheck reads each module's power law and passes only within the tolerance; a module
    that never moved is left out, one that moved at some widths only is nan and fails."""
    cells = [
        sw.Cell("he", 2, w, 1.0, 1.0, True, (), (1.0,), (1.0,), ("a", "b", "c", "d"), (0.1, 0.1 * w / 8, 0.0, c))
        for w, c in ((8, 0.0), (16, 0.2), (32, 0.3))
    ]
    result = sw.SweepResult(("he",), (2,), (8, 16, 32), tuple(cells))
    (check,) = coord_checks(result)
    slopes = {m.name: m.slope for m in check.modules}
    assert set(slopes) == {"a", "b", "d"}
    assert slopes["a"] == pytest.approx(0.0, abs=1e-12) and slopes["b"] == pytest.approx(1.0)
    assert math.isnan(slopes["d"])
    assert not check.passes and check.worst is not None and check.worst.name == "d"
    flat = sw.SweepResult(
        ("he",), (2,), (8, 16, 32), tuple(replace(c, layer_names=("a",), layer_changes=(0.1,)) for c in cells)
    )
    assert coord_checks(flat)[0].passes
