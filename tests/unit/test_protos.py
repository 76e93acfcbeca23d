"""The contract: buf lint passes and the committed generated code equals a fresh regeneration."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _buf() -> str:
    path = shutil.which("buf") or str(Path(sys.executable).parent / "buf")
    assert Path(path).exists(), "buf is a dev dependency (buf-bin); run `make setup`"
    return path


def test_buf_lint_passes() -> None:
    result = subprocess.run([_buf(), "lint"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_code_is_in_sync(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"), str(tmp_path)], check=True,
                   capture_output=True, timeout=120)
    fresh = tmp_path / "monailabel_api" / "v1"
    committed = ROOT / "api" / "python" / "monailabel_api" / "v1"
    names = sorted(p.name for p in fresh.iterdir() if p.is_file())
    assert names == sorted(p.name for p in committed.iterdir() if p.is_file() and p.suffix in (".py", ".pyi"))
    match, mismatch, errors = filecmp.cmpfiles(fresh, committed, names, shallow=False)
    assert not mismatch and not errors, f"regenerate with `make proto`: {mismatch + errors} differ"
