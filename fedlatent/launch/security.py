"""TLS certificates and SuperNode keys for a deployment, made with the ``cryptography`` package.

What: ``make_tls(folder)`` writes a fresh certificate authority and a server certificate it
signs for the SuperLink's loopback address (``--ssl-certfile/--ssl-keyfile/--ssl-ca-certfile``
of ``flower-superlink``; SuperNodes and the ``flwr`` CLI trust the CA through
``--root-certificates`` / ``root-certificates``). ``make_node_keys(folder, n)`` writes ``n``
EC P-384 key pairs in OpenSSH format: Flower 1.42's SuperNode authentication registers the
public key with ``flwr supernode register`` and the SuperNode signs with the private one
(``--auth-supernode-private-key``).

Why generated per run: the local deployment is a test bed; for machines that are really
apart, use certificates of your own CA and register each SuperNode's key the same way
(README, "Across machines"). Private keys are written with mode 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALID_DAYS = 7


@dataclass(frozen=True)
class TLSFiles:
    """PEM files of one deployment's TLS: the CA certificate, the server certificate and its key."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


@dataclass(frozen=True)
class NodeKey:
    """One SuperNode's key pair in OpenSSH format."""

    private: Path
    public: Path


def _write(path: Path, data: bytes, *, secret: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    pkcs8, plain = serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, pkcs8, plain)


def make_tls(folder: Path, *, host: str = "127.0.0.1") -> TLSFiles:
    """A new CA and a server certificate for ``host`` (an IP address) and ``localhost``, signed by it."""
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=VALID_DAYS)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("fedlatent deployment CA"))
        .issuer_name(_name("fedlatent deployment CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA384())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    names = [x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(host))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    pem = serialization.Encoding.PEM
    return TLSFiles(
        ca_cert=_write(folder / "ca.crt", ca_cert.public_bytes(pem)),
        server_cert=_write(folder / "server.pem", server_cert.public_bytes(pem)),
        server_key=_write(folder / "server.key", _pem_key(server_key), secret=True),
    )


def make_node_keys(folder: Path, count: int, *, prefix: str = "supernode") -> list[NodeKey]:
    """``count`` EC P-384 key pairs, ``<prefix>-<i>`` and ``<prefix>-<i>.pub``, in OpenSSH format."""
    keys = []
    for i in range(count):
        key = ec.generate_private_key(ec.SECP384R1())
        private = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        keys.append(
            NodeKey(
                private=_write(folder / f"{prefix}-{i}", private, secret=True),
                public=_write(folder / f"{prefix}-{i}.pub", public + b"\n"),
            )
        )
    return keys


def superlink_flags(tls: TLSFiles | None, *, supernode_auth: bool = False) -> list[str]:
    """``flower-superlink`` flags: TLS with ``tls`` (else ``--insecure``), and SuperNode auth if asked."""
    if tls is None:
        flags = ["--insecure"]
    else:
        flags = ["--ssl-certfile", str(tls.server_cert), "--ssl-keyfile", str(tls.server_key)]
        flags += ["--ssl-ca-certfile", str(tls.ca_cert)]
    return flags + (["--enable-supernode-auth"] if supernode_auth else [])


def supernode_flags(tls: TLSFiles | None, key: NodeKey | None = None) -> list[str]:
    """``flower-supernode`` flags: trust the CA of ``tls`` (else ``--insecure``), sign with ``key``."""
    flags = ["--insecure"] if tls is None else ["--root-certificates", str(tls.ca_cert)]
    return flags + ([] if key is None else ["--auth-supernode-private-key", str(key.private)])


def connection_trust(tls: TLSFiles | None) -> str:
    """The TOML line of a ``flwr`` CLI connection: trust the CA of ``tls``, or ``insecure``."""
    return "insecure = true" if tls is None else f'root-certificates = "{tls.ca_cert}"'


def health_opener(tls: TLSFiles | None) -> tuple[str, urllib.request.OpenerDirector]:
    """URL scheme and a proxy-free opener (trusting the CA of ``tls``) for the SuperLink's health check."""
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]  # never a proxy
    if tls is None:
        return "http", urllib.request.build_opener(*handlers)
    handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=str(tls.ca_cert))))
    return "https", urllib.request.build_opener(*handlers)
