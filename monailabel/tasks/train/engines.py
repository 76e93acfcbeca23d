"""How :class:`BasicTrainTask` builds its datasets, engines and their default handlers and metrics.

A mixin, so that apps keep overriding these methods on their task exactly as in MONAI Label.
"""

from __future__ import annotations

import inspect
import logging
import os
from typing import Any, Callable, Dict, List, Optional

import torch
from monai.data import (
    CacheDataset,
    DataLoader,
    Dataset,
    PersistentDataset,
    SmartCacheDataset,
    ThreadDataLoader,
    partition_dataset,
)
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import (
    CheckpointLoader,
    CheckpointSaver,
    LrScheduleHandler,
    SmartCacheHandler,
    StatsHandler,
    ValidationHandler,
    from_engine,
)
from monai.inferers import SimpleInferer
from monai.transforms import Compose, LoadImaged

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.tasks.train.context import Context
from monailabel.tasks.train.tracking import tracking_handlers
from monailabel.tasks.train.utils import default_key_metric

__all__ = ["EngineHooks", "call_hook", "with_meta_dicts"]

logger = logging.getLogger(__name__)


def call_hook(method: Callable[..., Any], context: Context) -> Any:
    """Calls an overridable hook with the context, or without it when the override takes no argument.

    MONAI Label's documented example declares ``def val_inferer(self)``; both forms are accepted.

    Args:
        method: the bound hook.
        context: the run's context.
    """
    try:
        params = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return method(context)
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    return method(context) if positional else method()


def with_meta_dicts(transforms: Any) -> Any:
    """Makes every ``LoadImaged`` in ``transforms`` also store ``<key>_meta_dict``; returns ``transforms``.

    MONAI Label 0.8 apps were written for MONAI releases whose ``LoadImaged`` returned the meta data as
    ``<key>_meta_dict`` besides the image; transforms such as deepgrow's ``SpatialCropForegroundd`` still
    read it. MONAI now defaults to ``image_only=True``; this restores the older output (the ``MetaTensor``
    keeps its meta data as well), so such apps train unmodified.

    Args:
        transforms: a ``Compose``, a list, a single transform or ``None``.
    """
    stack = [transforms]
    while stack:
        t = stack.pop()
        if isinstance(t, (list, tuple)):
            stack.extend(t)
        elif isinstance(t, Compose):
            stack.extend(t.transforms)
        elif isinstance(t, LoadImaged):
            t._loader.image_only = False
    return transforms


