"""The state of one training run, handed to every overridable method of :class:`BasicTrainTask`."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

__all__ = ["Context"]


class Context:
    """Everything a training run knows, as MONAI Label's ``Context`` names it.

    :class:`~monailabel.tasks.train.basic_train.BasicTrainTask` creates one per process (one per rank
    in multi-GPU training) and fills it step by step: request and datalists first, then device, network,
    optimizer, evaluator and trainer. App code reads it in its overrides (``context.network`` in
    ``optimizer``, ``context.local_rank`` in ``train_handlers`` ...).

    Attributes:
        start_ts: when the run started (seconds since the epoch).
        run_id: the run's id (``YYYYmmdd_HHMM...``).
        output_dir: where this run's checkpoints and stats go (``model_dir/<request name>``).
        cache_dir: scratch space for cached data (``PersistentDataset``); removed after the run.
        events_dir: where event files (TensorBoard) go.
        datalist: every record of the run, ``[{"image": path, "label": path}, ...]``.
        train_datalist: records for training.
        train_batch_size: training batch size.
        val_datalist: records for validation.
        val_batch_size: validation batch size.
        device: the ``torch.device`` the run trains on.
        network: the network (wrapped in ``DistributedDataParallel`` in multi-GPU runs).
        optimizer: the optimizer.
        dataset_type: ``Dataset``, ``CacheDataset``, ``PersistentDataset`` or ``SmartCacheDataset``.
        dataloader_type: ``DataLoader`` or ``ThreadDataLoader``.
        pretrained: whether to start from a checkpoint.
        max_epochs: epochs to train.
        multi_gpu: whether this is a distributed run.
        local_rank: this process's rank (0 when not distributed).
        world_size: the number of processes (1 when not distributed).
        request: the resolved request (task config overlaid with the caller's request).
        trainer: the ``SupervisedTrainer``.
        evaluator: the ``SupervisedEvaluator``, or ``None`` without validation data.
        tracking: experiment tracking backend (``"mlflow"``) or ``None``.
        enable_tracking: whether experiment tracking is on for this run.
        tracking_uri: the tracking server or folder.
        tracking_experiment_name: the tracking experiment's name.
        tracking_run_name: the tracking run's name.
        event_handlers: callables that receive progress events (dicts), see ``BasicTrainTask``.
        cancel_check: callable returning ``True`` once the caller wants the run stopped.
        cancelled: set once the run was stopped because ``cancel_check`` said so.
        publisher: rank 0's ``PublishStatsAndModel`` (set by ``finalize``).
    """

    def __init__(self) -> None:
        self.start_ts: float = 0
        self.run_id: Optional[str] = None
        self.output_dir: Optional[str] = None
        self.cache_dir: Optional[str] = None
        self.events_dir: Optional[str] = None
        self.datalist: Optional[List[Dict[str, Any]]] = None
        self.train_datalist: Optional[List[Dict[str, Any]]] = None
        self.train_batch_size: Optional[int] = None
        self.val_datalist: Optional[List[Dict[str, Any]]] = None
        self.val_batch_size: Optional[int] = None
        self.device: Any = None
        self.network: Any = None
        self.optimizer: Any = None
        self.dataset_type: str = "CacheDataset"
        self.dataloader_type: str = "ThreadDataLoader"
        self.pretrained: bool = False
        self.max_epochs: int = 1
        self.multi_gpu: bool = False
        self.local_rank: int = 0
        self.world_size: int = 0

        self.request: Dict[str, Any] = {}
        self.trainer: Any = None
        self.evaluator: Any = None

        self.tracking: Optional[str] = None
        self.enable_tracking: bool = False
        self.tracking_uri: Optional[str] = None
        self.tracking_experiment_name: Optional[str] = None
        self.tracking_run_name: Optional[str] = None

        self.event_handlers: List[Callable[[Dict[str, Any]], None]] = []
        self.cancel_check: Optional[Callable[[], bool]] = None
        self.cancelled: bool = False
        self.publisher: Any = None
