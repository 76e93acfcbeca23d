"""A folder of converted volumes (NIfTI), keyed by DICOM uid, with a size limit and a version per entry.

Each entry is ``<folder>/<key>.nii.gz`` with ``<key>.json`` beside it, which holds the fingerprint of the
DICOM objects it was built from (the sorted SOP instance uids of a series, or a SEG instance's uid). An
entry whose fingerprint differs from the PACS' is rebuilt. Builds are serialised per key across threads
and processes (the server and its training workers share the folder) with a lock file; the volume is
written under a temporary name and renamed, so a reader never sees half a file. Past the size limit the
least recently used entries go.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

__all__ = ["VolumeCache"]


class VolumeCache:
    """Converted volumes on disk.

    Args:
        folder: the cache folder (created when missing).
        max_bytes: size limit of all entries together (0 for none).
    """

    def __init__(self, folder: Path, max_bytes: int = 0) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_bytes)
        self._locks: Dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def path(self, key: str) -> Path:
        """Returns where the entry's volume lives (whether or not it exists)."""
        return self.folder / f"{key}.nii.gz"

    def meta(self, key: str) -> Optional[Dict[str, Any]]:
        """Returns the entry's sidecar (with its ``fingerprint``), or None when there is no entry."""
        try:
            meta = json.loads((self.folder / f"{key}.json").read_text())
        except (OSError, ValueError):
            return None
        return meta if self.path(key).exists() else None

    def get(
        self, key: str, fingerprint: str, build: Callable[[Path], Dict[str, Any]]
    ) -> Path:
        """Returns the entry's volume, built (or rebuilt) when missing or of another fingerprint.

        Args:
            key: the uid.
            fingerprint: the version of the DICOM objects now.
            build: ``build(tmp_path) -> extra meta``: writes the volume to ``tmp_path``.
        """
        with self._lock(key), self._file_lock(key):
            meta = self.meta(key)
            path = self.path(key)
            if meta is not None and meta.get("fingerprint") == fingerprint:
                os.utime(path)  # recently used
                return path
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".nii.gz", dir=self.folder)
            os.close(fd)
            try:
                extra = build(Path(tmp)) or {}
                digest = _sha256(Path(tmp))
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            self._write_meta(key, {**extra, "fingerprint": fingerprint, "sha256": digest, "built": time.time()})
        self.evict(keep=key)
        return path

    def put(
        self, key: str, fingerprint: str, write: Callable[[Path], None], meta: Optional[Dict[str, Any]] = None
    ) -> Path:
        """Stores a volume already at hand (a label just saved) under a fingerprint."""
        with self._lock(key), self._file_lock(key):
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".nii.gz", dir=self.folder)
            os.close(fd)
            try:
                write(Path(tmp))
                digest = _sha256(Path(tmp))
                os.replace(tmp, self.path(key))
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            self._write_meta(key, {**(meta or {}), "fingerprint": fingerprint, "sha256": digest, "built": time.time()})
        self.evict(keep=key)
        return self.path(key)

    def drop(self, key: str) -> None:
        """Removes an entry."""
        with self._lock(key), self._file_lock(key):
            self.path(key).unlink(missing_ok=True)
            (self.folder / f"{key}.json").unlink(missing_ok=True)

    def size(self) -> int:
        """Returns the bytes the entries take."""
        return sum(p.stat().st_size for p in self.folder.glob("*.nii.gz") if not p.name.startswith("."))

    def evict(self, keep: str = "") -> None:
        """Removes the least recently used entries until the cache fits its limit (never ``keep``)."""
        if self.max_bytes <= 0:
            return
        entries = []
        for p in self.folder.glob("*.nii.gz"):
            if p.name.startswith("."):
                continue
            try:
                st = p.stat()
            except OSError:
                continue
            entries.append((st.st_mtime, st.st_size, p.name[: -len(".nii.gz")]))
        total = sum(size for _, size, _ in entries)
        for _, size, key in sorted(entries):
            if total <= self.max_bytes:
                break
            if key == keep:
                continue
            self.drop(key)
            total -= size

    # -- locking ------------------------------------------------------------------------------------
    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def _file_lock(self, key: str) -> _FileLock:
        return _FileLock(self.folder / f".{key}.lock")

    def _write_meta(self, key: str, meta: Dict[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=self.folder)
        with os.fdopen(fd, "w") as f:
            json.dump(meta, f)
        os.replace(tmp, self.folder / f"{key}.json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


class _FileLock:
    """An exclusive ``flock`` on a lock file, held for a ``with`` block (other processes wait)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1

    def __enter__(self) -> _FileLock:
        self._fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
