"""The typed records and keyset paging the gRPC server uses."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from monailabel.datastore import ImageRecord, LabelRecord, LocalDatastore
from monailabel.interfaces.exception import (
    ImageNotFoundException,
    LabelNotFoundException,
    MONAILabelError,
    MONAILabelException,
)

from .conftest import make_nifti


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_image_and_label_records(ds: LocalDatastore, src: Path, studies: Path) -> None:
    f = make_nifti(src / "a.nii.gz", 1.0)
    lab = make_nifti(src / "l.nii.gz", 2.0)
    ds.add_image("a", str(f), {"k": 1})
    ds.save_label("a", str(lab), "final", {"by": "x"})

    rec = ds.image_record("a")
    assert isinstance(rec, ImageRecord)
    assert (rec.id, rec.ext, rec.size, rec.sha256) == ("a", ".nii.gz", f.stat().st_size, sha(f))
    assert rec.path == str(studies / "a.nii.gz") and rec.info["k"] == 1 and not rec.is_dicom_series
    assert rec.added_ts > 0 and set(rec.labels) == {"final"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.id = "b"  # type: ignore[misc]

    lrec = ds.label_record("a", "final")
    assert isinstance(lrec, LabelRecord) and lrec == rec.labels["final"]
    assert (lrec.id, lrec.image_id, lrec.tag, lrec.ext) == ("a", "a", "final", ".nii.gz")
    assert (lrec.size, lrec.sha256, lrec.info["by"]) == (lab.stat().st_size, sha(lab), "x")
    assert lrec.path == str(studies / "labels" / "final" / "a.nii.gz")

    with pytest.raises(ImageNotFoundException):
        ds.image_record("zz")
    with pytest.raises(LabelNotFoundException):
        ds.label_record("a", "original")


def test_given_sha256_is_stored_without_rehashing(ds: LocalDatastore, src: Path) -> None:
    f = make_nifti(src / "a.nii.gz")
    ds.add_image("a", str(f), {}, sha256="AB" * 32)
    assert ds.image_record("a").sha256 == "ab" * 32
    ds.save_label("a", str(f), "final", {}, sha256="cd" * 32)
    assert ds.label_record("a", "final").sha256 == "cd" * 32
    with pytest.raises(MONAILabelException) as e:
        ds.add_image("b", str(f), {}, sha256="xyz")
    assert e.value.error is MONAILabelError.INVALID_INPUT
    assert ds.list_images() == ["a"]


def test_files_found_by_scanning_are_hashed_lazily(ds: LocalDatastore, src: Path, studies: Path) -> None:
    f = make_nifti(studies / "hand.nii.gz", 4.0)
    make_nifti(studies / "labels" / "final" / "hand.nii.gz", 1.0)
    ds.refresh()
    rows = ds._index.conn().execute("SELECT sha256 FROM images WHERE id = 'hand'").fetchall()
    assert rows[0]["sha256"] is None
    records, _ = ds.list_image_records(compute_sha256=False)
    assert records[0].sha256 == "" and records[0].labels["final"].sha256 == ""
    assert ds.image_record("hand").sha256 == sha(f)
    stored = ds._index.conn().execute("SELECT sha256 FROM images WHERE id = 'hand'").fetchone()["sha256"]
    assert stored == sha(f)
    assert ds.label_record("hand", "final").sha256 == sha(studies / "labels" / "final" / "hand.nii.gz")

    make_nifti(f, 5.0, shape=(6, 6, 6))  # changed by hand: the stored digest is dropped on the next scan
    ds.refresh()
    assert ds.image_record("hand").sha256 == sha(f)


def test_an_image_added_with_defer_sha256_is_hashed_when_first_read(ds: LocalDatastore, src: Path) -> None:
    f = make_nifti(src / "d.nii.gz", 3.0)
    digest = sha(f)
    ds.add_image("d", str(f), {}, defer_sha256=True, move=True)
    stored = ds._index.conn().execute("SELECT sha256 FROM images WHERE id = 'd'").fetchone()["sha256"]
    assert stored is None  # nothing was read to hash it
    assert ds.image_record("d", compute_sha256=False).sha256 == ""
    assert ds.image_record("d").sha256 == digest
    assert ds._index.conn().execute("SELECT sha256 FROM images WHERE id = 'd'").fetchone()["sha256"] == digest
    # a digest the caller knows wins over deferring; without the flag the file is hashed as it is added
    g = make_nifti(src / "e.nii.gz", 4.0)
    ds.add_image("e", str(g), {}, sha256=sha(g), defer_sha256=True)
    h = make_nifti(src / "h.nii.gz", 5.0)
    ds.add_image("h", str(h), {})
    for image_id, path in (("e", g), ("h", h)):
        row = ds._index.conn().execute("SELECT sha256 FROM images WHERE id = ?", (image_id,)).fetchone()
        assert row["sha256"] == sha(path)


def test_paging_and_filters(ds: LocalDatastore, src: Path) -> None:
    f = make_nifti(src / "a.nii.gz")
    ids = [f"img{i:02d}" for i in range(23)]
    for i in reversed(ids):
        ds.add_image(i, str(f), {})
    for i in ids[::3]:  # 8 labeled with final
        ds.save_label(i, str(f), "final", {})
    ds.save_label("img01", str(f), "original", {})

    seen, after = [], ""
    while True:
        page, total = ds.list_image_records(page_size=5, after_id=after)
        assert total == 23
        seen += [r.id for r in page]
        if len(page) < 5:
            break
        after = page[-1].id
    assert seen == ids

    labeled, total = ds.list_image_records("labeled", page_size=100)
    assert total == 8 and [r.id for r in labeled] == ids[::3]
    assert all("final" in r.labels for r in labeled)
    page, total = ds.list_image_records("unlabeled", page_size=4, after_id="img01")
    assert total == 15 and [r.id for r in page] == ["img02", "img04", "img05", "img07"]
    page, total = ds.list_image_records("labeled", label_tag="original")
    assert total == 1 and [r.id for r in page] == ["img01"]
    assert set(page[0].labels) == {"original"}
    page, total = ds.list_image_records(page_size=0)  # 0 means the default size
    assert len(page) == 23 and total == 23
    assert ds.list_image_records(after_id="img22") == ([], 23)

    with pytest.raises(MONAILabelException) as e:
        ds.list_image_records("everything")
    assert e.value.error is MONAILabelError.INVALID_INPUT
    with pytest.raises(MONAILabelException):
        ds.list_image_records("labeled", label_tag="../final")
