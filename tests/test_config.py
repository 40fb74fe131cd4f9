"""Tests for fedlatent.config: defaults, the pyproject contract, casting and validation."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedlatent import casting as C
from fedlatent.config import ConfigError, RunConfig

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_defaults_build_and_validate():
    cfg = RunConfig()
    assert cfg.mode == "latent-fedavg" and cfg.dataset == "digits"
    assert cfg.is_latent
    # The defaults must themselves pass validation, unchanged.
    assert RunConfig.from_run_config({}) == cfg


def test_keys_match_pyproject_table_exactly():
    table = tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]
    keys = RunConfig.keys()
    assert set(keys) == set(table)
    for key, default in keys.items():
        assert table[key] == default, key
        # TOML 1.0 vs 1: the type must agree too, or Flower hands the app an int for a float key.
        assert type(table[key]) is type(default), key


def test_keys_are_kebab_case_and_in_declaration_order():
    names = [f.name.replace("_", "-") for f in dataclasses.fields(RunConfig)]
    assert list(RunConfig.keys()) == names
    assert all("_" not in k for k in RunConfig.keys())


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="num-client\\b"):
        RunConfig.from_run_config({"num-client": 3})
    with pytest.raises(ConfigError, match="num_clients"):  # snake_case is not a key
        RunConfig.from_run_config({"num_clients": 3})


@pytest.mark.parametrize(
    "key, value",
    [
        ("mode", "foo"),
        ("alpha", 0),
        ("alpha", 0.0),
        ("alpha", -0.5),
        ("alpha", float("nan")),
        ("alpha", "nan"),
        ("alpha", float("inf")),
        ("num-clients", -1),
        ("public-fraction", 1.0),
        ("public-fraction", -0.1),
        ("lr", -1),
        ("lr", 0),
        ("rounds", 0),
        ("batch-size", "x"),
        ("batch-size", 0),
        ("fraction-train", 0.0),
        ("fraction-train", 1.5),
        ("dataset", "cifar"),
        ("partition", "random"),
        ("encoder", "none"),
        ("ae-arch", "cnn"),
        ("classifier-arch", "conv"),
        ("seed", -1),
        ("download", "yes"),
        ("download", 1),
        ("rounds", True),
        ("out-dir", 3),
        ("partition-owners", "12:0 13"),
        ("partition-owners", "12:0 13:0"),
        ("partition-owners", "12:0,12:1"),
        ("partition-owners", "-4:1"),
    ],
)
def test_bad_value_fails_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=re.escape(f"'{key}'")):
        RunConfig.from_run_config({key: value})


def test_partition_owners_parse_to_partition_and_node():
    cfg = RunConfig.from_run_config({"partition-owners": "4405:1, 9912:0"})
    assert C.parse_owners(cfg.partition_owners) == {1: 4405, 0: 9912} and C.parse_owners("") == {}


def test_casting_of_cli_and_toml_forms():
    cfg = RunConfig.from_run_config(
        {"rounds": "5", "lr": 3, "download": "true", "num-clients": 2.0, "alpha": "0.25", "seed": 7}
    )
    assert cfg.rounds == 5 and type(cfg.rounds) is int
    assert cfg.lr == 3.0 and type(cfg.lr) is float
    assert cfg.download is True
    assert cfg.num_clients == 2 and type(cfg.num_clients) is int
    assert cfg.alpha == 0.25 and type(cfg.alpha) is float
    assert RunConfig.from_run_config({"download": "False"}).download is False


def test_non_integral_float_for_int_key_fails():
    with pytest.raises(ConfigError, match="'rounds'"):
        RunConfig.from_run_config({"rounds": 2.5})
    with pytest.raises(ConfigError, match="'latent-dim'"):
        RunConfig.from_run_config({"latent-dim": "2.5"})


def test_round_trip():
    custom = {
        "dataset": "digits",
        "mode": "latent-share",
        "encoder": "local",
        "num-clients": 3,
        "rounds": 2,
        "partition": "dirichlet",
        "alpha": 0.1,
        "seed": 42,
        "public-fraction": 0.3,
        "latent-dim": 8,
        "ae-arch": "conv",
        "lr": 0.01,
        "download": True,
        "out-dir": "/tmp/x",
        "fraction-train": 0.5,
    }
    cfg = RunConfig.from_run_config(custom)
    flat = cfg.to_run_config()
    assert set(flat) == set(RunConfig.keys())
    assert {k: flat[k] for k in custom} == custom
    assert RunConfig.from_run_config(flat) == cfg
    assert RunConfig.from_run_config(RunConfig().to_run_config()) == RunConfig()


def test_is_latent():
    assert not RunConfig.from_run_config({"mode": "raw"}).is_latent
    assert RunConfig.from_run_config({"mode": "latent-share"}).is_latent


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RunConfig().rounds = 3  # type: ignore[misc]


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=1, max_value=10**9))
def test_any_positive_int_string_casts(n):
    cfg = RunConfig.from_run_config({"rounds": str(n), "batch-size": float(n) if n < 2**52 else n})
    assert cfg.rounds == n and cfg.batch_size == n


@settings(max_examples=50, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_lr_accepted_iff_positive(x):
    if x > 0:
        cfg = RunConfig.from_run_config({"lr": str(x)})
        assert cfg.lr == x and math.isfinite(cfg.lr)
    else:
        with pytest.raises(ConfigError, match="'lr'"):
            RunConfig.from_run_config({"lr": x})


def test_auto_batch_sizes_follow_the_data_size():
    cfg = RunConfig.from_run_config({})
    assert cfg.public_batch_size(12_000) == 128 and cfg.public_batch_size(287) == cfg.batch_size == 32
    assert cfg.server_training(48_000) == (256, 2e-3) and cfg.server_training(1_150) == (32, 1e-3)
    fixed = RunConfig.from_run_config({"ae-batch-size": 64, "server-batch-size": 512, "server-lr": 0.01})
    assert fixed.public_batch_size(12_000) == 64 and fixed.server_training(100) == (512, 0.01)
    assert RunConfig.from_run_config({"server-batch-size": 300}).server_training(100) == (300, 2e-3)


def test_public_only_refuses_privacy_settings_it_cannot_use():
    cfg = RunConfig.from_run_config({"mode": "public-only"})
    assert not cfg.is_latent and not cfg.release_aware_learner
    for key, value in (("epsilon", 3.0), ("client-dp-noise", 1.0)):
        with pytest.raises(ConfigError, match="public-only"):
            RunConfig.from_run_config({"mode": "public-only", key: value})


DISTRIBUTED = {"epsilon": 3.0, "dp-mode": "distributed", "secagg": True, "num-clients": 4}


def test_distributed_dp_builds_with_what_it_needs():
    cfg = RunConfig.from_run_config({**DISTRIBUTED, "secagg-max-dropouts": 1})
    assert cfg.min_survivors == 3 and cfg.dp


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"epsilon": math.inf}, "'epsilon' finite"),
        ({"mode": "latent-share", "encoder": "local"}, "mode raw, latent-fedavg"),
        ({"secagg": False}, "epsilon_local"),
        ({"fraction-train": 0.5}, "fraction-train"),
        ({"client-dp-noise": 1.0}, "client-dp-noise"),
        ({"accountant": "prv"}, "accountant"),
        ({"resume": True}, "resume"),
    ],
)
def test_distributed_dp_names_each_missing_condition(change, named):
    with pytest.raises(ConfigError, match="dp-mode") as err:
        RunConfig.from_run_config({**DISTRIBUTED, **change})
    assert named in str(err.value)


def test_secagg_alone_and_impossible_dropouts_are_refused():
    with pytest.raises(ConfigError, match="secagg"):
        RunConfig.from_run_config({"secagg": True})
    with pytest.raises(ConfigError, match="secagg-max-dropouts"):
        RunConfig.from_run_config({**DISTRIBUTED, "secagg-max-dropouts": 4})
    with pytest.raises(ConfigError, match="secagg-threshold"):
        RunConfig.from_run_config({**DISTRIBUTED, "secagg-threshold": 5})
