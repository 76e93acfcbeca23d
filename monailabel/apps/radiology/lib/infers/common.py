"""What the template's infer tasks share: where their weights come from, and an inferer for any image size."""

from __future__ import annotations

from typing import Any, Dict, Optional

from monai.inferers import Inferer, SlidingWindowInferer

from lib.weights import describe
from monailabel.tasks.infer.basic_infer import BasicInferTask


class TemplateInfer(BasicInferTask):
    """A ``BasicInferTask`` that reports its weights in ``info()`` and runs on images of any size.

    The networks halve the image three times, so every window is a multiple of 8: images up to
    ``roi_size`` run in one window padded to the next multiple of 8, larger ones in a sliding window.
    """

    def info(self) -> Dict[str, Any]:
        info = super().info()
        info["weights"] = describe(self.get_path())
        return info

    def inferer(self, data: Optional[Dict[str, Any]] = None) -> Inferer:
        data = data or {}
        shape = tuple(int(s) for s in data[self.input_key].shape[1:])
        roi = tuple(data.get("roi_size") or self.roi_size or shape)
        window = [min(int(r), -(-s // 8) * 8) for r, s in zip(roi, shape, strict=True)]
        device = data.get("device")
        return SlidingWindowInferer(roi_size=window, sw_batch_size=data.get("sw_batch_size", 1),
                                    overlap=data.get("sw_overlap", 0.25), sw_device=device, device=device)
