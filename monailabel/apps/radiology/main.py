"""Radiology template app: automatic and interactive 3D segmentation, as MONAI Label's radiology app.

Start it with ``monailabel start_server --app <this folder> --studies <images> [--conf KEY VALUE ...]``.
Each module of ``lib/configs`` holds one model's ``TaskConfig`` (infer task, trainer, strategies,
scoring); ``--conf models`` picks them by module name:

* ``segmentation``: automatic multi-label segmentation (UNet or SegResNet), with its trainer;
* ``deepgrow_3d``: foreground/background clicks in, the clicked structure out, with a trainer that
  simulates clicks from the labels;
* ``deepedit``: an automatic first pass, then clicks to correct (``deepedit`` and ``deepedit_seg``).

App conf keys: ``models`` (comma-separated names or ``all``; default ``segmentation``), ``labels``
(``{"organ": 1}`` by default), ``preload`` (load networks at start), ``use_pretrained_model`` (use
``model/pretrained_<name>.pt`` when present), ``skip_trainers``, ``skip_strategies``, ``skip_scoring``,
``epistemic_enabled``; each config documents its own keys (``roi_size``, ``network`` ...).

Nothing is downloaded: a model starts from its own checkpoint in ``model/`` when there is one, else from
random weights, and the log and app info (``weights``) say which. Training publishes ``model/<name>.pt``,
which the model's infer task loads (and reloads when it changes). Strategies ``random`` and ``first`` are
always there; ``segmentation_epistemic`` (strategy and scoring) with ``--conf epistemic_enabled true``.
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
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.utils.others.generic import strtobool

logger = logging.getLogger(__name__)

DEFAULT_MODELS = "segmentation"


def available_configs() -> Dict[str, type]:
    """Returns the TaskConfig classes of ``lib/configs`` by module name, sorted."""
    configs: Dict[str, type] = {}
    for module_info in pkgutil.iter_modules(lib.configs.__path__):
        module = importlib.import_module(f"lib.configs.{module_info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, TaskConfig) and cls is not TaskConfig and cls.__module__ == module.__name__:
                configs[module_info.name] = cls
    return dict(sorted(configs.items()))


class RadiologyApp(MONAILabelApp):
    """Serves the models named by ``--conf models``."""

    def __init__(self, app_dir: str, studies: str, conf: Dict[str, str]) -> None:
        self.model_dir = os.path.join(app_dir, "model")
        os.makedirs(self.model_dir, exist_ok=True)
        configs = available_configs()
        names = [m.strip() for m in conf.get("models", DEFAULT_MODELS).split(",") if m.strip()]
        invalid = [m for m in names if m != "all" and m not in configs]
        if invalid or not names:
            raise MONAILabelException(
                MONAILabelError.APP_INIT_ERROR,
                f"invalid models {invalid}; pass --conf models with comma-separated names from: "
                f"all, {', '.join(configs)}",
            )
        self.models: Dict[str, TaskConfig] = {}
        for name, cls in configs.items():
            if name in names or "all" in names:
                config = cls()
                config.init(name, self.model_dir, conf, None)
                self.models[name] = config
        logger.info("+++ Using models: %s", list(self.models))
        labels: Dict[str, int] = {}
        for config in self.models.values():
            labels.update({k: v for k, v in (config.labels or {}).items() if k != "background"})
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="radiology",
            description="Automatic and interactive 3D segmentation",
            version="0.2.0",
            labels=labels,
        )

    def init_infers(self) -> Dict[str, InferTask]:
        infers: Dict[str, InferTask] = {}
        for name, config in self.models.items():
            tasks = config.infer()
            infers.update(tasks if isinstance(tasks, dict) else {name: tasks})
        return infers

    def init_trainers(self) -> Dict[str, TrainTask]:
        if strtobool(self.conf.get("skip_trainers", "false")):
            return {}
        trainers: Dict[str, TrainTask] = {}
        for name, config in self.models.items():
            task = config.trainer()
            if task:
                trainers[name] = task
        return trainers

    def init_strategies(self) -> Dict[str, Strategy]:
        strategies: Dict[str, Strategy] = {"random": Random(), "first": First()}
        if strtobool(self.conf.get("skip_strategies", "false")):
            return strategies
        for name, config in self.models.items():
            s = config.strategy()
            strategies.update(s if isinstance(s, dict) else {name: s} if s else {})
        return strategies

    def init_scoring_methods(self) -> Dict[str, ScoringMethod]:
        if strtobool(self.conf.get("skip_scoring", "false")):
            return {}
        methods: Dict[str, ScoringMethod] = {}
        for name, config in self.models.items():
            s = config.scoring_method()
            methods.update(s if isinstance(s, dict) else {name: s} if s else {})
        return methods

    def info(self) -> Dict[str, Any]:
        info = super().info()
        # where each model's weights come from: a checkpoint in model/, or random weights (never a download)
        info["weights"] = {name: m.get("weights") for name, m in info["models"].items()}
        return info
