"""MONAILabelApp: info, infer by path / id / decoded image, label saving, strategies, unknown names."""

from __future__ import annotations

import os
import shutil
from typing import Any, Dict, List, Optional

import pytest
from monai.transforms import LoadImage

from monailabel.interfaces import Datastore, DefaultLabelTag, MONAILabelApp
from monailabel.interfaces.exception import ImageNotFoundException, MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random

from .test_basic_infer import MyInfer


class MemoryDatastore(Datastore):
    """Just enough of a datastore for the app: images by id, labels copied into a folder."""

    def __init__(self, images: Dict[str, str], label_dir: str) -> None:
        self.images = dict(images)
        self.label_dir = label_dir
        self.labels: Dict[str, Dict[str, str]] = {}
        self.info: Dict[str, Dict[str, Any]] = {k: {} for k in images}

    def name(self) -> str:
        return "memory"

    def set_name(self, name: str) -> None: ...

    def description(self) -> str:
        return ""

    def set_description(self, description: str) -> None: ...

    def datalist(self) -> List[Dict[str, Any]]:
        return [{"image": self.images[i], "label": self.labels[i]["final"]} for i in self.get_labeled_images()]

    def get_labels_by_image_id(self, image_id: str) -> Dict[str, str]:
        return {tag: image_id for tag in self.labels.get(image_id, {})}

    def get_label_by_image_id(self, image_id: str, tag: str) -> str:
        return image_id if tag in self.labels.get(image_id, {}) else ""

    def get_image(self, image_id: str, params: Optional[Dict[str, Any]] = None) -> Any:
        return open(self.get_image_uri(image_id), "rb")

    def get_image_uri(self, image_id: str) -> str:
        if image_id not in self.images:
            raise ImageNotFoundException(f"image '{image_id}' does not exist")
        return self.images[image_id]

    def get_label(self, label_id: str, label_tag: str, params: Optional[Dict[str, Any]] = None) -> Any:
        return open(self.get_label_uri(label_id, label_tag), "rb")

    def get_label_uri(self, label_id: str, label_tag: str) -> str:
        return self.labels[label_id][label_tag]

    def get_image_info(self, image_id: str) -> Dict[str, Any]:
        return dict(self.info[image_id])

    def get_label_info(self, label_id: str, label_tag: str) -> Dict[str, Any]:
        return {}

    def get_labeled_images(self) -> List[str]:
        return [i for i in self.images if "final" in self.labels.get(i, {})]

    def get_unlabeled_images(self) -> List[str]:
        return [i for i in self.images if "final" not in self.labels.get(i, {})]

    def list_images(self) -> List[str]:
        return list(self.images)

    def refresh(self) -> None: ...

    def add_image(self, image_id: str, image_filename: str, image_info: Dict[str, Any]) -> str:
        raise NotImplementedError

    def remove_image(self, image_id: str) -> None:
        raise NotImplementedError

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any]) -> str:
        dest = os.path.join(self.label_dir, f"{image_id}.{label_tag}.nii.gz")
        shutil.copy(label_filename, dest)
        self.labels.setdefault(image_id, {})[label_tag] = dest
        return image_id

    def remove_label(self, label_id: str, label_tag: str) -> None: ...

    def update_image_info(self, image_id: str, info: Dict[str, Any]) -> None:
        self.info[image_id].update(info)

    def update_label_info(self, label_id: str, label_tag: str, info: Dict[str, Any]) -> None: ...

    def status(self) -> Dict[str, Any]:
        return {"total": len(self.images), "completed": len(self.get_labeled_images())}

    def json(self) -> Dict[str, Any]:
        return {}

    def get_dataset_archive(self, limit_cases: Optional[int]) -> str:
        raise NotImplementedError


class CountingTrainer(TrainTask):
    def __init__(self) -> None:
        super().__init__("counts calls")
        self.calls: List[Any] = []

    def __call__(self, request, datastore):
        self.calls.append((request, datastore))
        return {"epochs": request.get("max_epochs")}


