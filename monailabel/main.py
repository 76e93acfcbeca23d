"""The SDK's commands of the ``monailabel`` command line: ``datasets`` and ``apps``.

The command line itself (with ``start_server``) is :mod:`monailabel_server.cli`: the SDK never imports
the server, so the server can depend on the SDK without a loop.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path
from typing import List, Optional

__all__ = ["main"]

APPS_DIR = Path(__file__).parent / "apps"


DATASETS = {
    "phantoms": "synthetic 3D CT-like phantoms: bright ellipsoids in noise, labelled 1 (--labels N for N structures)",
    "slides": "synthetic 2D pathology slides (RGB PNG) with round nuclei, labelled 1",
    "mni152": "the MNI152 T1 brain (197x233x189, 1 mm) with its brain mask as the final label (needs nilearn)",
}


def _datasets(args: argparse.Namespace) -> int:
    from monailabel.datasets import mni152_path, write_mni152, write_phantoms, write_slides

    name = args.name or ("phantoms" if args.output else None)
    if name is None:
        print("sample data sets (monailabel datasets --name NAME --output DIR):")
        for key, text in DATASETS.items():
            missing = key == "mni152" and mni152_path() is None
            print(f"  {key:<9} {text}{' [not available: pip install nilearn]' if missing else ''}")
        return 0
    if name not in DATASETS:
        print(f"no data set '{name}'; data sets: {', '.join(DATASETS)}", file=sys.stderr)
        return 2
    if not args.output:
        print("--output DIR is needed to write a data set", file=sys.stderr)
        return 2
    out = Path(args.output)
    if args.if_empty and out.exists() and any(p for p in out.iterdir() if not p.name.startswith(".")):
        print(f"{out} is not empty; leaving it as it is")
        return 0
    try:
        if name == "mni152":
            if mni152_path() is None:
                print("mni152 needs nilearn (it ships the template): pip install nilearn", file=sys.stderr)
                return 2
            write_mni152(out, labeled=args.labeled != 0, image_id=args.prefix or "mni152", overwrite=args.overwrite)
            print(f"wrote the MNI152 brain and its brain mask to {out}")
            return 0
        prefix = args.prefix or {"slides": "slide", "phantoms": "phantom"}[name]
        if name == "slides":
            shape = tuple(args.shape[:2]) if args.shape else (512, 512)
            ids = write_slides(out, count=args.count, shape=shape, labeled=args.labeled, seed=args.seed,
                               prefix=prefix, overwrite=args.overwrite)
        else:
            shape = tuple(args.shape) if args.shape else (64, 64, 64)
            ids = write_phantoms(out, count=args.count, shape=shape, labeled=args.labeled, seed=args.seed,
                                 labels=args.labels, prefix=prefix, overwrite=args.overwrite)
    except FileExistsError as e:
        # a running server's images and labels are never replaced by accident
        print(f"error: {e}; nothing was written. Pass --overwrite to replace them, --prefix NAME to add "
              "new images beside them, or another --output", file=sys.stderr)
        return 2
    print(f"wrote {len(ids)} {name} of shape {shape} to {out}")
    return 0


def _apps(args: argparse.Namespace) -> int:
    names = sorted(p.name for p in APPS_DIR.iterdir() if (p / "main.py").is_file())
    if not args.name:
        print("template apps:", ", ".join(names))
        return 0
    if args.name not in names:
        print(f"no app '{args.name}'; template apps: {', '.join(names)}", file=sys.stderr)
        return 2
    if not args.download:
        print(f"{args.name}: {APPS_DIR / args.name}")
        return 0
    out = Path(args.output or args.name)
    if out.exists():
        print(f"{out} exists; choose another --output", file=sys.stderr)
        return 2
    shutil.copytree(APPS_DIR / args.name, out, ignore=shutil.ignore_patterns("__pycache__", "model", "*.pt"))
    print(f"copied {args.name} to {out}")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds the SDK's subcommands (``datasets``, ``apps``) to a command line.

    Args:
        sub: the command line's subparsers.
    """
    d = sub.add_parser("datasets", help="list or write offline sample data sets",
                       description="List the sample data sets, or write one into a studies folder. Files that "
                       "exist are never replaced unless --overwrite is given.")
    d.add_argument("--name", help=f"one of {', '.join(DATASETS)} (default: phantoms when --output is given)")
    d.add_argument("-o", "--output", help="studies folder to write (created if needed)")
    d.add_argument("-n", "--count", type=int, default=8, help="number of images (default 8)")
    d.add_argument("--shape", type=int, nargs="+", default=None,
                   help="3 sizes for phantoms (default 64 64 64) or 2 for slides (default 512 512)")
    d.add_argument("--labels", type=int, default=1, help="structures per phantom, labelled 1..N (default 1)")
    d.add_argument("--labeled", type=int, default=None, help="images that get a final label (default: all)")
    d.add_argument("--seed", type=int, default=0, help="random seed of the first image (default 0)")
    d.add_argument("--prefix", default="",
                   help="image id prefix (default: phantom, slide, or the id mni152), e.g. to add images beside others")
    d.add_argument("--if-empty", action="store_true", help="do nothing when the folder already has files")
    d.add_argument("--overwrite", action="store_true",
                   help="replace images and labels of the same ids (default: refuse and write nothing)")
    d.set_defaults(func=_datasets)

    a = sub.add_parser("apps", help="list or copy template apps")
    a.add_argument("-n", "--name", help="a template app (default: list them)")
    a.add_argument("-d", "--download", action="store_true", help="copy the app to --output (default: show its path)")
    a.add_argument("-o", "--output", help="folder to copy the app to; must not exist (default: the app's name)")
    a.set_defaults(func=_apps)


def parser() -> argparse.ArgumentParser:
    """Returns the parser of the SDK's commands alone (``monailabel_server.cli`` adds ``start_server``)."""
    p = argparse.ArgumentParser(prog="monailabel", description="MONAI Label over gRPC")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    add_commands(p.add_subparsers(dest="command", required=True))
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the command line.

    Args:
        argv: arguments; None for ``sys.argv[1:]``.

    Returns:
        The exit status.
    """
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="[%(asctime)s] %(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
