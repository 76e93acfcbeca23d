"""Offline sample data: phantoms (one or more labels), 2D slides, and the MNI152 brain nilearn ships."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from monai.transforms import LoadImage

from monailabel.datasets import load_mni152, make_phantom, make_slide, mni152_path, write_mni152, write_slides


def test_multi_label_phantoms_keep_single_label_ones_unchanged() -> None:
    image1, label1, affine1 = make_phantom((32, 32, 24), 3)
    image2, label2, affine2 = make_phantom((32, 32, 24), 3, labels=2)
    assert set(np.unique(label2).tolist()) == {0, 1, 2}
    assert np.array_equal(label2 == 1, label1 == 1) and np.array_equal(affine1, affine2)
    assert np.array_equal(image1[label2 == 0], image2[label2 == 0])  # only the new structure differs
    assert abs(image2[label2 == 2].mean() - image2[label2 == 0].mean()) > 30  # and it is visible


def test_slides_round_trip_through_monai_loadimage(tmp_path: Path) -> None:
    ids = write_slides(tmp_path, count=2, shape=(90, 70), labeled=1)
    image, label = make_slide((90, 70), 0)
    assert image.shape == (3, 90, 70) and image.dtype == np.uint8 and 0.02 < label.mean() < 0.3
    loaded = LoadImage(image_only=True, ensure_channel_first=True)(str(tmp_path / f"{ids[0]}.png"))
    assert np.array_equal(np.asarray(loaded), image)
    mask = LoadImage(image_only=True)(str(tmp_path / "labels" / "final" / f"{ids[0]}.png"))
    assert np.array_equal(np.asarray(mask), label)
    assert not (tmp_path / "labels" / "final" / f"{ids[1]}.png").exists()


def test_mni152_brain_and_mask_from_nilearn_files(tmp_path: Path) -> None:
    assert mni152_path() is not None, "nilearn is a dev dependency: its MNI152 files must be there"
    image, mask, affine = load_mni152()
    assert image.shape == mask.shape == (197, 233, 189) and mask.dtype == np.uint8
    assert 0.15 < mask.mean() < 0.3  # the brain is about a fifth of the box
    assert np.allclose(np.abs(np.diag(affine)[:3]), 1.0)
    write_mni152(tmp_path)
    written = nib.load(str(tmp_path / "labels" / "final" / "mni152.nii.gz"))
    assert np.array_equal(np.asarray(written.dataobj), mask) and np.allclose(written.affine, affine)
