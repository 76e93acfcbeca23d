"""The job process: ``python -m monailabel_server.jobs.worker SPEC_JSON``.

It loads the app and runs the job. A train job runs the trainer with a progress callback that prints
events as marked JSON lines on stdout (the server tails them into the job store), and a cancel check
that looks for the job's cancel flag file (SIGTERM sets it too). A scoring job runs the scoring method
(``MONAILabelApp.scoring``) and reports what it returned; scoring methods have no cancel hook, so SIGTERM
ends the process at once (each ``update_image_info`` is its own transaction: nothing is left half
written). Everything else it prints is a log line. Exit codes: 0 done, ``EXIT_CANCELLED`` cancelled,
``EXIT_ERROR`` failed with an ``error`` event saying why.

It dies with the server (``die_with_parent``), and holds its model's lock file (``flock``) for its
whole life: a second worker for the same model, from this server or a stray one, fails at once
instead of publishing over it. A failure's ``error`` event carries one scrubbed line, the root cause
of the exception chain (``ModuleNotFoundError: No module named 'scipy'`` rather than what it led to);
the full traceback goes to the job's log file on the server only.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import IO, Any, Dict, Optional

from monailabel_server.jobs.protocol import EVENT_MARK, EXIT_CANCELLED, EXIT_ERROR

__all__ = ["EVENT_MARK", "EXIT_CANCELLED", "EXIT_ERROR", "main"]

_out_lock = threading.Lock()
# "SomeError: message" as a traceback's last line reads
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit|Warning)\b(: |$)")


def emit(event: Dict[str, Any]) -> None:
    """Prints one event as a marked JSON line (flushed, so the server sees it at once).

    Args:
        event: a JSON-able dict with a ``type``.
    """
    line = EVENT_MARK + json.dumps(event, default=str)
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def root_cause(exc: BaseException) -> BaseException:
    """Returns the first exception of ``exc``'s chain (its cause, or the one it was raised while handling)."""
    seen = {id(exc)}
    while True:
        nxt = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        if nxt is None or id(nxt) in seen:
            return exc
        seen.add(id(nxt))
        exc = nxt


def error_line(exc: BaseException) -> str:
    """Returns the one line a client sees for a failure: ``Type: message`` of the root cause, scrubbed."""
    from monailabel_server.errors import scrub

    root = root_cause(exc)
    text = str(root).strip().splitlines()
    message = text[-1].strip() if text else ""
    if _EXCEPTION_LINE.match(message):
        # the last line of a traceback another process sent (a DDP rank's): that exception is the cause
        return scrub(message, 1000)
    return scrub(f"{type(root).__name__}: {message}" if message else type(root).__name__, 1000)


def _hold_lock(path: str) -> Optional[IO[str]]:
    """Takes the model's lock file for this process's life; returns None when another process holds it."""
    import fcntl

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle  # kept open (and locked) until the process exits


