"""The job process: ``python -m monailabel_server.jobs.worker SPEC_JSON``.

It loads the app and runs the job. A train job runs the trainer with a progress callback that prints
events as marked JSON lines on stdout (the server tails them into the job store), and a cancel check
that looks for the job's cancel flag file (SIGTERM sets it too). A scoring job runs the scoring method
(``MONAILabelApp.scoring``) and reports what it returned; scoring methods have no cancel hook, so SIGTERM
ends the process at once (each ``update_image_info`` is its own transaction: nothing is left half
written). Everything else it prints is a log line. Exit codes: 0 done, ``EXIT_CANCELLED`` cancelled,
``EXIT_ERROR`` failed with an ``error`` event saying why.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, Dict

from monailabel_server.jobs.protocol import EVENT_MARK, EXIT_CANCELLED, EXIT_ERROR

__all__ = ["EVENT_MARK", "EXIT_CANCELLED", "EXIT_ERROR", "main"]

_out_lock = threading.Lock()


def emit(event: Dict[str, Any]) -> None:
    """Prints one event as a marked JSON line (flushed, so the server sees it at once).

    Args:
        event: a JSON-able dict with a ``type``.
    """
    line = EVENT_MARK + json.dumps(event, default=str)
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def main(argv: list[str]) -> int:
    """Runs one job described by the JSON spec in ``argv[0]``.

    The spec holds ``app_dir``, ``studies``, ``conf``, ``kind`` (``train`` or ``scoring``), ``model`` (the
    trainer or scoring method), ``request`` and ``cancel_file``. A ``seed`` in the request makes the run
    reproducible (MONAI's ``set_determinism`` before the app loads).

    Args:
        argv: the arguments after the module name.

    Returns:
        the exit code.
    """
    spec = json.loads(argv[0])
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

    try:
        seed = spec["request"].get("seed")
        if seed is not None:
            # before the app builds its networks: same seed, same initial weights, crops and order
            from monai.utils import set_determinism

            set_determinism(seed=int(seed))
        app = load_app(Path(spec["app_dir"]), spec["studies"], spec.get("conf") or {})
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
        emit({"type": "error", "kind": exc.error.value, "message": exc.msg})
        return EXIT_ERROR
    except BaseException as exc:  # noqa: BLE001 - anything else is the job's failure, reported to the server
        traceback.print_exc(file=sys.stdout)
        emit({"type": "error", "kind": type(exc).__name__, "message": f"{type(exc).__name__}: {exc}"})
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
