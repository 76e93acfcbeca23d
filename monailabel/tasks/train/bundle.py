"""``BundleTrainTask``: trains a MONAI bundle with its ``configs/train.json`` on the datastore's labels.

As MONAI Label does: the bundle's ``train#dataset#data`` (and ``validate#dataset#data``) are replaced
by the datastore's labeled images, ``train#trainer#max_epochs`` and ``device`` by the request's, and
the existing ``models/model.pt`` is loaded first (``pretrained``). The bundle's own handlers save the
trained model (usually to ``models/model.pt``, which the bundle's infer task then reloads).
Multi-GPU training (``torchrun``) is not offered here; a single process trains.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.infer.bundle import bundle_on_path
from monailabel.utils.others.generic import device_list, name_to_device

__all__ = ["BundleConstants", "BundleTrainTask"]

logger = logging.getLogger(__name__)


class BundleConstants:
    """Names of a bundle's training files and config keys."""

    def configs(self) -> Sequence[str]:
        return ["train.json", "train.yaml"]

    def multi_gpu_configs(self) -> Sequence[str]:
        return ["multi_gpu_train.json", "multi_gpu_train.yaml"]

    def metadata_json(self) -> str:
        return "metadata.json"

    def model_pytorch(self) -> str:
        return "model.pt"

    def key_device(self) -> str:
        return "device"

    def key_bundle_root(self) -> str:
        return "bundle_root"

    def key_network(self) -> str:
        return "network"

    def key_network_def(self) -> str:
        return "network_def"

    def key_train_trainer_max_epochs(self) -> str:
        return "train#trainer#max_epochs"

    def key_train_dataset_data(self) -> str:
        return "train#dataset#data"

    def key_train_handlers(self) -> str:
        return "train#handlers"

    def key_validate_dataset_data(self) -> str:
        return "validate#dataset#data"

    def key_tracking(self) -> str:
        return "tracking"

    def key_tracking_uri(self) -> str:
        return "tracking_uri"

    def key_experiment_name(self) -> str:
        return "experiment_name"

    def key_run_name(self) -> str:
        return "run_name"

    def key_displayable_configs(self) -> Sequence[str]:
        return ["displayable_configs"]


