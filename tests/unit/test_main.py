"""The ``monailabel`` command line: ``apps`` (list, download) and ``datasets`` (list, write)."""

from __future__ import annotations

from pathlib import Path

import pytest

from monailabel.main import main


def test_apps_lists_and_downloads_templates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["apps"]) == 0
    assert "pathology, radiology" in capsys.readouterr().out
    out = tmp_path / "myapp"
    assert main(["apps", "--name", "radiology", "--download", "--output", str(out)]) == 0
    assert (out / "main.py").is_file() and (out / "lib" / "configs" / "deepgrow_3d.py").is_file()
    assert not list(out.rglob("__pycache__")) and not (out / "model").exists()
    assert main(["apps", "--name", "radiology", "--download", "--output", str(out)]) == 2  # exists: no overwrite
    assert main(["apps", "--name", "pathology", "--download", "--output", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / "lib" / "configs" / "segmentation_nuclei.py").is_file()
    assert main(["apps", "--name", "nope"]) == 2


def test_datasets_lists_and_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["datasets"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in ("phantoms", "slides", "mni152")) and "not available" not in listing

    assert main(["datasets", "--name", "phantoms", "-o", str(tmp_path / "p"), "-n", "3", "--shape", "16", "16", "8",
                 "--labeled", "2", "--labels", "2"]) == 0
    assert len(list((tmp_path / "p").glob("*.nii.gz"))) == 3
    assert len(list((tmp_path / "p" / "labels" / "final").glob("*.nii.gz"))) == 2
    # the Makefile's form: --output alone writes phantoms, and --if-empty leaves a filled folder alone
    assert main(["datasets", "--output", str(tmp_path / "p"), "--if-empty"]) == 0
    assert len(list((tmp_path / "p").glob("*.nii.gz"))) == 3

    assert main(["datasets", "--name", "slides", "-o", str(tmp_path / "s"), "-n", "2", "--shape", "40", "30"]) == 0
    assert len(list((tmp_path / "s").glob("*.png"))) == 2
    assert main(["datasets", "--name", "mni152", "-o", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "mni152.nii.gz").is_file() and (tmp_path / "m" / "labels/final/mni152.nii.gz").is_file()
    assert main(["datasets", "--name", "nope", "-o", str(tmp_path / "x")]) == 2
