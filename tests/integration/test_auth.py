"""Authentication and authorization over real ports: a local OIDC issuer (discovery, JWKS, Keycloak realm
document) and a server with ``MONAI_LABEL_AUTH_ENABLE`` on; every RPC of every service called with
every role; forged, stale and foreign tokens; key rotation; an unreachable IdP; identity in the data;
the audit log."""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib
import json
import pkgutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import grpc
import numpy as np
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc

import monailabel_api.v1 as api
from monailabel.datasets import write_phantoms
from monailabel.interfaces.exception import MONAILabelException
from monailabel_api.v1 import app_pb2, app_pb2_grpc, datastore_pb2, job_pb2
from monailabel_client import MonaiLabelClient
from monailabel_server.auth import AuthSettings, TokenVerifier
from monailabel_server.auth.tokens import RealmKeys
from monailabel_server.config import ServerConfig
from monailabel_server.server import RunningServer, start

from .conftest import copy_template
from .helpers import error_info
from .oidc import Issuer, IssuerServer, new_key

AUDIENCE = "monailabel-app"
ROLE_NAMES = {
    "user": "monailabel-user",
    "annotator": "monailabel-annotator",
    "reviewer": "monailabel-reviewer",
    "admin": "monailabel-admin",
}
# every service of the API, found by walking its package (a new service is covered without a change here)
SERVICES: List[ServiceDescriptor] = [
    service
    for info in pkgutil.iter_modules(api.__path__) if info.name.endswith("_pb2")
    for service in importlib.import_module(f"{api.__name__}.{info.name}").DESCRIPTOR.services_by_name.values()
]
# MONAI Label's matrix, written out independently of the server's table
ADMIN_ONLY = {"DeleteImage", "DeleteLabel", "StartTrainJob", "StartTrainJobs", "TailLogs", "GetGpuInfo"}
ANNOTATOR_UP = {
    "UploadImage", "GetUploadStatus", "SaveLabel", "UpdateImageInfo", "UpdateLabelInfo",
    "StartScoringJob", "StartScoringJobs", "StartBatchInferJob",
    "CancelJob",  # cancelling a training job needs admin: test_training_cancel_needs_admin
    "CreateUpload", "AppendUploadChunk", "CommitUpload", "DeleteUpload",
}
RANK = {"none": 0, "user": 1, "annotator": 2, "reviewer": 3, "admin": 4}


def _needed_rank(method: str) -> int:
    return 4 if method in ADMIN_ONLY else 2 if method in ANNOTATOR_UP else 1


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    served = IssuerServer()
    yield served.issuer
    served.close()


def _start(root: Path, settings: AuthSettings, **config: Any) -> RunningServer:
    app_dir = copy_template(root / "app")
    studies = root / "studies"
    write_phantoms(studies, count=3, shape=(32, 32, 16), labeled=1)
    return start(ServerConfig(app_dir=app_dir, studies=str(studies), port=0, conf={"roi_size": "32,32,32"},
                              auth=settings, **config))


