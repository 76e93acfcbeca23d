"""TLS and mTLS over real ports: the right certificates connect, none or the wrong ones don't; and the
README's security blocks (``openssl`` certificates, then ``monailabel-client``, ``grpcurl`` and
``buf curl`` with a bearer token) run as written against an authenticated mTLS server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from monailabel_client import MonaiLabelClient
from monailabel_server.auth import AuthSettings
from monailabel_server.server import RunningServer
from monailabel_server.tls import server_credentials

from .oidc import CertFiles, IssuerServer, make_ca, make_leaf
from .test_auth import _start

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("pki")
    ca = make_ca(folder, "hospital-ca")
    rogue = make_ca(folder, "rogue-ca")
    return {
        "ca": ca,
        "rogue": rogue,
        "server": make_leaf(folder, ca, "server", server=True),
        "client": make_leaf(folder, ca, "workstation", server=False),
        "rogue_client": make_leaf(folder, rogue, "intruder", server=False),
    }


def _serve(root: Path, pki: dict, mtls: bool, **config: Any) -> RunningServer:
    return _start(root, AuthSettings(), tls_cert=str(pki["server"].cert), tls_key=str(pki["server"].key),
                  tls_client_ca=str(pki["ca"].cert) if mtls else "", **config)


def _healthy(client: MonaiLabelClient) -> bool:
    try:
        health_pb2_grpc.HealthStub(client.channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        client.info()
        return True
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
        return False


@pytest.fixture(scope="module")
def tls_server(pki: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = _serve(tmp_path_factory.mktemp("tls"), pki, mtls=False)
    yield running
    running.stop(grace=1)


@pytest.fixture(scope="module")
def mtls_server(pki: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = _serve(tmp_path_factory.mktemp("mtls"), pki, mtls=True)
    yield running
    running.stop(grace=1)


def test_tls_needs_the_servers_ca(tls_server: RunningServer, pki: dict) -> None:
    with MonaiLabelClient(tls_server.address, ca_file=pki["ca"].cert, timeout=10) as client:
        assert _healthy(client)
        assert client.info().name
    with MonaiLabelClient(tls_server.address, ca_file=pki["rogue"].cert, timeout=10) as client:
        assert not _healthy(client), "a server certificate from an untrusted CA is refused"
    with MonaiLabelClient(tls_server.address, timeout=10) as client:
        assert not _healthy(client), "a plaintext client can't talk to a TLS port"


def test_mtls_needs_a_client_certificate_from_the_ca(mtls_server: RunningServer, pki: dict) -> None:
    ca = pki["ca"].cert
    good: CertFiles = pki["client"]
    with MonaiLabelClient(mtls_server.address, ca_file=ca, cert_file=good.cert, key_file=good.key) as client:
        assert _healthy(client)
        with pytest.raises(grpc.RpcError) as err:
            client.delete_image("no_such_image")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert mtls_server.audit is not None
    (record,) = [json.loads(line) for line in mtls_server.audit.path.read_text().splitlines()]
    assert (record["user"], record["resource"], record["outcome"]) == ("anonymous", "image/no_such_image", "NOT_FOUND")
    assert record["peer_cert"] == "workstation", "the audit log names the client certificate"
    with MonaiLabelClient(mtls_server.address, ca_file=ca, timeout=10) as client:
        assert not _healthy(client), "no client certificate: refused"
    bad: CertFiles = pki["rogue_client"]
    with MonaiLabelClient(mtls_server.address, ca_file=ca, cert_file=bad.cert, key_file=bad.key) as client:
        assert not _healthy(client), "a client certificate from another CA: refused"


def test_tls_settings_fail_loudly(pki: dict, tmp_path: Path) -> None:
    assert server_credentials() is None
    with pytest.raises(ValueError, match="--tls-key"):
        server_credentials(cert=str(pki["server"].cert))
    with pytest.raises(ValueError, match="--tls-cert"):
        server_credentials(client_ca=str(pki["ca"].cert))
    with pytest.raises(ValueError, match="--tls-key: cannot read"):
        server_credentials(cert=str(pki["server"].cert), key=str(tmp_path / "missing.key"))
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ValueError, match="not a PEM file"):
        server_credentials(cert=str(tmp_path / "junk.pem"), key=str(pki["server"].key))


# -- the README, as written --------------------------------------------------------------------------
def _readme_block(name: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- readme-test: {name} -->\n```bash\n(.*?)```", text, re.S)
    assert match, f"README block {name!r}"
    return match.group(1)


def _bash(script: str, cwd: Path, env: dict) -> str:
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"{script}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_readme_security_commands_work(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / ".venv").symlink_to(Path(sys.executable).parent.parent)
    (work / "protos").symlink_to(ROOT / "protos")
    env = dict(os.environ)
    _bash(_readme_block("certs"), work, env)
    certs = work / "certs"
    issuer_server = IssuerServer()
    settings = AuthSettings(enable=True, realm_uri=issuer_server.issuer.realm_uri, timeout=5)
    running = _start(tmp_path / "served", settings, tls_cert=str(certs / "server.pem"),
                     tls_key=str(certs / "server.key"), tls_client_ca=str(certs / "ca.pem"))
    try:
        lines = _readme_block("calls").splitlines()
        # the first command asks a real Keycloak for a token; here the local issuer signs one instead
        after_token = next(i for i, line in enumerate(lines) if "access_token" in line) + 1
        script = "\n".join(lines[after_token:]).replace("127.0.0.1:50443", running.address)
        env["MONAI_LABEL_TOKEN"] = issuer_server.issuer.token("anna", ["monailabel-user"])
        out = _bash(script, work, env)
        assert '"images"' in out and '"status"' in out and '"total"' in out, out
        # the same calls without the token are refused
        env["MONAI_LABEL_TOKEN"] = ""
        result = subprocess.run(
            ["bash", "-c", script.split("\n.venv/bin/grpcurl")[0]], cwd=work, env=env, capture_output=True, text=True,
            timeout=120,
        )
        assert result.returncode != 0 and "authentication required" in result.stderr
        # and the Python client with the README's certificates
        tok = issuer_server.issuer.token("anna", ["monailabel-user"])
        with MonaiLabelClient(running.address, ca_file=certs / "ca.pem", cert_file=certs / "client.pem",
                              key_file=certs / "client.key", token=tok) as client:
            assert client.status().total == 3
    finally:
        running.stop(grace=1)
        issuer_server.close()
