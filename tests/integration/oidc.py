"""A local OpenID Connect issuer for the tests: an HTTP server on 127.0.0.1 (port 0) serving a realm's
discovery document, its JWKS and a Keycloak-style realm document, and signing tokens with keys made
here with ``cryptography``; and throwaway X.509 certificates for TLS and mTLS."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

REALM_PATH = "/realms/monailabel"


@dataclass
class SigningKey:
    """A key the issuer signs with, and its id."""

    kid: str
    private: Any

    def jwk(self) -> Dict[str, Any]:
        data = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key()))
        data.update(kid=self.kid, use="sig", alg="RS256")
        return data

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def new_key(kid: Optional[str] = None) -> SigningKey:
    return SigningKey(kid or uuid.uuid4().hex[:12], rsa.generate_private_key(public_exponent=65537, key_size=2048))


@dataclass
class Issuer:
    """The realm: its keys (the first one is the realm's ``public_key``), its documents and its tokens."""

    keys: List[SigningKey] = field(default_factory=lambda: [new_key()])
    discovery: bool = True
    requests: List[str] = field(default_factory=list)
    port: int = 0

    @property
    def realm_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}{REALM_PATH}"

    def documents(self) -> Dict[str, Any]:
        realm = self.realm_uri
        spki = self.keys[0].private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        docs: Dict[str, Any] = {
            REALM_PATH: {"realm": "monailabel", "public_key": base64.b64encode(spki).decode()},
        }
        if self.discovery:
            docs[REALM_PATH + "/.well-known/openid-configuration"] = {
                "issuer": realm,
                "jwks_uri": realm + "/protocol/openid-connect/certs",
                "token_endpoint": realm + "/protocol/openid-connect/token",
            }
            docs[REALM_PATH + "/protocol/openid-connect/certs"] = {"keys": [k.jwk() for k in self.keys]}
        return docs

    def rotate(self) -> SigningKey:
        """Publishes a new key in place of the current ones and returns it."""
        key = new_key()
        self.keys = [key]
        return key

    def token(
        self,
        username: str = "alice",
        roles: Sequence[str] = (),
        *,
        key: Optional[SigningKey] = None,
        kid: Optional[str] = "auto",
        algorithm: str = "RS256",
        lifetime: float = 300.0,
        not_before: Optional[float] = None,
        issuer: Optional[str] = None,
        audience: Optional[str] = "account",
        **claims: Any,
    ) -> str:
        """A token as Keycloak issues it (roles under ``realm_access.roles``)."""
        key = key or self.keys[0]
        now = time.time()
        payload: Dict[str, Any] = {
            "iss": issuer or self.realm_uri,
            "sub": f"sub-{username}",
            "preferred_username": username,
            "email": f"{username}@hospital.example",
            "name": username.title(),
            "iat": int(now),
            "exp": int(now + lifetime),
            "realm_access": {"roles": list(roles)},
            "azp": "monailabel-app",
            **claims,
        }
        if audience is not None:
            payload["aud"] = audience
        if not_before is not None:
            payload["nbf"] = int(not_before)
        headers = {"kid": key.kid if kid == "auto" else kid} if kid is not None else {}
        return jwt.encode(payload, key.private, algorithm=algorithm, headers=headers)


class _Handler(BaseHTTPRequestHandler):
    issuer: Issuer

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.issuer.requests.append(self.path)
        doc = self.issuer.documents().get(self.path.split("?")[0])
        body = json.dumps(doc).encode() if doc is not None else b'{"error": "not found"}'
        self.send_response(200 if doc is not None else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class IssuerServer:
    """Serves an :class:`Issuer` on 127.0.0.1 until closed."""

    def __init__(self, issuer: Optional[Issuer] = None) -> None:
        self.issuer = issuer or Issuer()
        handler = type("Handler", (_Handler,), {"issuer": self.issuer})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.issuer.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# -- certificates ------------------------------------------------------------------------------------
@dataclass
class CertFiles:
    cert: Path
    key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(private: Any, path: Path) -> None:
    path.write_bytes(private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))


def make_ca(folder: Path, cn: str) -> CertFiles:
    """A self-signed CA certificate and key, written as ``<cn>.pem`` and ``<cn>.key``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    files = CertFiles(folder / f"{cn}.pem", folder / f"{cn}.key")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, files.key)
    return files


def make_leaf(folder: Path, ca: CertFiles, cn: str, server: bool) -> CertFiles:
    """A certificate signed by ``ca``: a server's (for 127.0.0.1 and localhost) or a client's."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    usage = x509.oid.ExtendedKeyUsageOID.SERVER_AUTH if server else x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    files = CertFiles(folder / f"{cn}.pem", folder / f"{cn}.key")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, files.key)
    return files
