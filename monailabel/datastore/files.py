"""File helpers of the local datastore: id checks, names, hashing, and crash-safe installs.

A file reaches its place in the datastore in two steps: it is first *prepared* as a hidden temporary
sibling of its destination (copied and fsynced, or renamed from a staging folder on the same
filesystem), then *installed* with ``os.replace``, which is atomic. Readers therefore see either the
old file or the new one, never a half-written one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.utils.others.atomic import fsync_dir

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
"""Bytes read or copied at a time."""

_FORBIDDEN = ("/", "\\", "\x00")
_SHA256_HEX = frozenset("0123456789abcdef")


def validate_id(value: str, what: str = "image id") -> str:
    """Checks that an image id or a label tag is safe to use as a file name.

    Args:
        value: the id or tag.
        what: how to call it in the error message.

    Returns:
        The value, unchanged.

    Raises:
        MONAILabelException: ``INVALID_INPUT`` when the value is empty, ``.`` or ``..``, starts with a
            dot, or contains ``/``, ``\\`` or a NUL character (path traversal protection).
    """
    if not isinstance(value, str) or not value:
        raise MONAILabelException(MONAILabelError.INVALID_INPUT, f"{what} must be a non-empty string")
    if value.startswith(".") or any(c in value for c in _FORBIDDEN):
        raise MONAILabelException(
            MONAILabelError.INVALID_INPUT,
            f"invalid {what} {value!r}: it must not start with '.' nor contain '/', '\\' or NUL",
        )
    return value


def validate_sha256(value: str) -> str:
    """Checks and normalises a hex SHA-256 digest.

    Args:
        value: 64 hexadecimal digits (either case).

    Returns:
        The digest in lower case.

    Raises:
        MONAILabelException: ``INVALID_INPUT`` when it is not 64 hexadecimal digits.
    """
    digest = value.lower()
    if len(digest) != 64 or not set(digest) <= _SHA256_HEX:
        raise MONAILabelException(MONAILabelError.INVALID_INPUT, f"sha256 must be 64 hex digits, got {value!r}")
    return digest


def split_name(name: str, extensions: Sequence[str]) -> Tuple[str, str]:
    """Splits a file name into id and extension.

    The longest configured extension that matches wins (so ``.nii.gz`` is one extension); otherwise a
    ``.gz`` suffix takes the suffix before it along, and any other name splits at its last dot.

    Args:
        name: a base name, such as ``case_01.nii.gz``.
        extensions: known extensions with their dot (``.nii.gz``, ``.nrrd``, ...).

    Returns:
        ``(id, ext)``, such as ``("case_01", ".nii.gz")``; ``ext`` is ``""`` when there is none.
    """
    for ext in sorted(extensions, key=len, reverse=True):
        if ext and name.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)], ext
    stem, ext = os.path.splitext(name)
    if ext == ".gz":
        stem, inner = os.path.splitext(stem)
        ext = inner + ext
    return (stem, ext) if stem else (name, "")


def iter_tree_files(root: Path) -> List[Path]:
    """Returns the regular files under a folder, sorted by relative path, skipping hidden entries.

    Args:
        root: the folder.
    """
    found: List[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath, f) for f in filenames if not f.startswith("."))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def stat_path(path: Path) -> Optional[Tuple[int, int]]:
    """Returns ``(size, mtime_ns)`` of a file, or of a folder's files taken together; None when absent.

    Args:
        path: a file or a folder.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    if not path.is_dir():
        return st.st_size, st.st_mtime_ns
    size, mtime = 0, st.st_mtime_ns
    for f in iter_tree_files(path):
        fst = f.stat()
        size += fst.st_size
        mtime = max(mtime, fst.st_mtime_ns)
    return size, mtime


def sha256_path(path: Path) -> str:
    """Returns the SHA-256 of a file, or of a folder.

    A folder's digest covers, for each file in sorted relative-path order, the path (POSIX form,
    UTF-8), a NUL byte, and the file's content.

    Args:
        path: a file or a folder.
    """
    digest = hashlib.sha256()
    if path.is_dir():
        for f in iter_tree_files(path):
            digest.update(f.relative_to(path).as_posix().encode() + b"\x00")
            _feed(digest, f)
    else:
        _feed(digest, path)
    return digest.hexdigest()


