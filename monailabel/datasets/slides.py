"""Synthetic 2D slides: stained-looking RGB images with round nuclei, and their masks.

The pathology template's data for tests and demos: any size (larger than a tile, to exercise tiled
inference), written as PNG (or TIFF when ``tifffile`` is installed), read back by MONAI's ``LoadImage``.
Arrays follow MONAI's 2D convention: ``(x, y)`` spatial axes, channel first for colour.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from monailabel.datasets.existing import refuse_overwrite

__all__ = ["make_slide", "write_slides"]


def make_slide(shape: Sequence[int] = (512, 512), seed: int = 0, density: float = 2.0) -> Tuple[np.ndarray, np.ndarray]:
    """Makes one slide.

    Args:
        shape: ``(x, y)`` size in pixels.
        seed: random seed; the same seed gives the same slide.
        density: nuclei per 64x64 pixels.

    Returns:
        ``(image uint8 (3, x, y), label uint8 (x, y))``: pink tissue with dark purple nuclei labelled 1.
    """
    rng = np.random.default_rng(seed)
    sx, sy = (int(s) for s in shape)
    gx, gy = np.meshgrid(np.arange(sx, dtype=np.float32), np.arange(sy, dtype=np.float32), indexing="ij")
    label = np.zeros((sx, sy), dtype=np.uint8)
    for _ in range(max(1, int(density * sx * sy / 4096))):
        cx, cy = rng.uniform(0, sx), rng.uniform(0, sy)
        rx, ry = rng.uniform(4.0, 9.0), rng.uniform(4.0, 9.0)
        label[((gx - cx) / rx) ** 2 + ((gy - cy) / ry) ** 2 <= 1.0] = 1
    tissue = np.array([230.0, 170.0, 200.0], dtype=np.float32)  # eosin pink
    nuclei = np.array([90.0, 60.0, 150.0], dtype=np.float32)  # haematoxylin purple
    image = np.where(label[None] > 0, nuclei[:, None, None], tissue[:, None, None])
    image = image + rng.normal(0.0, 18.0, size=(1, sx, sy)) + rng.normal(0.0, 8.0, size=(3, sx, sy))
    return np.clip(image, 0, 255).astype(np.uint8), label


def write_slides(
    output: Path,
    count: int = 4,
    shape: Sequence[int] = (512, 512),
    labeled: Optional[int] = None,
    seed: int = 0,
    prefix: str = "slide",
    ext: str = ".png",
    overwrite: bool = True,
) -> List[str]:
    """Writes slides as a studies folder: images, and final labels (PNG masks) for some of them.

    Args:
        output: the studies folder.
        count: number of images.
        shape: ``(x, y)`` size.
        labeled: how many get a final label in ``labels/final``; None for all.
        seed: first seed.
        prefix: file name prefix.
        ext: ``.png``, or ``.tif`` (needs ``tifffile``).
        overwrite: replace the files of ids that exist; False raises instead, before writing anything.

    Returns:
        The image ids written.

    Raises:
        FileExistsError: ``overwrite`` is False and an id already has an image or a label in ``output``.
    """
    from monailabel.transform.writer import write_png

    output = Path(output)
    if not overwrite:
        refuse_overwrite(output, [f"{prefix}_{i:03d}" for i in range(count)])
    (output / "labels" / "final").mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(count):
        image, label = make_slide(shape, seed + i)
        image_id = f"{prefix}_{i:03d}"
        if ext in (".tif", ".tiff"):
            import tifffile

            tifffile.imwrite(str(output / f"{image_id}{ext}"), np.moveaxis(image, 0, -1).transpose(1, 0, 2))
        else:
            write_png(str(output / f"{image_id}.png"), image)
        if labeled is None or i < labeled:
            write_png(str(output / "labels" / "final" / f"{image_id}.png"), label)
        ids.append(image_id)
    return ids
