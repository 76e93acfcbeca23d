"""The folder stays the truth: MONAI Label's JSON index imported, files added or removed by hand, reopening."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from monailabel.datastore import LocalDatastore

from .conftest import make_nifti


def write_monai_label_folder(studies: Path) -> None:
    """A folder as MONAI Label 0.8 leaves it: files plus datastore_v2.json."""
    make_nifti(studies / "a.nii.gz", 1.0)
    make_nifti(studies / "b.nii.gz", 2.0)
    make_nifti(studies / "d.nii.gz", 4.0)  # on disk, not in the JSON
    make_nifti(studies / "labels" / "final" / "a.nii.gz", 1.0)
    make_nifti(studies / "labels" / "original" / "b.nii.gz", 1.0)
    config = {
        "name": "Heart",
        "description": "Left atrium",
        "images_dir": ".",
        "labels_dir": "labels",
        "objects": {
            "a": {
                "image": {"ext": ".nii.gz", "info": {"ts": 1650000000, "name": "a.nii.gz", "strategy": {"x": 1}}},
                "labels": {"final": {"ext": ".nii.gz", "info": {"ts": 1650000001, "name": "a.nii.gz", "by": "dr"}}},
            },
            "b": {
                "image": {"ext": ".nii.gz", "info": {"ts": 1650000002, "name": "b.nii.gz"}},
                "labels": {"original": {"ext": ".nii.gz", "info": {"model": "deepedit"}}},
            },
            "c": {"image": {"ext": ".nii.gz", "info": {"name": "c.nii.gz"}}, "labels": {}},  # file gone
        },
    }
    (studies / "datastore_v2.json").write_text(json.dumps(config))


def test_imports_monai_label_datastore_v2_json(studies: Path) -> None:
    write_monai_label_folder(studies)
    with LocalDatastore(str(studies)) as ds:
        assert (ds.name(), ds.description()) == ("Heart", "Left atrium")
        assert ds.list_images() == ["a", "b", "d"]
        assert ds.get_image_info("a")["strategy"] == {"x": 1}
        assert ds.image_record("a").added_ts == 1650000000
        assert ds.get_label_info("a", "final")["by"] == "dr"
        assert ds.get_label_info("b", "original")["model"] == "deepedit"
        assert ds.get_labeled_images() == ["a"]
        assert ds.status()["label_tags"] == {"final": 1, "original": 1}
        assert ds.image_record("b").size == (studies / "b.nii.gz").stat().st_size
        ds.update_image_info("a", {"strategy": {"x": 2}})
    # imported once: reopening keeps our changes and never reads the JSON again
    with LocalDatastore(str(studies)) as ds:
        assert ds.get_image_info("a")["strategy"] == {"x": 2}
        assert ds.list_images() == ["a", "b", "d"]


def test_corrupt_v2_json_still_opens(studies: Path) -> None:
    make_nifti(studies / "a.nii.gz")
    (studies / "datastore_v2.json").write_text("{not json")
    with LocalDatastore(str(studies)) as ds:
        assert ds.list_images() == ["a"]


def test_refresh_picks_up_files_added_and_removed_by_hand(ds: LocalDatastore, src: Path, studies: Path) -> None:
    ds.add_image("keep", str(make_nifti(src / "keep.nii.gz")), {"k": 1})
    ds.add_image("gone", str(make_nifti(src / "gone.nii.gz")), {})
    ds.save_label("keep", str(make_nifti(src / "l.nii.gz")), "final", {})
    ds.save_label("gone", str(make_nifti(src / "l.nii.gz")), "final", {})
    ds.add_image("odd", str(make_nifti(src / "odd.nii.gz").rename(src / "odd.mha")), {})  # not a scanned pattern

    make_nifti(studies / "new1.nii", 1.0)
    make_nifti(studies / "new2.nrrd.nii.gz", 1.0)
    make_nifti(studies / "labels" / "final" / "new1.nii.gz", 1.0)
    make_nifti(studies / "labels" / "reviewer" / "new1.nii.gz", 1.0)  # a new tag folder
    make_nifti(studies / "labels" / "final" / "orphan.nii.gz", 1.0)  # no such image: ignored
    (studies / "notes.txt").write_text("not an image")
    make_nifti(studies / ".hidden.nii.gz")
    (studies / "gone.nii.gz").unlink()
    (studies / "labels" / "final" / "keep.nii.gz").unlink()

    ds.refresh()
    assert ds.list_images() == ["keep", "new1", "new2.nrrd", "odd"]
    assert ds.get_labels_by_image_id("keep") == {}
    assert ds.get_labels_by_image_id("new1") == {"final": "new1", "reviewer": "new1"}
    assert ds.get_image_info("keep")["k"] == 1
    assert ds.get_image_info("new1")["name"] == "new1.nii"
    assert (studies / "labels" / "final" / "gone.nii.gz").exists()  # a user's file is never deleted by a scan
    assert ds.get_labels_by_image_id("gone") == {}
    assert ds.status()["label_tags"] == {"final": 1, "reviewer": 1}

    # an image renamed by hand to another extension keeps its row (and info)
    (studies / "keep.nii.gz").rename(studies / "keep.nii")
    ds.refresh()
    assert ds.get_image_uri("keep") == str(studies / "keep.nii") and ds.get_image_info("keep")["k"] == 1


def test_auto_reload(studies: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("monailabel.datastore.local._RELOAD_INTERVAL_S", 0.0)
    with LocalDatastore(str(studies), auto_reload=True) as ds:
        assert ds.list_images() == []
        make_nifti(studies / "x.nii.gz")
        assert ds.list_images() == ["x"]
        make_nifti(studies / "labels" / "final" / "x.nii.gz")
        assert ds.get_labeled_images() == ["x"]
        (studies / "x.nii.gz").unlink()
        assert ds.status()["total"] == 0


def test_reopening_keeps_everything(studies: Path, src: Path) -> None:
    with LocalDatastore(str(studies)) as ds:
        ds.set_name("kept")
        ds.add_image("a", str(make_nifti(src / "a.nii.gz", 1.0)), {"k": [1, 2]})
        ds.add_image("b", str(make_nifti(src / "b.nii", 2.0)), {})
        ds.save_label("a", str(make_nifti(src / "l.nii.gz", 3.0)), "final", {"q": "x"})
        ds.save_label("b", str(make_nifti(src / "l.nii.gz", 3.0)), "original", {})
        before = (ds.json(), ds.status(), ds.list_image_records()[0])
    with LocalDatastore(str(studies)) as ds:
        assert ds.name() == "kept"
        assert (ds.json(), ds.status(), ds.list_image_records()[0]) == before


def test_custom_images_and_labels_dirs(tmp_path: Path, src: Path) -> None:
    root = tmp_path / "ds"
    with LocalDatastore(str(root), images_dir="imagesTr", labels_dir="labelsTr") as ds:
        ds.add_image("a", str(make_nifti(src / "a.nii.gz")), {})
        ds.save_label("a", str(make_nifti(src / "l.nii.gz")), "final", {})
        assert ds.get_image_uri("a") == str(root / "imagesTr" / "a.nii.gz")
        assert ds.get_label_uri("a", "final") == str(root / "labelsTr" / "final" / "a.nii.gz")
        shutil.copy(root / "imagesTr" / "a.nii.gz", root / "imagesTr" / "b.nii.gz")
        ds.refresh()
        assert ds.list_images() == ["a", "b"]
        assert ds.json()["images_dir"] == "imagesTr"