def _feed(digest: hashlib._Hash, file: Path) -> None:
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(CHUNK_SIZE), b""):
            digest.update(block)


def hidden_sibling(final: Path, kind: str) -> Path:
    """Returns a unique hidden path next to ``final``; scans skip hidden names, so it never shows up as data.

    Args:
        final: the destination path.
        kind: a word for the purpose (``tmp``, ``trash``).
    """
    return final.parent / f".{final.name}.{kind}-{uuid.uuid4().hex[:12]}"


def copy_file(src: Path, dest: Path, want_sha256: bool) -> Optional[str]:
    """Copies a file, flushing and fsyncing the copy, and hashing it on the way when asked.

    Args:
        src: the file to copy.
        dest: where to write (created; must not exist).
        want_sha256: compute the SHA-256 of the bytes copied.

    Returns:
        The hex digest, or None when not asked for.
    """
    digest = hashlib.sha256() if want_sha256 else None
    with open(src, "rb") as fin, open(dest, "xb") as fout:
        for block in iter(lambda: fin.read(CHUNK_SIZE), b""):
            fout.write(block)
            if digest is not None:
                digest.update(block)
        fout.flush()
        os.fsync(fout.fileno())
    shutil.copystat(src, dest)
    return digest.hexdigest() if digest is not None else None


def copy_tree(src: Path, dest: Path) -> None:
    """Copies a folder's (non-hidden) files, fsyncing each one.

    Args:
        src: the folder to copy.
        dest: the new folder (created; must not exist).
    """
    dest.mkdir()
    for f in iter_tree_files(src):
        target = dest / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        copy_file(f, target, want_sha256=False)
    fsync_dir(dest)


def same_filesystem(src: Path, folder: Path) -> bool:
    """Whether ``src`` can be renamed into ``folder`` (both on one device).

    Args:
        src: a file or folder.
        folder: an existing folder.
    """
    try:
        return src.stat().st_dev == folder.stat().st_dev
    except OSError:
        return False


def remove_path(path: Path) -> None:
    """Removes a file or a folder tree; missing paths are fine.

    Args:
        path: what to remove.
    """
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass
    except OSError as e:  # leftovers are hidden and harmless; never fail a committed operation for them
        logger.warning("Could not remove %s: %s", path, e)


def remove_paths(paths: Iterable[Optional[Path]]) -> None:
    """Removes several paths (see :func:`remove_path`), skipping None.

    Args:
        paths: what to remove.
    """
    for p in paths:
        if p is not None:
            remove_path(p)


def install(prepared: Path, final: Path) -> Optional[Path]:
    """Moves a prepared file or folder into place atomically, keeping what was there for a rollback.

    A file being replaced is kept through a hard link (the swap itself stays one atomic rename); a
    folder being replaced is renamed aside first.

    Args:
        prepared: the new content, next to ``final``.
        final: the destination.

    Returns:
        The hidden path now holding the previous content (to delete once committed, or to restore with
        :func:`uninstall`), or None when ``final`` did not exist.
    """
    previous: Optional[Path] = None
    if final.is_dir() and not final.is_symlink():
        previous = hidden_sibling(final, "trash")
        os.replace(final, previous)
    elif final.exists():
        previous = hidden_sibling(final, "trash")
        try:
            os.link(final, previous)
        except OSError:
            shutil.copy2(final, previous)
    try:
        os.replace(prepared, final)
    except BaseException:
        if previous is not None and not final.exists():
            os.replace(previous, final)
        elif previous is not None:
            remove_path(previous)
        raise
    return previous


def uninstall(final: Path, prepared: Path, previous: Optional[Path]) -> None:
    """Undoes :func:`install`: moves the new content back to ``prepared`` and restores the previous one.

    Args:
        final: the destination.
        prepared: where the new content came from.
        previous: what :func:`install` returned.
    """
    os.replace(final, prepared)
    if previous is not None:
        os.replace(previous, final)