class EngineHooks:
    """Default engine hooks and the builders of datasets, loaders, trainer and evaluator."""

    TRAIN_KEY_METRIC = "train_dice"
    VAL_KEY_METRIC = "val_mean_dice"

    _labels: Any
    _amp: bool
    _val_interval: int
    _train_save_interval: int
    _n_saved: int
    _final_filename: str
    _key_metric_filename: str
    _model_dict_key: str
    _load_path: Optional[str]
    _load_dict: Optional[Dict[str, Any]]
    _load_strict: bool

    def lr_scheduler_handler(self, context: Context) -> Any:
        """Returns an ``LrScheduleHandler`` (``StepLR``, step 1000, gamma 0.1), or ``None`` for none.

        Args:
            context: the run's context (``context.optimizer`` is set).
        """
        lr_scheduler = torch.optim.lr_scheduler.StepLR(context.optimizer, step_size=1000, gamma=0.1)
        return LrScheduleHandler(lr_scheduler, print_lr=True)

    def _dataset(self, context: Context, datalist: List[Dict[str, Any]], is_train: bool, replace_rate: float = 0.25):
        if context.multi_gpu and len(datalist) // context.world_size:
            # each rank trains on its share; with fewer records than ranks every rank gets them all
            datalist = partition_dataset(data=datalist, num_partitions=context.world_size, even_divisible=True)[
                context.local_rank
            ]
        pre = call_hook(self.train_pre_transforms if is_train else self.val_pre_transforms, context)
        transforms = with_meta_dicts(self._validate_transforms(pre, "Training" if is_train else "Validation", "pre"))
        if context.dataset_type == "CacheDataset":
            dataset = CacheDataset(datalist, transforms, progress=False)
        elif context.dataset_type == "SmartCacheDataset":
            dataset = SmartCacheDataset(datalist, transforms, replace_rate=replace_rate, progress=False)
        elif context.dataset_type == "PersistentDataset":
            dataset = PersistentDataset(datalist, transforms, cache_dir=os.path.join(str(context.cache_dir), "pds"))
        else:
            dataset = Dataset(datalist, transforms)
        return dataset, datalist

    def _dataloader(self, context: Context, dataset: Any, batch_size: int, num_workers: int, shuffle: bool = False):
        loader = ThreadDataLoader if context.dataloader_type == "ThreadDataLoader" else DataLoader
        return loader(dataset=dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers)

    def train_inferer(self, context: Context) -> Any:
        """Returns the training inferer (``SimpleInferer``).

        Args:
            context: the run's context.
        """
        return SimpleInferer()

    def train_key_metric(self, context: Context) -> Dict[str, Any]:
        """Returns ``{TRAIN_KEY_METRIC: MeanDice}`` (region-wise with several labels).

        Args:
            context: the run's context.
        """
        return default_key_metric(self._labels, self.TRAIN_KEY_METRIC, "train")

    def val_key_metric(self, context: Context) -> Dict[str, Any]:
        """Returns ``{VAL_KEY_METRIC: MeanDice}`` (region-wise with several labels).

        Args:
            context: the run's context.
        """
        return default_key_metric(self._labels, self.VAL_KEY_METRIC, "val")

    def train_additional_metrics(self, context: Context) -> Optional[Dict[str, Any]]:
        """Returns more training metrics (none by default).

        Args:
            context: the run's context.
        """
        return None

    def val_additional_metrics(self, context: Context) -> Optional[Dict[str, Any]]:
        """Returns more validation metrics (none by default).

        Args:
            context: the run's context.
        """
        return None

    def train_handlers(self, context: Context) -> List[Any]:
        """Returns the trainer's handlers: LR scheduler, stats logging (rank 0), tracking, validation.

        Args:
            context: the run's context (``context.evaluator`` is set).
        """
        handlers: List[Any] = []
        lr_scheduler = self.lr_scheduler_handler(context)
        if lr_scheduler:
            handlers.append(lr_scheduler)
        if context.local_rank == 0:
            handlers.append(StatsHandler(tag_name="train_loss", output_transform=from_engine(["loss"], first=True)))
            handlers.extend(tracking_handlers(context, "train"))
        if context.evaluator:
            logger.info(f"{context.local_rank} - Adding Validation to run every '{self._val_interval}' interval")
            handlers.append(ValidationHandler(self._val_interval, validator=context.evaluator, epoch_level=True))
        return handlers

    def val_handlers(self, context: Context) -> List[Any]:
        """Returns the evaluator's handlers: stats logging and tracking on rank 0.

        Args:
            context: the run's context.
        """
        if context.local_rank != 0:
            return []
        return [StatsHandler(output_transform=lambda x: None), *tracking_handlers(context, "eval")]

    def train_iteration_update(self, context: Context) -> Optional[Callable[..., Any]]:
        """Returns a custom training iteration function (``None``: MONAI's default).

        Args:
            context: the run's context.
        """
        return None

    def val_iteration_update(self, context: Context) -> Optional[Callable[..., Any]]:
        """Returns a custom validation iteration function (``None``: MONAI's default).

        Args:
            context: the run's context.
        """
        return None

    def event_names(self, context: Context) -> Optional[List[Any]]:
        """Returns custom ignite event names for both engines (none by default).

        Args:
            context: the run's context.
        """
        return None

    @staticmethod
    def _validate_transforms(transforms: Any, step: str = "Training", name: str = "pre") -> Any:
        if not transforms or isinstance(transforms, Compose):
            return transforms
        if isinstance(transforms, (list, tuple)):
            return Compose(list(transforms))
        if callable(transforms):
            return transforms
        raise MONAILabelException(
            MONAILabelError.TRANSFORM_ERROR, f"{step} {name}-transforms are not of `list` or `Compose` type"
        )

    def load_path(self, output_dir: str, pretrained: bool = True) -> Optional[str]:
        """Returns the checkpoint to start from: the run folder's best model, else ``load_path``.

        Args:
            output_dir: the run folder.
            pretrained: whether to fall back to ``load_path``.
        """
        load_path = os.path.join(output_dir, self._key_metric_filename)
        if not os.path.exists(load_path) and pretrained:
            return self._load_path
        return load_path

    def _create_evaluator(self, context: Context, network: torch.nn.Module) -> Optional[SupervisedEvaluator]:
        if not context.val_datalist:
            return None
        handlers = list(call_hook(self.val_handlers, context) or [])
        if context.local_rank == 0:
            handlers.append(
                CheckpointSaver(
                    save_dir=str(context.output_dir),
                    save_dict={self._model_dict_key: network},
                    save_key_metric=True,
                    key_metric_filename=self._key_metric_filename,
                    n_saved=self._n_saved,
                )
            )
        loader = call_hook(self.val_data_loader, context)
        if isinstance(getattr(loader, "dataset", None), SmartCacheDataset):
            handlers.append(SmartCacheHandler(loader.dataset))
        return SupervisedEvaluator(
            device=context.device,
            val_data_loader=loader,
            network=network,
            inferer=call_hook(self.val_inferer, context),
            postprocessing=self._validate_transforms(
                call_hook(self.val_post_transforms, context), "Validation", "post"
            ),
            key_val_metric=call_hook(self.val_key_metric, context),
            additional_metrics=call_hook(self.val_additional_metrics, context),
            val_handlers=handlers,
            iteration_update=call_hook(self.val_iteration_update, context),
            event_names=call_hook(self.event_names, context),
            amp=self._amp and context.device.type == "cuda",
        )

    def _create_trainer(self, context: Context, network: torch.nn.Module) -> SupervisedTrainer:
        handlers = list(call_hook(self.train_handlers, context) or [])
        if context.local_rank == 0:
            handlers.append(
                CheckpointSaver(
                    save_dir=str(context.output_dir),
                    save_dict={self._model_dict_key: network},
                    save_interval=self._train_save_interval,
                    save_final=True,
                    final_filename=self._final_filename,
                    save_key_metric=True,
                    key_metric_filename=f"train_{self._key_metric_filename}"
                    if context.evaluator
                    else self._key_metric_filename,
                    n_saved=self._n_saved,
                )
            )
        self._load_checkpoint(context, network, handlers)
        loader = call_hook(self.train_data_loader, context)
        if isinstance(getattr(loader, "dataset", None), SmartCacheDataset):
            handlers.append(SmartCacheHandler(loader.dataset))
        return SupervisedTrainer(
            device=context.device,
            max_epochs=context.max_epochs,
            train_data_loader=loader,
            network=context.network,
            optimizer=context.optimizer,
            loss_function=call_hook(self.loss_function, context),
            inferer=call_hook(self.train_inferer, context),
            amp=self._amp and context.device.type == "cuda",
            postprocessing=self._validate_transforms(
                call_hook(self.train_post_transforms, context), "Training", "post"
            ),
            key_train_metric=call_hook(self.train_key_metric, context),
            additional_metrics=call_hook(self.train_additional_metrics, context),
            train_handlers=handlers,
            iteration_update=call_hook(self.train_iteration_update, context),
            event_names=call_hook(self.event_names, context),
        )

    def _load_checkpoint(self, context: Context, network: torch.nn.Module, handlers: List[Any]) -> None:
        load_path = self.load_path(str(context.output_dir), context.pretrained)
        if load_path and os.path.exists(load_path):
            logger.info(f"{context.local_rank} - Load Path {load_path}")
            load_dict = {self._model_dict_key: network} if self._load_dict is None else self._load_dict
            map_location = context.device if context.device.type == "cuda" else "cpu"
            handlers.append(CheckpointLoader(load_path, load_dict, map_location=map_location, strict=self._load_strict))
