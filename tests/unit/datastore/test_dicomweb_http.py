"""The DICOMweb datastore against a scripted HTTP server: auth headers, and how PACS failures read."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from monailabel.datastore.dicomweb import DICOMWebDatastore, create_dicomweb_client
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException


class _Pacs(ThreadingHTTPServer):
    """Answers every GET with ``status`` (and ``[]`` for 200), recording the Authorization headers."""

    status = 200
    seen: List[Tuple[str, str]]


class _Handler(BaseHTTPRequestHandler):
    server: _Pacs

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.server.seen.append((self.path, self.headers.get("Authorization", "")))
        body = b"[]" if self.server.status == 200 else b"no"
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def pacs() -> Iterator[_Pacs]:
    server = _Pacs(("127.0.0.1", 0), _Handler)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _store(pacs: _Pacs, tmp_path: Path, **auth: str) -> DICOMWebDatastore:
    url = f"http://127.0.0.1:{pacs.server_address[1]}/dicom-web"
    return DICOMWebDatastore(create_dicomweb_client(url, timeout_s=5, **auth), {"Modality": "CT"},
                             cache_path=str(tmp_path))


def test_bearer_token_and_search_filter_reach_the_pacs(pacs: _Pacs, tmp_path: Path) -> None:
    store = _store(pacs, tmp_path, token="t0ken")
    assert store.list_images() == [] and store.status()["total"] == 0
    path, auth = pacs.seen[0]
    assert auth == "Bearer t0ken"
    assert path.startswith("/dicom-web/series") and "Modality=CT" in path


def test_basic_auth_header(pacs: _Pacs, tmp_path: Path) -> None:
    _store(pacs, tmp_path, username="alice", password="pw").list_images()
    assert pacs.seen[0][1] == "Basic YWxpY2U6cHc="  # base64 of alice:pw


@pytest.mark.parametrize(
    "status, error, reason",
    [
        (503, MONAILabelError.UNAVAILABLE, "PACS_UNAVAILABLE"),
        (500, MONAILabelError.UNAVAILABLE, "PACS_UNAVAILABLE"),
        (401, MONAILabelError.PRECONDITION_FAILED, "PACS_AUTH_FAILED"),
        (400, MONAILabelError.PRECONDITION_FAILED, "PACS_REJECTED"),
    ],
)
def test_pacs_failures_become_typed_errors(pacs: _Pacs, tmp_path: Path, status: int, error, reason: str) -> None:
    pacs.status = status
    with pytest.raises(MONAILabelException) as info:
        _store(pacs, tmp_path).list_images()
    assert info.value.error == error and info.value.reason == reason
    if error == MONAILabelError.UNAVAILABLE:
        assert info.value.retry_after_s and info.value.retry_after_s > 0
