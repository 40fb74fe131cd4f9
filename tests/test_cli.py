"""The fedlatent command: help on every verb, and config errors before Flower starts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fedlatent.cli import build_parser, main


@pytest.mark.parametrize("verb", [[], ["run"], ["compare"], ["sweep"], ["report"], ["bench"]])
def test_help_on_every_verb(verb: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*verb, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "usage: fedlatent" in out
    if verb == ["run"]:
        for option in (
            "--dataset",
            "--mode",
            "--encoder",
            "--clients",
            "--rounds",
            "--partition",
            "--alpha",
            "--seed",
            "--out",
        ):
            assert option in out


@pytest.mark.parametrize(
    ("argv", "key"),
    [
        (["run", "--mode", "foo"], "mode"),
        (["run", "--alpha", "0"], "alpha"),
        (["run", "--clients", "0"], "num-clients"),
        (["compare", "--public-fraction", "1.5"], "public-fraction"),
    ],
)
def test_bad_values_fail_fast_naming_the_key(argv: list[str], key: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert f"'{key}'" in capsys.readouterr().err


def test_options_mirror_every_config_key() -> None:
    args = build_parser().parse_args(["run", "--clients", "3", "--out", "x", "--latent-dim", "8", "--download", "true"])
    assert (args.num_clients, args.out_dir, args.latent_dim, args.download) == (3, "x", 8, "true")


def test_module_entry_point_exits_2_on_bad_config() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fedlatent.cli", "run", "--rounds", "0"], capture_output=True, text=True
    )
    assert done.returncode == 2 and "rounds" in done.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["run", "--tls"], "add --deployment"), (["compare", "--deployment", "--auth"], "--auth needs --tls")],
)
def test_tls_and_auth_belong_to_the_deployment(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_compare_defaults_to_dp_twins_at_epsilon_3_and_quick_attacks(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["compare"])
    assert args.attack == "quick" and args.epsilon is None  # None: cmd_compare's COMPARE_EPSILON applies
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    assert "(default: 3.0)" in capsys.readouterr().out


def test_report_refuses_a_directory_that_is_no_sweep(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "not a sweep directory" in capsys.readouterr().err


def test_sweep_refuses_a_bad_file_before_flower_starts(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[grid]\nmode = ["raw", "telepathy"]\n')
    assert main(["sweep", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "telepathy" in capsys.readouterr().err and not (tmp_path / "out").exists()
