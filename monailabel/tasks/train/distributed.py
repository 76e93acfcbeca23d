"""Multi-process (DDP) training: one spawned process per rank, progress and cancel bridged to the caller.

The calling process stays out of ``torch.distributed``: it spawns ``world_size`` workers (NCCL on CUDA,
Gloo on CPU, rendezvous through a temporary file), forwards rank 0's progress events to the caller's
callbacks through a queue, and turns the caller's ``cancel_check`` into an event the ranks poll. Each
rank dies with the calling process (``die_with_parent``), so no rank outlives a killed job.

Across machines (``nodes`` > 1, :func:`run_nodes`) the calling process on each node is a ``torchrun``
agent (``torch.distributed.launcher.elastic_launch``): the nodes meet through a c10d rendezvous at
``rdzv_endpoint`` (one of them, ``rdzv_host``, serves its store), torch assigns the global ranks, and
each agent starts its node's ranks. Whichever node holds global rank 0 forwards the progress events
and returns the stats; rank 0 alone publishes.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import tempfile
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

import torch
import torch.multiprocessing as mp

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.utils.lifetime import die_with_parent

if TYPE_CHECKING:
    from monailabel.tasks.train.basic_train import BasicTrainTask

__all__ = ["run_distributed", "run_nodes", "NODE_KEYS"]

logger = logging.getLogger(__name__)

_RESULT = "_result"
_ERROR = "_error"


#: request keys of a run across nodes: how many, where they meet, and this node's part
NODE_KEYS = ("nodes", "rdzv_endpoint", "rdzv_id", "rdzv_host", "node_addr", "join_timeout", "distributed_timeout")


def _start_rank(parent: int, request: Dict[str, Any], threads: int) -> None:
    """What every rank does first: die with its launcher, log, and on Gloo share the machine's cores."""
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
        torch.set_num_threads(threads)


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
    _start_rank(parent, request, max(1, (os.cpu_count() or 1) // world_size))
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


def _node_rank(
    request: Dict[str, Any],
    datalist: List[Dict[str, Any]],
    task: BasicTrainTask,
    events: Any,
    cancel: Any,
    want_progress: bool,
    parent: int,
    threads: int,
) -> Dict[str, Any]:
    """One rank of a run across nodes, started by the node's ``torchrun`` agent (``RANK``/``WORLD_SIZE`` set).

    Returns:
        ``{"rank", "cancelled", "stats"}``: the stats on global rank 0 only.
    """
    _start_rank(parent, request, threads)
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    emit: Optional[Callable[[Dict[str, Any]], None]] = events.put if want_progress and rank == 0 else None
    try:
        stats = task.train(rank, world_size, request, datalist, emit=emit, cancel_check=cancel.is_set)
        result = {"rank": rank, "stats": stats if rank == 0 else None, "cancelled": False}
    except MONAILabelException as e:
        if e.error != MONAILabelError.CANCELLED:
            events.put({"type": _ERROR, "rank": rank, "error": e.error.value, "msg": e.msg})
            raise
        result = {"rank": rank, "stats": None, "cancelled": True, "msg": e.msg}  # every rank agreed on it
    events.close()
    events.join_thread()
    return result


def _bridge(
    events: Any,
    cancel: Any,
    callbacks: List[Callable[[Dict[str, Any]], None]],
    cancel_check: Optional[Callable[[], bool]],
    results: List[Dict[str, Any]],
    done: threading.Event,
) -> None:
    """Forwards rank 0's events to the callbacks and the caller's cancel to the ranks, until ``done``."""
    while not done.wait(0.1):
        _drain(events, callbacks, results)
        if cancel_check is not None and not cancel.is_set():
            try:
                if cancel_check():
                    logger.info("Cancel requested; stopping every rank on every node")
                    cancel.set()
            except Exception:  # noqa: BLE001 - a broken check must not stop the training
                logger.exception("cancel_check failed; not cancelling")
    _drain(events, callbacks, results)


def run_nodes(
    task: BasicTrainTask,
    request: Dict[str, Any],
    datalist: List[Dict[str, Any]],
    nproc_per_node: int,
    callbacks: List[Callable[[Dict[str, Any]], None]],
    cancel_check: Optional[Callable[[], bool]],
    use_cuda: bool,
) -> Dict[str, Any]:
    """This node's part of a run across ``request["nodes"]`` nodes; returns the stats when it held rank 0.

    Every node calls this with the same request (and datalist) but its own ``rdzv_host``/``node_addr``.
    The call blocks until the whole run has ended on every node.

    Args:
        task: the train task (pickled into each rank).
        request: the resolved request, with ``nodes``, ``rdzv_endpoint`` (``host:port`` of the c10d
            rendezvous), ``rdzv_id`` (the run's id, the same on every node), ``rdzv_host`` (whether this
            node serves the rendezvous store), ``node_addr`` (the address the other nodes reach this
            one at), ``join_timeout`` (seconds to wait for every node) and ``distributed_timeout`` (seconds
            a collective may wait for a silent peer).
        datalist: every record (each rank trains on its share).
        nproc_per_node: ranks on this node.
        callbacks: receive rank 0's progress events when this node holds rank 0.
        cancel_check: asked about ten times a second; once ``True``, every rank of every node stops.
        use_cuda: NCCL with one GPU per rank, else Gloo on CPU.

    Returns:
        rank 0's stats on the node that held it; ``{}`` on the others.

    Raises:
        MONAILabelException: ``CANCELLED``; ``UNAVAILABLE`` when the nodes did not all meet (or one was
            lost); a rank's own ``MONAILabelException``.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    nodes = int(request["nodes"])
    endpoint = str(request.get("rdzv_endpoint") or "")
    if not endpoint:
        raise MONAILabelException(MONAILabelError.INVALID_INPUT, "a run across nodes needs 'rdzv_endpoint' (host:port)")
    request = dict(request)
    request["multi_gpu"] = True
    request["distributed_backend"] = request.get("distributed_backend") or ("nccl" if use_cuda else "gloo")
    request["distributed_url"] = "env://"  # the agent sets MASTER_ADDR/PORT, RANK and WORLD_SIZE
    join_timeout = int(request.get("join_timeout") or 120)
    config = LaunchConfig(
        min_nodes=nodes,
        max_nodes=nodes,
        nproc_per_node=nproc_per_node,
        run_id=str(request.get("rdzv_id") or "monailabel"),
        rdzv_backend="c10d",
        rdzv_endpoint=endpoint,
        rdzv_configs={"timeout": join_timeout, "is_host": bool(request.get("rdzv_host")),
                      "join_timeout": join_timeout, "last_call_timeout": 1},
        max_restarts=0,  # a lost node ends the run: the job fails, it is not re-formed behind the caller's back
        monitor_interval=0.2,
        start_method="spawn",
        local_addr=request.get("node_addr") or None,
    )
    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    cancel = ctx.Event()
    results: List[Dict[str, Any]] = []
    done = threading.Event()
    bridge = threading.Thread(target=_bridge, args=(events, cancel, callbacks, cancel_check, results, done),
                              name="ddp-bridge", daemon=True)
    threads = max(1, (os.cpu_count() or 1) // nproc_per_node)
    logger.info(f"Training on {nodes} nodes x {nproc_per_node} processes ({request['distributed_backend']}), "
                f"rendezvous at {endpoint}{' (served here)' if request.get('rdzv_host') else ''}")
    bridge.start()
    try:
        returned = elastic_launch(config, _node_rank)(
            request, datalist, task, events, cancel, bool(callbacks), os.getpid(), threads)
    except ChildFailedError as e:
        done.set()
        bridge.join()
        for r in results:
            if r["type"] == _ERROR:
                raise MONAILabelException(MONAILabelError(r["error"]), r["msg"]) from None
        first = next(iter(e.failures.values()), None)
        why = (first.message if first is not None and isinstance(first.message, str) else "") or str(e)
        raise MONAILabelException(
            MONAILabelError.UNAVAILABLE, f"a rank on this node failed (a lost node ends the run): {why[-500:]}"
        ) from None
    except Exception as e:  # the rendezvous: a node that never came, or an endpoint that cannot be served
        done.set()
        bridge.join()
        raise MONAILabelException(
            MONAILabelError.UNAVAILABLE,
            f"the {nodes} nodes did not meet at {endpoint} within {join_timeout} s ({type(e).__name__}: {e})",
        ) from None
    done.set()
    bridge.join()
    mine = [r for r in (returned or {}).values() if r]
    cancelled = next((r for r in mine if r["cancelled"]), None)
    if cancelled is not None:
        raise MONAILabelException(MONAILabelError.CANCELLED, cancelled.get("msg") or "Training cancelled")
    return next((dict(r["stats"]) for r in mine if r["stats"] is not None), {})