@pytest.fixture(scope="module")
def server(issuer: Issuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    settings = AuthSettings(enable=True, realm_uri=issuer.realm_uri, timeout=5, audience=AUDIENCE)
    running = _start(tmp_path_factory.mktemp("auth"), settings)
    yield running
    running.stop(grace=1)


@pytest.fixture(scope="module")
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as ch:
        yield ch


def token(issuer: Issuer, role: str, username: Optional[str] = None, **kw: Any) -> str:
    roles = [ROLE_NAMES[role]] if role in ROLE_NAMES else []
    kw.setdefault("audience", AUDIENCE)
    return issuer.token(username or f"{role}-person", roles, **kw)


def bearer(tok: str) -> List[Tuple[str, str]]:
    return [("authorization", f"Bearer {tok}")]


def call(channel: grpc.Channel, service: ServiceDescriptor, method: MethodDescriptor,
         metadata: List[Tuple[str, str]]) -> grpc.StatusCode:
    """Calls an RPC with an empty request (a one-message stream for streaming requests)."""
    path = f"/{service.full_name}/{method.name}"
    request = message_factory.GetMessageClass(method.input_type)()
    ser, de = (lambda m: m.SerializeToString()), (lambda b: b)
    try:
        if method.client_streaming and method.server_streaming:
            list(channel.stream_stream(path, ser, de)(iter([request]), metadata=metadata, timeout=20))
        elif method.client_streaming:
            channel.stream_unary(path, ser, de)(iter([request]), metadata=metadata, timeout=20)
        elif method.server_streaming:
            list(channel.unary_stream(path, ser, de)(request, metadata=metadata, timeout=20))
        else:
            channel.unary_unary(path, ser, de)(request, metadata=metadata, timeout=20)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def info_call(channel: grpc.Channel, metadata: List[Tuple[str, str]]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        app_pb2_grpc.AppServiceStub(channel).GetAppInfo(app_pb2.GetAppInfoRequest(), metadata=metadata, timeout=20)
    return err.value


# -- the role matrix --------------------------------------------------------------------------------
def test_every_rpc_allows_exactly_the_roles_that_rank_high_enough(issuer: Issuer, channel: grpc.Channel) -> None:
    methods = [(s, m) for s in SERVICES for m in s.methods]
    assert len(methods) >= 25
    tokens = {role: token(issuer, role) for role in RANK}
    wrong: List[str] = []
    for service, method in methods:
        for role, tok in tokens.items():
            code = call(channel, service, method, bearer(tok))
            allowed = RANK[role] >= _needed_rank(method.name)
            if allowed and code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
                wrong.append(f"{role} denied {method.full_name} ({code.name})")
            if not allowed and code != grpc.StatusCode.PERMISSION_DENIED:
                wrong.append(f"{role} not denied {method.full_name} ({code.name})")
        code = call(channel, service, method, [])
        if code != grpc.StatusCode.UNAUTHENTICATED:
            wrong.append(f"no token: {method.full_name} gave {code.name}")
    assert not wrong, "\n".join(wrong)


def test_denial_names_the_role_needed(issuer: Issuer, channel: grpc.Channel) -> None:
    stub = channel.unary_unary("/monailabel.v1.DatastoreService/DeleteImage",
                               datastore_pb2.DeleteImageRequest.SerializeToString,
                               datastore_pb2.DeleteImageResponse.FromString)
    with pytest.raises(grpc.RpcError) as err:
        stub(datastore_pb2.DeleteImageRequest(image_id="phantom_000"),
             metadata=bearer(token(issuer, "annotator", "anna")), timeout=20)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "monailabel-admin" in err.value.details() and "anna" in err.value.details()
    info = error_info(err.value)
    assert info.reason == "MISSING_ROLE" and info.metadata["role"] == "monailabel-admin"


def test_health_stays_open_and_reflection_is_off_with_auth(channel: grpc.Channel) -> None:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=20)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflect = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                    lambda b: b, lambda b: b)
    with pytest.raises(grpc.RpcError) as err:
        list(reflect(iter([b""]), timeout=20))
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


# -- tokens that must not pass ----------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(issuer: Issuer) -> Dict[str, Any]:
    now = int(time.time())
    return {"iss": issuer.realm_uri, "aud": AUDIENCE, "sub": "x", "preferred_username": "mallory",
            "exp": now + 300, "iat": now, "realm_access": {"roles": [ROLE_NAMES["admin"]]}}


def _unsigned(issuer: Issuer) -> str:
    header = {"alg": "none", "typ": "JWT", "kid": issuer.keys[0].kid}
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(_claims(issuer)).encode())}."


def _hs256_with_public_key(issuer: Issuer) -> str:
    header = {"alg": "HS256", "typ": "JWT", "kid": issuer.keys[0].kid}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(_claims(issuer)).encode())}"
    mac = hmac.new(issuer.keys[0].public_pem(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("expired", "TOKEN_EXPIRED"),
        ("not_yet_valid", "TOKEN_NOT_YET_VALID"),
        ("wrong_issuer", "TOKEN_ISSUER"),
        ("wrong_audience", "TOKEN_AUDIENCE"),
        ("alg_none", "TOKEN_ALGORITHM"),
        ("hs256_public_key", "TOKEN_ALGORITHM"),
        ("unknown_kid", "UNKNOWN_SIGNING_KEY"),
        ("bad_signature", "TOKEN_SIGNATURE"),
        ("malformed", "TOKEN_MALFORMED"),
    ],
)
def test_bad_tokens_are_unauthenticated(issuer: Issuer, channel: grpc.Channel, case: str, reason: str) -> None:
    admin = ROLE_NAMES["admin"]
    now = time.time()
    tokens = {
        "expired": lambda: issuer.token("mallory", [admin], audience=AUDIENCE, lifetime=-120),
        "not_yet_valid": lambda: issuer.token("mallory", [admin], audience=AUDIENCE, not_before=now + 600),
        "wrong_issuer": lambda: issuer.token("mallory", [admin], audience=AUDIENCE,
                                             issuer="http://127.0.0.1:1/realms/other"),
        "wrong_audience": lambda: issuer.token("mallory", [admin], audience="another-app"),
        "alg_none": lambda: _unsigned(issuer),
        "hs256_public_key": lambda: _hs256_with_public_key(issuer),
        "unknown_kid": lambda: issuer.token("mallory", [admin], audience=AUDIENCE, key=new_key()),
        # signed by a key of our own, claiming the realm's key id
        "bad_signature": lambda: issuer.token("mallory", [admin], audience=AUDIENCE,
                                              key=new_key(issuer.keys[0].kid)),
        "malformed": lambda: "not-a-jwt",
    }
    err = info_call(channel, bearer(tokens[case]()))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED, err.details()
    assert error_info(err).reason == reason


