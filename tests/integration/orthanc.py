"""A real Orthanc PACS (Debian's ``orthanc`` with its DICOMweb plugin) for tests: 127.0.0.1, temporary storage."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

ORTHANC = "/usr/sbin/Orthanc"
PLUGINS = "/usr/share/orthanc/plugins"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    """An Orthanc process; :meth:`start` waits until its DICOMweb root answers, :meth:`stop` ends it.

    Args:
        folder: where its configuration, storage and log go.
        users: ``{user: password}`` for HTTP basic auth (none: no authentication).
    """

    def __init__(self, folder: Path, users: Optional[dict] = None) -> None:
        self.folder = Path(folder)
        self.users = dict(users or {})
        self.http_port = _free_port()
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        """The HTTP root."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        """The DICOMweb root (what ``--studies`` takes)."""
        return f"{self.url}/dicom-web"

    def start(self, timeout_s: float = 30.0) -> Orthanc:
        storage = self.folder / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "monailabel-test",
            "HttpPort": self.http_port,
            "HttpBindAddress": "127.0.0.1",
            "DicomServerEnabled": False,
            "DicomPort": _free_port(),
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "Plugins": [PLUGINS],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users,
        }
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(config))
        self.log = open(self.folder / "orthanc.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([ORTHANC, str(path)], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.proc.returncode}: {self.log_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.dicomweb}/studies", timeout=2) as r:
                    if r.status == 200:
                        return self
            except urllib.error.HTTPError as exc:
                if exc.code == 401:  # up, and asking for the credentials it was given
                    return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)  # a poll of a port that is not open yet; bounded by the deadline
        self.stop()
        raise RuntimeError(f"Orthanc did not answer within {timeout_s}s")

    def log_text(self) -> str:
        return (self.folder / "orthanc.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None
        if getattr(self, "log", None) is not None:
            self.log.close()

    def get(self, path: str) -> object:
        """GETs a REST path of Orthanc's own API (JSON)."""
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as r:
            return json.loads(r.read())

    def post(self, path: str, body: bytes, content_type: str = "application/json") -> object:
        """POSTs to Orthanc's own API (``/instances`` takes a DICOM file, ``/tools/find`` a JSON query)."""
        req = urllib.request.Request(f"{self.url}{path}", data=body, headers={"Content-Type": content_type})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.folder / "storage", ignore_errors=True)