class BundleTrainTask(TrainTask):
    """A training task made from a MONAI bundle.

    Args:
        path: the bundle folder.
        conf: the app's ``--conf`` values.
        const: names of files and keys.
        enable_tracking: kept for MONAI Label compatibility (no experiment tracking here).
        model_dict_key: key of the network in the checkpoint.
        load_strict: load the checkpoint strictly.
    """

    def __init__(
        self,
        path: str,
        conf: Dict[str, str],
        const: Optional[BundleConstants] = None,
        enable_tracking: bool = False,
        model_dict_key: str = "model",
        load_strict: bool = False,
    ) -> None:
        from monai.bundle import ConfigParser

        self.valid = False
        self.conf = conf
        self.const = const if const else BundleConstants()
        self.enable_tracking = enable_tracking
        self.model_dict_key = model_dict_key
        self.load_strict = load_strict
        self.bundle_path = path
        self.version: Optional[str] = None
        self._stats: Dict[str, Any] = {}
        configs = [c for c in self.const.configs() if os.path.exists(os.path.join(path, "configs", c))]
        meta = os.path.join(path, "configs", self.const.metadata_json())
        if not configs or not os.path.exists(meta):
            logger.warning(f"Ignore {path}: no train config {list(self.const.configs())} or metadata")
            super().__init__("")
            return
        self.bundle_config_path = os.path.join(path, "configs", configs[0])
        self.bundle_metadata_path = meta
        self.bundle_config = ConfigParser()
        self.bundle_config.read_config(self.bundle_config_path)
        self.bundle_config.config.update({self.const.key_bundle_root(): path})
        with open(meta) as fp:
            metadata = json.load(fp)
        super().__init__(metadata.get("description", ""))
        self.version = metadata.get("version")
        self.valid = True

    def is_valid(self) -> bool:
        return self.valid

    def info(self) -> Dict[str, Any]:
        i = super().info()
        i["version"] = self.version
        return i

    def stats(self) -> Dict[str, Any]:
        return dict(self._stats)

    def config(self) -> Dict[str, Any]:
        models = sorted((os.path.basename(p) for p in glob.glob(os.path.join(self.bundle_path, "models", "*.pt"))),
                        key=len)
        options: Dict[str, Any] = {
            "device": device_list(),
            "pretrained": True,
            "max_epochs": 50,
            "val_split": 0.2,
            "multi_gpu": False,
            "gpus": "all",
            "tracking": ["None"],
            "tracking_uri": "",
            "tracking_experiment_name": "",
            "run_id": "",
            "model_filename": models,
        }
        if self.valid:
            for k in self.const.key_displayable_configs():
                if self.bundle_config.get(k):
                    options.update(self.bundle_config.get_parsed_content(k, instantiate=True))
        return options

    def _fetch_datalist(self, request: Dict[str, Any], datastore: Datastore) -> List[Dict[str, Any]]:
        return [{"image": d["image"], "label": d["label"]} for d in datastore.datalist() if d]

    def _partition_datalist(self, datalist: List[Dict[str, Any]], request: Dict[str, Any],
                            shuffle: bool = False) -> Tuple[List[Any], Optional[List[Any]]]:
        val_split = float(request.get("val_split", 0.2))
        if val_split > 0.0 and len(datalist) > 1:
            from monai.data import partition_dataset

            train, val = partition_dataset(datalist, ratios=[1 - val_split, val_split], shuffle=shuffle)
            return train, val
        return datalist, (None if val_split < 0 else [])

    def _load_checkpoint(self, model_pytorch: str, pretrained: bool, train_handlers: List[Any]) -> None:
        if pretrained and os.path.exists(model_pytorch):
            if not [t for t in train_handlers if t.get("_target_") == "CheckpointLoader"]:
                train_handlers.insert(0, {
                    "_target_": "CheckpointLoader",
                    "load_path": model_pytorch,
                    "load_dict": {self.model_dict_key: f"$@{self.const.key_network()}"},
                    "strict": self.load_strict,
                })

    def _update_overrides(self, overrides: Dict[str, Any]) -> Dict[str, Any]:
        """Lets a subclass change the overrides before the bundle runs."""
        return overrides

    def __call__(self, request: Dict[str, Any], datastore: Datastore) -> Dict[str, Any]:
        """Trains the bundle on the datastore's labeled images.

        Raises:
            MONAILabelException: PRECONDITION_FAILED for an incomplete bundle or no labeled images.
        """
        import copy


        if not self.valid:
            raise MONAILabelException(MONAILabelError.PRECONDITION_FAILED,
                                      f"bundle {os.path.basename(self.bundle_path)} has no train config")
        datalist = self._fetch_datalist(request, datastore)
        if not datalist:
            raise MONAILabelException(MONAILabelError.PRECONDITION_FAILED, "no labeled images to train on")
        train_ds, val_ds = self._partition_datalist(datalist, request)
        max_epochs = int(request.get("max_epochs", 50))
        device = name_to_device(request.get("device", "cuda"))
        handlers = copy.deepcopy(self.bundle_config.get(self.const.key_train_handlers(), []))
        name = request.get("model_filename", self.const.model_pytorch())
        name = name if isinstance(name, str) else name[0]
        self._load_checkpoint(os.path.join(self.bundle_path, "models", name), bool(request.get("pretrained", True)),
                              handlers)
        overrides: Dict[str, Any] = {
            self.const.key_bundle_root(): self.bundle_path,
            self.const.key_train_trainer_max_epochs(): max_epochs,
            self.const.key_train_dataset_data(): train_ds,
            self.const.key_device(): device,
            self.const.key_train_handlers(): handlers,
        }
        for k in self.const.key_displayable_configs():
            if self.bundle_config.get(k):
                shown = self.bundle_config.get_parsed_content(k, instantiate=True)
                overrides[k] = {c: request[c] for c in shown if c in request}
        if val_ds is not None and self.bundle_config.get("validate"):
            overrides[self.const.key_validate_dataset_data()] = val_ds
        overrides = self._update_overrides(overrides) or overrides
        logger.info(f"Training bundle {self.bundle_path}: {len(train_ds)} train, {len(val_ds or [])} val, "
                    f"{max_epochs} epochs on {device}")
        with bundle_on_path(self.bundle_path):
            self.run_single_gpu(request, overrides)
        self._stats = {"total_epochs": max_epochs, "train_samples": len(train_ds), "val_samples": len(val_ds or [])}
        logger.info("Training Finished....")
        return dict(self._stats)

    def run_single_gpu(self, request: Dict[str, Any], overrides: Dict[str, Any]) -> None:
        """Runs the bundle's ``run`` workflow in this process."""
        import monai.bundle

        monai.bundle.run(run_id=request.get("run_id") or "run", init_id=None, final_id=None,
                         meta_file=self.bundle_metadata_path, config_file=self.bundle_config_path, **overrides)
