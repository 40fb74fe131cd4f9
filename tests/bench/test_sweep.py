"""Sweep files: the grid, the public-only bar of every group, stable ids, and clear refusals."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fedlatent.bench.sweep import SweepSpec, parse_axis, points, public_group, with_axes
from fedlatent.config import ConfigError

GRID = {
    "base": {"dataset": "digits", "rounds": 1},
    "grid": {"mode": ["raw", "latent-share"], "epsilon": [math.inf, 3.0], "public-fraction": [0.2, 0.01]},
}


def test_the_grid_is_crossed_and_every_public_split_gets_one_bar() -> None:
    pts = points(SweepSpec.from_mapping(GRID))
    bars = [p for p in pts if p.is_public_only]
    feds = [p for p in pts if not p.is_public_only]
    assert len(feds) == 2 * 2 * 2
    # The bar depends on the public split, not on the mode or the budget: one per public-fraction.
    assert sorted(b.overrides["public-fraction"] for b in bars) == [0.01, 0.2]
    for p in feds:
        bar = next(b for b in bars if b.id == p.public_only)
        assert bar.overrides["public-fraction"] == p.overrides["public-fraction"]
        assert "epsilon" not in bar.overrides and bar.overrides["mode"] == "public-only"
    assert pts[: len(bars)] == bars  # bars run first


def test_point_ids_are_readable_and_stable_when_the_grid_grows() -> None:
    before = {p.id for p in points(SweepSpec.from_mapping(GRID))}
    grown = {**GRID, "grid": {**GRID["grid"], "mode": ["raw", "latent-share", "latent-fedavg"]}}
    after = {p.id for p in points(SweepSpec.from_mapping(grown))}
    assert before <= after and len(after) == len(before) + 4
    assert any(i.startswith("latent-share_epsinf_pf0.2_") for i in before)


def test_a_public_only_value_on_the_mode_axis_is_the_same_bar() -> None:
    spec = SweepSpec.from_mapping({"base": {"dataset": "digits"}, "grid": {"mode": ["public-only", "raw"]}})
    assert [p.overrides["mode"] for p in points(spec)] == ["public-only", "raw"]


def test_seeds_make_separate_bars() -> None:
    spec = SweepSpec.from_mapping({"grid": {"mode": ["raw"], "seed": [0, 1]}})
    assert len([p for p in points(spec) if p.is_public_only]) == 2


def test_public_group_keeps_only_what_the_bar_reads() -> None:
    group = public_group({"mode": "raw", "epsilon": 3.0, "partition": "dirichlet", "seed": 2, "public-labels": False})
    assert group == {"mode": "public-only", "seed": 2, "public-labels": False}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"grid": {"modes": ["raw"]}}, "unknown run key"),
        ({"grid": {"mode": "raw"}}, "non-empty list"),
        ({"grid": {"mode": []}}, "non-empty list"),
        ({"base": {"mode": "raw"}, "grid": {"mode": ["raw"]}}, "both"),
        ({"base": {"out-dir": "x"}}, "out-dir"),
        ({"sweep": {"attacks": "huge"}}, "attacks"),
        ({"sweep": {"families": ["mind-reading"]}}, "famil"),
        ({"sweep": {"budget": 1}}, "unknown key"),
        ({"grids": {}}, "unknown table"),
    ],
)
def test_a_bad_sweep_file_is_refused_with_what_is_wrong(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SweepSpec.from_mapping(raw)


def test_every_point_is_validated_before_anything_runs() -> None:
    spec = SweepSpec.from_mapping({"grid": {"mode": ["raw"], "alpha": [0.5, -1.0]}})
    with pytest.raises(ConfigError, match="alpha"):
        points(spec)


def test_a_toml_file_with_inf_loads(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[sweep]\nattacks = "quick"\n[base]\ndataset = "digits"\n[grid]\nepsilon = [inf, 3.0]\n')
    spec = SweepSpec.load(path)
    assert spec.grid[0]["epsilon"][0] == math.inf and spec.attacks == "quick" and spec.source == str(path)
    path.write_text("[grid\n")
    with pytest.raises(ConfigError, match="s.toml"):
        SweepSpec.load(path)


@pytest.mark.parametrize(
    "name", ["quick", "claims-fmnist", "frontier-fmnist", "scatternet-fmnist", "distributed-fmnist"]
)
def test_the_shipped_sweeps_are_valid(name: str) -> None:
    path = Path(__file__).parents[2] / "experiments" / f"{name}.toml"
    assert len(points(SweepSpec.load(path))) > 1


def test_a_grid_axis_can_be_cut_from_the_command_line() -> None:
    assert parse_axis("epsilon=inf, 3") == ("epsilon", [math.inf, 3])
    assert parse_axis("mode=raw,latent-share") == ("mode", ["raw", "latent-share"])
    assert parse_axis("public-labels=true") == ("public-labels", [True])
    cut = with_axes(SweepSpec.from_mapping(GRID), [("public-fraction", [0.01]), ("rounds", [1, 2])])
    assert cut.grid[0]["public-fraction"] == [0.01] and cut.grid[0]["rounds"] == [1, 2] and "rounds" not in cut.base
    with pytest.raises(ConfigError, match="KEY=V1"):
        parse_axis("epsilon")


def test_two_spellings_of_one_config_are_one_point() -> None:
    explicit = points(
        SweepSpec.from_mapping({"base": {"alpha": 0.5, "public-labels": True}, "grid": {"mode": ["raw"]}})
    )
    implicit = points(SweepSpec.from_mapping({"grid": {"mode": ["raw"]}}))
    assert [p.id for p in explicit] == [p.id for p in implicit]


def test_several_grids_pool_their_points_and_a_shared_point_runs_once(tmp_path: Path) -> None:
    """``[[grid]]``: raw once, beside a latent mode crossed with a key raw does not read."""
    path = tmp_path / "s.toml"
    path.write_text(
        '[base]\ndataset = "digits"\n'
        '[[grid]]\nmode = ["raw"]\nseed = [0, 1]\n'
        '[[grid]]\nmode = ["latent-fedavg"]\nseed-bugs = [false, true]\nseed = [0, 1]\n'
        '[[grid]]\nmode = ["raw"]\nseed = [1]\n'  # repeats a raw point of the first grid
    )
    found = points(SweepSpec.load(path))
    federated = [p for p in found if not p.is_public_only]
    assert len(federated) == 2 + 4 and len({p.id for p in found}) == len(found)
    assert sum(p.overrides["mode"] == "raw" for p in federated) == 2
    assert all("seed-bugs" not in p.overrides for p in federated if p.overrides["mode"] == "raw")
    assert {p.public_only for p in federated} == {p.id for p in found if p.is_public_only}
    assert all(p.id.startswith(("raw_", "latent-fedavg_")) for p in federated)  # mode tells them apart


def test_distributed_points_share_the_bar_of_their_local_neighbours() -> None:
    local = {"mode": "latent-fedavg", "encoder": "scatternet", "epsilon": 3.0, "seed": 0}
    distributed = {**local, "dp-mode": "distributed", "secagg": True, "rounds": 290, "batch-size": 8192, "lr": 16.0,
                   "latent-classifier": "linear", "optimizer": "sgd"}  # fmt: skip
    assert public_group(distributed) == public_group(local)
    assert public_group({**local, "rounds": 3}) != public_group(local)  # a local recipe's rounds train its bar too
