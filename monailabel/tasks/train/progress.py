"""Progress events and cooperative cancellation for a training run, as ignite event handlers."""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events

from monailabel.tasks.train.handler import jsonable

__all__ = ["TrainProgress", "gather_rank_stats"]

logger = logging.getLogger(__name__)


def _batch_size(batch: Any) -> int:
    if isinstance(batch, list):
        return len(batch)  # decollated batch
    if isinstance(batch, dict):
        for value in batch.values():
            if torch.is_tensor(value) and value.ndim > 0:
                return int(value.shape[0])
    return 1


def _loss(output: Any) -> Optional[float]:
    item = output[0] if isinstance(output, list) and output else output
    loss = item.get("loss") if isinstance(item, dict) else None
    if torch.is_tensor(loss):
        return float(loss.detach().float().mean().item())
    return float(loss) if isinstance(loss, (int, float)) else None


class TrainProgress:
    """Emits progress events, counts this rank's work and stops the run when asked to.

    Events (dicts) go to each of ``listeners``; only rank 0 emits. ``{"type": "iteration", "epoch", "iteration",
    "epoch_iteration", "epoch_length", "max_epochs", "loss"}`` after each training iteration, and
    ``{"type": "epoch", "epoch", "max_epochs", "train_metrics", "val_metrics", "best_metric",
    "best_metric_epoch", "key_metric_name"}`` after each epoch (and its validation).

    ``cancel_check`` is asked after each training (and, when not distributed, validation) iteration; in
    a distributed run the ranks agree on the answer through an all-reduce, so that all of them stop at
    the same iteration.

    Args:
        listeners: each receives every event; a failing one is logged and skipped.
        cancel_check: returns ``True`` once the run should stop; ``None`` to never stop.
        rank: this process's rank.
        distributed: whether ranks must agree on cancellation (``torch.distributed`` is initialised).
    """

    def __init__(
        self,
        listeners: Sequence[Callable[[Dict[str, Any]], None]],
        cancel_check: Optional[Callable[[], bool]],
        rank: int = 0,
        distributed: bool = False,
    ) -> None:
        self.listeners = list(listeners) if rank == 0 else []
        self.cancel_check = cancel_check
        self.rank = rank
        self.distributed = distributed
        self.cancelled = False
        self.iterations = 0
        self.samples = 0
        self.trainer: Optional[Engine] = None
        self.evaluator: Optional[Engine] = None

    def attach(self, trainer: Engine, evaluator: Optional[Engine]) -> None:
        """Attaches to both engines; call after every other handler so epoch events see final metrics.

        Args:
            trainer: the trainer.
            evaluator: the evaluator, or ``None``.
        """
        self.trainer, self.evaluator = trainer, evaluator
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self._train_iteration)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self._epoch)
        if evaluator is not None and not self.distributed:
            evaluator.add_event_handler(Events.ITERATION_COMPLETED, self._val_iteration)

    def _send(self, event: Dict[str, Any]) -> None:
        if not self.listeners:
            return
        event = jsonable(event)
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # a broken listener must not break the training it listens to
                logger.exception("progress callback failed")

    def _should_stop(self) -> bool:
        if self.cancelled:
            return True
        local = False
        if self.cancel_check is not None:
            try:
                local = bool(self.cancel_check())
            except Exception:
                logger.exception("cancel_check failed; not cancelling")
        if self.distributed:
            flag = torch.tensor([1.0 if local else 0.0])
            if dist.get_backend() == "nccl":
                flag = flag.cuda()
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            local = bool(flag.item() > 0)
        self.cancelled = local
        return local

    def _stop(self) -> None:
        logger.info(f"{self.rank} - Training cancelled")
        if self.evaluator is not None:
            self.evaluator.terminate()
        if self.trainer is not None:
            self.trainer.terminate()

    def _train_iteration(self, engine: Engine) -> None:
        self.iterations += 1
        self.samples += _batch_size(engine.state.batch)
        length = engine.state.epoch_length or 0
        self._send(
            {
                "type": "iteration",
                "epoch": engine.state.epoch,
                "iteration": engine.state.iteration,
                "epoch_iteration": (engine.state.iteration - 1) % length + 1 if length else engine.state.iteration,
                "epoch_length": length,
                "max_epochs": engine.state.max_epochs,
                "loss": _loss(engine.state.output),
            }
        )
        if self._should_stop():
            self._stop()

    def _val_iteration(self, engine: Engine) -> None:
        if self._should_stop():
            self._stop()

    def _epoch(self, engine: Engine) -> None:
        if self.cancelled:
            return
        scorer = self.evaluator if self.evaluator is not None else engine
        self._send(
            {
                "type": "epoch",
                "epoch": engine.state.epoch,
                "max_epochs": engine.state.max_epochs,
                "train_metrics": dict(engine.state.metrics),
                "val_metrics": dict(self.evaluator.state.metrics) if self.evaluator is not None else {},
                "best_metric": getattr(scorer.state, "best_metric", None),
                "best_metric_epoch": getattr(scorer.state, "best_metric_epoch", None),
                "key_metric_name": getattr(scorer.state, "key_metric_name", None),
            }
        )

    def rank_stats(self) -> Dict[str, Any]:
        """Returns what this rank did: ``{"rank", "iterations", "samples"}``."""
        return {"rank": self.rank, "iterations": self.iterations, "samples": self.samples}


def gather_rank_stats(progress: TrainProgress, extra: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Collects every rank's :meth:`TrainProgress.rank_stats` (plus ``extra``) on all ranks.

    Args:
        progress: this rank's progress handler.
        extra: more of this rank's facts (e.g. how many records it trained on).

    Returns:
        one dict per rank, ordered by rank; just this rank's when not distributed.
    """
    mine = {**progress.rank_stats(), **extra}
    if not (dist.is_available() and dist.is_initialized()):
        return [mine]
    gathered: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, mine)
    return sorted(gathered, key=lambda r: r["rank"])
