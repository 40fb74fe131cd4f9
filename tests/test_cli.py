"""The fedlatent command: help on every verb, and config errors before Flower starts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fedlatent.cli import build_parser, main


@pytest.mark.parametrize("verb", [[], ["run"], ["compare"]])
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
