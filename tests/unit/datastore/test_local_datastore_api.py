"""MONAI Label's Datastore API on LocalDatastore: images, labels, info, status, datalist, json, archive."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest

from monailabel.datastore import LocalDatastore
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.exception import (
    ImageNotFoundException,
    LabelNotFoundException,
    MONAILabelError,
    MONAILabelException,
)

from .conftest import make_nifti


def test_is_a_datastore_with_monai_label_layout(ds: LocalDatastore, studies: Path) -> None:
    assert isinstance(ds, Datastore)
    assert (studies / "labels" / "final").is_dir() and (studies / "labels" / "original").is_dir()
    assert (studies / ".monailabel" / "datastore.db").is_file()
    assert ds.name() == "new-dataset" and ds.description() == "New Dataset"
    ds.set_name("spleen")
    ds.set_description("Spleen CT")
    assert (ds.name(), ds.description()) == ("spleen", "Spleen CT")


def test_add_and_read_image(ds: LocalDatastore, src: Path, studies: Path) -> None:
    f = make_nifti(src / "case.01.nii.gz", 3.0)
    assert ds.add_image("", str(f), {"patient": "p1"}) == "case.01"  # id from the file name, .nii.gz is one ext
    assert ds.add_image("other", str(f), {}) == "other"

    assert ds.list_images() == ["case.01", "other"]
    assert ds.get_image_uri("case.01") == str(studies / "case.01.nii.gz")
    assert ds.get_image("case.01").read() == f.read_bytes()
    info = ds.get_image_info("case.01")
    assert info["patient"] == "p1" and info["name"] == "case.01.nii.gz"
    assert isinstance(info["ts"], int) and info["path"] == str(studies / "case.01.nii.gz")
    assert f.exists()  # copied, not moved


def test_add_existing_id_needs_overwrite(ds: LocalDatastore, src: Path) -> None:
    ds.add_image("a", str(make_nifti(src / "a.nii.gz", 1.0)), {})
    ds.save_label("a", str(make_nifti(src / "l.nii.gz", 9.0)), "final", {})
    new = make_nifti(src / "b.nii", 2.0)
    with pytest.raises(MONAILabelException) as e:
        ds.add_image("a", str(new), {})
    assert e.value.error is MONAILabelError.ALREADY_EXISTS

    ds.add_image("a", str(new), {"v": 2}, overwrite=True)  # another extension: the old file goes
    assert ds.get_image_uri("a").endswith("a.nii")
    assert not (Path(ds.get_image_uri("a")).parent / "a.nii.gz").exists()
    assert ds.get_image("a").read() == new.read_bytes()
    assert ds.get_image_info("a")["v"] == 2
    assert ds.get_label_by_image_id("a", "final") == "a"  # labels stay
    assert ds.list_images() == ["a"]


def test_labels_by_tag(ds: LocalDatastore, src: Path, studies: Path) -> None:
    ds.add_image("img", str(make_nifti(src / "img.nii.gz")), {})
    lab = make_nifti(src / "lab.nii.gz", 1.0)
    assert ds.save_label("img", str(lab), DefaultLabelTag.ORIGINAL, {"model": "seg"}) == "img"
    ds.save_label("img", str(lab), "final", {})
    ds.save_label("img", str(lab), "radiologist_2", {})

    assert ds.get_labels_by_image_id("img") == {"final": "img", "original": "img", "radiologist_2": "img"}
    assert ds.get_label_by_image_id("img", "final") == "img"
    assert ds.get_label_by_image_id("img", "missing") == ""
    assert ds.get_labels_by_image_id("nope") == {}
    assert ds.get_label_uri("img", "radiologist_2") == str(studies / "labels" / "radiologist_2" / "img.nii.gz")
    assert ds.get_label("img", "original").read() == lab.read_bytes()
    info = ds.get_label_info("img", "original")
    assert info["model"] == "seg" and info["name"] == "img.nii.gz" and info["checksum"].startswith("SHA256:")

    new = make_nifti(src / "lab2.nrrd.nii", 5.0)  # replaces the label with that tag
    ds.save_label("img", str(new), "final", {"by": "me"})
    assert ds.get_label("img", "final").read() == new.read_bytes()
    assert ds.get_label_uri("img", "final").endswith(os.path.join("final", "img.nii"))
    assert not (studies / "labels" / "final" / "img.nii.gz").exists()
    assert ds.status()["label_tags"] == {"final": 1, "original": 1, "radiologist_2": 1}


def test_not_found_errors(ds: LocalDatastore, src: Path) -> None:
    ds.add_image("a", str(make_nifti(src / "a.nii.gz")), {})
    for call in (
        lambda: ds.get_image("b"),
        lambda: ds.get_image_uri("b"),
        lambda: ds.get_image_info("b"),
        lambda: ds.update_image_info("b", {}),
        lambda: ds.remove_image("b"),
        lambda: ds.save_label("b", str(src / "a.nii.gz"), "final", {}),
    ):
        with pytest.raises(ImageNotFoundException, match="'b'") as e:
            call()
        assert e.value.error is MONAILabelError.NOT_FOUND
    for call in (
        lambda: ds.get_label("a", "final"),
        lambda: ds.get_label_uri("a", "final"),
        lambda: ds.get_label_info("a", "final"),
        lambda: ds.update_label_info("a", "final", {}),
        lambda: ds.remove_label("a", "final"),
    ):
        with pytest.raises(LabelNotFoundException, match="'final'"):
            call()


def test_info_updates_merge(ds: LocalDatastore, src: Path) -> None:
    ds.add_image("a", str(make_nifti(src / "a.nii.gz")), {"k1": 1, "k2": 2})
    ds.update_image_info("a", {"k2": 20, "k3": [1, 2]})
    info = ds.get_image_info("a")
    assert (info["k1"], info["k2"], info["k3"]) == (1, 20, [1, 2])

    ds.save_label("a", str(make_nifti(src / "l.nii.gz")), "final", {"x": 1})
    ds.update_label_info("a", "final", {"y": 2})
    ds.update_label_info("a", "final", {"x": 3})
    info = ds.get_label_info("a", "final")
    assert (info["x"], info["y"]) == (3, 2)


def test_labeled_unlabeled_status_datalist(ds: LocalDatastore, src: Path, studies: Path) -> None:
    for i in range(4):
        ds.add_image(f"im{i}", str(make_nifti(src / f"im{i}.nii.gz", i)), {})
    lab = make_nifti(src / "lab.nii.gz", 1.0)
    ds.save_label("im1", str(lab), "final", {})
    ds.save_label("im3", str(lab), "final", {})
    ds.save_label("im0", str(lab), "original", {})

    assert ds.get_labeled_images() == ["im1", "im3"]
    assert ds.get_unlabeled_images() == ["im0", "im2"]
    assert ds.get_labeled_images(label_tag="original") == ["im0"]
    assert ds.get_unlabeled_images(label_tag="original") == ["im1", "im2", "im3"]

    status = ds.status()
    assert status["total"] == 4 and status["completed"] == 2
    assert status["label_tags"] == {"final": 2, "original": 1}
    assert status["train"] == [
        {"image": "im1.nii.gz", "label": os.path.join("labels", "final", "im1.nii.gz")},
        {"image": "im3.nii.gz", "label": os.path.join("labels", "final", "im3.nii.gz")},
    ]
    assert ds.datalist() == [
        {"image": str(studies / f"im{i}.nii.gz"), "label": str(studies / "labels" / "final" / f"im{i}.nii.gz")}
        for i in (1, 3)
    ]


def test_remove_label_and_image_cascade(ds: LocalDatastore, src: Path, studies: Path) -> None:
    ds.add_image("a", str(make_nifti(src / "a.nii.gz")), {})
    ds.add_image("b", str(make_nifti(src / "b.nii.gz")), {})
    lab = make_nifti(src / "l.nii.gz", 1.0)
    for tag in ("final", "original"):
        ds.save_label("a", str(lab), tag, {})
    ds.save_label("b", str(lab), "final", {})

    ds.remove_label("b", "final")
    assert not (studies / "labels" / "final" / "b.nii.gz").exists()
    assert ds.get_labels_by_image_id("b") == {}

    ds.remove_image("a")
    assert ds.list_images() == ["b"]
    assert not (studies / "a.nii.gz").exists()
    assert not (studies / "labels" / "final" / "a.nii.gz").exists()
    assert not (studies / "labels" / "original" / "a.nii.gz").exists()
    assert ds.status()["label_tags"] == {}
    assert not [p for p in studies.rglob("*") if ".trash-" in p.name or ".tmp-" in p.name]


def test_json_is_monai_label_v2_layout(ds: LocalDatastore, src: Path) -> None:
    ds.add_image("a", str(make_nifti(src / "a.nii.gz")), {"k": "v"})
    ds.save_label("a", str(make_nifti(src / "l.nii.gz")), "final", {"x": 1})
    data = ds.json()
    assert set(data) == {"name", "description", "images_dir", "labels_dir", "objects"}
    assert (data["images_dir"], data["labels_dir"]) == (".", "labels")
    obj = data["objects"]["a"]
    assert obj["image"]["ext"] == ".nii.gz" and obj["image"]["info"]["k"] == "v"
    assert obj["labels"]["final"]["ext"] == ".nii.gz" and obj["labels"]["final"]["info"]["x"] == 1
    json.dumps(data)


def test_dataset_archive(ds: LocalDatastore, src: Path) -> None:
    with pytest.raises(MONAILabelException) as e:
        ds.get_dataset_archive(None)
    assert e.value.error is MONAILabelError.PRECONDITION_FAILED
    for i in range(3):
        ds.add_image(f"im{i}", str(make_nifti(src / f"im{i}.nii.gz", i)), {})
        ds.save_label(f"im{i}", str(make_nifti(src / f"l{i}.nii.gz", i)), "final", {})
    for limit, cases in ((None, 3), (2, 2)):
        path = ds.get_dataset_archive(limit)
        try:
            with zipfile.ZipFile(path) as z:
                names = set(z.namelist())
                assert json.loads(z.read("metadata.json"))["objects"].keys() == {"im0", "im1", "im2"}
                assert z.read("image/im0.nii.gz") == (src / "im0.nii.gz").read_bytes()
        finally:
            os.unlink(path)
        expected = {f"{k}/im{i}.nii.gz" for i in range(cases) for k in ("image", "label")} | {"metadata.json"}
        assert names == expected


@pytest.mark.parametrize("bad", ["", ".", "..", "../x", "a/b", "a\\b", "x\x00y", ".hidden"])
def test_ids_and_tags_are_validated(ds: LocalDatastore, src: Path, studies: Path, bad: str) -> None:
    f = make_nifti(src / "a.nii.gz")
    ds.add_image("a", str(f), {})
    calls = [
        lambda: ds.get_image_uri(bad),
        lambda: ds.get_image_info(bad),
        lambda: ds.remove_image(bad),
        lambda: ds.save_label("a", str(f), bad, {}),
        lambda: ds.get_label_uri("a", bad),
        lambda: ds.image_record(bad),
        lambda: ds.get_label_by_image_id("a", bad),
    ]
    if bad:  # an empty id means "take it from the file name"
        calls.append(lambda: ds.add_image(bad, str(f), {}))
    for call in calls:
        with pytest.raises(MONAILabelException) as e:
            call()
        assert e.value.error is MONAILabelError.INVALID_INPUT
    assert ds.list_images() == ["a"]
    assert not (studies.parent / "x.nii.gz").exists()


def test_read_only_refuses_writes(studies: Path, src: Path) -> None:
    with LocalDatastore(str(studies)) as rw:
        rw.add_image("a", str(make_nifti(src / "a.nii.gz")), {})
        rw.save_label("a", str(make_nifti(src / "l.nii.gz")), "final", {})
    with LocalDatastore(str(studies), read_only=True) as ro:
        assert ro.read_only and ro.list_images() == ["a"] and ro.get_labeled_images() == ["a"]
        for call in (
            lambda: ro.add_image("b", str(src / "a.nii.gz"), {}),
            lambda: ro.remove_image("a"),
            lambda: ro.save_label("a", str(src / "l.nii.gz"), "final", {}),
            lambda: ro.remove_label("a", "final"),
            lambda: ro.update_image_info("a", {"x": 1}),
            lambda: ro.update_label_info("a", "final", {"x": 1}),
            lambda: ro.set_name("x"),
        ):
            with pytest.raises(MONAILabelException) as e:
                call()
            assert e.value.error is MONAILabelError.PRECONDITION_FAILED
        assert ro.list_images() == ["a"] and "x" not in ro.get_image_info("a")
    assert (studies / "a.nii.gz").exists()


def test_public_surface() -> None:
    import monailabel.datastore as pkg

    assert pkg.__all__ == ["ImageRecord", "LabelRecord", "LocalDatastore"]
    assert all(hasattr(pkg, name) for name in pkg.__all__)


def test_read_only_on_an_unwritable_index_folder(studies: Path, src: Path) -> None:
    make_nifti(studies / "a.nii.gz")
    (studies / ".monailabel").write_text("a file where the index folder should be")  # mkdir fails, even as root
    with pytest.raises(OSError):
        LocalDatastore(str(studies))
    ro = LocalDatastore(str(studies), read_only=True)
    home = ro._index.db_path.parent
    try:
        assert home != studies / ".monailabel" and home.is_dir()
        assert ro.list_images() == ["a"] and len(ro.image_record("a").sha256) == 64
    finally:
        ro.close()
    assert not home.exists()