def test_missing_or_non_bearer_authorization_is_unauthenticated(issuer: Issuer, channel: grpc.Channel) -> None:
    err = info_call(channel, [])
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED and "Bearer" in err.details()
    err = info_call(channel, [("authorization", "Basic YWxpY2U6c2VjcmV0")])
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


def test_keycloak_realm_public_key_verifies_tokens_without_a_key_id(issuer: Issuer, channel: grpc.Channel) -> None:
    tok = token(issuer, "user", kid=None)
    reply = app_pb2_grpc.AppServiceStub(channel).GetAppInfo(app_pb2.GetAppInfoRequest(), metadata=bearer(tok),
                                                            timeout=20)
    assert reply.name


# -- identity in the data -------------------------------------------------------------------------
def test_uploads_labels_and_leases_carry_the_token_user(issuer: Issuer, server: RunningServer,
                                                        tmp_path: Path) -> None:
    from .helpers import write_volume

    path = tmp_path / "scan.nii.gz"
    write_volume(path, shape=(32, 32, 16))
    anna = token(issuer, "annotator", "anna")
    with MonaiLabelClient(server.address, token=anna, timeout=60) as client:
        image = client.upload_image("anna_scan", path, info={"user": "mallory", "site": "ward 3"})
        assert image.info["user"] == "anna" and image.info["site"] == "ward 3"
        mask = np.zeros((32, 32, 16), dtype=np.uint8)
        mask[4:9, 4:9, 2:6] = 1
        label = client.save_label("anna_scan", mask, tag="draft", info={"user": "mallory"})
        assert label.info["user"] == "anna"
        sample = client.next_sample("random", client_id="someone-else")
        assert sample.found
        assert sample.sample.client_id == "anna", "the lease is the token user's, whatever client id is sent"


# -- the audit log ---------------------------------------------------------------------------------
def test_state_changes_and_denials_are_audited(issuer: Issuer, server: RunningServer, tmp_path: Path) -> None:
    from .helpers import write_volume

    path = tmp_path / "scan.nii.gz"
    write_volume(path, shape=(32, 32, 16))
    with MonaiLabelClient(server.address, token=token(issuer, "annotator", "audrey"), timeout=60) as client:
        client.upload_image("audited_scan", path)
    with MonaiLabelClient(server.address, token=token(issuer, "user", "ursula"), timeout=60) as client:
        with pytest.raises(grpc.RpcError):
            client.delete_image("audited_scan")
        client.list_images()  # a read: not audited
    with MonaiLabelClient(server.address, token=token(issuer, "admin", "adam"), timeout=60) as client:
        client.delete_image("audited_scan")
    assert server.audit is not None
    records = [json.loads(line) for line in server.audit.path.read_text().splitlines()]
    mine = [r for r in records if r["resource"] == "image/audited_scan"]
    assert [(r["user"], r["rpc"].rsplit("/", 1)[1], r["outcome"]) for r in mine] == [
        ("audrey", "UploadImage", "OK"),
        ("ursula", "DeleteImage", "PERMISSION_DENIED"),
        ("adam", "DeleteImage", "OK"),
    ]
    for r in mine:
        assert r["time"].endswith("+00:00") and r["peer"]
    assert "monailabel-admin" in mine[1]["detail"]
    assert not any(r["rpc"].endswith("/ListImages") for r in records)


# -- key rotation, unreachable realm ------------------------------------------------------------------
def test_rotated_keys_are_picked_up_and_retired_keys_rejected(issuer: Issuer, channel: grpc.Channel) -> None:
    old = issuer.keys[0]
    before = token(issuer, "user", key=old)
    stub = app_pb2_grpc.AppServiceStub(channel)
    stub.GetAppInfo(app_pb2.GetAppInfoRequest(), metadata=bearer(before), timeout=20)
    fetched = len(issuer.requests)
    issuer.rotate()
    after = token(issuer, "user")
    assert stub.GetAppInfo(app_pb2.GetAppInfoRequest(), metadata=bearer(after), timeout=20).name
    assert len(issuer.requests) > fetched, "an unknown key id makes the server fetch the keys again"
    err = info_call(channel, bearer(before))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED and error_info(err).reason == "UNKNOWN_SIGNING_KEY"


