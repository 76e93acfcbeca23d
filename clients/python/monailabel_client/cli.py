"""``monailabel-client``: the common calls from a shell (info, list, upload, download, infer, status)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from google.protobuf import json_format

from monailabel.v1 import common_pb2
from monailabel_client.client import MonaiLabelClient

__all__ = ["main"]

_ENCODINGS = {"nii.gz": common_pb2.ENCODING_NIFTI_GZ, "nii": common_pb2.ENCODING_NIFTI,
              "nrrd": common_pb2.ENCODING_NRRD, "raw": common_pb2.ENCODING_RAW}


def _print(message: object) -> None:
    print(json.dumps(json_format.MessageToDict(message), indent=2))  # type: ignore[arg-type]


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the client command line.

    Args:
        argv: arguments; None for ``sys.argv[1:]``.

    Returns:
        The exit status.
    """
    p = argparse.ArgumentParser(prog="monailabel-client")
    p.add_argument("--address", default="127.0.0.1:50051")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="app info")
    sub.add_parser("status", help="datastore counts")
    ls = sub.add_parser("list", help="list images")
    ls.add_argument("--filter", choices=["all", "labeled", "unlabeled"], default="all")
    up = sub.add_parser("upload", help="upload an image file")
    up.add_argument("image_id")
    up.add_argument("file")
    up.add_argument("--overwrite", action="store_true")
    lab = sub.add_parser("save-label", help="save a label file")
    lab.add_argument("image_id")
    lab.add_argument("file")
    lab.add_argument("--tag", default="final")
    dl = sub.add_parser("download", help="download an image (or a label with --tag)")
    dl.add_argument("image_id")
    dl.add_argument("output")
    dl.add_argument("--tag", default="")
    inf = sub.add_parser("infer", help="run an infer task and write the mask")
    inf.add_argument("model")
    src = inf.add_mutually_exclusive_group(required=True)
    src.add_argument("--image-id")
    src.add_argument("--file")
    inf.add_argument("--output", required=True)
    inf.add_argument("--format", choices=sorted(_ENCODINGS), default="nii.gz")
    inf.add_argument("--save-label", action="store_true")
    inf.add_argument("--foreground", type=int, nargs=3, action="append", default=[])
    inf.add_argument("--background", type=int, nargs=3, action="append", default=[])
    args = p.parse_args(argv)

    with MonaiLabelClient(args.address, progress=sys.stderr.isatty(), timeout=None) as client:
        if args.command == "info":
            _print(client.info())
        elif args.command == "status":
            _print(client.status())
        elif args.command == "list":
            for image in client.list_images(filter=args.filter):
                print(image.image_id, image.size, ",".join(lb.tag for lb in image.labels))
        elif args.command == "upload":
            _print(client.upload_image(args.image_id, args.file, overwrite=args.overwrite))
        elif args.command == "save-label":
            _print(client.save_label(args.image_id, args.file, tag=args.tag))
        elif args.command == "download":
            if args.tag:
                client.download_label(args.image_id, args.output, tag=args.tag)
            else:
                client.download_image(args.image_id, args.output)
            print(args.output)
        elif args.command == "infer":
            encoding = _ENCODINGS[args.format]
            kwargs = dict(foreground=args.foreground, background=args.background, encoding=encoding)
            if args.image_id:
                out = client.infer(args.model, image_id=args.image_id, save_label=args.save_label, **kwargs)
            else:
                out = client.infer_file(args.model, args.file, **kwargs)
            out.save(args.output)
            print(json.dumps({"labels": out.labels, "latency": json_format.MessageToDict(out.latency),
                              "output": args.output}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
