"""``HeuristicPlanner``: target spacing and spatial size of a radiology model, from a sample of the datastore."""

from __future__ import annotations

import logging
import random
from typing import Any, List, Optional, Sequence

import numpy as np

__all__ = ["HeuristicPlanner"]

logger = logging.getLogger(__name__)


def _free_gpu_memory_mb() -> Optional[float]:
    """Free memory of the first GPU in MiB, or None without one."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        free, _ = torch.cuda.mem_get_info(0)
        return free / (1 << 20)
    except Exception:  # a broken driver is the same as no GPU here
        return None


class HeuristicPlanner:
    """Picks a model's target spacing and spatial size from the images in a datastore.

    Apps build it with defaults and call :meth:`run` (``--conf heuristic_planner true``); the results
    stay in the attributes the apps read.

    Args:
        target_spacing: the spacing to use until :meth:`run` measured the data.
        spatial_size: the spatial size to use until :meth:`run` measured the data.
        max_samples: how many images :meth:`run` reads at most.

    Attributes:
        target_spacing, spatial_size: as above, updated by :meth:`run`.
        max_pix, min_pix, mean_pix, std_pix: intensity statistics of the sampled images (None before run).
    """

    def __init__(
        self,
        target_spacing: Sequence[float] = (1.0, 1.0, 1.0),
        spatial_size: Sequence[int] = (128, 128, 64),
        max_samples: int = 10,
    ) -> None:
        self.target_spacing: Any = target_spacing
        self.spatial_size: Any = spatial_size
        self.max_samples = max_samples
        self.max_pix: Optional[float] = None
        self.min_pix: Optional[float] = None
        self.mean_pix: Optional[float] = None
        self.std_pix: Optional[float] = None

    def run(self, datastore: Any) -> None:
        """Reads up to ``max_samples`` images of the datastore and sets spacing, size and intensity statistics.

        Args:
            datastore: the app's datastore.
        """
        from monai.transforms import LoadImage

        images = list(datastore.list_images())
        if not images:
            logger.warning("Heuristic planner: no images in the datastore yet; keeping the defaults")
            return
        sample = images if len(images) <= self.max_samples else random.sample(images, self.max_samples)
        loader = LoadImage(image_only=True)
        spacings: List[Any] = []
        sizes: List[Any] = []
        stats: List[Any] = []
        for image_id in sample:
            img = loader(datastore.get_image_uri(image_id))
            spacings.append(np.asarray(img.pixdim[:3], dtype=float))
            sizes.append(np.asarray(img.shape[-3:], dtype=float))
            arr = np.asarray(img, dtype=np.float32)
            stats.append((arr.max(), arr.min(), arr.mean(), arr.std()))

        self.target_spacing = self._get_target_spacing(np.mean(spacings, 0))
        self.spatial_size = self._get_target_img_size(np.mean(sizes, 0).astype(np.int64))
        s = np.asarray(stats)
        self.max_pix, self.min_pix = float(s[:, 0].max()), float(s[:, 1].min())
        self.mean_pix, self.std_pix = float(s[:, 2].mean()), float(s[:, 3].mean())
        logger.info(f"Heuristic planner: spacing {self.target_spacing}; spatial size {self.spatial_size}")

    @staticmethod
    def _get_target_img_size(target_img_size: Sequence[int]) -> List[int]:
        """The spatial size: depth rounded up to a power of two; width bounded by free GPU memory."""
        depth = int(2 ** np.ceil(np.log2(max(int(target_img_size[2]), 1))))
        free = _free_gpu_memory_mb()
        if free is not None:
            # rough fit of DynUNet's memory use: width x width x depth must fit in the free memory
            width = int(2 ** np.round(np.log2(max((free - 2000) / (0.5 * depth), 1))))
            if width < max(int(target_img_size[0]), int(target_img_size[1])):
                return [width, width, depth]
        return [int(target_img_size[0]), int(target_img_size[1]), depth]

    @staticmethod
    def _get_target_spacing(target_spacing: Any) -> Any:
        return np.around(target_spacing)
