"""Synthetic phantoms: bright ellipsoids in noise, with their masks, as CT-like int16 volumes.

A small UNet learns them in seconds on a CPU, which makes them the data of the training tests and of
the sample studies folder that ``make serve`` fills. ``labels=2`` (or more) adds further structures of
other brightness, labelled 2, 3, ...: multi-label data for the radiology template's ``labels`` config.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import nibabel as nib
import numpy as np

from monailabel.datasets.existing import refuse_overwrite

__all__ = ["make_phantom", "write_phantoms"]


def make_phantom(
    shape: Sequence[int] = (64, 64, 64),
    seed: int = 0,
    spacing: Sequence[float] = (1.5, 1.5, 2.0),
    labels: int = 1,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Makes one phantom.

    Args:
        shape: volume shape.
        seed: random seed; the same seed gives the same phantom.
        spacing: voxel size in millimetres.
        labels: number of structures; structure ``k`` is labelled ``k`` (the first wins where they overlap).

    Returns:
        ``(image int16, label uint8, affine)``: ellipsoids labelled 1..labels in a noisy background.
    """
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    grid = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    centre = [rng.uniform(0.35, 0.65) * s for s in shape]
    radii = [rng.uniform(0.12, 0.25) * s for s in shape]
    dist = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True))
    label = (dist <= 1.0).astype(np.uint8)
    background = rng.normal(0.0, 25.0, size=shape).astype(np.float32)
    image = 40.0 + background + label * rng.uniform(120.0, 180.0)
    for k in range(2, labels + 1):  # drawn after the first structure: labels=1 phantoms stay as they were
        centre = [rng.uniform(0.25, 0.75) * s for s in shape]
        radii = [rng.uniform(0.08, 0.15) * s for s in shape]
        dist = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True))
        extra = (dist <= 1.0) & (label == 0)
        label[extra] = k
        image += extra * (-60.0 + 110.0 * (k - 1))  # darker for 2, brighter than the first for 3 and up
    affine = np.diag([*[float(s) for s in spacing], 1.0])
    affine[:3, 3] = [-0.5 * s * d for s, d in zip(shape, spacing, strict=True)]
    return np.clip(image, -1024, 3071).astype(np.int16), label, affine


def write_phantoms(
    output: Path,
    count: int = 8,
    shape: Sequence[int] = (64, 64, 64),
    labeled: Optional[int] = None,
    seed: int = 0,
    prefix: str = "phantom",
    labels: int = 1,
    overwrite: bool = True,
) -> List[str]:
    """Writes phantoms as a MONAI Label studies folder: images, and final labels for some of them.

    Args:
        output: the studies folder.
        count: number of images.
        shape: volume shape.
        labeled: how many get a final label in ``labels/final``; None for all.
        seed: first seed.
        prefix: file name prefix.
        labels: structures per phantom (see :func:`make_phantom`).
        overwrite: replace the files of ids that exist; False raises instead, before writing anything.

    Returns:
        The image ids written.

    Raises:
        FileExistsError: ``overwrite`` is False and an id already has an image or a label in ``output``.
    """
    output = Path(output)
    if not overwrite:
        refuse_overwrite(output, [f"{prefix}_{i:03d}" for i in range(count)])
    (output / "labels" / "final").mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(count):
        image, label, affine = make_phantom(shape, seed + i, labels=labels)
        image_id = f"{prefix}_{i:03d}"
        nib.save(nib.Nifti1Image(image, affine), str(output / f"{image_id}.nii.gz"))
        if labeled is None or i < labeled:
            nib.save(nib.Nifti1Image(label, affine), str(output / "labels" / "final" / f"{image_id}.nii.gz"))
        ids.append(image_id)
    return ids
