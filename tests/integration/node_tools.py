"""Node.js projects of the repository (the TypeScript client, the web viewer) as tests use them.

A fresh clone has no ``node_modules``: :func:`npm_project` runs ``npm ci`` (from the committed lock
file) once, then the build, so the single test command covers the TypeScript code too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[2]
TS_CLIENT = ROOT / "clients" / "typescript"
WEB_VIEWER = ROOT / "clients" / "web"


def run(cmd: List[str], cwd: Path, env: Optional[Dict[str, str]] = None, timeout: float = 600) -> str:
    """Runs a command; fails with its output when it fails."""
    result = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                            timeout=timeout, check=False)
    assert result.returncode == 0, f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result.stdout


def npm_project(path: Path, build: bool = True) -> Path:
    """Installs a project's npm packages when missing (``npm ci``) and builds it."""
    npm = shutil.which("npm")
    assert npm, "node and npm must be installed (see README: Node.js 20+)"
    # never a browser download: the viewer test drives the system's Chromium
    env = {"PUPPETEER_SKIP_DOWNLOAD": "1"}
    if not (path / "node_modules").is_dir():
        run([npm, "ci", "--no-audit", "--no-fund"], path, env)
    if build:
        run([npm, "run", "build"], path, env)
    return path


def buf_binary() -> str:
    """``buf`` (the buf-bin dev dependency): beside this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "buf"
    found = str(beside) if beside.exists() else shutil.which("buf")
    assert found, "buf (the buf-bin dev dependency) must be installed"
    return found
