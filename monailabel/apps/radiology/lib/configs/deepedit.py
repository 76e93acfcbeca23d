"""``deepedit``: automatic first pass, then clicks to correct, in one model (plus ``deepedit_seg``).

Conf keys: ``labels``, ``roi_size`` (default 96,96,96), ``train_roi_size`` (default 32,32,32),
``deepgrow_probability_train`` (share of training iterations with simulated clicks, default 0.5),
``preload``, ``use_pretrained_model``.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Union

from lib.infers.deepedit import DeepEditInfer
from lib.infers.segmentation import make_network
from lib.trainers.deepedit import DeepEditTrainer
from lib.transforms import ordered_labels
from lib.weights import log_weights, model_paths, parse_labels, parse_size, seeded
from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.utils.others.generic import strtobool


class DeepEdit(TaskConfig):
    """One network for automatic segmentation and click-based correction."""

    def init(self, name: str, model_dir: str, conf: Dict[str, str], planner: Any, **kwargs: Any) -> None:
        super().init(name, model_dir, conf, planner, **kwargs)
        # background first, then by value: the guidance and output channel order of training and inference
        self.labels = ordered_labels(parse_labels(conf.get("labels"), {"organ": 1}), background=True)
        self.use_pretrained = strtobool(conf.get("use_pretrained_model", "true"))
        self.path = model_paths(model_dir, name, "unet", "unet", self.use_pretrained)
        self.weights = log_weights(name, self.path)
        self.roi_size = parse_size(conf.get("roi_size"), (96, 96, 96))
        self.train_roi_size = parse_size(conf.get("train_roi_size"), (32, 32, 32))
        self.deepgrow_probability_train = float(conf.get("deepgrow_probability_train", "0.5"))
        self.max_epochs = int(conf.get("max_epochs", "20"))
        n = len(self.labels)
        self.network = seeded(lambda: make_network("unet", 1 + n, n))

    def infer(self) -> Union[InferTask, Dict[str, InferTask]]:
        preload = strtobool(self.conf.get("preload", "false")) if self.conf else False
        common = dict(path=self.path, network=self.network, labels=self.labels, roi_size=self.roi_size,
                      preload=preload)
        return {
            str(self.name): DeepEditInfer(**common),
            f"{self.name}_seg": DeepEditInfer(type=InferType.SEGMENTATION,
                                              description="Automatic 3D segmentation (DeepEdit, no clicks)",
                                              **common),
        }

    def trainer(self) -> Optional[TrainTask]:
        return DeepEditTrainer(
            model_dir=os.path.join(str(self.model_dir), str(self.name)),
            network=self.network,
            labels=self.labels,
            roi_size=self.train_roi_size,
            deepgrow_probability_train=self.deepgrow_probability_train,
            load_path=self.path[0],
            publish_path=self.path[-1],
            description="Train the DeepEdit model with clicks simulated from the final labels",
            config={"max_epochs": self.max_epochs, "pretrained": self.use_pretrained},
        )
