"""The MNI152 brain (ICBM 2009a, 1 mm, 197x233x189) with its brain mask, from the files nilearn ships.

Real MR data that installs offline: the ``nilearn`` wheel carries the template under
``nilearn/datasets/data/``. Only the files are used, read with nibabel; nilearn itself (and its
scientific stack) is never imported. The brain mask is nilearn's ``load_mni152_brain_mask``: the
template scaled to [0, 1] and thresholded at 0.2.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import List, Optional

import nibabel as nib
import numpy as np

from monailabel.datasets.existing import refuse_overwrite

__all__ = ["MNI152_T1", "mni152_path", "load_mni152", "write_mni152"]

MNI152_T1 = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"


def mni152_path() -> Optional[Path]:
    """Returns the T1 template file nilearn ships, or None when nilearn is not installed."""
    spec = importlib.util.find_spec("nilearn")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / MNI152_T1
    return path if path.is_file() else None


def load_mni152(threshold: float = 0.2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns the template, its brain mask and its affine.

    Args:
        threshold: mask threshold on the template scaled to [0, 1] (nilearn's default 0.2).

    Returns:
        ``(image uint8, mask uint8, affine)``.

    Raises:
        FileNotFoundError: nilearn is not installed.
    """
    path = mni152_path()
    if path is None:
        raise FileNotFoundError("the MNI152 template needs nilearn: pip install nilearn")
    img = nib.load(str(path))
    image = np.asarray(img.dataobj)
    scaled = image.astype(np.float32) / float(image.max())
    return image, (scaled > threshold).astype(np.uint8), np.asarray(img.affine)


def write_mni152(output: Path, labeled: bool = True, image_id: str = "mni152", overwrite: bool = True) -> List[str]:
    """Writes the template (and its brain mask as the final label) into a studies folder.

    Args:
        output: the studies folder.
        labeled: also write ``labels/final/<image_id>.nii.gz``.
        image_id: the image id.
        overwrite: replace the files of ``image_id`` if they exist; False raises instead.

    Returns:
        ``[image_id]``.

    Raises:
        FileNotFoundError: nilearn is not installed.
        FileExistsError: ``overwrite`` is False and ``image_id`` already has an image or label in ``output``.
    """
    output = Path(output)
    if not overwrite:
        refuse_overwrite(output, [image_id])
    image, mask, affine = load_mni152()
    output.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(image, affine), os.fspath(output / f"{image_id}.nii.gz"))
    if labeled:
        (output / "labels" / "final").mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(mask, affine), os.fspath(output / "labels" / "final" / f"{image_id}.nii.gz"))
    return [image_id]
