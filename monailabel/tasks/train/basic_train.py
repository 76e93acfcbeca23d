"""MONAI Label's ``BasicTrainTask``: supervised training with MONAI's ``SupervisedTrainer``/``SupervisedEvaluator``."""

from __future__ import annotations

import copy
import inspect
import logging
import os
import shutil
from abc import abstractmethod
from typing import Any, Callable, Dict, List, Optional

import torch
from ignite.engine import Events
from ignite.handlers import EarlyStopping
from monai.data import partition_dataset
from monai.handlers import stopping_fn_from_metric

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.train.context import Context
from monailabel.tasks.train.engines import EngineHooks, call_hook
from monailabel.tasks.train.handler import PublishStatsAndModel
from monailabel.tasks.train.request import default_config
from monailabel.tasks.train.runner import read_stats, run, train_rank

__all__ = ["BasicTrainTask", "Context"]

logger = logging.getLogger(__name__)


class BasicTrainTask(EngineHooks, TrainTask):
    """Trains a model with MONAI's ``SupervisedTrainer`` and ``SupervisedEvaluator``, as MONAI Label does.

    Subclasses give ``loss_function``, ``train_pre_transforms``, ``train_post_transforms`` and
    ``val_inferer`` (and usually ``network``/``optimizer``, or pass ``network=`` to the constructor);
    every other step (data loaders, metrics, handlers, partitioning ...) can be overridden too.

    The request (``__call__``) overlays :meth:`config`; keys: ``name`` (run folder under ``model_dir``),
    ``max_epochs``, ``val_split``, ``train_batch_size``, ``val_batch_size``, ``pretrained``, ``device``,
    ``dataset`` (``CacheDataset``/``PersistentDataset``/``SmartCacheDataset``/``Dataset``), ``dataloader``
    (``ThreadDataLoader``/``DataLoader``), ``early_stop_patience``, ``multi_gpu``, ``gpus`` (``"all"`` or
    ``"0,1"``), ``world_size`` (processes for multi-GPU; with no GPU, that many CPU processes on Gloo),
    ``train_ds``/``val_ds`` (explicit record lists instead of the datastore's ``datalist()`` and the
    ``val_split``). Two more keys are taken out before anything is copied and are never serialised:

    * ``progress_callback``: a callable (or a list of them) receiving dict events, in the calling
      process: ``{"type": "iteration", "epoch", "iteration", "epoch_iteration", "epoch_length",
      "max_epochs", "loss"}`` after each training iteration and ``{"type": "epoch", "epoch",
      "max_epochs", "train_metrics", "val_metrics", "best_metric", "best_metric_epoch",
      "key_metric_name"}`` after each epoch and its validation.
    * ``cancel_check``: a callable asked after each iteration; once it returns ``True`` the engines
      stop and ``__call__`` raises ``MONAILabelException(CANCELLED)``.

    Outputs: checkpoints in ``model_dir/<name>/`` (``key_metric_filename`` for the best validation
    metric, ``final_filename`` at the end), the best model copied atomically to ``publish_path`` each
    time it improves, and stats (MONAI Label's format plus ``history``) in ``stats_path``. In a
    multi-process run only rank 0 writes, and the stats add ``world_size`` and ``ranks``.

    Args:
        model_dir: base folder for checkpoints, stats and events.
        description: what the task trains; a ``torch.nn.Module`` here is taken as ``network``, which
            MONAI Label's documented ``MyTrainTask(model_dir, network, ...)`` relies on.
        config: entries added to (or replacing) the default :meth:`config`.
        amp: mixed precision (only on CUDA).
        load_path: checkpoint to start from when the run folder has no model yet (``pretrained``).
        load_dict: what to load from that checkpoint; default ``{model_dict_key: network}``.
        publish_path: where to publish the best model.
        stats_path: where to write the stats; default ``model_dir/train_stats.json``.
        train_save_interval: save a training checkpoint every that many epochs.
        val_interval: validate every that many epochs.
        n_saved: interval checkpoints to keep.
        final_filename: file name of the final checkpoint.
        key_metric_filename: file name of the best (key metric) checkpoint.
        model_dict_key: key of the network's weights in checkpoints.
        find_unused_parameters: passed to ``DistributedDataParallel``.
        load_strict: load checkpoints strictly.
        labels: label names (or ``{name: channel}``); with several, metrics are region-wise.
        disable_meta_tracking: turn MONAI's ``MetaTensor`` meta tracking off while training.
        tracking: ``"mlflow"`` to log to MLflow (when installed), else ``None``.
        tracking_uri: MLflow tracking URI.
        tracking_experiment_name: MLflow experiment name.
        network: the network to train (copied for each run); alternative to overriding ``network``.
    """

    def __init__(
        self,
        model_dir: str,
        description: Any = None,
        config: Optional[Dict[str, Any]] = None,
        amp: bool = True,
        load_path: Optional[str] = None,
        load_dict: Optional[Dict[str, Any]] = None,
        publish_path: Optional[str] = None,
        stats_path: Optional[str] = None,
        train_save_interval: int = 20,
        val_interval: int = 1,
        n_saved: int = 5,
        final_filename: str = "checkpoint_final.pt",
        key_metric_filename: str = "model.pt",
        model_dict_key: str = "model",
        find_unused_parameters: bool = False,
        load_strict: bool = False,
        labels: Any = None,
        disable_meta_tracking: bool = False,
        tracking: Optional[str] = None,
        tracking_uri: Optional[str] = None,
        tracking_experiment_name: Optional[str] = None,
        network: Optional[torch.nn.Module] = None,
    ) -> None:
        if isinstance(description, torch.nn.Module):
            network, description = description, None
        if description is None:
            doc = inspect.getdoc(type(self)) or "Train task"
            description = doc.splitlines()[0]
        super().__init__(description)

        self._model_dir = model_dir
        # MONAI Label's sample trainers set ``self._network`` themselves before calling this constructor
        self._network = network if network is not None else getattr(self, "_network", None)
        self._amp = amp
        self._config: Dict[str, Any] = default_config()
        if config:
            self._config.update(config)

        self._load_path = load_path
        self._load_dict = load_dict
        self._publish_path = publish_path
        self._stats_path = stats_path if stats_path else os.path.join(model_dir, "train_stats.json")
        self._train_save_interval = train_save_interval
        self._val_interval = val_interval
        self._n_saved = n_saved
        self._final_filename = final_filename
        self._key_metric_filename = key_metric_filename
        self._model_dict_key = model_dict_key
        self._find_unused_parameters = find_unused_parameters
        self._load_strict = load_strict
        self._labels = [] if labels is None else [labels] if isinstance(labels, str) else labels
        self._disable_meta_tracking = disable_meta_tracking
        self._tracking = tracking
        self._tracking_uri = tracking_uri
        self._tracking_experiment_name = tracking_experiment_name

    # ---- what to train -------------------------------------------------------------------------

    def network(self, context: Context) -> torch.nn.Module:
        """Returns a fresh copy of the network given to the constructor; override to build your own.

        Args:
            context: the run's context.

        Raises:
            MONAILabelException: ``APP_ERROR`` when no network was given and this is not overridden.
        """
        if self._network is None:
            raise MONAILabelException(
                MONAILabelError.APP_ERROR,
                f"{type(self).__name__} has no network: pass network= to the constructor or override network()",
            )
        # a copy: the caller's module (often shared with an infer task) is never moved or trained in place
        return copy.deepcopy(self._network)

    def optimizer(self, context: Context) -> torch.optim.Optimizer:
        """Returns ``Adam(lr=1e-4)`` over ``context.network``'s parameters.

        Args:
            context: the run's context (``context.network`` is set).
        """
        return torch.optim.Adam(context.network.parameters(), lr=1e-4)

    @abstractmethod
    def loss_function(self, context: Context) -> Callable[..., Any]:
        """Returns the loss function.

        Args:
            context: the run's context.
        """

    # ---- data ----------------------------------------------------------------------------------
    def train_data_loader(self, context: Context, num_workers: int = 0, shuffle: bool = False) -> Any:
        """Returns the training data loader (this rank's partition of ``context.train_datalist``).

        Args:
            context: the run's context.
            num_workers: loader workers.
            shuffle: shuffle each epoch.
        """
        dataset, datalist = self._dataset(context, context.train_datalist or [], is_train=True)
        logger.info(f"{context.local_rank} - Records for Training: {len(datalist)}")
        return self._dataloader(context, dataset, context.train_batch_size or 1, num_workers, shuffle)

    def val_data_loader(self, context: Context, num_workers: int = 0) -> Any:
        """Returns the validation data loader (this rank's partition of ``context.val_datalist``).

        Args:
            context: the run's context.
            num_workers: loader workers.
        """
        dataset, datalist = self._dataset(context, context.val_datalist or [], is_train=False)
        logger.info(f"{context.local_rank} - Records for Validation: {len(datalist)}")
        return self._dataloader(context, dataset, context.val_batch_size or 1, num_workers)

    @abstractmethod
    def train_pre_transforms(self, context: Context) -> Any:
        """Returns the training pre-transforms (a list or ``Compose``).

        Args:
            context: the run's context.
        """

    @abstractmethod
    def train_post_transforms(self, context: Context) -> Any:
        """Returns the training post-transforms (a list or ``Compose``).

        Args:
            context: the run's context.
        """

    def val_pre_transforms(self, context: Context) -> Any:
        """Returns the validation pre-transforms; default the training ones.

        Args:
            context: the run's context.
        """
        return call_hook(self.train_pre_transforms, context)

    def val_post_transforms(self, context: Context) -> Any:
        """Returns the validation post-transforms; default the training ones.

        Args:
            context: the run's context.
        """
        return call_hook(self.train_post_transforms, context)

    def partition_datalist(self, context: Context, shuffle: bool = False) -> tuple:
        """Splits ``context.datalist`` by ``val_split`` (or takes ``val_ds`` when the request has one).

        Args:
            context: the run's context.
            shuffle: shuffle before splitting.

        Returns:
            ``(train_datalist, val_datalist)``.
        """
        if context.request.get("val_ds") is not None:
            return list(context.datalist or []), list(context.request["val_ds"])
        val_split = float(context.request.get("val_split", 0.0))
        datalist = list(context.datalist or [])
        if val_split > 0.0 and len(datalist) > 1:
            train_datalist, val_datalist = partition_dataset(
                datalist, ratios=[(1 - val_split), val_split], shuffle=shuffle
            )
        else:
            train_datalist, val_datalist = datalist, []
        if context.local_rank == 0:
            logger.info(f"Total Records for Training: {len(train_datalist)}; Validation: {len(val_datalist)}")
        return train_datalist, val_datalist

    @abstractmethod
    def val_inferer(self, context: Context) -> Any:
        """Returns the validation inferer.

        Args:
            context: the run's context.
        """

    # ---- task API ------------------------------------------------------------------------------

    def config(self) -> Dict[str, Any]:
        """Returns the task's config: request keys and their defaults (lists are choices)."""
        return self._config

    def stats(self) -> Dict[str, Any]:
        """Returns the stats of the last (or running) training, ``{}`` before the first."""
        return read_stats(self._stats_path)

    def pre_process(self, request: Dict[str, Any], datastore: Datastore) -> List[Dict[str, Any]]:
        """Returns the records to train on: ``request["train_ds"]`` or ``datastore.datalist()``.

        Args:
            request: the resolved request.
            datastore: the app's datastore.
        """
        if request.get("train_ds") is not None:
            return list(request["train_ds"])
        return datastore.datalist()

    def get_cache_dir(self, request: Dict[str, Any]) -> str:
        """Returns the run's cache folder.

        Args:
            request: the resolved request (``name`` and ``run_id``).
        """
        return os.path.join(self._model_dir, request["name"], f"cache_{request['run_id']}")

    def cleanup(self, request: Dict[str, Any]) -> None:
        """Removes the run's cache folder.

        Args:
            request: the resolved request.
        """
        shutil.rmtree(self.get_cache_dir(request), ignore_errors=True)

    def __call__(self, request: Dict[str, Any], datastore: Datastore) -> Dict[str, Any]:
        """Trains a model; see the class docstring for the request keys.

        Args:
            request: the train request (may hold ``progress_callback`` and ``cancel_check``).
            datastore: the app's datastore; ``datalist()`` gives the labeled records.

        Returns:
            the run's stats (as written to ``stats_path``).

        Raises:
            MONAILabelException: ``INVALID_INPUT`` for a bad request, ``PRECONDITION_FAILED`` with no
                labeled data, ``CANCELLED`` when ``cancel_check`` stopped the run.
        """
        return run(self, request, datastore)

    def train(
        self,
        rank: int,
        world_size: int,
        request: Dict[str, Any],
        datalist: List[Dict[str, Any]],
        emit: Optional[Callable[[Dict[str, Any]], None]] = None,
        cancel_check: Optional[Callable[[], bool]] = None,
    ) -> Dict[str, Any]:
        """Runs one rank's training (the whole training when not distributed).

        Args:
            rank: this process's rank.
            world_size: the number of processes.
            request: the resolved request.
            datalist: every record of the run.
            emit: receives progress events (rank 0).
            cancel_check: returns ``True`` once the run should stop.

        Returns:
            the run's stats.

        Raises:
            MONAILabelException: ``CANCELLED`` when ``cancel_check`` stopped the run.
        """
        return train_rank(self, rank, world_size, request, datalist, emit, cancel_check)

    def finalize(self, context: Context) -> None:
        """Adds stats/model publishing (rank 0) and early stopping; runs just before training starts.

        Args:
            context: the run's context (trainer and evaluator are set).
        """
        if context.local_rank == 0:
            publisher = PublishStatsAndModel(
                self._stats_path,
                self._publish_path,
                self._key_metric_filename,
                context.start_ts,
                str(context.run_id),
                str(context.output_dir),
                context.trainer,
                context.evaluator,
            )
            context.publisher = publisher
            (context.evaluator or context.trainer).add_event_handler(Events.EPOCH_COMPLETED, publisher)

        early_stop_patience = int(context.request.get("early_stop_patience", 0))
        if early_stop_patience > 0 and context.evaluator:
            early_stopper = EarlyStopping(
                patience=early_stop_patience,
                score_function=stopping_fn_from_metric(context.evaluator.state.key_metric_name),
                trainer=context.trainer,
            )
            context.evaluator.add_event_handler(event_name=Events.EPOCH_COMPLETED, handler=early_stopper)
