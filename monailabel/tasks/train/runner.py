"""The run of a :class:`BasicTrainTask`: request to context, engines, training, stats; one rank or many."""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

import ignite.distributed as idist
import torch
import torch.distributed as dist
from monai.data import get_track_meta, set_track_meta

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.tasks.train.context import Context
from monailabel.tasks.train.distributed import run_distributed, run_nodes
from monailabel.tasks.train.engines import call_hook
from monailabel.tasks.train.handler import PublishStatsAndModel, prepare_stats
from monailabel.tasks.train.progress import TrainProgress, gather_rank_stats
from monailabel.tasks.train.request import resolve_request, split_callables
from monailabel.tasks.train.tracking import resolve_tracking

if TYPE_CHECKING:
    from monailabel.tasks.train.basic_train import BasicTrainTask

__all__ = ["read_stats", "run", "train_rank"]

logger = logging.getLogger(__name__)

NO_DATA = (
    "No labeled data to train on: the datastore has no image with a final label. "
    "Save a final label for at least one image (or pass 'train_ds') and try again."
)


def read_stats(path: Optional[str]) -> Dict[str, Any]:
    """Returns the stats JSON at ``path``, or ``{}`` when there is none (yet).

    Args:
        path: the stats file.
    """
    if not path or not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        logger.warning(f"Could not read train stats from {path}")
        return {}


def _invalid(msg: str) -> MONAILabelException:
    return MONAILabelException(MONAILabelError.INVALID_INPUT, msg)


def _gpu_ids(request: Dict[str, Any]) -> List[int]:
    if request.get("gpus", "all") == "all":
        return list(range(torch.cuda.device_count()))
    return [int(g) for g in str(request["gpus"]).split(",")]


def plan_processes(request: Dict[str, Any]) -> Tuple[int, bool]:
    """Decides how many processes train and whether on CUDA.

    One process unless ``multi_gpu``: then one per GPU in ``gpus`` (or ``world_size`` of them), and
    with no usable GPU, ``world_size`` CPU processes when the request names one.

    Args:
        request: the resolved request.

    Returns:
        ``(world_size, use_cuda)``.

    Raises:
        MONAILabelException: ``INVALID_INPUT`` for an unknown device or GPU, or too many processes.
    """
    try:
        wanted = torch.device(request.get("device") or "cuda")
    except RuntimeError:
        raise _invalid(f"'device' is not a torch device: {request.get('device')!r}") from None
    use_cuda = wanted.type == "cuda" and torch.cuda.is_available()
    world_size = request.get("world_size")
    if int(request.get("nodes") or 1) > 1:
        request["multi_gpu"] = True  # a run across nodes is distributed; world_size counts this node's ranks
    if not request.get("multi_gpu"):
        return 1, use_cuda
    if use_cuda:
        gpus = _gpu_ids(request)
        if any(g >= torch.cuda.device_count() for g in gpus):
            raise _invalid(f"'gpus' names a GPU this machine does not have: {request.get('gpus')!r}")
        if world_size is not None and world_size > len(gpus):
            raise _invalid(f"'world_size' {world_size} is more than the {len(gpus)} GPU(s) available")
        return (world_size or len(gpus)), True
    return (world_size or 1), False


def run(task: BasicTrainTask, request: Optional[Dict[str, Any]], datastore: Datastore) -> Dict[str, Any]:
    """``BasicTrainTask.__call__``: resolves the request, then trains on one process or spawns ranks.

    Args:
        task: the train task.
        request: the caller's request.
        datastore: the app's datastore.

    Returns:
        the run's stats.
    """
    logger.info(f"Train Request (input): { {k: v for k, v in (request or {}).items() if not callable(v)} }")
    rest, callbacks, cancel_check = split_callables(request)
    req = resolve_request(task.config(), rest)
    world_size, use_cuda = plan_processes(req)
    datalist = task.pre_process(req, datastore)
    if not datalist:
        raise MONAILabelException(MONAILabelError.PRECONDITION_FAILED, NO_DATA)
    try:
        if int(req.get("nodes") or 1) > 1:
            return run_nodes(task, req, datalist, world_size, callbacks, cancel_check, use_cuda)
        if world_size > 1:
            return run_distributed(task, req, datalist, world_size, callbacks, cancel_check, use_cuda)
        req["multi_gpu"] = False
        return task.train(0, 1, req, datalist, emit=callbacks or None, cancel_check=cancel_check)
    finally:
        task.cleanup(req)


def _device(context: Context) -> torch.device:
    request = context.request
    if context.multi_gpu:
        if request.get("distributed_backend") == "nccl":
            device = torch.device(f"cuda:{_gpu_ids(request)[_node_local_rank(context.local_rank)]}")
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
    else:
        wanted = torch.device(request.get("device") or "cuda")
        device = wanted if wanted.type != "cuda" or torch.cuda.is_available() else torch.device("cpu")
    logger.info(f"{context.local_rank} - Using Device: {device}")
    return device


def _node_local_rank(rank: int) -> int:
    """This rank's index on its machine: ``torchrun``'s ``LOCAL_RANK`` in a run across nodes, else the rank."""
    if "TORCHELASTIC_RUN_ID" in os.environ:
        return int(os.environ.get("LOCAL_RANK", "0"))
    return rank


