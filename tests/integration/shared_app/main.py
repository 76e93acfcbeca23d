"""A small app whose infer tasks use only MONAI's standard transforms (a float mask out of ``AsDiscreted``),
copied into a temporary folder by the tests of shared session volumes and of dynamic batching.

* ``plain``: ``NormalizeIntensityd``, a fixed 3x3x3 convolution, ``Activationsd`` + ``AsDiscreted``;
* ``inplace``: the same with ``NormalizeIntensityd(nonzero=True)``, which writes into its input (torch);
* ``numpy_inplace``: adds 1 to its input through a numpy view of its storage;
* ``alone``: ``plain`` that opts out of batching (``batchable = False``).
"""

from __future__ import annotations

from typing import Any, Dict, Hashable, Mapping

import torch
from monai.transforms import (
    Activationsd,
    AsDiscreted,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    NormalizeIntensityd,
    SqueezeDimd,
    Transform,
)

from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask


def _network() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Conv3d(1, 1, 3, padding=1)


class AddOneThroughNumpy(Transform):
    """Adds 1 to the image in place through a numpy view of its storage."""

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        d = dict(data)
        image = d["image"]
        view = torch.Tensor.numpy(image.as_tensor() if hasattr(image, "as_tensor") else image)
        view += 1.0
        return d


class StandardInfer(BasicInferTask):
    def __init__(self, nonzero: bool = False, numpy_write: bool = False) -> None:
        super().__init__(network=_network(), type=InferType.SEGMENTATION, labels={"organ": 1}, dimension=3,
                         description="standard MONAI transforms around a fixed convolution")
        self.nonzero = nonzero
        self.numpy_write = numpy_write

    def pre_transforms(self, data: Any = None) -> Any:
        t = [LoadImaged(keys="image"), EnsureChannelFirstd(keys="image")]
        if self.numpy_write:
            t.append(AddOneThroughNumpy())
        return t + [NormalizeIntensityd(keys="image", nonzero=self.nonzero), EnsureTyped(keys="image")]

    def post_transforms(self, data: Any = None) -> Any:
        return [EnsureTyped(keys="pred", device="cpu"), Activationsd(keys="pred", sigmoid=True),
                AsDiscreted(keys="pred", threshold=0.5), SqueezeDimd(keys="pred", dim=0)]


class SharedApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: Dict[str, str]) -> None:
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="shared", version="0.1")

    def init_infers(self) -> Dict[str, Any]:
        alone = StandardInfer()
        alone.batchable = False
        return {"plain": StandardInfer(), "inplace": StandardInfer(nonzero=True),
                "numpy_inplace": StandardInfer(numpy_write=True), "alone": alone}
