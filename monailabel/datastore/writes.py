"""The write protocol of the local datastore: a file and its index row change together, or not at all.

:func:`put_file` puts the new content next to its destination first (a hidden copy, fsynced, or the
staged file itself when it can be renamed), then, inside one SQLite transaction, writes the row and
swaps the file in with ``os.replace``. A failure anywhere rolls back the row, swaps the previous file
back, and removes the copy, so neither a half-written file nor a row without its file remains.
:func:`set_aside` does the same for deletes.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

from monailabel.datastore import files
from monailabel.datastore.index import DatastoreIndex
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException

__all__ = ["RowWriter", "put_file", "set_aside"]

RowWriter = Callable[[sqlite3.Connection, int, int, Optional[str]], None]
"""Writes the row of a file inside the transaction: ``(conn, size, mtime_ns, sha256)`` (None: computed
when first read)."""


def put_file(
    index: DatastoreIndex,
    src: Path,
    final: Path,
    sha256: Optional[str],
    move: bool,
    write_row: RowWriter,
    old_path: Optional[Path] = None,
    defer_sha256: bool = False,
) -> None:
    """Puts ``src`` (a file or a folder) at ``final`` and writes its row, all or nothing.

    The caller serialises writers (holds the datastore's write lock).

    Args:
        index: the index.
        src: the new content.
        final: where it goes; its folder must exist.
        sha256: its known hex digest, or None to compute it (while copying, when copying).
        move: rename ``src`` into place when on the same filesystem; otherwise copy it and remove it after.
        write_row: writes the row.
        old_path: the previous file of this object when its name differs from ``final`` (another
            extension); removed once committed.
        defer_sha256: with no ``sha256``, store the row without a digest (computed when first read)
            instead of hashing the file now.

    Raises:
        MONAILabelException: ``INVALID_INPUT`` when ``src`` does not exist or ``sha256`` is malformed.
    """
    if not src.exists():
        raise MONAILabelException(MONAILabelError.INVALID_INPUT, f"file {src.name} does not exist")
    digest = files.validate_sha256(sha256) if sha256 else None
    renamed = move and files.same_filesystem(src, final.parent)
    if renamed:
        prepared = src
        if src.is_file():
            with open(src, "rb") as f:  # the uploader may not have synced it
                os.fsync(f.fileno())
    else:
        prepared = files.hidden_sibling(final, "tmp")
        if src.is_dir():
            files.copy_tree(src, prepared)
        else:
            digest = files.copy_file(src, prepared, want_sha256=digest is None and not defer_sha256) or digest
    previous: Optional[Path] = None
    try:
        st = files.stat_path(prepared)
        if st is None:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, f"file {src.name} vanished while being added")
        if not digest and not defer_sha256:
            digest = files.sha256_path(prepared)
        installed = False
        try:
            with index.write() as c:
                write_row(c, st[0], st[1], digest)
                previous = files.install(prepared, final)
                installed = True
        except BaseException:
            if installed:
                files.uninstall(final, prepared, previous)
            raise
    except BaseException:
        if not renamed:
            files.remove_path(prepared)
        raise
    files.fsync_dir(final.parent)
    files.remove_paths([previous, old_path if old_path is not None and old_path != final else None])
    if move and not renamed:
        files.remove_path(src)


@contextmanager
def set_aside(paths: List[Path]) -> Iterator[Callable[[], None]]:
    """Deletes files together with their rows: restores them if the delete fails.

    Yields a function that renames the files to hidden names; call it inside the transaction that
    deletes the rows, so that another process's scan never sees a row without its file. The hidden
    copies are removed once the block (and so the transaction) has succeeded.

    Args:
        paths: the files (or folders) being deleted; missing ones are skipped.
    """
    moved: List[Tuple[Path, Path]] = []

    def move_aside() -> None:
        for p in paths:
            if p.exists():
                aside = files.hidden_sibling(p, "trash")
                os.replace(p, aside)
                moved.append((p, aside))

    try:
        yield move_aside
    except BaseException:
        for p, aside in reversed(moved):
            os.replace(aside, p)
        raise
    files.remove_paths(aside for _, aside in moved)
    for folder in {p.parent for p, _ in moved}:
        files.fsync_dir(folder)
