"""XXH3-128 digests of stored files, for downloads that announce one.

A download's header is sent before its bytes, so its checksum must be known up front. An upload
computes the file's XXH3-128 as it arrives and remembers it here; another file (found by a scan,
written by a job, or stored by another replica) is hashed once on its first download, at memory
speed. Entries are keyed by the file's identity (device, inode, size, modification time), which a
rename into the datastore keeps and any rewrite changes, so a stale digest is never announced.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Tuple

from monailabel_api.digests import XXH3_128, Digests

__all__ = ["FileDigests", "FILE_DIGESTS"]

_Key = Tuple[int, int, int, int]
_READ = 4 << 20


def _key(st: os.stat_result) -> _Key:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class FileDigests:
    """A bounded map from a file's identity to its XXH3-128.

    Args:
        max_entries: digests kept (least recently used go first).
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[_Key, str] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, path: Path, xxh3_128: str) -> None:
        """Records the digest of a file as it is now."""
        try:
            key = _key(os.stat(path))
        except OSError:
            return
        self._put(key, xxh3_128)

    def xxh3_128(self, path: Path) -> str:
        """The file's XXH3-128: remembered, or computed (and remembered) now."""
        fd = os.open(path, os.O_RDONLY)
        try:
            key = _key(os.fstat(fd))
            with self._lock:
                found = self._entries.get(key)
                if found is not None:
                    self._entries.move_to_end(key)
                    return found
            digests, buf, pos = Digests([XXH3_128]), bytearray(_READ), 0
            view = memoryview(buf)
            while n := os.preadv(fd, [view], pos):
                digests.update(view[:n])
                pos += n
            digest = digests.hexdigest(XXH3_128) or ""
            if _key(os.fstat(fd)) == key:  # not rewritten while it was read
                self._put(key, digest)
            return digest
        finally:
            os.close(fd)

    def _put(self, key: _Key, digest: str) -> None:
        with self._lock:
            self._entries[key] = digest
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)


FILE_DIGESTS = FileDigests()
