"""The ``monailabel`` command line: ``apps`` (list, download) and ``datasets`` (list, write)."""

from __future__ import annotations

import argparse
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


def test_datasets_never_overwrite_without_asking(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    studies = tmp_path / "studies"
    assert main(["datasets", "-o", str(studies), "-n", "3", "--shape", "16", "16", "8", "--labeled", "1"]) == 0
    # what a running server wrote: a final label for an image the data set left unlabeled
    saved = studies / "labels" / "final" / "phantom_002.nii.gz"
    saved.write_bytes(b"an annotator's label")
    before = {p: p.read_bytes() for p in studies.rglob("*.nii.gz")}
    capsys.readouterr()

    # the same ids again (as the README's example after `make serve`): refused, nothing written
    assert main(["datasets", "-o", str(studies), "-n", "4", "--shape", "16", "16", "8", "--seed", "7"]) == 2
    err = capsys.readouterr().err
    assert "phantom_000" in err and "--overwrite" in err and "nothing was written" in err
    assert {p: p.read_bytes() for p in studies.rglob("*.nii.gz")} == before
    assert not (studies / "phantom_003.nii.gz").exists()
    # an id taken by a label alone counts too
    assert main(["datasets", "-o", str(studies), "--prefix", "phantom", "-n", "3", "--shape", "16", "16", "8"]) == 2

    # a new prefix adds beside them; --overwrite replaces
    assert main(["datasets", "-o", str(studies), "-n", "2", "--shape", "16", "16", "8", "--prefix", "more"]) == 0
    assert sorted(p.name for p in studies.glob("more_*")) == ["more_000.nii.gz", "more_001.nii.gz"]
    assert (studies / "phantom_000.nii.gz").read_bytes() == before[studies / "phantom_000.nii.gz"]
    assert main(["datasets", "-o", str(studies), "-n", "3", "--shape", "16", "16", "8", "--seed", "7",
                 "--overwrite"]) == 0
    assert (studies / "phantom_000.nii.gz").read_bytes() != before[studies / "phantom_000.nii.gz"]
    assert saved.read_bytes() != b"an annotator's label"

    # slides and mni152 refuse the same way
    assert main(["datasets", "--name", "slides", "-o", str(tmp_path / "s"), "-n", "1", "--shape", "20", "20"]) == 0
    assert main(["datasets", "--name", "slides", "-o", str(tmp_path / "s"), "-n", "1", "--shape", "20", "20"]) == 2
    assert main(["datasets", "--name", "mni152", "-o", str(tmp_path / "m")]) == 0
    assert main(["datasets", "--name", "mni152", "-o", str(tmp_path / "m")]) == 2


def test_help_gives_every_option_a_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    from monailabel_server.cli import parser

    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in {"": parser(), **sub.choices}.items():
        for action in command._actions:
            assert action.help, f"monailabel {name} {action.option_strings or action.dest} has no help"
    with pytest.raises(SystemExit):
        parser().parse_args(["start_server", "--help"])
    text = capsys.readouterr().out
    assert "MONAI_LABEL_GRPC_PORT" in text and "MONAI_LABEL_STUDIES" in text and "default 50051" in text