def test_unreachable_realm_fails_fast_with_unavailable(tmp_path: Path) -> None:
    # a socket that accepts connections and never answers: the worst kind of IdP outage
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    realm = f"http://127.0.0.1:{silent.getsockname()[1]}/realms/monailabel"
    running = _start(tmp_path, AuthSettings(enable=True, realm_uri=realm, timeout=1))
    try:
        with grpc.insecure_channel(running.address) as ch:
            began = time.monotonic()
            err = info_call(ch, bearer("a.b.c"))
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED  # malformed: no realm needed
            issuer = Issuer()
            issuer.port = silent.getsockname()[1]
            err = info_call(ch, bearer(issuer.token("alice", [ROLE_NAMES["admin"]])))
            elapsed = time.monotonic() - began
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        assert "identity provider unreachable" in err.details()
        assert elapsed < 8, f"the IdP timeout (1 s) bounds the call, took {elapsed:.1f} s"
        # calls arriving together share one timeout instead of queueing for one each
        tok = issuer.token("alice", [ROLE_NAMES["admin"]])
        with grpc.insecure_channel(running.address) as ch, ThreadPoolExecutor(6) as pool:
            began = time.monotonic()
            codes = list(pool.map(lambda _: info_call(ch, bearer(tok)).code(), range(6)))
            elapsed = time.monotonic() - began
        assert codes == [grpc.StatusCode.UNAVAILABLE] * 6
        assert elapsed < 4, f"six concurrent calls took {elapsed:.1f} s with a 1 s IdP timeout"
    finally:
        running.stop(grace=1)
        silent.close()


def test_training_start_and_model_publish_are_audited(issuer: Issuer, server: RunningServer) -> None:
    with MonaiLabelClient(server.address, token=token(issuer, "admin", "adam"), timeout=60) as client:
        job = client.start_train("segmentation", max_epochs=1, val_split=0.0, device="cpu",
                                 extra={"pretrained": False})
        list(client.watch_job(job.job_id, timeout=300))
        done = client.get_job(job.job_id)
    assert done.state == job_pb2.JOB_STATE_SUCCEEDED, (done.error, list(done.last_log_lines))
    # test_training_cancel_needs_admin: CancelJob is annotator's for scoring jobs, admin's for training
    with MonaiLabelClient(server.address, token=token(issuer, "annotator", "anna"), timeout=60) as client:
        with pytest.raises(grpc.RpcError) as denied:
            client.cancel_job(job.job_id)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED, denied.value.details()
    assert server.audit is not None
    records = [json.loads(line) for line in server.audit.path.read_text().splitlines()]
    mine = [r for r in records if r.get("job_id") == job.job_id]
    assert [(r["user"], r["rpc"], r["resource"], r["outcome"]) for r in mine] == [
        ("adam", "monailabel.v1.TrainService/StartTrainJob", "model/segmentation", "OK"),
        ("system", "publish", "model/segmentation", "OK"),
    ]
    assert mine[1]["version"] == done.published_version >= 1


def test_made_up_key_ids_cannot_flood_the_realm(issuer: Issuer) -> None:
    keys = RealmKeys(AuthSettings(enable=True, realm_uri=issuer.realm_uri, timeout=5))
    assert keys.key_for(issuer.keys[0].kid) is not None
    fetched = len(issuer.requests)
    for i in range(40):
        with pytest.raises(MONAILabelException) as err:
            keys.key_for(f"made-up-{i}")
        assert err.value.reason == "UNKNOWN_SIGNING_KEY"
    documents_per_refresh = 3  # discovery, JWKS, realm document
    assert len(issuer.requests) - fetched <= 10 * documents_per_refresh, "at most 10 refreshes a minute"


def test_the_client_calls_a_token_function_per_call(issuer: Issuer, server: RunningServer) -> None:
    issued: List[str] = []

    def fresh() -> str:
        issued.append(token(issuer, "user", "ulla"))
        return issued[-1]

    with MonaiLabelClient(server.address, token=fresh, timeout=60) as client:
        client.info()
        client.status()
    assert len(issued) == 2


def test_a_keycloak_realm_without_discovery_is_read_as_monai_label_reads_it() -> None:
    served = IssuerServer(Issuer(discovery=False))
    try:
        issuer = served.issuer
        verifier = TokenVerifier(AuthSettings(enable=True, realm_uri=issuer.realm_uri, timeout=5))
        who = verifier.verify(issuer.token("kim", [ROLE_NAMES["reviewer"]]))  # Keycloak's tokens name a kid
        assert (who.username, who.email) == ("kim", "kim@hospital.example")
        assert who.roles == frozenset({ROLE_NAMES["reviewer"]})
        assert not any("openid-connect/certs" in r for r in issuer.requests)
        with pytest.raises(MONAILabelException) as err:
            verifier.verify(issuer.token("kim", [], key=new_key(issuer.keys[0].kid)))
        assert err.value.reason == "TOKEN_SIGNATURE"
    finally:
        served.close()
