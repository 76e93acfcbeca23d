"""``monailabel-client``: the common calls from a shell (info, list, upload, download, infer, status, train,
next, score)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, List, Optional

from google.protobuf import json_format

from monailabel_api.v1 import common_pb2, job_pb2
from monailabel_client.client import MonaiLabelClient
from monailabel_client.jobs import KINDS, STATES, kind_name, state_name

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
    sec = p.add_argument_group("security", "TLS, mTLS and the bearer token (see the README's Security section)")
    sec.add_argument("--token", default=None, help="bearer token (default: $MONAI_LABEL_TOKEN)")
    sec.add_argument("--tls", action="store_true", help="dial with TLS, the system's roots verifying the server")
    sec.add_argument("--ca-file", default=None, help="PEM CA of the server's certificate (implies --tls)")
    sec.add_argument("--cert", default=None, help="PEM client certificate for mTLS (with --key)")
    sec.add_argument("--key", default=None, help="PEM private key of --cert")
    sec.add_argument("--server-name", default=None, help="name the server's certificate carries, if not the host")
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
    tr = sub.add_parser("train", help="start a training job (and watch it unless --no-watch)")
    tr.add_argument("model")
    tr.add_argument("--max-epochs", type=int)
    tr.add_argument("--val-split", type=float)
    tr.add_argument("--train-batch-size", type=int)
    tr.add_argument("--val-batch-size", type=int)
    tr.add_argument("--device", default="")
    tr.add_argument("--dataset", default="")
    tr.add_argument("--dataloader", default="")
    tr.add_argument("--early-stop-patience", type=int)
    tr.add_argument("--train-id", action="append", default=[], dest="train_ids")
    tr.add_argument("--val-id", action="append", default=[], dest="val_ids")
    tr.add_argument("--queue", action="store_true", help="queue behind the model's running job")
    tr.add_argument("--extra", default="", help="more config keys as JSON")
    tr.add_argument("--no-watch", action="store_true")
    jobs = sub.add_parser("jobs", help="list training and scoring jobs (or show one, or cancel one)")
    jobs.add_argument("job_id", nargs="?")
    jobs.add_argument("--model", default="", help="only this model's (or scoring method's) jobs")
    jobs.add_argument("--kind", choices=[k for k in KINDS if k], default="", help="only jobs of this kind")
    jobs.add_argument("--state", choices=[k for k in STATES if k], default="", help="only jobs in this state")
    jobs.add_argument("--cancel", action="store_true")
    w = sub.add_parser("watch", help="follow a job (training: with a progress bar)")
    w.add_argument("job_id")
    w.add_argument("--after", type=int, default=0, help="resume after this event sequence number")
    w.add_argument("--log", action="store_true", help="print the job's log lines too")
    nx = sub.add_parser("next", help="ask which image to label next (leased to --client-id until asked again)")
    nx.add_argument("--strategy", default="random")
    nx.add_argument("--client-id", default="")
    nx.add_argument("--params", default="", help="strategy parameters as JSON")
    nx.add_argument("--download", metavar="PATH", help="also receive the image, written to PATH")
    nx.add_argument("--list", action="store_true", help="list the strategies instead")
    sc = sub.add_parser("score", help="run a scoring method as a job and follow it (or list scoring methods)")
    sc.add_argument("method", nargs="?", help="the scoring method to run")
    sc.add_argument("--params", default="", help="scoring parameters as JSON")
    sc.add_argument("--queue", action="store_true", help="queue behind the method's running job")
    sc.add_argument("--no-watch", action="store_true")
    sc.add_argument("--methods", action="store_true", help="list the scoring methods")
    args = p.parse_args(argv)

    security = dict(token=args.token, tls=args.tls, ca_file=args.ca_file, cert_file=args.cert, key_file=args.key,
                    server_name=args.server_name)
    with MonaiLabelClient(args.address, progress=sys.stderr.isatty(), timeout=None, **security) as client:
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
        elif args.command == "train":
            job = client.start_train(
                args.model, max_epochs=args.max_epochs, val_split=args.val_split,
                train_batch_size=args.train_batch_size, val_batch_size=args.val_batch_size, device=args.device,
                dataset=args.dataset, dataloader=args.dataloader, early_stop_patience=args.early_stop_patience,
                train_ids=args.train_ids, val_ids=args.val_ids, queue=args.queue,
                extra=json.loads(args.extra) if args.extra else None,
            )
            print(job.job_id, _state(job.state), flush=True)
            if not args.no_watch:
                return watch(client, job.job_id)
        elif args.command == "jobs":
            if args.job_id:
                _print(client.cancel_job(args.job_id) if args.cancel else client.get_job(args.job_id))
            else:
                for j in client.list_jobs(model=args.model, kind=args.kind, state=args.state):
                    if j.kind == job_pb2.JOB_KIND_TRAIN:
                        p = j.progress
                        best = f"{p.best_metric:.4f}" if p.best_metric_epoch else "-"
                        detail = f"epoch {p.epoch}/{p.max_epochs} best {best}"
                    else:
                        detail = j.trigger
                    print(j.job_id, kind_name(j.kind), j.model, _state(j.state), detail, j.error)
        elif args.command == "watch":
            return watch(client, args.job_id, args.after, show_log=args.log)
        elif args.command == "next":
            return _next(client, args)
        elif args.command == "score":
            return _score(client, args, p)
    return 0


def _next(client: MonaiLabelClient, args: argparse.Namespace) -> int:
    if args.list:
        for s in client.list_strategies():
            print(s.name, "-", s.description)
        return 0
    result = client.next_sample(
        args.strategy, client_id=args.client_id, params=json.loads(args.params) if args.params else None,
        dest=args.download,
    )
    print(json.dumps(result.as_dict(), indent=2))
    return 0


def _score(client: MonaiLabelClient, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.methods:
        for m in client.list_scoring_methods():
            print(m.name, "-", m.description)
        return 0
    if not args.method:
        parser.error("score: name a scoring method (or --methods); list and cancel jobs with `jobs`")
    job = client.start_scoring(args.method, json.loads(args.params) if args.params else None, queue=args.queue)
    print(job.job_id, _state(job.state), flush=True)
    if args.no_watch:
        return 0
    for event in client.watch_job(job.job_id):
        if event.WhichOneof("event") == "state_change":
            print(f"[{event.sequence}] {_state(event.state_change.state)} {event.state_change.message}", flush=True)
    job = client.get_job(job.job_id)
    print(json.dumps({"job_id": job.job_id, "state": _state(job.state), "error": job.error,
                      "result": json_format.MessageToDict(job.result)}, indent=2))
    if job.state == job_pb2.JOB_STATE_FAILED and job.last_log_lines:
        print("last log lines:\n  " + "\n  ".join(job.last_log_lines))
    return 0 if job.state == job_pb2.JOB_STATE_SUCCEEDED else 1


def _state(state: int) -> str:
    return state_name(state)


def watch(client: MonaiLabelClient, job_id: str, after: int = 0, show_log: bool = False) -> int:
    """Follows a job with a tqdm bar over its iterations; prints each epoch's metrics and the end state.

    Args:
        client: the client.
        job_id: the job.
        after: resume after this event sequence number.
        show_log: print the job's log lines.

    Returns:
        0 when the job succeeded, else 1.
    """
    from tqdm import tqdm

    job = client.get_job(job_id)
    bar: Any = tqdm(total=None, desc=f"{job.model} {job_id}", unit="it", file=sys.stderr, dynamic_ncols=True)
    try:
        for event in client.watch_job(job_id, after_sequence=after):
            kind = event.WhichOneof("event")
            if kind == "iteration":
                it = event.iteration
                total = it.epoch_length * it.max_epochs
                if total and bar.total != total:
                    bar.total = total
                bar.n = it.iteration
                bar.set_postfix(epoch=f"{it.epoch}/{it.max_epochs}", loss=f"{it.loss:.4f}", refresh=False)
                bar.refresh()
            elif kind == "epoch":
                ep = event.epoch
                metrics = {**ep.train_metrics, **ep.val_metrics}
                text = " ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
                bar.write(f"epoch {ep.epoch}/{ep.max_epochs} {text} best={ep.best_metric:.4f}@{ep.best_metric_epoch}")
            elif kind == "log_line" and show_log:
                bar.write(event.log_line)
            elif kind == "state_change":
                bar.write(f"[{event.sequence}] {_state(event.state_change.state)} {event.state_change.message}")
    finally:
        bar.close()
    job = client.get_job(job_id)
    p = job.progress
    detail = (f"epoch {p.epoch}/{p.max_epochs} best {p.best_metric:.4f}" if job.kind == job_pb2.JOB_KIND_TRAIN
              else f"result {json.dumps(json_format.MessageToDict(job.result))}")
    print(f"{job_id} {kind_name(job.kind)} {job.model} {_state(job.state)} {detail}"
          + (f" published v{job.published_version}" if job.published_version else "")
          + (f" error: {job.error}" if job.error else ""))
    if job.state == job_pb2.JOB_STATE_FAILED and job.last_log_lines:
        print("last log lines:\n  " + "\n  ".join(job.last_log_lines))
    return 0 if job.state == job_pb2.JOB_STATE_SUCCEEDED else 1


if __name__ == "__main__":
    raise SystemExit(main())
