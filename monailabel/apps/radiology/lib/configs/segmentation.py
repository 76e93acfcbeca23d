"""``segmentation``: automatic multi-label 3D segmentation (UNet or SegResNet), with its trainer.

Conf keys (``--conf KEY VALUE``): ``labels`` (``{"organ": 1}`` by default; JSON or comma-separated
names), ``network`` (``unet`` or ``segresnet``), ``roi_size`` (sliding-window ROI, default 96,96,96),
``train_roi_size`` (training crops, default 32,32,32), ``max_epochs`` (default 20), ``preload``,
``use_pretrained_model``, ``epistemic_enabled`` / ``epistemic_samples`` (the epistemic strategy and
scoring method, on a copy of the network with dropout), ``train_world_size`` (train on that many
processes: one per GPU, or CPU processes on Gloo without GPUs; a process count is the app's to set,
never a train request's).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Optional, Union

from lib.infers.segmentation import SegmentationInfer, make_network
from lib.trainers.segmentation import SegmentationTrainer
from lib.weights import log_weights, model_paths, parse_labels, parse_size, seeded
from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.utils.others.generic import strtobool

logger = logging.getLogger(__name__)


class Segmentation(TaskConfig):
    """Automatic segmentation of every label."""

    def init(self, name: str, model_dir: str, conf: Dict[str, str], planner: Any, **kwargs: Any) -> None:
        super().init(name, model_dir, conf, planner, **kwargs)
        self.labels = parse_labels(conf.get("labels"), {"organ": 1})
        self.network_name = conf.get("network", "unet")
        self.use_pretrained = strtobool(conf.get("use_pretrained_model", "true"))
        self.path = model_paths(model_dir, name, self.network_name, "unet", self.use_pretrained)
        self.weights = log_weights(name, self.path)
        self.roi_size = parse_size(conf.get("roi_size"), (96, 96, 96))
        self.train_roi_size = parse_size(conf.get("train_roi_size"), (32, 32, 32))
        self.max_epochs = int(conf.get("max_epochs", "20"))
        self.train_world_size = int(conf.get("train_world_size", "0"))
        out = len(self.labels) + 1
        self.network = seeded(lambda: make_network(self.network_name, 1, out))
        self.network_with_dropout = seeded(lambda: make_network(self.network_name, 1, out, dropout=0.2))
        self.epistemic_enabled = strtobool(conf.get("epistemic_enabled", "false"))
        self.epistemic_samples = int(conf.get("epistemic_samples", "5"))

    def infer(self) -> Union[InferTask, Dict[str, InferTask]]:
        return SegmentationInfer(
            path=self.path,
            network=self.network,
            labels=self.labels,
            roi_size=self.roi_size,
            preload=strtobool(self.conf.get("preload", "false")) if self.conf else False,
        )

    def trainer(self) -> Optional[TrainTask]:
        return SegmentationTrainer(
            model_dir=os.path.join(str(self.model_dir), str(self.name)),
            network=self.network,
            roi_size=self.train_roi_size,
            load_path=self.path[0],
            publish_path=self.path[-1],
            labels=self.labels,
            description="Train the segmentation model on the final labels",
            config={
                "max_epochs": self.max_epochs,
                "pretrained": self.use_pretrained,
                **({"world_size": self.train_world_size} if self.train_world_size > 0 else {}),
            },
        )

    def strategy(self) -> Union[None, Strategy, Dict[str, Strategy]]:
        if not self.epistemic_enabled:
            return None
        from monailabel.tasks.activelearning.epistemic import Epistemic

        return {f"{self.name}_epistemic": Epistemic()}

    def scoring_method(self) -> Union[None, ScoringMethod, Dict[str, ScoringMethod]]:
        if not self.epistemic_enabled:
            return None
        from monailabel.tasks.scoring.epistemic import EpistemicScoring

        transforms = SegmentationInfer(self.path, None, self.labels, self.roi_size).pre_transforms()
        return {
            f"{self.name}_epistemic": EpistemicScoring(
                model=self.path,
                network=self.network_with_dropout,
                transforms=transforms,
                roi_size=self.roi_size,
                num_samples=self.epistemic_samples,
            )
        }
