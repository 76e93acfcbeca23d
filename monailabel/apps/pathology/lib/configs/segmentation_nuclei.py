"""``segmentation_nuclei``: 2D nuclei segmentation of large images, tiled, with its trainer.

Conf keys: ``labels`` (default ``{"nuclei": 1}``), ``tile_size`` (inference and validation tiles,
default 256,256), ``patch_size`` (training patches, default 64,64), ``max_epochs`` (default 20),
``preload``, ``use_pretrained_model`` (``model/pretrained_segmentation_nuclei.pt`` when present).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, Optional, Union

import torch

from lib.infers.segmentation_nuclei import SegmentationNucleiInfer, make_network
from lib.trainers.segmentation_nuclei import SegmentationNucleiTrainer
from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.utils.others.generic import strtobool

logger = logging.getLogger(__name__)


def _size(value: Optional[str], default: tuple) -> tuple:
    return tuple(int(v) for v in value.strip("[]() ").split(",")) if value else default


class SegmentationNuclei(TaskConfig):
    """Nuclei in RGB slides."""

    def init(self, name: str, model_dir: str, conf: Dict[str, str], planner: Any, **kwargs: Any) -> None:
        super().init(name, model_dir, conf, planner, **kwargs)
        labels = conf.get("labels")
        self.labels = {str(k): int(v) for k, v in json.loads(labels).items()} if labels else {"nuclei": 1}
        self.use_pretrained = strtobool(conf.get("use_pretrained_model", "true"))
        published = os.path.join(model_dir, f"{name}.pt")
        pretrained = os.path.join(model_dir, f"pretrained_{name}.pt")
        self.path = [pretrained, published] if self.use_pretrained else [published]
        existing = [p for p in self.path if os.path.exists(p)]
        if existing:
            logger.info("%s: using checkpoint %s", name, existing[-1])
        else:
            logger.warning("%s: random weights (seed 0): no checkpoint at %s; nothing is downloaded", name,
                           ", ".join(self.path))
        self.tile_size = _size(conf.get("tile_size"), (256, 256))
        self.patch_size = _size(conf.get("patch_size"), (64, 64))
        self.max_epochs = int(conf.get("max_epochs", "20"))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.network = make_network(len(self.labels) + 1)

    def infer(self) -> Union[InferTask, Dict[str, InferTask]]:
        return SegmentationNucleiInfer(path=self.path, network=self.network, labels=self.labels,
                                       tile_size=self.tile_size,
                                       preload=strtobool(self.conf.get("preload", "false")) if self.conf else False)

    def trainer(self) -> Optional[TrainTask]:
        return SegmentationNucleiTrainer(
            model_dir=os.path.join(str(self.model_dir), str(self.name)),
            network=self.network,
            labels=self.labels,
            patch_size=self.patch_size,
            tile_size=self.tile_size,
            load_path=self.path[0],
            publish_path=self.path[-1],
            description="Train the nuclei model on the final labels",
            config={"max_epochs": self.max_epochs, "pretrained": self.use_pretrained},
        )
