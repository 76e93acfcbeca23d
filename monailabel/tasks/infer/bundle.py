"""``BundleInferTask``: runs a MONAI bundle's ``configs/inference.json`` as an infer task, as MONAI Label does.

A bundle folder holds ``configs/metadata.json``, ``configs/inference.json`` (or ``.yaml``) and
``models/model.pt`` (or ``model.ts``). The network, pre-processing, inferer and post-processing come
from the config; labels, dimension and description from the metadata. A bundle that is missing
(nothing is downloaded here) or incomplete is still served, as unavailable with the reason.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import sys
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

from monai.inferers import Inferer, SimpleInferer

from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask
from monailabel.transform.post import Restored
from monailabel.utils.others.class_utils import unload_module
from monailabel.utils.others.generic import strtobool

__all__ = ["BundleConstants", "BundleInferTask"]

logger = logging.getLogger(__name__)


class BundleConstants:
    """Names of a bundle's files and config keys; subclass it for bundles that use others."""

    def configs(self) -> Sequence[str]:
        return ["inference.json", "inference.yaml"]

    def metadata_json(self) -> str:
        return "metadata.json"

    def model_pytorch(self) -> str:
        return "model.pt"

    def model_torchscript(self) -> str:
        return "model.ts"

    def key_device(self) -> str:
        return "device"

    def key_bundle_root(self) -> str:
        return "bundle_root"

    def key_network_def(self) -> str:
        return "network_def"

    def key_preprocessing(self) -> Sequence[str]:
        return ["preprocessing", "pre_transforms"]

    def key_postprocessing(self) -> Sequence[str]:
        return ["postprocessing", "post_transforms"]

    def key_inferer(self) -> Sequence[str]:
        return ["inferer"]

    def key_detector(self) -> Sequence[str]:
        return ["detector"]

    def key_detector_ops(self) -> Sequence[str]:
        return ["detector_ops"]

    def key_displayable_configs(self) -> Sequence[str]:
        return ["displayable_configs"]


@contextmanager
def bundle_on_path(path: str) -> Iterator[None]:
    """Puts a bundle folder first on ``sys.path`` (its ``scripts`` package imported afresh) while in the block."""
    sys.path.insert(0, path)
    unload_module("scripts")
    try:
        yield
    finally:
        if path in sys.path:
            sys.path.remove(path)


def _type_name(type: Union[str, InferType]) -> str:
    """``"deepedit"`` for ``InferType.DEEPEDIT`` and for ``"DeepEdit"``."""
    return str(getattr(type, "value", type)).lower()


def _guess_type(name: str, type: Union[str, InferType]) -> Union[str, InferType]:
    if type:
        return type
    name = name.lower()
    for word, t in (("deepedit", InferType.DEEPEDIT), ("deepgrow", InferType.DEEPGROW),
                    ("detection", InferType.DETECTION), ("classification", InferType.CLASSIFICATION)):
        if word in name:
            return t
    return InferType.SEGMENTATION


def _filter(transforms: List[Any], filters: Optional[Sequence[type]]) -> List[Any]:
    return [t for t in transforms if not filters or not isinstance(t, tuple(filters))]