def _listeners(emit: Any) -> List[Callable[[Dict[str, Any]], None]]:
    if emit is None:
        return []
    return list(emit) if isinstance(emit, (list, tuple)) else [emit]


def train_rank(
    task: BasicTrainTask,
    rank: int,
    world_size: int,
    request: Dict[str, Any],
    datalist: List[Dict[str, Any]],
    emit: Any = None,
    cancel_check: Optional[Callable[[], bool]] = None,
) -> Dict[str, Any]:
    """``BasicTrainTask.train``: one rank's training; see there."""
    context = Context()
    context.start_ts = time.time()
    context.request = request
    context.datalist = datalist
    context.local_rank = rank
    context.world_size = world_size
    context.run_id = request["run_id"]
    context.multi_gpu = bool(request.get("multi_gpu")) and world_size > 1
    context.event_handlers = _listeners(emit)
    context.cancel_check = cancel_check

    joined = False
    if context.multi_gpu:
        os.environ["LOCAL_RANK"] = str(_node_local_rank(rank))
        timeout = request.get("distributed_timeout")
        dist.init_process_group(
            backend=request.get("distributed_backend", "gloo"),
            init_method=request.get("distributed_url", "env://"),
            world_size=world_size,
            rank=rank,
            # a collective waits this long for a peer that went silent (a lost node) before failing
            timeout=timedelta(seconds=float(timeout)) if timeout else None,
        )
        joined = True
        # ignite discovers the process group lazily with a collective; doing it here on every rank keeps
        # a rank-0-only handler (CheckpointSaver) from triggering it alone and hanging
        idist.sync()
    track_meta = get_track_meta()
    if task._disable_meta_tracking:
        set_track_meta(False)
    in_step = False  # whether every rank is known to reach the end together
    try:
        stats = _train(task, context)
        in_step = True
        return stats
    except MONAILabelException as e:
        in_step = e.error == MONAILabelError.CANCELLED  # all ranks agreed on it
        raise
    finally:
        set_track_meta(track_meta)
        if joined:
            if in_step:
                # gloo aborts a process whose peer tears the group down while messages are in flight
                dist.barrier()
            dist.destroy_process_group()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _train(task: BasicTrainTask, context: Context) -> Dict[str, Any]:
    request = context.request
    logger.info(f"{context.local_rank} - Train Request (final): {request}")
    context.device = _device(context)
    context.max_epochs = request["max_epochs"]
    context.train_batch_size = request["train_batch_size"]
    context.val_batch_size = request["val_batch_size"]
    context.pretrained = request["pretrained"]
    context.dataset_type = request["dataset"]
    context.dataloader_type = request["dataloader"]
    context.output_dir = os.path.join(task._model_dir, request["name"])
    context.cache_dir = task.get_cache_dir(request)
    context.events_dir = os.path.join(context.output_dir, f"events_{context.run_id}")
    os.makedirs(context.output_dir, exist_ok=True)
    resolve_tracking(
        context,
        request.get("tracking", task._tracking),
        request.get("tracking_uri") or task._tracking_uri,
        request.get("tracking_experiment_name") or task._tracking_experiment_name,
    )

    context.train_datalist, context.val_datalist = call_hook(task.partition_datalist, context)
    if not context.train_datalist:
        raise MONAILabelException(MONAILabelError.PRECONDITION_FAILED, NO_DATA)

    network = call_hook(task.network, context).to(context.device)
    context.network = network  # the optimizer needs the parameters
    context.optimizer = call_hook(task.optimizer, context)
    if context.multi_gpu:
        cuda = context.device.type == "cuda"
        context.network = torch.nn.parallel.DistributedDataParallel(
            network,
            device_ids=[context.device.index] if cuda else None,
            output_device=context.device.index if cuda else None,
            find_unused_parameters=task._find_unused_parameters,
        )
    # validation runs on each rank's own copy of the (synchronised) weights: no collectives, so ranks
    # may see different numbers of sliding windows without hanging
    context.evaluator = task._create_evaluator(context, network)
    context.trainer = task._create_trainer(context, network)

    call_hook(task.finalize, context)
    progress = TrainProgress(
        context.event_handlers, context.cancel_check, rank=context.local_rank, distributed=context.multi_gpu
    )
    progress.attach(context.trainer, context.evaluator)
    context.trainer.run()

    context.cancelled = progress.cancelled
    stats = _final_stats(context, progress)
    if context.cancelled:
        state = context.trainer.state
        raise MONAILabelException(
            MONAILabelError.CANCELLED, f"Training cancelled at epoch {state.epoch}, iteration {state.iteration}"
        )
    return stats


def _final_stats(context: Context, progress: TrainProgress) -> Dict[str, Any]:
    publisher: Optional[PublishStatsAndModel] = context.publisher
    if context.multi_gpu:
        dataset = getattr(getattr(context.trainer, "data_loader", None), "dataset", None)
        ranks = gather_rank_stats(progress, {"train_records": len(dataset) if dataset is not None else None})
        if publisher is not None:
            publisher.extra.update({"world_size": context.world_size, "ranks": ranks})
    if publisher is None:
        return prepare_stats(context.start_ts, context.trainer, context.evaluator)
    if context.cancelled:
        publisher.extra["cancelled"] = True
    return publisher.write_stats()