def main(argv: list[str]) -> int:
    """Runs one job described by the JSON spec in ``argv[0]``.

    The spec holds ``app_dir``, ``studies``, ``conf``, ``kind`` (``train`` or ``scoring``), ``model`` (the
    trainer or scoring method), ``request``, ``cancel_file``, ``log_file`` (where tracebacks go),
    ``lock_file`` (the model's lock) and ``server_pid`` (the parent it dies with). A ``seed`` in the request
    makes the run reproducible (MONAI's ``set_determinism`` before the app loads).

    Args:
        argv: the arguments after the module name.

    Returns:
        the exit code.
    """
    spec = json.loads(argv[0])
    from monailabel.utils.lifetime import die_with_parent

    die_with_parent(spec.get("server_pid"))
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(asctime)s - %(levelname)s - %(message)s", force=True
    )
    cancel_file = Path(spec["cancel_file"])
    scoring = spec.get("kind") == "scoring"

    def _on_term(signum: int, _frame: Any) -> None:
        cancel_file.touch()
        if scoring:
            sys.stdout.flush()
            os._exit(EXIT_CANCELLED)

    signal.signal(signal.SIGTERM, _on_term)

    from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
    from monailabel_server.app_loader import load_app
    from monailabel_server.memory import retain_freed_memory

    retain_freed_memory(int(spec.get("retain_memory_bytes") or 0))

    lock = _hold_lock(spec["lock_file"]) if spec.get("lock_file") else True
    if lock is None:
        what = "scoring method" if scoring else "model"
        emit({"type": "error", "kind": "LOCKED",
              "message": f"another process is still running {what} {spec['model']!r} (a job of an earlier "
                         "server?); it was not started twice. Try again when that process has ended"})
        return EXIT_ERROR
    try:
        seed = spec["request"].get("seed")
        if seed is not None:
            # before the app builds its networks: same seed, same initial weights, crops and order
            from monai.utils.misc import set_determinism

            set_determinism(seed=int(seed))
        app = load_app(Path(spec["app_dir"]), spec["studies"], spec.get("conf") or {})
        if spec.get("kind") == "batch_infer":
            return _batch_infer(app, spec["model"], dict(spec["request"]), cancel_file)
        if scoring:
            from monailabel_server.convert import jsonable

            emit({"type": "started", "pid": os.getpid()})
            result = app.scoring(dict(spec["request"], method=spec["model"]))
            emit({"type": "result", "result": jsonable(result if isinstance(result, dict) else {"result": result})})
            return 0
        task = app.trainers()[spec["model"]]
        request = dict(spec["request"])
        request["progress_callback"] = emit
        request["cancel_check"] = cancel_file.exists
        emit({"type": "started", "pid": os.getpid()})
        result = task(request, app.datastore())
        emit({"type": "result", "stats": result if isinstance(result, dict) else {}})
        return 0
    except MONAILabelException as exc:
        if exc.error == MONAILabelError.CANCELLED or cancel_file.exists():
            emit({"type": "error", "kind": "CANCELLED", "message": exc.msg})
            return EXIT_CANCELLED
        _log_traceback(spec.get("log_file"))
        message, root = exc.msg, root_cause(exc)
        if root is not exc and not isinstance(root, MONAILabelException):
            message += f" (cause: {error_line(exc)})"
        emit({"type": "error", "kind": exc.error.value, "message": message})
        return EXIT_ERROR
    except BaseException as exc:  # noqa: BLE001 - anything else is the job's failure, reported to the server
        _log_traceback(spec.get("log_file"))
        emit({"type": "error", "kind": type(root_cause(exc)).__name__, "message": error_line(exc)})
        return EXIT_ERROR


def _batch_infer(app: Any, model: str, request: Dict[str, Any], cancel_file: Path) -> int:
    """Runs ``model`` over datastore images, saving each mask as the image's ``original`` label.

    One image's failure is reported (a log line and the ``failed`` count) and the run goes on, as
    MONAI Label's batch inference does; a cancel is seen between images. Each label is saved whole by
    the datastore (written aside, then renamed), so a cancel never leaves half a label.
    """
    datastore = app.datastore()
    images = request.get("images") or "all"
    if images == "ids":
        ids = list(request.get("image_ids") or [])
    elif images == "unlabeled":
        ids = sorted(datastore.get_unlabeled_images())
    else:
        ids = sorted(datastore.list_images())
    total, done, failed, saved = len(ids), 0, 0, []
    emit({"type": "started", "pid": os.getpid()})
    emit({"type": "batch_progress", "done": 0, "total": total, "failed": 0, "image_id": ""})
    for image_id in ids:
        if cancel_file.exists():
            emit({"type": "error", "kind": "CANCELLED", "message": f"cancelled after {done} of {total} images"})
            return EXIT_CANCELLED
        infer_request = {"model": model, "image": image_id, "image_id": image_id, "save_label": True,
                         "label_tag": "original", "cancel_check": cancel_file.exists}
        if request.get("device"):
            infer_request["device"] = request["device"]
        try:
            result = app.infer(infer_request)
            if result.get("file") and result.get("file") != result.get("label") and os.path.exists(result["file"]):
                os.unlink(result["file"])  # the saved label is a copy; the task's result file is temporary
            saved.append(image_id)
        except Exception as exc:  # noqa: BLE001 - one image's failure is reported; the batch goes on
            if cancel_file.exists():
                emit({"type": "error", "kind": "CANCELLED", "message": f"cancelled after {done} of {total} images"})
                return EXIT_CANCELLED
            failed += 1
            print(f"image {image_id}: inference failed: {error_line(exc)}", flush=True)
        done += 1
        emit({"type": "batch_progress", "done": done, "total": total, "failed": failed, "image_id": image_id})
    emit({"type": "result", "result": {"total": total, "saved": len(saved), "failed": failed}})
    return 0


def _log_traceback(path: Optional[str]) -> None:
    """Appends the current exception's full traceback to the job's log file (never to stdout: clients see that)."""
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as f:
            traceback.print_exc(file=f)
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
