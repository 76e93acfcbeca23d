"""Writes are all or nothing: no half-written file, no row without its file, no file without its row."""

from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from monailabel.datastore import LocalDatastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException

from .conftest import make_nifti


def leftovers(root: Path) -> list:
    return [p for p in root.rglob("*") if ".tmp-" in p.name or ".trash-" in p.name]


def rows(ds: LocalDatastore, table: str) -> int:
    return int(ds._index.conn().execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def fail_commits(ds: LocalDatastore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes every write transaction fail at its very end, after its body ran."""
    real_write = ds._index.write

    @contextmanager
    def failing() -> Iterator[sqlite3.Connection]:
        with real_write() as c:
            yield c
            raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(ds._index, "write", failing)


def test_missing_source_leaves_nothing(ds: LocalDatastore, src: Path, studies: Path) -> None:
    with pytest.raises(MONAILabelException) as e:
        ds.add_image("a", str(src / "nope.nii.gz"), {})
    assert e.value.error is MONAILabelError.INVALID_INPUT
    assert rows(ds, "images") == 0 and not (studies / "a.nii.gz").exists() and not leftovers(studies)


def test_failing_rename_leaves_neither_file_nor_row(
    ds: LocalDatastore, src: Path, studies: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = make_nifti(src / "a.nii.gz")

    def broken(a: object, b: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk on fire"):
        ds.add_image("a", str(f), {})
    monkeypatch.undo()
    assert rows(ds, "images") == 0
    assert not (studies / "a.nii.gz").exists() and not leftovers(studies)
    ds.refresh()
    assert ds.list_images() == []


def test_failing_row_write_restores_previous_file(
    ds: LocalDatastore, src: Path, studies: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = make_nifti(src / "old.nii.gz", 1.0)
    new = make_nifti(src / "new.nii.gz", 2.0)
    ds.add_image("a", str(old), {"v": 1})
    ds.save_label("a", str(old), "final", {"v": 1})

    fail_commits(ds, monkeypatch)  # the row is written and the file swapped, then COMMIT fails
    with pytest.raises(sqlite3.OperationalError):
        ds.add_image("a", str(new), {"v": 2}, overwrite=True)
    with pytest.raises(sqlite3.OperationalError):
        ds.save_label("a", str(new), "final", {"v": 2})
    monkeypatch.undo()

    assert (studies / "a.nii.gz").read_bytes() == old.read_bytes()
    assert (studies / "labels" / "final" / "a.nii.gz").read_bytes() == old.read_bytes()
    assert ds.get_image_info("a")["v"] == 1 and ds.get_label_info("a", "final")["v"] == 1
    assert not leftovers(studies)


def test_failing_delete_keeps_files(
    ds: LocalDatastore, src: Path, studies: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds.add_image("a", str(make_nifti(src / "a.nii.gz")), {})
    ds.save_label("a", str(make_nifti(src / "l.nii.gz")), "final", {})

    class Boom(Exception):
        pass

    def write_fails() -> object:
        raise Boom()

    monkeypatch.setattr(ds._index, "write", write_fails)
    with pytest.raises(Boom):
        ds.remove_image("a")
    monkeypatch.undo()
    assert (studies / "a.nii.gz").exists() and (studies / "labels" / "final" / "a.nii.gz").exists()
    assert ds.list_images() == ["a"] and ds.get_labeled_images() == ["a"] and not leftovers(studies)


def test_move_from_staging_renames(ds: LocalDatastore, studies: Path) -> None:
    staging = ds.staging_dir()
    assert staging == studies / ".monailabel" / "staging" and staging.is_dir()
    up = make_nifti(staging / "upload-1.nii.gz", 7.0)
    content, inode = up.read_bytes(), up.stat().st_ino
    ds.add_image("a", str(up), {}, move=True)
    assert not up.exists()
    dest = studies / "a.nii.gz"
    assert dest.read_bytes() == content and dest.stat().st_ino == inode  # renamed, not copied

    lab = make_nifti(staging / "label.nii.gz", 1.0)
    ds.save_label("a", str(lab), "final", {}, move=True)
    assert not lab.exists() and ds.get_label_by_image_id("a", "final") == "a"


def test_failed_move_gives_the_staged_file_back(
    ds: LocalDatastore, studies: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    up = make_nifti(ds.staging_dir() / "upload.nii.gz", 7.0)
    ds.add_image("a", str(make_nifti(ds.staging_dir() / "first.nii.gz")), {})
    fail_commits(ds, monkeypatch)  # the row is written and the file swapped, then COMMIT fails
    with pytest.raises(sqlite3.OperationalError):
        ds.add_image("b", str(up), {}, move=True)
    monkeypatch.undo()
    assert up.exists() and not (studies / "b.nii.gz").exists() and ds.list_images() == ["a"]
