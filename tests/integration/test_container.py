"""The container recipe, checked without a container engine (none runs on the CI machine).

One test reads the Dockerfile: it installs the three pyprojects (api/python, clients/python, the root)
and no dependency by hand, and its torch pin is the Makefile's. The other does what the image does in
a plain virtual environment: builds and installs the three distributions (not the source tree), runs
the image's set-up step, its entrypoint with the image's settings, and its health check.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Dict, List

import tomllib
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
PYPROJECTS = {".": ROOT / "pyproject.toml", "./api/python": ROOT / "api/python/pyproject.toml",
              "./clients/python": ROOT / "clients/python/pyproject.toml"}


def _instructions() -> List[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def _args() -> Dict[str, str]:
    return dict(rest.split("=", 1) for kw, rest in _instructions() if kw == "ARG" and "=" in rest)


def _env() -> Dict[str, str]:
    env: Dict[str, str] = {}
    for kw, rest in _instructions():
        if kw == "ENV":
            env.update(pair.split("=", 1) for pair in shlex.split(rest))
    return env


def _pip_installs() -> List[List[str]]:
    """The arguments of each ``pip install`` in a RUN."""
    installs = []
    for kw, rest in _instructions():
        if kw != "RUN":
            continue
        for command in re.split(r"&&|;", rest):
            words = shlex.split(command, posix=True)
            if words[:2] == ["pip", "install"]:
                installs.append(words[2:])
    return installs


def test_dockerfile_installs_the_pyprojects_and_nothing_by_hand() -> None:
    installs = _pip_installs()
    args = _args()
    # torch alone is named, to pick its wheel: the Makefile's pin, within the root pyproject's range
    torch = [i for i in installs if "$TORCH" in i]
    assert len(torch) == 1 and [a for a in torch[0] if not a.startswith("-") and "$" not in a] == [], torch
    makefile_pin = re.search(r"^TORCH \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert makefile_pin and args["TORCH"] == makefile_pin.group(1)
    root = tomllib.loads(PYPROJECTS["."].read_text())["project"]
    torch_req = next(Requirement(r) for r in root["dependencies"] if Requirement(r).name == "torch")
    assert torch_req.specifier.contains(args["TORCH"].split("==")[1])

    # every other install names exactly the three distributions, whose pyprojects were copied first
    rest = [i for i in installs if "$TORCH" not in i]
    assert rest, "the project is installed"
    for words in rest:
        targets = [w for w in words if not w.startswith("-")]
        assert sorted(targets) == sorted(PYPROJECTS), words
    with_deps = [i for i in rest if "--no-deps" not in i]
    assert with_deps and rest.index(with_deps[0]) == 0, "dependencies come from the pyprojects before --no-deps"
    copies = " ".join(rest for kw, rest in _instructions() if kw == "COPY")
    for target, path in PYPROJECTS.items():
        assert str(path.relative_to(ROOT)) in copies
        for req in tomllib.loads(path.read_text())["project"]["dependencies"]:
            # no dependency of the pyprojects is repeated (or contradicted) in the Dockerfile
            assert Requirement(req).name != "torch" or target == "."
            assert not re.search(rf"pip install[^\n]*\b{re.escape(Requirement(req).name)}\b",
                                 (ROOT / "Dockerfile").read_text()), req
    assert any(kw == "WORKDIR" for kw, _ in _instructions())


def test_dockerfile_dependency_step_builds_from_the_files_it_copies(tmp_path: Path) -> None:
    # the first install sees only what the COPY lines before it brought: the three must still build
    context = tmp_path / "context"
    for kw, rest in _instructions():
        if kw == "RUN" and "pip install ./" in rest:
            break
        if kw == "COPY":
            *sources, dest = shlex.split(rest)
            for source in sources:
                target = context / dest / Path(source).name if dest.endswith("/") else context / dest
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / source, target)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(wheels), *PYPROJECTS], cwd=context, env=env, check=True, timeout=300)
    version = re.search(r'__version__ = "(.+)"', (ROOT / "monailabel/__init__.py").read_text())
    assert version and (wheels / f"monailabel_grpc-{version.group(1)}-py3-none-any.whl").is_file()
    assert len(list(wheels.glob("*.whl"))) == 3


def _copy_sources(dest: Path) -> Path:
    """The files the Dockerfile copies, as the build context holds them (.dockerignore applied)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "model", "*.pt", "build")
    for name in ("pyproject.toml", "README.md"):
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, dest / name)
    for folder in ("monailabel", "server", "api/python", "clients/python"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=ignore)
    return dest


def test_image_entrypoint_and_health_check_run_in_a_plain_venv(tmp_path: Path) -> None:
    src = _copy_sources(tmp_path / "src")
    wheels = tmp_path / "wheels"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(wheels), "./api/python", "./clients/python", "."], cwd=src, env=env, check=True, timeout=300)
    assert sorted(w.name.split("-")[0] for w in wheels.glob("*.whl")) == [
        "monailabel_grpc", "monailabel_grpc_api", "monailabel_grpc_client"]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index",
                    *map(str, wheels.glob("*.whl"))], env=env, check=True, timeout=300)
    # third-party dependencies (no network here): this interpreter's, after the venv's own packages
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    where = subprocess.run([str(py), "-c", "import monailabel, monailabel_server, monailabel_client; "
                            "print(monailabel.__file__, monailabel_server.__file__, monailabel_client.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert all(p.startswith(str(site)) for p in where), where

    # the image's settings, with its /data folder here; port 0 in place of 50051
    image_env = {k: v.replace("/data", str(tmp_path / "data")) for k, v in _env().items() if k.startswith("MONAI")}
    env.update(image_env, PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}", MONAI_LABEL_GRPC_PORT="0",
               MONAI_LABEL_GRPC_HOST="127.0.0.1")
    (tmp_path / "data").mkdir()
    setup = [rest for kw, rest in _instructions() if kw == "RUN" and "monailabel apps" in rest]
    assert len(setup) == 1
    subprocess.run(["bash", "-c", setup[0]], cwd=tmp_path / "data", env=env, check=True, timeout=300)
    assert (Path(image_env["MONAI_LABEL_APP_DIR"]) / "main.py").is_file()

    entrypoint = json.loads(next(rest for kw, rest in _instructions() if kw == "ENTRYPOINT"))
    proc = subprocess.Popen(entrypoint, cwd=tmp_path / "data", env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        port = ""
        for line in proc.stdout:
            if "listening on" in line:
                port = line.strip().rsplit(":", 1)[1]
                break
        assert port, "the entrypoint serves"
        health = next(rest for kw, rest in _instructions() if kw == "HEALTHCHECK").split(" CMD ", 1)[1]
        check = subprocess.run(["bash", "-c", health], env=dict(env, MONAI_LABEL_GRPC_PORT=port),
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 0 and check.stdout.strip() == "SERVING", check.stderr
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0
        if proc.stdout is not None:
            proc.stdout.close()
