"""Pathology template app: 2D segmentation of large images (PNG/TIFF), tiled, as MONAI Label's pathology app.

Start it with ``monailabel start_server --app <this folder> --studies <images> [--conf KEY VALUE ...]``
(``monailabel datasets --name slides --output DIR`` writes sample slides). Models (``--conf models``,
default ``segmentation_nuclei``): ``segmentation_nuclei`` segments nuclei tile by tile and answers a
PNG mask, or polygons with the request key ``output`` = ``json`` (``dsa`` / ``asap`` for files).

Nothing is downloaded: the model starts from ``model/segmentation_nuclei.pt`` (published by training)
or ``model/pretrained_segmentation_nuclei.pt`` when present, else from random weights, and the log and
app info (``weights``) say which.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import pkgutil
from typing import Any, Dict

import lib.configs

from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random

logger = logging.getLogger(__name__)


def available_configs() -> Dict[str, type]:
    """Returns the TaskConfig classes of ``lib/configs`` by module name, sorted."""
    configs: Dict[str, type] = {}
    for module_info in pkgutil.iter_modules(lib.configs.__path__):
        module = importlib.import_module(f"lib.configs.{module_info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, TaskConfig) and cls is not TaskConfig and cls.__module__ == module.__name__:
                configs[module_info.name] = cls
    return dict(sorted(configs.items()))


class PathologyApp(MONAILabelApp):
    """Serves the 2D models named by ``--conf models``."""

    def __init__(self, app_dir: str, studies: str, conf: Dict[str, str]) -> None:
        self.model_dir = os.path.join(app_dir, "model")
        os.makedirs(self.model_dir, exist_ok=True)
        configs = available_configs()
        names = [m.strip() for m in conf.get("models", "segmentation_nuclei").split(",") if m.strip()]
        invalid = [m for m in names if m != "all" and m not in configs]
        if invalid or not names:
            raise MONAILabelException(
                MONAILabelError.APP_INIT_ERROR,
                f"invalid models {invalid}; pass --conf models with names from: all, {', '.join(configs)}",
            )
        self.models: Dict[str, TaskConfig] = {}
        for name, cls in configs.items():
            if name in names or "all" in names:
                config = cls()
                config.init(name, self.model_dir, conf, None)
                self.models[name] = config
        labels: Dict[str, int] = {}
        for config in self.models.values():
            labels.update(config.labels or {})
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="pathology",
                         description="2D segmentation of large images, tiled", version="0.2.0", labels=labels)

    def init_infers(self) -> Dict[str, InferTask]:
        infers: Dict[str, InferTask] = {}
        for name, config in self.models.items():
            tasks = config.infer()
            infers.update(tasks if isinstance(tasks, dict) else {name: tasks})
        return infers

    def init_trainers(self) -> Dict[str, TrainTask]:
        trainers: Dict[str, TrainTask] = {}
        for name, config in self.models.items():
            task = config.trainer()
            if task:
                trainers[name] = task
        return trainers

    def init_strategies(self) -> Dict[str, Strategy]:
        return {"random": Random(), "first": First()}

    def info(self) -> Dict[str, Any]:
        info = super().info()
        info["weights"] = {name: m.get("weights") for name, m in info["models"].items()}
        return info