class BundleInferTask(BasicInferTask):
    """An infer task made from a MONAI bundle.

    Args:
        path: the bundle folder.
        conf: the app's ``--conf`` values (``preload``).
        const: names of files and keys.
        type: task type; guessed from the bundle name when empty.
        pre_filter: pre-transform classes to drop.
        post_filter: post-transform classes to drop (``SaveImaged`` by default: the server writes the mask).
        extend_load_image: let the loader accept decoded arrays too.
        add_post_restore: restore the prediction to the input's space and size at the end.
        dropout: set the network's dropout (epistemic scoring).
        load_strict: load the checkpoint strictly.
        kwargs: passed to :class:`BasicInferTask`.
    """

    def __init__(
        self,
        path: str,
        conf: Dict[str, str],
        const: Optional[BundleConstants] = None,
        type: Union[str, InferType] = "",
        pre_filter: Optional[Sequence] = None,
        post_filter: Optional[Sequence] = None,
        extend_load_image: bool = True,
        add_post_restore: bool = True,
        dropout: float = 0.0,
        load_strict: bool = False,
        **kwargs: Any,
    ) -> None:
        from monai.bundle import ConfigParser
        from monai.transforms import SaveImaged

        self.const = const if const else BundleConstants()
        self.bundle_path = path
        self.pre_filter = pre_filter
        self.post_filter = post_filter if post_filter is not None else [SaveImaged]
        self.extend_load_image = extend_load_image
        self.dropout = dropout
        self.version: Optional[str] = None
        self.displayable_configs: Dict[str, Any] = {}
        self.bundle_config: Any = None
        self.key_image, self.key_pred = "image", "pred"
        self._reason: Optional[str] = None
        name = os.path.basename(os.path.normpath(path))

        labels: Dict[str, int] = {}
        description, dimension, network, model_path = f"MONAI bundle {name}", 3, None, None
        task_type = _guess_type(name, type)
        configs = [c for c in self.const.configs() if os.path.exists(os.path.join(path, "configs", c))]
        meta_file = os.path.join(path, "configs", self.const.metadata_json())
        if not os.path.isdir(path):
            self._reason = (f"bundle '{name}' is not available locally (nothing is downloaded from the MONAI Model "
                            f"Zoo here); put the unpacked bundle in the app's model/{name} folder")
        elif not configs or not os.path.exists(meta_file):
            self._reason = f"bundle '{name}' has no configs/{self.const.metadata_json()} or {self.const.configs()}"
        else:
            self.bundle_config_path = os.path.join(path, "configs", configs[0])
            self.bundle_config = ConfigParser()
            self.bundle_config.read_config(self.bundle_config_path)
            self.bundle_config.config.update({self.const.key_bundle_root(): path})
            self.bundle_config.config["use_click"] = _type_name(type) == "deepedit"
            if dropout > 0:
                self.bundle_config["network_def"]["dropout"] = dropout
            pt = os.path.join(path, "models", self.const.model_pytorch())
            ts = os.path.join(path, "models", self.const.model_torchscript())
            with bundle_on_path(path):
                if os.path.exists(pt):
                    model_path = pt
                    network = self.bundle_config.get_parsed_content(self.const.key_network_def(), instantiate=True)
                elif os.path.exists(ts):
                    model_path = ts
                else:
                    self._reason = f"bundle '{name}' has no models/{self.const.model_pytorch()} or " \
                                   f"models/{self.const.model_torchscript()}"
            with open(meta_file) as fp:
                metadata = json.load(fp)
            fmt = metadata.get("network_data_format", {})
            self.key_image, image = next(iter(fmt.get("inputs", {"image": {}}).items()))
            self.key_pred, pred = next(iter(fmt.get("outputs", {"pred": {}}).items()))
            for k, v in (pred.get("channel_def") or {}).items():
                if str(v).lower() != "background" or _type_name(task_type) == "deepedit":
                    labels[str(v).lower()] = int(k)
            description = metadata.get("description") or description
            spatial = image.get("spatial_shape")
            dimension = len(spatial) if spatial else 3
            self.version = metadata.get("version")

        self.add_post_restore = False if task_type == InferType.DETECTION else add_post_restore
        if self._reason:
            logger.error(f"Bundle {name}: {self._reason}")
        super().__init__(
            path=model_path,
            network=network,
            type=task_type,
            labels=labels,
            dimension=dimension,
            description=description,
            preload=strtobool(conf.get("preload", "false")) and self._reason is None,
            load_strict=load_strict,
            **kwargs,
        )
        if self.bundle_config is not None and self._reason is None:
            models = sorted((os.path.basename(p) for p in glob.glob(os.path.join(path, "models", "*.pt"))), key=len)
            self._config.update({"model_filename": models})
            for k in self.const.key_displayable_configs():
                if self.bundle_config.get(k):
                    self.displayable_configs = self.bundle_config.get_parsed_content(k, instantiate=True)
                    self._config.update(self.displayable_configs)

    def unavailable_reason(self) -> Optional[str]:
        """Why the bundle cannot run (missing, or without config or weights)."""
        return self._reason

    def is_valid(self) -> bool:
        return self._reason is None

    def info(self) -> Dict[str, Any]:
        i = super().info()
        i["version"] = self.version
        return i

    def _update_device(self, data: Optional[Dict[str, Any]]) -> None:
        from monai.bundle import ConfigItem

        key = self.const.key_device()
        device = data.get(key) if data else None
        if device:
            self.bundle_config.config.update({key: device})
            if self.bundle_config.ref_resolver.items.get(key):
                self.bundle_config.ref_resolver.items[key] = ConfigItem(config=device, id=key)

    def _parsed(self, keys: Sequence[str], data: Optional[Dict[str, Any]]) -> Any:
        with bundle_on_path(self.bundle_path):
            self._update_device(data)
            for k in keys:
                if self.bundle_config.get(k):
                    return self.bundle_config.get_parsed_content(k, instantiate=True)
        return None

    def pre_transforms(self, data: Optional[Dict[str, Any]] = None) -> Sequence[Callable]:
        from monai.transforms import Compose, LoadImaged

        from monailabel.transform.pre import LoadImageTensord

        for k in self.const.key_displayable_configs():
            if self.bundle_config.get(k) and data:
                self.bundle_config[k].update({c: data[c] for c in self.displayable_configs if c in data})
                self.bundle_config.parse()
        c = self._parsed(self.const.key_preprocessing(), data)
        pre = list(c.transforms) if isinstance(c, Compose) else list(c or [])
        pre = _filter(pre, self.pre_filter)
        result = []
        for t in pre:
            if isinstance(t, LoadImaged):
                t._loader.image_only = False
                if self.extend_load_image:
                    t = LoadImageTensord(keys=t.keys, load_image_d=t)
            result.append(t)
        return result

    def inferer(self, data: Optional[Dict[str, Any]] = None) -> Inferer:
        i = self._parsed(self.const.key_inferer(), data)
        return i if i is not None else SimpleInferer()

    def detector(self, data: Optional[Dict[str, Any]] = None) -> Optional[Callable]:
        d = self._parsed(self.const.key_detector(), data)
        if d is not None:
            self._parsed(self.const.key_detector_ops(), data)
            if not callable(d):
                raise ValueError("Invalid Detector type;  It's not callable")
        return d

    def post_transforms(self, data: Optional[Dict[str, Any]] = None) -> Sequence[Callable]:
        from monai.transforms import Compose

        c = self._parsed(self.const.key_postprocessing(), data)
        post = list(c.transforms) if isinstance(c, Compose) else list(c or [])
        post = _filter(post, self.post_filter)
        if self.add_post_restore:
            post.append(Restored(keys=self.key_pred, ref_image=self.key_image))
        return post
