"""MONAI Label's first ``EpistemicScoring``: Monte Carlo dropout with its own model, network and transforms.

MONAI Label's radiology configs still construct it. For each unlabeled image not yet scored for the
current model file, the network runs ``num_samples`` times in train mode (dropout on) through a sliding
window; the mean voxel-wise entropy of the softmax (sigmoid for one channel) is stored in the image's
info as ``epistemic_entropy``, with ``epistemic_ts``: the model file's modification time.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.tasks._checks import check_int, check_str
from monailabel.tasks.infer._network import load_network
from monailabel.tasks.scoring.uncertainty import as_probabilities, entropy_map, stack_samples
from monailabel.utils.others.generic import name_to_device

logger = logging.getLogger(__name__)

__all__ = ["EpistemicScoring"]


class EpistemicScoring(ScoringMethod):
    """Scores unlabeled images by the entropy of a network's predictions under dropout.

    Args:
        model: the model file, or candidate files (the last existing one is used): a checkpoint for
            ``network``, or TorchScript when ``network`` is None.
        network: the network (None: load ``model`` as TorchScript).
        transforms: pre-transforms from ``{"image": path}`` to a channel-first ``image`` tensor.
        roi_size: sliding-window size.
        num_samples: forward passes per image (at least 2).
        load_strict: load the checkpoint strictly.

    Request keys (each optional): ``num_samples``, ``device``.
    """

    def __init__(
        self,
        model: Union[None, str, Sequence[str]],
        network: Optional[torch.nn.Module] = None,
        transforms: Union[None, Callable, Sequence[Callable]] = None,
        roi_size: Sequence[int] = (128, 128, 64),
        num_samples: int = 10,
        load_strict: bool = False,
    ) -> None:
        super().__init__("Compute initial score based on dropout")
        self.model = model
        self.network = network
        self.transforms = transforms
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.roi_size = roi_size
        self.num_samples = num_samples
        self.load_strict = load_strict

    def validate(self, request: Dict[str, Any]) -> None:
        """Checks ``num_samples`` and ``device``."""
        check_int(request, "num_samples", 1, 1000)
        check_str(request, "device")

    def _model_path(self) -> Optional[str]:
        paths = [self.model] if isinstance(self.model, str) else list(self.model or [])
        for path in reversed(paths):
            if path and os.path.exists(path):
                return str(path)
        return None

    def _load_model(self, device: str) -> Tuple[Optional[Any], int]:
        path = self._model_path()
        if not path and self.network is None:
            logger.warning(f"Skip Epistemic Scoring:: Model(s) {self.model} not available yet")
            return None, 0
        model_ts = int(os.stat(path).st_mtime) if path else 1
        return load_network(self.network, path, device, "model", self.load_strict), model_ts

    def _pre_transforms(self) -> Optional[Callable]:
        if not self.transforms:
            return None
        if callable(self.transforms):
            return self.transforms
        from monai.transforms import Compose

        return Compose(list(self.transforms))

    def infer_seg(self, data: Dict[str, Any], model: Any, roi_size: Sequence[int], sw_batch_size: int) -> np.ndarray:
        """Runs one forward pass over a sliding window; returns probabilities ``(1, channels, *spatial)``."""
        from monai.inferers import sliding_window_inference

        transforms = self._pre_transforms()
        data = transforms(data) if transforms else data
        image = torch.as_tensor(data["image"])[None].to(self.device)
        with torch.no_grad():
            preds = sliding_window_inference(image, roi_size, sw_batch_size, model)
        probs = torch.softmax(preds, dim=1) if preds.shape[1] > 1 else torch.sigmoid(preds)
        return probs.detach().cpu().numpy()

    def __call__(self, request: Dict[str, Any], datastore: Datastore) -> Optional[Dict[str, Any]]:
        self.validate(request)
        logger.info("Starting Epistemic Uncertainty scoring")
        self.device = name_to_device(request.get("device", self.device))
        model, model_ts = self._load_model(self.device)
        if model is None:
            return None
        model = model.to(self.device).train()

        num_samples = request.get("num_samples", self.num_samples)
        if num_samples < 2:
            logger.warning("EPISTEMIC:: num_samples raised to 2: entropy needs at least two samples")
            num_samples = 2

        result: Dict[str, Any] = {}
        skipped = 0
        unlabeled = datastore.get_unlabeled_images()
        dimension = len(self.roi_size)
        for image_id in unlabeled:
            if (datastore.get_image_info(image_id) or {}).get("epistemic_ts", 0) == model_ts:
                skipped += 1
                continue
            start = time.time()
            data = {"image": datastore.get_image_uri(image_id)}
            samples = [as_probabilities(self.infer_seg(dict(data), model, self.roi_size, 1)[0], dimension)
                       for _ in range(num_samples)]
            entropy = float(np.nanmean(entropy_map(stack_samples(samples))))
            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()
            logger.info(f"EPISTEMIC:: {image_id} => entropy: {entropy}; {num_samples} samples in "
                        f"{time.time() - start:.3f} s")
            info = {"epistemic_entropy": entropy, "epistemic_ts": model_ts}
            datastore.update_image_info(image_id, info)
            result[image_id] = info
        logger.info(f"EPISTEMIC:: Total: {len(unlabeled)}; Skipped = {skipped}; Executed: {len(result)}")
        return result
