"""Radiology template app: 3D segmentation with a MONAI UNet, on the local datastore.

Start it with ``monailabel start_server --app <this folder> --studies <images folder>``.
Config keys (``--conf KEY VALUE``): ``roi_size`` (e.g. "96,96,96"), ``device`` ("cpu", "cuda"),
``train_roi_size`` (training crops and validation windows, default "32,32,32").
The trainer ``segmentation`` publishes its best checkpoint to ``model/segmentation.pt``, the file the
infer task of the same name loads (and reloads when it changes).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict

import torch
from lib.infers.segmentation import SegmentationInfer, make_network
from lib.trainers.segmentation import SegmentationTrainer

from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.utils.others.atomic import atomic_write

logger = logging.getLogger(__name__)

LABELS = {"organ": 1}


class RadiologyApp(MONAILabelApp):
    """Segments one structure (label ``organ``) in 3D volumes."""

    def __init__(self, app_dir: str, studies: str, conf: Dict[str, str]) -> None:
        self.model_dir = os.path.join(app_dir, "model")
        self.final_model = os.path.join(self.model_dir, "segmentation.pt")
        self.roi_size = tuple(int(v) for v in conf.get("roi_size", "96,96,96").split(","))
        self.train_roi_size = tuple(int(v) for v in conf.get("train_roi_size", "32,32,32").split(","))
        self._ensure_model()
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="radiology",
            description="3D segmentation with a MONAI UNet",
            version="0.1.0",
            labels=LABELS,
        )

    def _ensure_model(self) -> None:
        # No weights can be downloaded: start from the app's own checkpoint, else from random weights.
        if os.path.exists(self.final_model):
            logger.info("segmentation: using checkpoint %s", self.final_model)
            return
        os.makedirs(self.model_dir, exist_ok=True)
        torch.manual_seed(0)
        state = {"model": make_network().state_dict()}
        atomic_write(self.final_model, lambda f: torch.save(state, f))
        logger.warning("segmentation: no checkpoint; starting from random weights at %s", self.final_model)

    def init_infers(self) -> Dict[str, InferTask]:
        return {
            "segmentation": SegmentationInfer(
                path=self.final_model,
                network=make_network(),
                labels=LABELS,
                roi_size=self.roi_size,
                description="Segment the organ in a 3D volume",
            )
        }

    def init_trainers(self) -> Dict[str, TrainTask]:
        return {
            "segmentation": SegmentationTrainer(
                model_dir=os.path.join(self.model_dir, "segmentation"),
                network=make_network(),
                roi_size=self.train_roi_size,
                publish_path=self.final_model,
                labels=LABELS,
                description="Train the segmentation model on the final labels",
                config={"max_epochs": 20},
            )
        }

    def info(self) -> Dict[str, Any]:
        info = super().info()
        info["pretrained"] = False
        return info
