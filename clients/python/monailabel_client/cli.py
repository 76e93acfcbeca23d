"""``monailabel-client``: the common calls from a shell (info, list, upload, download, infer, status, train,
next, score).

Errors print one line (``error: NOT_FOUND: ...``) and exit with the code of their class (see
:data:`EXIT_CODES`); ``--debug`` shows the traceback instead. JSON output uses the proto field names.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Dict, List, Optional

import grpc
from google.protobuf import json_format

from monailabel_api.v1 import common_pb2, job_pb2
from monailabel_client.client import MonaiLabelClient, UploadError
from monailabel_client.jobs import KINDS, STATES, kind_name, state_name

__all__ = ["main", "EXIT_CODES", "exit_code_of"]

_ENCODINGS = {"nii.gz": common_pb2.ENCODING_NIFTI_GZ, "nii": common_pb2.ENCODING_NIFTI,
              "nrrd": common_pb2.ENCODING_NRRD, "raw": common_pb2.ENCODING_RAW}
# what a file's bytes may be sent as when its name does not tell (``upload --encoding``)
_FILE_ENCODINGS = {"nii.gz": common_pb2.ENCODING_NIFTI_GZ, "nii": common_pb2.ENCODING_NIFTI,
                   "nrrd": common_pb2.ENCODING_NRRD, "image2d": common_pb2.ENCODING_IMAGE_2D}

# Exit status per class of error, so that scripts can tell "fix the command" from "start the server".
EXIT_CODES: Dict[str, int] = {
    "ok": 0,
    "job_failed": 1,  # a train or scoring job ended FAILED or CANCELLED
    "usage": 2,  # bad arguments or a local file that cannot be read or sent (argparse uses 2 too)
    "invalid": 3,  # the server rejected the request: INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE
    "not_found": 4,  # NOT_FOUND: unknown model, image, label, session, job
    "conflict": 5,  # ALREADY_EXISTS, ABORTED (a job is already running)
    "unavailable": 6,  # UNAVAILABLE, DEADLINE_EXCEEDED: no server at --address, or it went away
    "busy": 7,  # RESOURCE_EXHAUSTED: queue full, volume over the limit
    "denied": 8,  # UNAUTHENTICATED, PERMISSION_DENIED
    "server": 9,  # INTERNAL, UNKNOWN, UNIMPLEMENTED, DATA_LOSS, CANCELLED: a server bug or a stopped call
    "interrupted": 130,  # Ctrl-C
}
_CLASS_OF_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: "invalid",
    grpc.StatusCode.FAILED_PRECONDITION: "invalid",
    grpc.StatusCode.OUT_OF_RANGE: "invalid",
    grpc.StatusCode.NOT_FOUND: "not_found",
    grpc.StatusCode.ALREADY_EXISTS: "conflict",
    grpc.StatusCode.ABORTED: "conflict",
    grpc.StatusCode.UNAVAILABLE: "unavailable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "unavailable",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "busy",
    grpc.StatusCode.UNAUTHENTICATED: "denied",
    grpc.StatusCode.PERMISSION_DENIED: "denied",
}
_EPILOG = ("exit status: " + ", ".join(f"{code} {name.replace('_', ' ')}" for name, code in EXIT_CODES.items())
           + ". Errors print one line; --debug prints the traceback.")
# plain progress lines on a pipe: at most one per this many seconds
PLAIN_PROGRESS_EVERY_S = 10.0


def _print(message: object) -> None:
    print(json.dumps(_dict(message), indent=2))


def _dict(message: object) -> Dict[str, Any]:
    """A message as JSON values with the proto field names (``image_id``, as in the .proto files)."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)  # type: ignore[arg-type]


def exit_code_of(exc: BaseException) -> int:
    """Returns the exit status for an error (see :data:`EXIT_CODES`).

    Args:
        exc: what a command raised.
    """
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        return EXIT_CODES[_CLASS_OF_STATUS.get(exc.code(), "server")]
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_CODES["interrupted"]
    if isinstance(exc, (ValueError, OSError, UploadError)):
        return EXIT_CODES["usage"]
    return EXIT_CODES["server"]


