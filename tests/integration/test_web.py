"""The browser port (``--web-port``): gRPC-Web and Connect through Envoy, CORS, and the unary upload calls.

Calls are made with ``buf curl`` (a client independent of ours) in both browser protocols, and
with plain HTTP for CORS preflights and Connect's JSON errors, against a real server whose Envoy
child process serves the browser port.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List

import grpc
import numpy as np
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2

from monailabel.datasets import write_phantoms
from monailabel_api.v1 import common_pb2, datastore_pb2, datastore_pb2_grpc, infer_pb2, infer_pb2_grpc
from monailabel_server.config import ServerConfig
from monailabel_server.server import RunningServer, start
from monailabel_server.web import cors_origins, render
from tests.integration.conftest import copy_template
from tests.integration.helpers import write_volume
from tests.integration.node_tools import buf_binary

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = "http://viewer.example.org"
OTHER = "http://elsewhere.example.com"
PROTOCOLS = ["grpcweb", "connect"]


def _buf() -> str:
    return buf_binary()


@pytest.fixture(scope="module")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("web")
    app_dir = copy_template(root / "app")
    studies = root / "studies"
    write_phantoms(studies, count=2, shape=(48, 48, 32), labeled=1)
    config = ServerConfig(app_dir=app_dir, studies=str(studies), port=0, web_port=0, max_volume_bytes=64 << 20,
                          conf={"roi_size": "32,32,32"})
    previous = os.environ.get("MONAI_LABEL_CORS_ORIGINS")
    os.environ["MONAI_LABEL_CORS_ORIGINS"] = json.dumps([ALLOWED])
    try:
        running = start(config)
    finally:
        if previous is None:
            os.environ.pop("MONAI_LABEL_CORS_ORIGINS")
        else:
            os.environ["MONAI_LABEL_CORS_ORIGINS"] = previous
    yield running
    running.stop(grace=1)


def curl(server: RunningServer, protocol: str, method: str, body: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Calls ``method`` on the browser port with buf curl; returns the response messages."""
    result = subprocess.run(
        [_buf(), "curl", "--schema", str(ROOT / "protos"), "--protocol", protocol, "-d", json.dumps(body),
         f"http://127.0.0.1:{server.web_port}/monailabel.v1.{method}"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, f"buf curl {method} ({protocol}): {result.stderr}"
    decoder, text, out = json.JSONDecoder(), result.stdout.strip(), []
    while text:
        message, end = decoder.raw_decode(text)
        out.append(message)
        text = text[end:].strip()
    return out


def curl_error(server: RunningServer, protocol: str, method: str, body: Dict[str, Any]) -> Dict[str, Any]:
    """Calls ``method`` expecting an error; returns buf curl's error object (code, message, details)."""
    result = subprocess.run(
        [_buf(), "curl", "--schema", str(ROOT / "protos"), "--protocol", protocol, "-d", json.dumps(body),
         f"http://127.0.0.1:{server.web_port}/monailabel.v1.{method}"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode != 0, result.stdout
    return json.loads(result.stderr[result.stderr.index("{"):])


def error_info(error: Dict[str, Any]) -> error_details_pb2.ErrorInfo:
    """The google.rpc.ErrorInfo among an error's details (as buf curl prints them: base64, unpadded).

    Envoy's Connect bridge names a detail's type with its full type URL, gRPC-Web with the bare name.
    """
    value = next(d["value"] for d in error["details"] if d["type"].split("/")[-1] == "google.rpc.ErrorInfo")
    return error_details_pb2.ErrorInfo.FromString(base64.b64decode(value + "=" * (-len(value) % 4)))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unary_call_tells_the_server_limits(web_server: RunningServer, protocol: str) -> None:
    (info,) = curl(web_server, protocol, "AppService/GetAppInfo", {})
    assert info["name"] and any(m["name"] == "segmentation" for m in info["models"])
    limits = info["limits"]
    assert int(limits["maxVolumeBytes"]) == 64 << 20
    assert int(limits["maxMessageBytes"]) == web_server.config.max_message_bytes
    assert limits["maxSessionTtl"] == f"{web_server.config.max_session_ttl_s}s"
    assert limits["minChunkSize"] == 64 << 10


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_server_stream_downloads_an_image(web_server: RunningServer, protocol: str) -> None:
    path = Path(web_server.app.datastore().get_image_uri("phantom_001"))
    messages = curl(web_server, protocol, "DatastoreService/DownloadImage",
                    {"imageId": "phantom_001", "chunkSize": 64 << 10})
    header, chunks = messages[0]["header"], [m["chunk"] for m in messages[1:]]
    assert len(chunks) > 1  # several messages came through the stream, in order
    data = b"".join(base64.b64decode(c["data"]) for c in chunks)
    assert [int(c.get("offset", 0)) for c in chunks] == list(range(0, len(data), 64 << 10))
    assert data == path.read_bytes()
    assert header["sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unary_upload_create_append_commit(web_server: RunningServer, protocol: str, tmp_path: Path) -> None:
    volume = tmp_path / "web.nii.gz"
    write_volume(volume, shape=(40, 40, 24), seed=11)
    data = volume.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    image_id = f"web_{protocol}"
    (created,) = curl(web_server, protocol, "DatastoreService/CreateUpload", {"image": {
        "imageId": image_id, "info": {"source": "browser"},
        "content": {"encoding": "ENCODING_NIFTI_GZ", "totalSize": str(len(data)), "sha256": digest}}})
    upload_id = created["uploadId"]
    assert created["maxChunkSize"] > 0 and created["expireTime"]
    half = len(data) // 2
    (first,) = curl(web_server, protocol, "DatastoreService/AppendUploadChunk",
                    {"uploadId": upload_id, "chunk": {"offset": "0", "data": base64.b64encode(data[:half]).decode()}})
    assert int(first["committedSize"]) == half and int(first["totalSize"]) == len(data)
    # a chunk sent again (its answer was lost): OUT_OF_RANGE, telling where to go on
    first_chunk = {"offset": "0", "data": base64.b64encode(data[:half]).decode()}
    again = curl_error(web_server, protocol, "DatastoreService/AppendUploadChunk",
                       {"uploadId": upload_id, "chunk": first_chunk})
    assert again["code"] == "out_of_range"
    info = error_info(again)
    assert info.reason == "UPLOAD_OFFSET_MISMATCH" and info.metadata["committed_size"] == str(half)
    # committing before the last bytes is refused, and the upload stays
    early = curl_error(web_server, protocol, "DatastoreService/CommitUpload", {"uploadId": upload_id})
    assert early["code"] == "failed_precondition" and error_info(early).reason == "UPLOAD_INCOMPLETE"
    curl(web_server, protocol, "DatastoreService/AppendUploadChunk",
         {"uploadId": upload_id, "chunk": {"offset": str(half), "data": base64.b64encode(data[half:]).decode()}})
    (committed,) = curl(web_server, protocol, "DatastoreService/CommitUpload", {"uploadId": upload_id})
    image = committed["image"]
    assert image["imageId"] == image_id and image["sha256"] == digest and image["info"]["source"] == "browser"
    stored = Path(web_server.app.datastore().get_image_uri(image_id))
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == digest
    # the upload is gone once committed
    gone = curl_error(web_server, protocol, "DatastoreService/CommitUpload", {"uploadId": upload_id})
    assert gone["code"] == "not_found"


def _preflight(server: RunningServer, origin: str) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.web_port}/monailabel.v1.DatastoreService/ListImages", method="OPTIONS",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type,x-grpc-web,x-user-agent"},
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        return reply


def test_cors_preflight_allows_the_configured_origin_only(web_server: RunningServer) -> None:
    allowed = _preflight(web_server, ALLOWED)
    assert allowed.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "x-grpc-web" in allowed.headers["Access-Control-Allow-Headers"]
    assert "POST" in allowed.headers["Access-Control-Allow-Methods"]
    refused = _preflight(web_server, OTHER)
    assert refused.headers.get("Access-Control-Allow-Origin") is None


def test_connect_errors_carry_google_rpc_details(web_server: RunningServer) -> None:
    """A Connect unary call (binary codec, as a browser sends it): the error is Connect's JSON, with details."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{web_server.web_port}/monailabel.v1.DatastoreService/CommitUpload", method="POST",
        data=datastore_pb2.CommitUploadRequest(upload_id="0" * 32).SerializeToString(),
        headers={"Content-Type": "application/proto", "Connect-Protocol-Version": "1", "Origin": ALLOWED},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 404
    assert caught.value.headers["Access-Control-Allow-Origin"] == ALLOWED
    body = json.loads(caught.value.read())
    assert body["code"] == "not_found" and "upload_id" in body["message"]
    assert any(d["type"].split("/")[-1] == "google.rpc.ResourceInfo" for d in body["details"])


def test_inline_inference_and_session_from_a_volume_upload(web_server: RunningServer, tmp_path: Path) -> None:
    """The browser's InferVolume and CreateSession: a volume upload, then Infer or OpenSession by its id."""
    volume = tmp_path / "v.nii.gz"
    write_volume(volume, shape=(40, 40, 24), seed=3)
    data = volume.read_bytes()
    with grpc.insecure_channel(web_server.address) as channel:
        ds, infer = datastore_pb2_grpc.DatastoreServiceStub(channel), infer_pb2_grpc.InferServiceStub(channel)

        def upload() -> str:
            created = ds.CreateUpload(datastore_pb2.CreateUploadRequest(volume=common_pb2.ContentHeader(
                encoding=common_pb2.ENCODING_NIFTI_GZ, total_size=len(data), sha256=hashlib.sha256(data).hexdigest())))
            step = 16 << 10
            for offset in range(0, len(data), step):
                chunk = common_pb2.Chunk(offset=offset, data=data[offset:offset + step])
                ds.AppendUploadChunk(datastore_pb2.AppendUploadChunkRequest(upload_id=created.upload_id, chunk=chunk))
            return created.upload_id

        upload_id = upload()
        with pytest.raises(grpc.RpcError) as caught:  # a volume is not stored in the datastore
            ds.CommitUpload(datastore_pb2.CommitUploadRequest(upload_id=upload_id))
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        responses = list(infer.Infer(infer_pb2.InferRequest(
            model="segmentation", upload_id=upload_id,
            output=infer_pb2.OutputOptions(encoding=common_pb2.ENCODING_RAW))))
        result = responses[0].result
        mask = b"".join(r.chunk.data for r in responses[1:])
        assert list(result.mask.shape) == [40, 40, 24] and len(mask) == result.mask.total_size
        assert hashlib.sha256(mask).hexdigest() == result.mask.sha256
        assert set(np.unique(np.frombuffer(mask, np.uint8))) <= {0, 1}
        with pytest.raises(grpc.RpcError) as caught:  # consumed by the call
            list(infer.Infer(infer_pb2.InferRequest(model="segmentation", upload_id=upload_id)))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND

        ttl = duration_pb2.Duration(seconds=60)
        session = infer.OpenSession(infer_pb2.OpenSessionRequest(upload_id=upload(), ttl=ttl)).session
        assert list(session.shape) == [40, 40, 24] and session.session_id
        infer.DeleteSession(infer_pb2.DeleteSessionRequest(session_id=session.session_id))


def test_reflection_answers_v1_and_v1alpha(web_server: RunningServer) -> None:
    """Tools that ask for reflection v1 (current buf, grpcurl) and older ones (v1alpha) both list the API."""
    for protocol in ("grpc-v1", "grpc-v1alpha"):
        result = subprocess.run(
            [_buf(), "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--reflect-protocol", protocol,
             "--list-methods",
             f"http://{web_server.address}"], capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stderr
        assert "monailabel.v1.DatastoreService/CreateUpload" in result.stdout.split()


def test_sidecar_config_renders_for_envoy(tmp_path: Path) -> None:
    """The template renders for a sidecar (a DNS name upstream) and Envoy accepts it."""
    config = tmp_path / "envoy.yaml"
    config.write_text(render("monailabel", 50051, "0.0.0.0", 8080, cors_origins("http://a.example, http://b.example")))
    from monailabel_server.web import envoy_binary

    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(config)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "LOGICAL_DNS" in config.read_text() and '"exact": "http://b.example"' in config.read_text()
    with pytest.raises(ValueError, match="not an origin"):
        cors_origins("viewer.example.org/path")
    assert cors_origins("") == ["*"] and cors_origins('["http://x.org/"]') == ["http://x.org"]


def test_start_server_web_port_serves_browsers_and_stops_envoy_with_itself(tmp_path: Path) -> None:
    """``monailabel start_server --web-port 0`` as a user runs it: Envoy starts with it and ends with it."""
    app = copy_template(tmp_path / "app")
    studies = tmp_path / "studies"
    write_phantoms(studies, count=1, shape=(32, 32, 16), labeled=0)
    proc = subprocess.Popen(
        [sys.executable, "-m", "monailabel_server", "start_server", "--app", str(app), "--studies", str(studies),
         "--port", "0", "--web-port", "0", "--conf", "roi_size", "32,32,32"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    assert proc.stdout is not None
    children: Dict[int, str] = {}
    try:
        web = ""
        for line in proc.stdout:  # the gRPC port's line, then the browser port's
            if "browser port" in line:
                web = line.strip().rsplit(":", 1)[1]
                break
        assert web, "the server prints the browser port it picked"
        children = _children(proc.pid)
        assert any("envoy" in name for name in children.values()), children
        result = subprocess.run(
            [_buf(), "curl", "--schema", str(ROOT / "protos"), "--protocol", "grpcweb",
             f"http://127.0.0.1:{web}/monailabel.v1.DatastoreService/GetDatastoreStatus"],
            capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0 and json.loads(result.stdout)["status"]["total"] == "1", result.stderr
    finally:
        proc.terminate()
        proc.stdout.close()
        assert proc.wait(timeout=60) == 0
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text(), \
            "Envoy stopped with the server"


def _children(pid: int) -> Dict[int, str]:
    """The child processes of ``pid`` and their names (Linux /proc)."""
    out: Dict[int, str] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            out[int(child)] = Path(f"/proc/{child}/comm").read_text().strip()
    return out
