"""Multi-process (DDP) training: one spawned process per rank, progress and cancel bridged to the caller.

The calling process stays out of ``torch.distributed``: it spawns ``world_size`` workers (NCCL on CUDA,
Gloo on CPU, rendezvous through a temporary file), forwards rank 0's progress events to the caller's
callbacks through a queue, and turns the caller's ``cancel_check`` into an event the ranks poll. Each
rank dies with the calling process (``die_with_parent``), so no rank outlives a killed job.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import tempfile
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

import torch
import torch.multiprocessing as mp

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.utils.lifetime import die_with_parent

if TYPE_CHECKING:
    from monailabel.tasks.train.basic_train import BasicTrainTask

__all__ = ["run_distributed"]

logger = logging.getLogger(__name__)

_RESULT = "_result"
_ERROR = "_error"


def _worker(
    rank: int,
    world_size: int,
    request: Dict[str, Any],
    datalist: List[Dict[str, Any]],
    task: BasicTrainTask,
    events: Any,
    cancel: Any,
    want_progress: bool,
    parent: int,
) -> None:
    # a rank whose launcher died would otherwise wait in a collective for its peers forever (or, as
    # rank 0, publish a model for a job that no longer exists): it dies with its launcher, even on SIGKILL
    die_with_parent(parent)
    logging.basicConfig(
        level=logging.INFO,
        format="[%(asctime)s.%(msecs)03d][%(levelname)5s](%(name)s) - %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
    )
    if request.get("distributed_backend") == "gloo":
        # ranks share the machine's cores; without this each one would start a thread per core
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    emit: Optional[Callable[[Dict[str, Any]], None]] = events.put if want_progress and rank == 0 else None
    try:
        stats = task.train(rank, world_size, request, datalist, emit=emit, cancel_check=cancel.is_set)
        if rank == 0:
            events.put({"type": _RESULT, "stats": stats, "cancelled": False})
    except MONAILabelException as e:
        if e.error != MONAILabelError.CANCELLED:
            events.put({"type": _ERROR, "rank": rank, "error": e.error.value, "msg": e.msg})
            raise
        if rank == 0:
            events.put({"type": _RESULT, "stats": {}, "cancelled": True, "msg": e.msg})
    _exit_finished(events)


def _exit_finished(events: Any) -> None:
    """Ends a rank that finished (or was cancelled) without the interpreter's teardown.

    Its process group is destroyed by then, yet gloo's background threads can still be torn down in
    an order that aborts the process at exit ("terminate called without an active exception"), which
    the launcher would report as a failed rank. What the rank had to say is flushed first.
    """
    events.close()
    events.join_thread()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _drain(events: Any, callbacks: List[Callable[[Dict[str, Any]], None]], results: List[Dict[str, Any]]) -> None:
    while True:
        try:
            event = events.get_nowait()
        except queue.Empty:
            return
        if event.get("type") in (_RESULT, _ERROR):
            results.append(event)
            continue
        for callback in callbacks:
            try:
                callback(event)
            except Exception:  # a broken listener must not break the training it listens to
                logger.exception("progress callback failed")


def run_distributed(
    task: BasicTrainTask,
    request: Dict[str, Any],
    datalist: List[Dict[str, Any]],
    world_size: int,
    callbacks: List[Callable[[Dict[str, Any]], None]],
    cancel_check: Optional[Callable[[], bool]],
    use_cuda: bool,
) -> Dict[str, Any]:
    """Trains on ``world_size`` spawned processes and returns rank 0's stats.

    Args:
        task: the train task; it is pickled into each worker, so it must be picklable.
        request: the resolved request (without callables).
        datalist: every record; each rank trains on its partition.
        world_size: the number of processes.
        callbacks: receive rank 0's progress events, in this process.
        cancel_check: asked here about ten times a second; once ``True``, every rank stops.
        use_cuda: NCCL with one GPU per rank, else Gloo on CPU.

    Returns:
        the stats rank 0 wrote.

    Raises:
        MONAILabelException: ``CANCELLED`` when ``cancel_check`` stopped the run; a rank's own
            ``MONAILabelException``; otherwise the workers' failure as ``torch`` reports it.
    """
    fd, init_file = tempfile.mkstemp(prefix="monailabel_dist_")
    os.close(fd)
    os.remove(init_file)  # the file store must not exist before rendezvous
    request = dict(request)
    request["multi_gpu"] = True
    request["distributed_backend"] = request.get("distributed_backend") or ("nccl" if use_cuda else "gloo")
    request["distributed_url"] = request.get("distributed_url") or f"file://{init_file}"

    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    cancel = ctx.Event()
    results: List[Dict[str, Any]] = []
    logger.info(f"Distributed training on {world_size} processes ({request['distributed_backend']})")
    try:
        procs = mp.start_processes(
            _worker,
            args=(world_size, request, datalist, task, events, cancel, bool(callbacks), os.getpid()),
            nprocs=world_size,
            join=False,
            start_method="spawn",
        )
        try:
            while not procs.join(timeout=0.1):
                _drain(events, callbacks, results)
                if cancel_check is not None and not cancel.is_set() and cancel_check():
                    logger.info("Cancel requested; stopping all ranks")
                    cancel.set()
        except Exception:
            _drain(events, callbacks, results)
            for r in results:
                if r["type"] == _ERROR:
                    raise MONAILabelException(MONAILabelError(r["error"]), r["msg"]) from None
            raise
        _drain(events, callbacks, results)
    finally:
        if os.path.exists(init_file):
            os.remove(init_file)

    result = next((r for r in results if r["type"] == _RESULT), None)
    if result is None:
        raise MONAILabelException(MONAILabelError.SERVER_ERROR, "distributed training ended without a result")
    if result["cancelled"]:
        raise MONAILabelException(MONAILabelError.CANCELLED, result.get("msg") or "Training cancelled")
    return result["stats"]
