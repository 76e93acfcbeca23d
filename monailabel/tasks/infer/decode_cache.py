"""A small process-wide cache of decoded images, so that repeated inference on a file skips decoding.

Labeling runs several inferences on the same image (a first pass, then corrections, other models);
decoding the file again each time is the largest cost outside the model for a typical CT. An entry
is keyed by the file (path, size, modification time) and by the loader's settings, so a changed file
or a loader configured differently misses; hits hand out clones, so transforms can't alter the entry.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any, Dict, Hashable, Optional, Sequence, Tuple

__all__ = ["DecodeCache", "decode_cache"]


def _describe(value: Any, depth: int = 0) -> Any:
    """A hashable description of a loader's settings (types and plain values, readers by class)."""
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_describe(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), _describe(v, depth + 1)) for k, v in value.items()))
    if isinstance(value, type):
        return value.__qualname__
    if depth < 6 and hasattr(value, "__dict__"):
        return (type(value).__qualname__, _describe(vars(value), depth + 1))
    return type(value).__qualname__


def _nbytes(value: Any) -> int:
    try:
        return int(value.numel() * value.element_size())
    except AttributeError:
        return int(getattr(value, "nbytes", 0))


class DecodeCache:
    """An LRU of loader outputs within a memory budget.

    Args:
        max_bytes: memory the cached images may hold; 0 turns the cache off.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, Tuple[Dict[str, Any], int]] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def key(self, loader: Any, keys: Sequence[str], data: Dict[str, Any]) -> Optional[Hashable]:
        """Returns the cache key of running ``loader`` on ``data``, or None when it can't be cached.

        Args:
            loader: a dict loader (``LoadImaged``).
            keys: the keys it will load.
            data: the data dict holding the file names.
        """
        if self.max_bytes <= 0:
            return None
        files = []
        for k in keys:
            path = data.get(k)
            if not isinstance(path, str):
                return None
            try:
                st = os.stat(path)
            except OSError:
                return None
            if not os.path.isfile(path):
                return None  # a DICOM folder: its files may change without the folder's stat changing
            files.append((k, os.path.abspath(path), st.st_size, st.st_mtime_ns))
        try:
            return (type(loader).__qualname__, _describe(vars(loader)), tuple(files))
        except TypeError:
            return None

    def get(self, key: Hashable) -> Optional[Dict[str, Any]]:
        """Returns clones of a cached loader output, or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            values = entry[0]
        return {k: v.clone() if hasattr(v, "clone") else _copy(v) for k, v in values.items()}

    def put(self, key: Hashable, values: Dict[str, Any]) -> None:
        """Stores a loader output (the values themselves: the caller must not change them afterwards)."""
        size = sum(_nbytes(v) for v in values.values())
        if size > self.max_bytes:
            return
        stored = {k: v.clone() if hasattr(v, "clone") else _copy(v) for k, v in values.items()}
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._held -= old[1]
            self._entries[key] = (stored, size)
            self._held += size
            while self._held > self.max_bytes and self._entries:
                _, (_, freed) = self._entries.popitem(last=False)
                self._held -= freed

    def clear(self) -> None:
        """Drops every entry."""
        with self._lock:
            self._entries.clear()
            self._held = 0


def _copy(value: Any) -> Any:
    import copy

    return copy.deepcopy(value)


def _budget() -> int:
    try:
        return int(os.environ.get("MONAI_LABEL_DECODE_CACHE_MB", "1024")) << 20
    except ValueError:
        return 1024 << 20


#: the process-wide cache that ``BasicInferTask`` uses (``MONAI_LABEL_DECODE_CACHE_MB``, 0 turns it off)
decode_cache = DecodeCache(_budget())
