"""TensorBoard handlers of DeepEdit training: image, label, prediction (and guidance) of the first batch item."""

from __future__ import annotations

import logging
from typing import Any, Optional

import numpy as np
import torch

__all__ = ["TensorBoard2DImageHandler", "TensorBoardImageHandler"]

logger = logging.getLogger(__name__)


def _writer(log_dir: str) -> Optional[Any]:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional: training goes on without images
        logger.info("tensorboard is not installed; DeepEdit image summaries are off")
        return None
    return SummaryWriter(log_dir=log_dir)


class TensorBoardImageHandler:
    """Writes, every ``interval`` epochs, the middle slice of image, label and prediction to TensorBoard.

    Args:
        summary_writer: a SummaryWriter (one on ``log_dir`` by default).
        log_dir: where the events go.
        tag_name: tag prefix.
        batch_transform: ``engine.state.batch -> batch``.
        output_transform: ``engine.state.output -> output``.
        batch_limit: items of the batch to write (0 for the first only).
        device: unused, kept for MONAI Label compatibility.
        tag_prefix: prefix of the tags (``val-`` for validation).
        interval: epochs between writes.
    """

    def __init__(
        self,
        summary_writer: Optional[Any] = None,
        log_dir: str = "./runs",
        tag_name: str = "val",
        batch_transform: Any = lambda x: x,
        output_transform: Any = lambda x: x,
        batch_limit: int = 1,
        device: Any = None,
        tag_prefix: str = "",
        interval: int = 1,
    ) -> None:
        self.writer = summary_writer if summary_writer is not None else _writer(log_dir)
        self.tag_name = tag_name
        self.batch_transform = batch_transform
        self.output_transform = output_transform
        self.batch_limit = batch_limit
        self.tag_prefix = tag_prefix
        self.interval = max(1, interval)

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    @staticmethod
    def _first(value: Any, key: str) -> Optional[np.ndarray]:
        item = value[0] if isinstance(value, (list, tuple)) and value else value
        item = item.get(key) if isinstance(item, dict) else None
        if item is None:
            return None
        array = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
        return array[0] if array.ndim > 3 and array.shape[0] == 1 else array

    def _image(self, array: np.ndarray) -> np.ndarray:
        """A 2D ``(1, H, W)`` picture in [0, 1]: the first channel, the middle slice of a 3D volume."""
        a = array[0] if array.ndim >= 3 else array
        if a.ndim == 3:
            a = a[..., a.shape[-1] // 2]
        a = a.astype(np.float32)
        span = float(a.max() - a.min())
        return ((a - a.min()) / span if span > 0 else a)[None]

    def __call__(self, engine: Any) -> None:
        if self.writer is None:
            return
        step = int(engine.state.epoch)
        batch = self.batch_transform(engine.state.batch)
        output = self.output_transform(engine.state.output)
        for name, source, key in (("image", batch, "image"), ("label", batch, "label"), ("pred", output, "pred")):
            array = self._first(source, key)
            if array is not None:
                self.writer.add_image(f"{self.tag_prefix}{self.tag_name}/{name}", self._image(array), step)
        self.writer.flush()


class TensorBoard2DImageHandler(TensorBoardImageHandler):
    """The 2D variant (RGB frames): writes image, label and prediction of the first batch item."""