def error_line(exc: BaseException, address: str) -> str:
    """Returns the one line printed for an error.

    Args:
        exc: what a command raised.
        address: the server address the command dialed.
    """
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        code, details = exc.code(), (exc.details() or "").strip()
        if code == grpc.StatusCode.UNAVAILABLE and "connect" in details.lower():
            reason = details.rsplit(":", 1)[-1].strip() or details
            return (f"error: UNAVAILABLE: no server answers at {address} ({reason}); start one with "
                    "`monailabel start_server`, or pass --address HOST:PORT")
        return f"error: {code.name}: {details}"
    if isinstance(exc, json.JSONDecodeError):
        return f"error: not valid JSON: {exc}"
    if isinstance(exc, OSError) and exc.filename:
        return f"error: {exc.filename}: {exc.strerror or exc}"
    if isinstance(exc, KeyboardInterrupt):
        return "error: interrupted"
    return f"error: {exc}"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default (where it has one) after its help sentence."""

    def _get_help_string(self, action: argparse.Action) -> Optional[str]:
        if action.default in (None, "", [], False) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def parser() -> argparse.ArgumentParser:
    """Returns the command line's parser (every option with a sentence and its default)."""
    p = argparse.ArgumentParser(prog="monailabel-client", description="Call a MONAI Label gRPC server.",
                                epilog=_EPILOG, formatter_class=_HelpFormatter)
    p.add_argument("--address", default="127.0.0.1:50051", help="the server's HOST:PORT")
    p.add_argument("--debug", action="store_true", help="print the full traceback of an error")
    sec = p.add_argument_group("security", "TLS, mTLS and the bearer token (see the README's Security section)")
    sec.add_argument("--token", default=None, help="bearer token (default: $MONAI_LABEL_TOKEN)")
    sec.add_argument("--tls", action="store_true", help="dial with TLS, the system's roots verifying the server")
    sec.add_argument("--ca-file", default=None, help="PEM CA of the server's certificate (implies --tls)")
    sec.add_argument("--cert", default=None, help="PEM client certificate for mTLS (with --key)")
    sec.add_argument("--key", default=None, help="PEM private key of --cert")
    sec.add_argument("--server-name", default=None, help="name the server's certificate carries, if not the host")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", help="what to do")

    def cmd(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, formatter_class=_HelpFormatter, epilog=_EPILOG)

    hc = cmd("health", "print the server's health (SERVING) and exit 0, or fail with the unavailable status")
    hc.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer")
    cmd("info", "print the app's info: models, trainers, strategies, scoring methods, datastore counts")
    cmd("status", "print the datastore's counts")
    ls = cmd("list", "list images: id, size in bytes, label tags")
    ls.add_argument("--filter", choices=["all", "labeled", "unlabeled"], default="all",
                    help="which images: all, those with a final label, or those without")
    up = cmd("upload", "upload an image file (resumes by itself if the connection breaks)")
    up.add_argument("image_id", help="the id the image gets in the datastore")
    up.add_argument("file", help="a .nii.gz, .nii, .nrrd, .png, .jpg or .tif file")
    up.add_argument("--overwrite", action="store_true", help="replace an image that has this id")
    up.add_argument("--encoding", choices=sorted(_FILE_ENCODINGS),
                    help="the file's format when its name does not tell (default: from the extension)")
    lab = cmd("save-label", "save a label file for an image")
    lab.add_argument("image_id", help="the image the label belongs to")
    lab.add_argument("file", help="the label: .nii.gz, .nii, .nrrd, or .png for 2D images")
    lab.add_argument("--tag", default="final", help="label tag (final labels are what training uses)")
    lab.add_argument("--encoding", choices=sorted(_FILE_ENCODINGS),
                     help="the file's format when its name does not tell (default: from the extension)")
    dl = cmd("download", "download an image (or a label with --tag)")
    dl.add_argument("image_id", help="the image")
    dl.add_argument("output", help="file to write")
    dl.add_argument("--tag", default="", help="download the image's label with this tag instead of the image")
    inf = cmd("infer", "run an infer task and write the mask")
    inf.add_argument("model", help="the model (infer task) name, as `info` lists them")
    src = inf.add_mutually_exclusive_group(required=True)
    src.add_argument("--image-id", help="run on this datastore image")
    src.add_argument("--file", help="run on this local file (sent with the call, not stored)")
    inf.add_argument("--output", required=True, help="mask file to write")
    inf.add_argument("--format", choices=sorted(_ENCODINGS), default="nii.gz", help="the mask's encoding")
    inf.add_argument("--save-label", action="store_true", help="also store the mask as the image's label")
    inf.add_argument("--foreground", type=int, nargs=3, action="append", default=[], metavar=("X", "Y", "Z"),
                     help="a foreground click (repeat for more), for interactive models")
    inf.add_argument("--background", type=int, nargs=3, action="append", default=[], metavar=("X", "Y", "Z"),
                     help="a background click (repeat for more), for interactive models")
    tr = cmd("train", "start a training job (and watch it unless --no-watch)")
    tr.add_argument("model", help="the trainer name, as `info` lists them")
    tr.add_argument("--max-epochs", type=int, help="epochs to train (default: the trainer's)")
    tr.add_argument("--val-split", type=float,
                    help="share of labeled images held out for validation (default: the trainer's)")
    tr.add_argument("--train-batch-size", type=int, help="training batch size (default: the trainer's)")
    tr.add_argument("--val-batch-size", type=int, help="validation batch size (default: the trainer's)")
    tr.add_argument("--device", default="", help="torch device, e.g. cpu or cuda:0 (default: CUDA if present)")
    tr.add_argument("--nodes", type=int,
                    help="server replicas the job spans, each training its share (default: the server's --train-nodes)")
    tr.add_argument("--dataset", default="",
                    help="MONAI dataset class, e.g. Dataset or CacheDataset (default: the trainer's)")
    tr.add_argument("--dataloader", default="",
                    help="MONAI data loader class, e.g. ThreadDataLoader (default: the trainer's)")
    tr.add_argument("--early-stop-patience", type=int,
                    help="stop after this many epochs without improvement (default: the trainer's)")
    tr.add_argument("--train-id", action="append", default=[], dest="train_ids",
                    help="train on this image (repeat for more; default: every labeled image)")
    tr.add_argument("--val-id", action="append", default=[], dest="val_ids",
                    help="validate on this image (repeat for more; default: a --val-split share)")
    tr.add_argument("--queue", action="store_true", help="queue behind the model's running job")
    tr.add_argument("--extra", default="", help="more config keys as a JSON object (default: none)")
    tr.add_argument("--no-watch", action="store_true", help="print the job id and return at once")
    jobs = cmd("jobs", "list training and scoring jobs (or show one, or cancel one)")
    jobs.add_argument("job_id", nargs="?", help="show (or cancel) this job")
    jobs.add_argument("--model", default="", help="only this model's (or scoring method's) jobs (default: all)")
    jobs.add_argument("--kind", choices=[k for k in KINDS if k], default="", help="only jobs of this kind")
    jobs.add_argument("--state", choices=[k for k in STATES if k], default="", help="only jobs in this state")
    jobs.add_argument("--cancel", action="store_true", help="cancel the job")
    w = cmd("watch", "follow a job (training: a progress bar on a terminal, plain lines on a pipe)")
    w.add_argument("job_id", help="the job")
    w.add_argument("--after", type=int, default=0, help="resume after this event sequence number")
    w.add_argument("--log", action="store_true", help="print the job's log lines too")
    nx = cmd("next", "ask which image to label next (leased to --client-id until asked again)")
    nx.add_argument("--strategy", default="random", help="the strategy, as `next --list` lists them")
    nx.add_argument("--client-id", default="", help="who labels it (default: the server's user-xyz)")
    nx.add_argument("--params", default="", help="strategy parameters as a JSON object (default: none)")
    nx.add_argument("--download", metavar="PATH", help="also receive the image, written to PATH")
    nx.add_argument("--list", action="store_true", help="list the strategies instead")
    sc = cmd("score", "run a scoring method as a job and follow it (list and cancel jobs with `jobs`)")
    sc.add_argument("method", nargs="?", help="the scoring method to run")
    sc.add_argument("--params", default="", help="scoring parameters as a JSON object (default: none)")
    sc.add_argument("--queue", action="store_true",
                    help="queue behind the method's running job (automatic jobs are always waited for)")
    sc.add_argument("--no-watch", action="store_true", help="print the job id and return at once")
    sc.add_argument("--methods", action="store_true", help="list the scoring methods")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the client command line.

    Args:
        argv: arguments; None for ``sys.argv[1:]``.

    Returns:
        The exit status (see :data:`EXIT_CODES`).
    """
    p = parser()
    args = p.parse_args(argv)
    try:
        return _run(p, args)
    except (Exception, KeyboardInterrupt) as exc:
        if args.debug:
            raise
        print(error_line(exc, args.address), file=sys.stderr)
        return exit_code_of(exc)


def _run(p: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    security = dict(token=args.token, tls=args.tls, ca_file=args.ca_file, cert_file=args.cert, key_file=args.key,
                    server_name=args.server_name)
    with MonaiLabelClient(args.address, progress=True, timeout=None, **security) as client:
        if args.command == "health":
            from grpc_health.v1 import health_pb2

            # types-grpcio-health-checking's HealthStub declares no methods
            answer = client.health.Check(health_pb2.HealthCheckRequest(), timeout=args.timeout)  # type: ignore[attr-defined]
            print(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))
            return 0 if answer.status == health_pb2.HealthCheckResponse.SERVING else EXIT_CODES["unavailable"]
        if args.command == "info":
            _print(client.info())
        elif args.command == "status":
            _print(client.status())
        elif args.command == "list":
            for image in client.list_images(filter=args.filter):
                print(image.image_id, image.size, ",".join(lb.tag for lb in image.labels))
        elif args.command == "upload":
            client.upload_image(args.image_id, args.file, overwrite=args.overwrite, encoding=_file_encoding(args))
            # read back: an upload checked by XXH3-128 is answered before the server has its SHA-256
            _print(client.get_image(args.image_id))
        elif args.command == "save-label":
            _print(client.save_label(args.image_id, args.file, tag=args.tag, encoding=_file_encoding(args)))
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
                _known_format(args.file, "rename it, or upload it with --encoding and infer with --image-id")
                out = client.infer_file(args.model, args.file, **kwargs)
            out.save(args.output)
            print(json.dumps({"labels": out.labels, "latency": _dict(out.latency),
                              "output": args.output}, indent=2))
        elif args.command == "train":
            job = client.start_train(
                args.model, max_epochs=args.max_epochs, val_split=args.val_split,
                train_batch_size=args.train_batch_size, val_batch_size=args.val_batch_size, device=args.device,
                dataset=args.dataset, dataloader=args.dataloader, early_stop_patience=args.early_stop_patience,
                train_ids=args.train_ids, val_ids=args.val_ids, queue=args.queue,
                extra=json.loads(args.extra) if args.extra else None, nodes=args.nodes,
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
                        pr = j.progress
                        best = f"{pr.best_metric:.4f}" if pr.best_metric_epoch else "-"
                        detail = f"epoch {pr.epoch}/{pr.max_epochs} best {best}"
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
    out = _dict(result.sample)
    if result.path is not None:
        out["path"] = str(result.path)
    print(json.dumps(out, indent=2))
    return 0


def _file_encoding(args: argparse.Namespace) -> Optional[int]:
    """The ``--encoding`` asked for; else None (from the file name), with a hint where the name does not tell."""
    if args.encoding:
        return _FILE_ENCODINGS[args.encoding]
    _known_format(args.file, f"rename it, or pass --encoding {{{','.join(sorted(_FILE_ENCODINGS))}}}")
    return None


def _known_format(path: str, what_to_do: str) -> None:
    """Raises ValueError (a usage error) when a file's name does not tell its format."""
    from monailabel_api.wire import encoding_of_name

    if encoding_of_name(path) in (common_pb2.ENCODING_UNSPECIFIED, common_pb2.ENCODING_DICOM_ZIP):
        raise ValueError(f"cannot tell the format of {path!r} from its name (.nii.gz, .nii, .nrrd, .png, .jpg, "
                         f".tif); {what_to_do}")


