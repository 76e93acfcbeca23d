"""CI's proto check (.ci/buf-breaking) in throwaway git repositories: it passes an additive change,
fails a breaking one, skips a first commit, and fetches the previous commit in a shallow clone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / ".ci" / "buf-breaking"
BUF = Path(sys.executable).parent / "buf"
GIT_ENV = {"GIT_AUTHOR_NAME": "ci", "GIT_AUTHOR_EMAIL": "ci@example.org", "GIT_COMMITTER_NAME": "ci",
           "GIT_COMMITTER_EMAIL": "ci@example.org"}
PROTO = Path("protos/monailabel/v1/datastore.proto")

def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, env={**os.environ, **GIT_ENV})


def _check(repo: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT)], cwd=repo, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "BUF": str(BUF)})


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(ROOT / "protos", repo / "protos")
    shutil.copy(ROOT / "buf.yaml", repo / "buf.yaml")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "first")
    return repo


def _commit_edit(repo: Path, old: str, new: str) -> None:
    text = (repo / PROTO).read_text()
    assert old in text
    (repo / PROTO).write_text(text.replace(old, new, 1))
    _git(repo, "commit", "-q", "-am", "edit")


def test_first_commit_is_skipped_and_said_so(repo: Path) -> None:
    result = _check(repo)
    assert result.returncode == 0 and "SKIPPED" in result.stdout


def test_additive_change_passes_and_breaking_change_fails(repo: Path) -> None:
    _commit_edit(repo, "message DownloadImageRequest {", "// A new message.\nmessage Extra {\n  // A field.\n"
                 "  string note = 1;\n}\n\n// A download request.\nmessage DownloadImageRequest {")
    result = _check(repo)
    assert result.returncode == 0 and "no breaking change" in result.stdout, result.stdout + result.stderr
    _commit_edit(repo, "  int64 offset = 2;", "  int64 start = 2;")
    result = _check(repo)
    assert result.returncode != 0
    assert 'changed name from "offset" to "start"' in result.stdout + result.stderr


def test_shallow_clone_fetches_the_previous_commit(repo: Path, tmp_path: Path) -> None:
    _commit_edit(repo, "  int64 offset = 2;", "  int64 start = 2;")
    shallow = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{repo}", str(shallow)], check=True,
                   capture_output=True)
    result = _check(shallow)
    assert result.returncode != 0 and "offset" in result.stdout + result.stderr
