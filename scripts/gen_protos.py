"""Regenerates the Python code of the protos into monailabel/v1/ (or into another root).

Usage: python scripts/gen_protos.py [OUT_ROOT]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTOS = ROOT / "protos"


def generate(out_root: Path) -> None:
    """Runs protoc with the Python, gRPC and mypy-protobuf plugins.

    Args:
        out_root: folder that receives monailabel/v1/*.py (the repository root for the committed code).
    """
    out_root.mkdir(parents=True, exist_ok=True)
    # the mypy-protobuf plugins live beside this interpreter (the virtual environment's bin/)
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    files = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / "monailabel" / "v1").glob("*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *files,
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    init = out_root / "monailabel" / "v1" / "__init__.py"
    init.write_text('"""Generated protobuf and gRPC code of the monailabel.v1 API (do not edit)."""\n')


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
