"""A small app for the REST-parity tests, copied into a temporary folder by the tests.

* infer ``edit``: MONAI Label's input-label use (scribbles, a label to correct): it loads the image and,
  when the request has one, the input label with MONAI's ``LoadImaged``, and returns the input label
  where it is set and ``image > threshold`` elsewhere. The threshold is its weights file
  (``model/edit.pt``, ``{"threshold": tensor}``), read at each call, so a published version is used at once.
* trainers ``edit`` (publishes a new threshold to ``model/edit.pt``) and ``other`` (to ``model/other.pt``);
* scoring methods ``count`` (counts images) and ``labeled`` (counts labeled ones).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Dict

import nibabel as nib
import numpy as np
import torch
from monai.transforms import LoadImaged

from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.utils.others.atomic import atomic_write


def save_threshold(path: str, value: float) -> None:
    atomic_write(path, lambda f: torch.save({"threshold": torch.tensor(float(value))}, f))


class EditWithInputLabel(InferTask):
    def __init__(self, path: str) -> None:
        super().__init__(InferType.SEGMENTATION, {"organ": 1, "scribble": 2}, 3, "input label over a threshold")
        self.path = path

    def get_path(self) -> str:
        return self.path

    def is_valid(self) -> bool:
        return os.path.exists(self.path)

    def __call__(self, request: Dict[str, Any]):
        threshold = float(torch.load(self.path)["threshold"])
        keys = ["image", "label"] if request.get("label") is not None else ["image"]
        image = request["image"]
        data = {"image": image, "label": request.get("label")}
        if not isinstance(image, str):  # a session's decoded volume
            keys = [k for k in keys if k != "image"]
        data = LoadImaged(keys=keys, image_only=False)(data) if keys else data
        array = np.asarray(data["image"], dtype=np.float32)
        out = (array > threshold).astype(np.uint8)
        used = 0
        if request.get("label") is not None:
            label = np.asarray(data["label"]).astype(np.uint8).reshape(out.shape)
            out = np.where(label > 0, label, out).astype(np.uint8)
            used = int((label > 0).sum())
        affine = np.asarray(getattr(data["image"], "affine", np.eye(4)), dtype=np.float64)
        fd, name = tempfile.mkstemp(suffix=".nii.gz")
        os.close(fd)
        nib.save(nib.Nifti1Image(out, affine), name)
        return name, {"input_label_voxels": used, "threshold": threshold}


class PublishThreshold(TrainTask):
    def __init__(self, publish_path: str) -> None:
        super().__init__("Publishes a new threshold")
        self._publish_path = publish_path

    def __call__(self, request, datastore: Datastore):
        value = float(request.get("threshold", 150.0))
        save_threshold(self._publish_path, value)
        return {"threshold": value}


class CountImages(ScoringMethod):
    def __init__(self, labeled: bool) -> None:
        super().__init__("Counts labeled images" if labeled else "Counts images")
        self.labeled = labeled

    def __call__(self, request, datastore: Datastore):
        images = datastore.get_labeled_images() if self.labeled else datastore.list_images()
        return {"count": len(images)}


class ParityApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: Dict[str, str]) -> None:
        self.model_dir = os.path.join(app_dir, "model")
        os.makedirs(self.model_dir, exist_ok=True)
        self.edit_path = os.path.join(self.model_dir, "edit.pt")
        if not os.path.exists(self.edit_path):
            save_threshold(self.edit_path, 100.0)
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="parity", version="0.1")

    def init_infers(self):
        return {"edit": EditWithInputLabel(self.edit_path)}

    def init_trainers(self):
        return {"edit": PublishThreshold(self.edit_path),
                "other": PublishThreshold(os.path.join(self.model_dir, "other.pt"))}

    def init_scoring_methods(self):
        return {"count": CountImages(False), "labeled": CountImages(True)}