@pytest.fixture
def app(tmp_path, write_volume, checkpoint, unet):
    path_a, _ = write_volume(name="a.nii.gz")
    path_b, _ = write_volume(name="b.nii.gz", seed=1)
    trainer = CountingTrainer()

    class MyApp(MONAILabelApp):
        def init_datastore(self):
            return MemoryDatastore({"a": str(path_a), "b": str(path_b)}, str(tmp_path))

        def init_infers(self):
            return {"segmentation_spleen": MyInfer(str(checkpoint), unet, labels=["spleen"])}

        def init_strategies(self):
            return {"random": Random(), "first": First()}

        def init_trainers(self):
            return {"segmentation": trainer}

    app = MyApp(str(tmp_path), str(tmp_path), {}, name="my", description="test app")
    yield app
    app.cleanup()


def test_info_lists_models_and_merges_labels(app):
    info = app.info()
    assert info["name"] == "my" and info["labels"] == ["spleen"]
    assert info["models"]["segmentation_spleen"]["type"] == "segmentation"
    assert info["models"]["segmentation_spleen"]["config"]["device"][-1] == "cpu"
    assert set(info["strategies"]) == {"random", "first"} and info["datastore"] == {"total": 2, "completed": 0}
    assert info["trainers"]["segmentation"]["description"] == "counts calls"


def test_infer_on_a_path_saves_nothing(app):
    image = app.datastore().get_image_uri("a")
    res = app.infer({"model": "segmentation_spleen", "image": image, "save_label": True, "device": "cpu"})
    try:
        assert res["label"] == res["file"] and os.path.exists(res["file"])
        assert res["tag"] == DefaultLabelTag.ORIGINAL.value and "latencies" in res["params"]
        assert app.datastore().labels == {}
    finally:
        os.unlink(res["file"])


def test_infer_by_id_saves_the_original_label(app):
    res = app.infer({"model": "segmentation_spleen", "image": "b", "save_label": True, "device": "cpu"})
    os.unlink(res["file"])
    assert res["label"] == "b" and os.path.exists(app.datastore().labels["b"]["original"])


def test_infer_on_a_decoded_image_saves_under_image_id(app):
    volume = LoadImage(image_only=True)(app.datastore().get_image_uri("a"))
    res = app.infer(
        {"model": "segmentation_spleen", "image": volume, "image_id": "a", "save_label": True, "device": "cpu"}
    )
    os.unlink(res["file"])
    assert res["label"] == "a" and "original" in app.datastore().labels["a"]


def test_unknown_names_are_not_found(app):
    with pytest.raises(MONAILabelException) as e:
        app.infer({"model": "nope", "image": "a"})
    assert e.value.error == MONAILabelError.NOT_FOUND and "segmentation_spleen" in e.value.msg
    with pytest.raises(ImageNotFoundException):
        app.infer({"model": "segmentation_spleen", "image": "zzz"})
    for call, request in ((app.train, {"model": "x"}), (app.next_sample, {"strategy": "x"})):
        with pytest.raises(MONAILabelException) as e:
            call(request)
        assert e.value.error == MONAILabelError.NOT_FOUND
    with pytest.raises(MONAILabelException) as e:
        app.infer({"image": "a"})
    assert e.value.error == MONAILabelError.INVALID_INPUT


def test_next_sample_records_when_each_image_was_served(app):
    res = app.next_sample({"strategy": "first", "client_id": "ann1"})
    assert res["id"] == "a" and res["path"].endswith("a.nii.gz")
    assert app.datastore().info["a"]["strategy"]["first"]["client_id"] == "ann1"
    res = app.next_sample({})
    assert res["id"] in ("a", "b") and "random" in app.datastore().info[res["id"]]["strategy"]


def test_train_calls_the_trainer_with_the_datastore(app):
    assert app.train({"model": "segmentation", "max_epochs": 2}) == {"epochs": 2}
    request, datastore = app.trainers()["segmentation"].calls[0]
    assert datastore is app.datastore() and request["max_epochs"] == 2
