"""Regenerates the Python code of the protos into api/python/monailabel_api/v1/ (or into another root).

protoc names Python modules after the proto files (``monailabel/v1/x.proto`` -> ``monailabel.v1.x_pb2``).
The generated code lives in its own distribution, ``monailabel_api``, so that clients install it
without the SDK; the cross-file imports are rewritten to that package after generation (only import
lines and module names, never the serialized descriptors, which keep the ``monailabel.v1`` package).

Usage: python scripts/gen_protos.py [OUT_ROOT]
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTOS = ROOT / "protos"
API_ROOT = ROOT / "api" / "python"
PACKAGE = "monailabel_api"
# `monailabel.v1` used as a Python module path: followed by `.<name>_pb2` or by ` import`
_MODULE_REF = re.compile(r"\bmonailabel\.v1(?=\.\w+_pb2(?:_grpc)?\b|\s+import\b)")


def generate(out_root: Path) -> None:
    """Runs protoc with the Python, gRPC and mypy-protobuf plugins.

    Args:
        out_root: folder that receives monailabel_api/v1/*.py (api/python for the committed code).
    """
    target = out_root / PACKAGE / "v1"
    target.mkdir(parents=True, exist_ok=True)
    # the mypy-protobuf plugins live beside this interpreter (the virtual environment's bin/)
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    files = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / "monailabel" / "v1").glob("*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{PROTOS}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--grpc_python_out={tmp}",
            f"--mypy_out={tmp}",
            f"--mypy_grpc_out={tmp}",
            *files,
        ]
        code = protoc.main(args)
        if code != 0:
            raise SystemExit(f"protoc failed with exit code {code}")
        for old in target.glob("*_pb2*"):
            old.unlink()
        for path in sorted((Path(tmp) / "monailabel" / "v1").iterdir()):
            if path.suffix in (".py", ".pyi"):
                text = _MODULE_REF.sub(f"{PACKAGE}.v1", path.read_text())
                text = text.replace("(DESCRIPTOR, 'monailabel.v1.", f"(DESCRIPTOR, '{PACKAGE}.v1.")
                (target / path.name).write_text(text)
    doc = '"""Generated protobuf and gRPC code of the monailabel.v1 API (do not edit)."""\n'
    (target / "__init__.py").write_text(doc)


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else API_ROOT)
