"""``deepgrow_3d``: interactive 3D segmentation from foreground/background clicks, with its trainer.

Conf keys: ``labels`` (which structures clicks may target; the mask gets the targeted label's value),
``roi_size`` (sliding-window ROI, default 96,96,96), ``train_roi_size`` (crop around a structure when
training, default 32,32,32), ``max_train_interactions`` (simulated click rounds, default 5),
``preload``, ``use_pretrained_model``.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Union

from lib.infers.deepgrow import DeepgrowInfer
from lib.infers.segmentation import make_network
from lib.trainers.deepgrow import DeepgrowTrainer
from lib.weights import log_weights, model_paths, parse_labels, parse_size, seeded
from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.utils.others.generic import strtobool


class Deepgrow3D(TaskConfig):
    """Clicks in, the clicked structure out."""

    def init(self, name: str, model_dir: str, conf: Dict[str, str], planner: Any, **kwargs: Any) -> None:
        super().init(name, model_dir, conf, planner, **kwargs)
        self.labels = parse_labels(conf.get("labels"), {"organ": 1})
        self.use_pretrained = strtobool(conf.get("use_pretrained_model", "true"))
        self.path = model_paths(model_dir, name, "unet", "unet", self.use_pretrained)
        self.weights = log_weights(name, self.path)
        self.roi_size = parse_size(conf.get("roi_size"), (96, 96, 96))
        self.train_roi_size = parse_size(conf.get("train_roi_size"), (32, 32, 32))
        self.max_train_interactions = int(conf.get("max_train_interactions", "5"))
        self.max_epochs = int(conf.get("max_epochs", "20"))
        # image, foreground guidance, background guidance in; one logit out
        self.network = seeded(lambda: make_network("unet", 3, 1))

    def infer(self) -> Union[InferTask, Dict[str, InferTask]]:
        return DeepgrowInfer(
            path=self.path,
            network=self.network,
            labels=self.labels,
            roi_size=self.roi_size,
            preload=strtobool(self.conf.get("preload", "false")) if self.conf else False,
        )

    def trainer(self) -> Optional[TrainTask]:
        return DeepgrowTrainer(
            model_dir=os.path.join(str(self.model_dir), str(self.name)),
            network=self.network,
            roi_size=self.train_roi_size,
            max_train_interactions=self.max_train_interactions,
            load_path=self.path[0],
            publish_path=self.path[-1],
            description="Train the deepgrow model with clicks simulated from the final labels",
            config={"max_epochs": self.max_epochs, "pretrained": self.use_pretrained},
        )
