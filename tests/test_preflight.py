"""Errors a newcomer meets say what to do: the smallest ε that works, the closest keys, the install command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fedlatent.config import ConfigError, RunConfig
from fedlatent.data.loading import DataError, load_dataset
from fedlatent.preflight import preflight

SHARE = {"dataset": "digits", "num-clients": 4, "mode": "latent-share"}


def test_a_budget_too_small_names_the_smallest_epsilon_that_works() -> None:
    with pytest.raises(ConfigError, match="cannot be met") as err:
        preflight(RunConfig.from_run_config({**SHARE, "epsilon": 0.001}))
    found = re.search(r"smallest epsilon this setting can meet is about ([0-9.]+)", str(err.value))
    assert found is not None
    least = float(found.group(1))
    preflight(RunConfig.from_run_config({**SHARE, "epsilon": least}))  # the named value works
    with pytest.raises(ConfigError):
        preflight(RunConfig.from_run_config({**SHARE, "epsilon": least * 0.97}))  # and is within 3% of the least


def test_an_unknown_key_names_the_closest_keys() -> None:
    with pytest.raises(ConfigError) as err:
        RunConfig.from_run_config({"epsilom": 3, "round": 2, "zzz": 1})
    text = str(err.value)
    assert "'epsilom' (did you mean 'epsilon'" in text and "'round' (did you mean 'rounds'?)" in text
    assert "'zzz'," in text or text.count("zzz") == 1


def test_a_missing_data_set_names_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", data_dir=str(tmp_path))
