"""Train stats and model publishing, as MONAI Label's ``PublishStatsAndModel`` handler does them.

Files are written atomically (a temporary file in the same folder, ``fsync``, then ``os.replace``), so
a reader never sees half a checkpoint: an infer task that watches the published model's mtime reloads
only complete files.
"""

from __future__ import annotations

import datetime
import filecmp
import logging
import math
import os
import time
from typing import Any, Dict, List, Optional

import torch
from ignite.engine import Engine, Events

from monailabel.utils.others.atomic import atomic_copy, atomic_write_json

__all__ = ["PublishStatsAndModel", "prepare_stats", "atomic_copy", "atomic_write_json"]

logger = logging.getLogger(__name__)


def jsonable(value: Any) -> Any:
    """Returns ``value`` with tensors as lists and non-finite floats as ``None`` (strict JSON).

    Args:
        value: a value, list or dict (nested).
    """
    if torch.is_tensor(value):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # strict JSON has no NaN/inf; a metric that could not be computed reads as null
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value


def _engine_stats(engine: Engine) -> Dict[str, Any]:
    if hasattr(engine, "get_stats"):
        return dict(engine.get_stats())
    return {"current_epoch": engine.state.epoch, "current_iteration": engine.state.iteration}


def prepare_stats(start_ts: float, trainer: Engine, evaluator: Optional[Engine]) -> Dict[str, Any]:
    """Summarises a run so far, in MONAI Label's train stats format.

    Args:
        start_ts: when the run started (seconds since the epoch).
        trainer: the trainer.
        evaluator: the evaluator, or ``None`` when the run has no validation.

    Returns:
        ``{"epoch", "start_ts", "total_time" (or "current_time" while running), "best_metric",
        "best_metric_epoch", "train": {...}, "eval": {...}, ...}``; ``train``/``eval`` hold the last
        ``metrics``, ``key_metric_name``, ``best_metric`` and ``best_metric_epoch`` of that engine.
        ``best_metric`` at the top level is the evaluator's when there is one.
    """
    stats: Dict[str, Any] = _engine_stats(trainer)
    stats["epoch"] = trainer.state.epoch
    stats["start_ts"] = int(start_ts)

    elapsed = str(datetime.timedelta(seconds=int(time.time() - start_ts)))
    if trainer.state.epoch == trainer.state.max_epochs:
        stats["total_time"] = elapsed
    else:
        stats["current_time"] = elapsed

    for name, engine in (("train", trainer), ("eval", evaluator)):
        if engine is None:
            continue
        best_metric = jsonable(getattr(engine.state, "best_metric", None))
        best_metric_epoch = getattr(engine.state, "best_metric_epoch", None)
        stats["best_metric"] = best_metric
        stats["best_metric_epoch"] = best_metric_epoch
        stats[name] = {
            "metrics": jsonable(dict(engine.state.metrics)),
            "key_metric_name": getattr(engine.state, "key_metric_name", None),
            "best_metric": best_metric,
            "best_metric_epoch": best_metric_epoch,
        }
    return jsonable(stats)


class PublishStatsAndModel:
    """Writes train stats and publishes the best model after each validation (or epoch without one).

    MONAI Label's handler: stats go to ``output_dir/stats_<run_id>.json`` and ``stats_path``; the key
    metric checkpoint ``output_dir/<key_metric_filename>`` is copied to ``publish_path`` whenever it
    differs from what was published, i.e. whenever the key metric improved. Both writes are atomic.
    The stats also carry ``history``: one entry per epoch with that epoch's train and eval metrics.

    Args:
        stats_path: where to write the stats (``None`` to skip the copy).
        publish_path: where to publish the best model (``None`` to not publish).
        key_metric_filename: file name of the key metric checkpoint in ``output_dir``.
        start_ts: when the run started.
        run_id: the run's id.
        output_dir: the run's output folder.
        trainer: the trainer.
        evaluator: the evaluator, or ``None``.
    """

    def __init__(
        self,
        stats_path: Optional[str],
        publish_path: Optional[str],
        key_metric_filename: str,
        start_ts: float,
        run_id: str,
        output_dir: str,
        trainer: Engine,
        evaluator: Optional[Engine],
    ) -> None:
        self._stats_path = stats_path
        self._publish_path = publish_path
        self._key_metric_filename = key_metric_filename
        self.start_ts = start_ts
        self.run_id = run_id
        self.output_dir = output_dir
        self.trainer = trainer
        self.evaluator = evaluator
        self.history: List[Dict[str, Any]] = []
        self.extra: Dict[str, Any] = {}

    def stats(self) -> Dict[str, Any]:
        """Returns the current stats: :func:`prepare_stats` plus ``history`` and :attr:`extra`."""
        stats = prepare_stats(self.start_ts, self.trainer, self.evaluator)
        stats["history"] = list(self.history)
        stats.update(jsonable(self.extra))
        return stats

    def write_stats(self) -> Dict[str, Any]:
        """Writes :meth:`stats` to the run's stats file and to ``stats_path``; returns them."""
        stats = self.stats()
        atomic_write_json(os.path.join(self.output_dir, f"stats_{self.run_id}.json"), stats)
        if self._stats_path:
            atomic_write_json(self._stats_path, stats)
        return stats

    def publish_model(self) -> bool:
        """Publishes the key metric checkpoint when it differs from the published one.

        Returns:
            whether a new model was published.
        """
        if not self._publish_path:
            return False
        model = os.path.join(self.output_dir, self._key_metric_filename)
        if not os.path.exists(model):
            return False
        if os.path.exists(self._publish_path) and filecmp.cmp(self._publish_path, model, shallow=False):
            return False
        atomic_copy(model, self._publish_path)
        logger.info(f"New Model published: {model} => {self._publish_path}")
        return True

    def iteration_completed(self) -> Dict[str, Any]:
        """Records this epoch's metrics, writes the stats and publishes the model; returns the stats."""
        entry: Dict[str, Any] = {"epoch": self.trainer.state.epoch, "train": dict(self.trainer.state.metrics)}
        if self.evaluator is not None:
            entry["eval"] = dict(self.evaluator.state.metrics)
        entry = jsonable(entry)
        if self.history and self.history[-1]["epoch"] == entry["epoch"]:
            self.history[-1] = entry
        else:
            self.history.append(entry)

        # model first: a reader that sees the new stats finds the model they describe
        self.publish_model()
        return self.write_stats()

    def __call__(self, engine: Optional[Engine] = None) -> Dict[str, Any]:
        """Event handler form of :meth:`iteration_completed`.

        Args:
            engine: the engine that fired the event (unused).
        """
        return self.iteration_completed()

    def attach(self, engine: Engine) -> None:
        """Runs :meth:`iteration_completed` at the end of each of ``engine``'s epochs.

        Args:
            engine: the evaluator (or the trainer when there is no validation).
        """
        if not engine.has_event_handler(self.iteration_completed, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.iteration_completed)
