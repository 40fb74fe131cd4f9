"""TLS and SuperNode authentication: the files are what Flower expects, and a deployment uses them.

The slow test runs a real SuperLink over TLS with SuperNode authentication, two registered
SuperNodes and one intruder whose key was never registered: the intruder is refused and the
run completes with the two others.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedlatent.config import RunConfig
from fedlatent.launch.deployment import LocalDeployment
from fedlatent.launch.processes import HOST, find_tool, flower_env, free_ports, stop_sessions
from fedlatent.launch.security import make_node_keys, make_tls, supernode_flags
from fedlatent.runs import app_dir


def test_the_server_certificate_is_signed_by_the_ca_for_loopback(tmp_path: Path) -> None:
    tls = make_tls(tmp_path)
    ca = x509.load_pem_x509_certificate(tls.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(tls.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)  # raises if the signature or issuer is wrong
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    key = serialization.load_pem_private_key(tls.server_key.read_bytes(), password=None)
    assert key.public_key().public_numbers() == server.public_key().public_numbers()  # type: ignore[union-attr]
    assert tls.server_key.stat().st_mode & 0o077 == 0  # the private key is the owner's alone


def test_node_keys_are_openssh_p384_pairs(tmp_path: Path) -> None:
    keys = make_node_keys(tmp_path, 2)
    for key in keys:
        private = serialization.load_ssh_private_key(key.private.read_bytes(), password=None)
        public = serialization.load_ssh_public_key(key.public.read_bytes())
        assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp384r1"
        assert private.public_key().public_numbers() == public.public_numbers()  # type: ignore[union-attr]
    assert keys[0].public.read_bytes() != keys[1].public.read_bytes()
    assert supernode_flags(None) == ["--insecure"]
    assert supernode_flags(make_tls(tmp_path / "tls"), keys[0])[-2:] == [
        "--auth-supernode-private-key",
        str(keys[0].private),
    ]


def test_auth_needs_tls(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="TLS"):
        LocalDeployment(flwr_home=tmp_path, num_supernodes=2, auth=True)


@pytest.mark.slow
def test_a_tls_deployment_refuses_an_unregistered_supernode_and_completes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = {"dataset": "digits", "num-clients": 2, "rounds": 1, "local-epochs": 1, "mode": "raw", "out-dir": str(out)}
    with LocalDeployment(flwr_home=tmp_path / "flwr", num_supernodes=2, tls=True, auth=True) as deployment:
        (intruder_key,) = make_node_keys(tmp_path / "intruder", 1, prefix="intruder")
        home = tmp_path / "intruder-home"
        home.mkdir()
        env = flower_env(home)
        command = [
            find_tool("flower-supernode", env), *supernode_flags(deployment.tls, intruder_key),
            "--superlink", deployment.address, "--host", HOST, "--port", str(free_ports()[0]),
            "--node-config", "partition-id=0 num-partitions=2", "--max-retries", "0",
        ]  # fmt: skip

        def start(log_name: str) -> subprocess.Popen[bytes]:
            with (home / log_name).open("wb") as log:
                return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

        intruder, admitted = start("intruder.log"), None
        try:
            deadline = time.monotonic() + 60
            while intruder.poll() is None and time.monotonic() < deadline:
                time.sleep(0.5)
            assert deployment.online_nodes() == 2  # the intruder never joined
            # The same command with the same key, once registered, joins: the key was the reason.
            intruder_id = deployment.register(intruder_key.public)
            admitted = start("admitted.log")
            deadline = time.monotonic() + 60
            while deployment.online_nodes() < 3 and time.monotonic() < deadline:
                time.sleep(0.5)
            assert deployment.online_nodes() == 3
            # It claims partition 0, which the deployment gave another key. Every key as the CLI sends
            # them (partition-owners "" among them): the deployment fills in its owners.
            deployment.run(app_dir(), run_config=RunConfig.from_run_config(config).to_run_config(), timeout=600)
        finally:
            stop_sessions({p.pid for p in (intruder, admitted) if p is not None})
    log_text = (home / "intruder.log").read_text(errors="replace")
    assert intruder.returncode not in (None, 0) and "Failed to activate SuperNode" in log_text, log_text[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["num_clients"] == 2 and results["accuracy"] > 0.3
    owners = results["config"]["partition-owners"]
    assert owners == f"{deployment.owners[0]}:0 {deployment.owners[1]}:1", owners
    # Only the owners were asked (the registered intruder owns no partition): nothing refused, none of its replies.
    assert results["rejected_replies"]["total"] == 0
    rows = [json.loads(line) for line in (out / "server_view" / "metrics.jsonl").read_text().splitlines()]
    assert rows and {r["node_id"] for r in rows} == set(deployment.owners.values()) and f"{intruder_id}:" not in owners
    assert (
        deployment.tls is not None and (tmp_path / "flwr" / "config.toml").read_text().count("root-certificates") == 1
    )
