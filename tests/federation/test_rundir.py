"""Run directories: a used or linked out-dir is refused, --overwrite empties without following links."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedlatent.cli import main
from fedlatent.config import ConfigError, RunConfig
from fedlatent.federation.rundir import check_out_dir, mark_failed, run_directory, write_json_atomic


def _cfg(out: Path, **keys: object) -> RunConfig:
    return RunConfig.from_run_config({"out-dir": str(out), **keys})


def test_a_fresh_or_empty_directory_is_used(tmp_path: Path) -> None:
    assert run_directory(_cfg(tmp_path / "new")) == (tmp_path / "new").resolve()
    assert (tmp_path / "new").is_dir()
    assert run_directory(_cfg(tmp_path / "new")) == (tmp_path / "new").resolve()  # still empty: fine


def test_a_directory_holding_another_run_is_refused(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text("{}")
    (tmp_path / "server_view").mkdir()
    with pytest.raises(ConfigError, match="already holds files .*results.json.*overwrite"):
        run_directory(_cfg(tmp_path))
    assert (tmp_path / "results.json").read_text() == "{}"  # nothing touched


def test_overwrite_empties_it_without_following_links(tmp_path: Path) -> None:
    out, outside = tmp_path / "run", tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    out.mkdir()
    (out / "received").mkdir()
    (out / "received" / "old.npz").write_text("stale")
    (out / "metrics.jsonl").write_text("stale")
    (out / "planted").symlink_to(outside, target_is_directory=True)
    run_directory(_cfg(out, overwrite=True))
    assert list(out.iterdir()) == [] and (outside / "keep.txt").read_text() == "mine"


def test_a_symbolic_link_as_out_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    with pytest.raises(ConfigError, match="symbolic link"):
        check_out_dir(tmp_path / "link", overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        check_out_dir(tmp_path / "file", overwrite=True)


def test_a_failed_run_leaves_failed_and_no_results(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "results.json", {"accuracy": 0.5})
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary file was renamed into place
    mark_failed(tmp_path, RuntimeError("client crashed"))
    assert not (tmp_path / "results.json").exists()
    assert (tmp_path / "FAILED").read_text() == "RuntimeError: client crashed\n"


def test_the_cli_refuses_a_used_out_dir_before_flower_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "results.json").write_text("{}")
    assert main(["run", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "already holds files" in err and "Traceback" not in err
