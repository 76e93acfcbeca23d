"""Model weights and their versions, free of protobuf (ModelService converts).

A model's weights are the file its infer task loads now (the last existing of the task's ``path``;
for a trainer without an infer task, the file it publishes). Versions are what train jobs published:
each successful publish records its version number and the SHA-256 and size of the published bytes in
the job store, so the list survives restarts. Only the current file exists on disk (a publish
replaces it atomically), so only it can be downloaded.

A download hashes and streams the same open file: a publish during the download renames a new file
into place and leaves the open one whole, so the bytes always match the announced checksum.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import IO, Iterator, List, Optional, Tuple

from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel_server.jobs import JobManager
from monailabel_server.jobs.store import SUCCEEDED, TRAIN
from monailabel_server.validation import check_model_name

__all__ = ["ModelCore", "ModelFileView", "ModelVersionView", "MAX_VERSIONS", "file_chunks"]

#: Published versions listed at most (newest first).
MAX_VERSIONS = 1000
_BLOCK = 1 << 20


@dataclass
class ModelFileView:
    """A model file as the API shows it (a file name, never a path)."""

    model: str
    file_name: str
    size: int
    sha256: str
    modify_time: float
    version: int


@dataclass
class ModelVersionView:
    """A version a train job published."""

    version: int
    job_id: str
    publish_time: Optional[float]
    sha256: str
    size: int
    current: bool


def _sha256(handle: IO[bytes]) -> Tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    handle.seek(0)
    for block in iter(lambda: handle.read(_BLOCK), b""):
        digest.update(block)
        size += len(block)
    handle.seek(0)
    return digest.hexdigest(), size


class ModelCore:
    """Lists and streams the app's model weights.

    Args:
        app: the app.
        jobs: the job manager (its store records what train jobs published).
    """

    def __init__(self, app: MONAILabelApp, jobs: JobManager) -> None:
        self.app = app
        self.jobs = jobs

    def names(self) -> List[str]:
        """The models: infer tasks and trainers."""
        return sorted({*self.app.infer_tasks(), *self.app.trainers()})

    def _path(self, model: str) -> Optional[str]:
        """The file ``model``'s infer task loads now (else its trainer publishes), if it exists."""
        task = self.app.infer_tasks().get(model)
        get_path = getattr(task, "get_path", None)
        path = get_path() if callable(get_path) else None
        if not path:
            path = getattr(self.app.trainers().get(model), "_publish_path", None)
        return str(path) if path and os.path.isfile(path) else None

    def versions(self, model: str) -> List[ModelVersionView]:
        """The versions train jobs published for ``model``, newest first (``current`` is not set here)."""
        jobs = self.jobs.list(0, MAX_VERSIONS, model, TRAIN, SUCCEEDED)
        out = []
        for job in jobs:
            if job.published_version:
                digest = job.result if isinstance(job.result, dict) else {}
                out.append(ModelVersionView(job.published_version, job.job_id, job.end_time,
                                            str(digest.get("sha256") or ""), int(digest.get("size") or 0), False))
        return sorted(out, key=lambda v: v.version, reverse=True)

    def list_versions(self, model: str) -> Tuple[Optional[ModelFileView], List[ModelVersionView]]:
        """The current file (None without one) and the published versions, newest first.

        Raises:
            MONAILabelException: INVALID_INPUT without a name, NOT_FOUND for an unknown model.
        """
        check_model_name(model, "model", self.names())
        versions = self.versions(model)
        path = self._path(model)
        if path is None:
            return None, versions
        with open(path, "rb") as handle:
            current = self._view(model, path, handle, versions)
        return current, versions

    def _view(self, model: str, path: str, handle: IO[bytes], versions: List[ModelVersionView]) -> ModelFileView:
        sha256, size = _sha256(handle)
        version = 0
        for v in versions:  # newest first: the latest version that published these bytes
            if v.sha256 == sha256:
                v.current = True
                version = v.version
                break
        return ModelFileView(model, os.path.basename(path), size, sha256, os.fstat(handle.fileno()).st_mtime, version)

    def open(self, model: str) -> Tuple[ModelFileView, IO[bytes]]:
        """Opens the current file of ``model`` for a download: its view (hashed) and the open file at 0.

        The caller closes the file.

        Raises:
            MONAILabelException: INVALID_INPUT without a name, NOT_FOUND for an unknown model or one
                without a file (random weights).
        """
        check_model_name(model, "model", self.names())
        path = self._path(model)
        if path is None:
            raise MONAILabelException(MONAILabelError.NOT_FOUND,
                                      f"model {model!r} has no weights file yet (random weights): train it or "
                                      "put its checkpoint in the app's model folder", resource=("model file", model))
        handle = open(path, "rb")
        try:
            return self._view(model, path, handle, self.versions(model)), handle
        except BaseException:
            handle.close()
            raise


def file_chunks(handle: IO[bytes], size: int, chunk_size: int) -> Iterator[Tuple[int, bytes]]:
    """Yields ``(offset, bytes)`` of the first ``size`` bytes of an open file, ``chunk_size`` at a time."""
    offset = 0
    while offset < size:
        data = handle.read(min(chunk_size, size - offset))
        if not data:
            raise MONAILabelException(MONAILabelError.CONFLICT, "the file was cut short while it was sent; try again")
        yield offset, data
        offset += len(data)
