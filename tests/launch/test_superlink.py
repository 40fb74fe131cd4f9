"""Tests of fedlatent.launcher against a real Flower 1.42 simulation (no mocks).

Each Flower test builds a throwaway app in ``tmp_path``: its ServerApp queries every
simulated SuperNode, each ClientApp answers with its ``partition-id``, and the ServerApp
writes what it collected as JSON to the absolute ``out-file`` (or raises if ``fail``).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from fedlatent.launch.processes import format_run_config
from fedlatent.launch.superlink import FederationError, LocalSuperLink

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

PYPROJECT = """\
[project]
name = "launcher-probe"
version = "1.0.0"
dependencies = []

[tool.flwr.app]
publisher = "fedlatent"

[tool.flwr.app.components]
serverapp = "launcher_probe:server"
clientapp = "launcher_probe:client"

[tool.flwr.app.config]
out-file = ""
fail = false
num-nodes = 2
"""

APP = """\
import json
import os
import time

from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

server = ServerApp()
client = ClientApp()


@client.query()
def answer(msg: Message, context: Context) -> Message:
    info = {"node_config": dict(context.node_config), "cwd": os.getcwd(), "file": __file__}
    reply = ConfigRecord({"partition-id": int(context.node_config["partition-id"]), "info": json.dumps(info)})
    return Message(RecordDict({"reply": reply}), reply_to=msg)


@server.main()
def main(grid: Grid, context: Context) -> None:
    deadline = time.monotonic() + 60
    while len(list(grid.get_node_ids())) < int(context.run_config["num-nodes"]):
        if time.monotonic() > deadline:
            raise RuntimeError("not all nodes came up")
        time.sleep(0.2)
    queries = [
        Message(RecordDict({"q": ConfigRecord({"x": 1})}), dst_node_id=node, message_type=MessageType.QUERY)
        for node in grid.get_node_ids()
    ]
    replies = [r.content["reply"] for r in grid.send_and_receive(queries, timeout=120) if r.has_content()]
    if context.run_config["fail"]:
        raise RuntimeError("probe asked to fail")
    result = {
        "partition_ids": sorted(int(r["partition-id"]) for r in replies),
        "clients": [json.loads(str(r["info"])) for r in replies],
        "server": {"cwd": os.getcwd(), "file": __file__},
    }
    with open(str(context.run_config["out-file"]), "w") as f:
        json.dump(result, f)
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    app = tmp_path / "app"
    app.mkdir()
    (app / "pyproject.toml").write_text(PYPROJECT)
    (app / "launcher_probe.py").write_text(textwrap.dedent(APP))
    return app