def _score(client: MonaiLabelClient, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.methods:
        for m in client.list_scoring_methods():
            print(m.name, "-", m.description)
        return 0
    if not args.method:
        parser.error("score: name a scoring method (or --methods); list and cancel jobs with `jobs`")
    params = json.loads(args.params) if args.params else None
    try:
        job = client.start_scoring(args.method, params, queue=args.queue)
    except grpc.RpcError as exc:
        # A job the server started by itself (after training published, or at start) is no reason to
        # fail: the user's job waits behind it. A job another client started still answers ABORTED.
        if exc.code() != grpc.StatusCode.ABORTED or not _only_automatic_jobs(client, args.method):
            raise
        print(f"an automatic {args.method} job is running; queued behind it", file=sys.stderr)
        job = client.start_scoring(args.method, params, queue=True)
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


def _only_automatic_jobs(client: MonaiLabelClient, method: str) -> bool:
    """Whether the method's queued and running jobs were all started by the server itself."""
    states = (job_pb2.JOB_STATE_QUEUED, job_pb2.JOB_STATE_RUNNING)
    active = [j for j in client.list_jobs(model=method, kind="scoring") if j.state in states]
    return bool(active) and all(j.trigger != "client" for j in active)


def _state(state: int) -> str:
    return state_name(state)


def watch(client: MonaiLabelClient, job_id: str, after: int = 0, show_log: bool = False) -> int:
    """Follows a job: a tqdm bar over its iterations on a terminal, a plain line at most every
    :data:`PLAIN_PROGRESS_EVERY_S` seconds on a pipe; prints each epoch's metrics and the end state.

    Args:
        client: the client.
        job_id: the job.
        after: resume after this event sequence number.
        show_log: print the job's log lines.

    Returns:
        0 when the job succeeded, else 1.
    """
    job = client.get_job(job_id)
    progress = _Progress(f"{job.model} {job_id}", sys.stderr.isatty())
    try:
        for event in client.watch_job(job_id, after_sequence=after):
            kind = event.WhichOneof("event")
            if kind == "iteration":
                it = event.iteration
                progress.update(it.iteration, it.epoch_length * it.max_epochs,
                                f"epoch {it.epoch}/{it.max_epochs} loss {it.loss:.4f}")
            elif kind == "epoch":
                ep = event.epoch
                metrics = {**ep.train_metrics, **ep.val_metrics}
                text = " ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
                best = f"best={ep.best_metric:.4f}@{ep.best_metric_epoch}"
                progress.write(f"epoch {ep.epoch}/{ep.max_epochs} {text} {best}")
            elif kind == "log_line" and show_log:
                progress.write(event.log_line)
            elif kind == "state_change":
                progress.write(f"[{event.sequence}] {_state(event.state_change.state)} {event.state_change.message}")
    finally:
        progress.close()
    job = client.get_job(job_id)
    pr = job.progress
    detail = (f"epoch {pr.epoch}/{pr.max_epochs} best {pr.best_metric:.4f}" if job.kind == job_pb2.JOB_KIND_TRAIN
              else f"result {json.dumps(json_format.MessageToDict(job.result))}")
    print(f"{job_id} {kind_name(job.kind)} {job.model} {_state(job.state)} {detail}"
          + (f" published v{job.published_version}" if job.published_version else "")
          + (f" error: {job.error}" if job.error else ""))
    for node in job.nodes:  # a train job across replicas
        print(f"  node {node.node} (replica {node.replica_id}) {_state(node.state)}"
              + (f": {node.error}" if node.error else ""))
    if job.state == job_pb2.JOB_STATE_FAILED and job.last_log_lines:
        print("last log lines:\n  " + "\n  ".join(job.last_log_lines))
    return 0 if job.state == job_pb2.JOB_STATE_SUCCEEDED else 1


class _Progress:
    """Iteration progress: a tqdm bar on a terminal; on a pipe (a log file, CI) whole lines, at most one
    every :data:`PLAIN_PROGRESS_EVERY_S` seconds, so that logs hold no carriage-return fragments.

    Args:
        desc: what is progressing.
        tty: whether stderr is a terminal.
    """

    def __init__(self, desc: str, tty: bool) -> None:
        self.desc = desc
        self.bar: Any = None
        self.last = 0.0
        if tty:
            from tqdm import tqdm

            self.bar = tqdm(total=None, desc=desc, unit="it", file=sys.stderr, dynamic_ncols=True)

    def update(self, n: int, total: int, text: str) -> None:
        if self.bar is not None:
            if total and self.bar.total != total:
                self.bar.total = total
            self.bar.n = n
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.refresh()
            return
        now = time.monotonic()
        if now - self.last >= PLAIN_PROGRESS_EVERY_S or (total and n >= total):
            self.last = now
            share = f" ({100 * n // total}%)" if total else ""
            print(f"{self.desc}: iteration {n}/{total or '?'}{share} {text}", file=sys.stderr, flush=True)

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


if __name__ == "__main__":
    raise SystemExit(main())