def _live_processes() -> list[tuple[int, int, str]]:
    """(pid, session id, command line) of every live, non-zombie process."""
    try:
        import psutil
    except ModuleNotFoundError:
        out = subprocess.run(
            ["ps", "-ww", "-A", "-o", "pid=", "-o", "sess=", "-o", "stat=", "-o", "args="],  # -ww: full args
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        rows = [line.split(None, 3) for line in out.splitlines()]
        return [(int(r[0]), int(r[1]), r[3] if len(r) > 3 else "") for r in rows if not r[2].startswith("Z")]
    found = []
    for proc in psutil.process_iter(["pid", "status", "cmdline"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append((proc.pid, os.getsid(proc.pid), " ".join(proc.info["cmdline"] or [])))
        except (psutil.Error, ProcessLookupError):
            pass
    return found


def test_format_run_config_round_trips() -> None:
    from flwr.common.config import parse_config_args  # the parser `flwr run` applies

    values: dict[str, Any] = {
        "out-file": "/tmp/a b/out.json",
        "quotes": 'say "hi" it\'s',
        "backslash": "C:\\dir\\",
        "control": "tab\tnew\nline\x7f",
        "unicode": "ünïcødé ✓",
        "empty": "",
        "yes": True,
        "no": False,
        "int": -42,
        "big": 2**62,
        "float": 0.1,
        "tiny": 1e-05,
        "huge": 1e20,
        "neg-zero": -0.0,
        "inf": math.inf,
        "ninf": -math.inf,
    }
    text = format_run_config(values)
    assert "yes=true" in text and "no=false" in text and "inf=inf" in text
    for key, value in values.items():  # each pair is a TOML document of its own
        assert tomllib.loads(format_run_config({key: value})) == {key: value}
    assert parse_config_args([text]) == values
    assert math.isnan(tomllib.loads(format_run_config({"x": math.nan}))["x"])
    assert format_run_config({}) == ""
    with pytest.raises(ValueError):
        format_run_config({"bad key": 1})
    with pytest.raises(ValueError):
        format_run_config({"k": 2**63})
    with pytest.raises(TypeError):
        format_run_config({"k": [1, 2]})  # type: ignore[dict-item]


@pytest.mark.slow
def test_successful_run(app_dir: Path, tmp_path: Path) -> None:
    out, home = tmp_path / "out.json", tmp_path / "home"
    echoed: list[str] = []
    with LocalSuperLink(flwr_home=home) as link:
        result = link.run(app_dir, run_config={"out-file": str(out)}, num_supernodes=2, timeout=600, echo=echoed.append)
    assert result.status == "finished:completed"
    assert f"Successfully started run {result.run_id}" in result.log
    assert result.log == "\n".join(echoed)
    found = json.loads(out.read_text())
    assert found["partition_ids"] == [0, 1]
    # The apps run in the caller's working directory, from the FAB installed in FLWR_HOME.
    assert found["server"]["cwd"] == os.getcwd()
    assert Path(found["server"]["file"]).is_relative_to(home / "apps")
    for client in found["clients"]:
        assert set(client["node_config"]) == {"partition-id", "num-partitions"}
        assert client["node_config"]["num-partitions"] == 2
        assert client["cwd"] == os.getcwd()


@pytest.mark.slow
def test_reuse_and_no_leftover_processes(app_dir: Path, tmp_path: Path) -> None:
    link = LocalSuperLink(flwr_home=tmp_path / "home", workdir=tmp_path)
    with link:
        pid, port = link.pid, link.port
        assert pid is not None
        for i in range(2):
            out = tmp_path / f"out{i}.json"
            result = link.run(app_dir, run_config={"out-file": str(out)}, num_supernodes=2, timeout=600)
            assert result.status == "finished:completed"
            found = json.loads(out.read_text())
            assert found["partition_ids"] == [0, 1]
            assert found["server"]["cwd"] == str(tmp_path.resolve())
            if i == 0:  # a failing ServerApp raises (flwr run's exit code says 0) and the link stays usable
                failed = tmp_path / "failed.json"
                with pytest.raises(FederationError, match="finished:failed") as info:
                    link.run(app_dir, run_config={"out-file": str(failed), "fail": True}, num_supernodes=2, timeout=600)
                assert "probe asked to fail" in str(info.value)
                assert not failed.exists()
        # Our sessions: the SuperLink's and those of its children (SuperExec's holds Ray).
        sessions = {sid for p, sid, _ in _live_processes() if p == pid} | {pid}
        sessions |= {p for p, sid, cmd in _live_processes() if p == sid and f"127.0.0.1:{port}" in cmd}
        assert len(sessions) == 2
    assert link.pid is None
    leftovers = [
        (p, cmd)
        for p, sid, cmd in _live_processes()
        if sid in sessions or p == pid or f"127.0.0.1:{port}" in cmd or f"--port {port}" in cmd
    ]
    assert leftovers == []


@pytest.mark.slow
def test_unknown_run_config_key_is_rejected(app_dir: Path, tmp_path: Path) -> None:
    with LocalSuperLink(flwr_home=tmp_path / "home") as link:
        with pytest.raises(FederationError, match="no-such-key"):
            link.run(app_dir, run_config={"no-such-key": 1}, num_supernodes=2, timeout=300)
