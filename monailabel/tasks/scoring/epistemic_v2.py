"""MONAI Label's ``EpistemicScoring`` (v2): Monte Carlo dropout through an infer task.

The infer task runs each unlabeled image ``simulation_size`` times with dropout on (construct it with
``train_mode=True`` and ``skip_writer=True``, as MONAI Label's radiology configs do); the mean voxel-wise
entropy (or variance) of its predictions is the image's score, stored in its info as
``epistemic_entropy`` with ``epistemic_ts``: the model file's modification time. Images already scored
for the current model are skipped, so scoring again after an unchanged model costs nothing.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional

import numpy as np

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.tasks._checks import check_bool, check_int, check_str
from monailabel.tasks.scoring.uncertainty import as_probabilities, entropy_map, stack_samples, variance_map

logger = logging.getLogger(__name__)

__all__ = ["EpistemicScoring"]


class EpistemicScoring(ScoringMethod):
    """Scores unlabeled images by the epistemic uncertainty of an infer task under dropout.

    Args:
        infer_task: the infer task (``train_mode=True`` for dropout, ``skip_writer=True`` so that it
            returns its data dict).
        max_samples: images to score per run at most (0: all).
        simulation_size: forward passes per image (at least 2).
        use_variance: score by variance instead of entropy.
        key_output_entropy: image info key of the score.
        key_output_ts: image info key of the model timestamp the score belongs to.

    Request keys (each optional): ``max_samples``, ``simulation_size``, ``use_variance``, ``max_workers``
    (threads, default 2), ``device``.
    """

    def __init__(
        self,
        infer_task: Any,
        max_samples: int = 0,
        simulation_size: int = 5,
        use_variance: bool = False,
        key_output_entropy: str = "epistemic_entropy",
        key_output_ts: str = "epistemic_ts",
    ) -> None:
        super().__init__(f"Compute initial score based on dropout - {infer_task.description}")
        self.infer_task = infer_task
        self.dimension = infer_task.dimension
        self.max_samples = max_samples
        self.simulation_size = simulation_size
        self.use_variance = use_variance
        self.key_output_entropy = key_output_entropy
        self.key_output_ts = key_output_ts

    def info(self) -> Dict[str, Any]:
        """Returns the description and the defaults of the request keys."""
        return {
            "description": self.description,
            "max_samples": self.max_samples,
            "simulation_size": self.simulation_size,
            "use_variance": self.use_variance,
            "key": self.key_output_entropy,
        }

    def validate(self, request: Dict[str, Any]) -> None:
        """Checks ``max_samples``, ``simulation_size``, ``use_variance``, ``max_workers`` and ``device``."""
        check_int(request, "max_samples", 0)
        check_int(request, "simulation_size", 1, 1000)
        check_bool(request, "use_variance")
        check_int(request, "max_workers", 0, 64)
        check_str(request, "device")

    def model_ts(self) -> int:
        """The timestamp scores are cached against: the model file's mtime in seconds (1 without a file)."""
        get_path = getattr(self.infer_task, "get_path", None)
        path = get_path() if callable(get_path) else None
        return int(os.stat(path).st_mtime) if path and os.path.exists(path) else 1

    def __call__(self, request: Dict[str, Any], datastore: Datastore) -> Dict[str, Any]:
        self.validate(request)
        model_ts = self.model_ts()
        self._clear()

        unlabeled = datastore.get_unlabeled_images()
        todo: List[str] = []
        for image_id in unlabeled:
            if (datastore.get_image_info(image_id) or {}).get(self.key_output_ts, 0) != model_ts:
                todo.append(image_id)
        skipped = len(unlabeled) - len(todo)
        max_samples = request.get("max_samples", self.max_samples)
        todo = todo[:max_samples] if max_samples else todo

        simulation_size = request.get("simulation_size", self.simulation_size)
        if simulation_size < 2:
            logger.warning("EPISTEMIC:: simulation_size raised to 2: entropy needs at least two samples")
            simulation_size = 2
        use_variance = bool(request.get("use_variance", self.use_variance))
        device: Optional[str] = request.get("device")
        workers = min(request.get("max_workers", 2) or 1, max(1, len(todo)))
        logger.info(
            f"EPISTEMIC:: unlabeled: {len(unlabeled)}; skipped: {skipped}; to score: {len(todo)}; "
            f"simulations: {simulation_size}; workers: {workers}"
        )

        start = time.time()
        scores: Dict[str, float] = {}

        def run(image_id: str) -> None:
            scores[image_id] = self.run_scoring(
                image_id, simulation_size, model_ts, datastore, use_variance=use_variance, device=device
            )

        if workers > 1:
            with ThreadPoolExecutor(workers, "ScoreInfer") as pool:
                for future in [pool.submit(run, image_id) for image_id in todo]:
                    future.result()
        else:
            for image_id in todo:
                run(image_id)
        self._clear()

        summary = {
            "total": len(unlabeled),
            "skipped": skipped,
            "executed": len(todo),
            "latency": round(time.time() - start, 3),
            "model_ts": model_ts,
            "scores": scores,
        }
        logger.info(f"EPISTEMIC:: {dict(summary, scores=len(scores))}")
        return summary

    def run_scoring(
        self,
        image_id: str,
        simulation_size: int,
        model_ts: int,
        datastore: Datastore,
        use_variance: Optional[bool] = None,
        device: Optional[str] = None,
    ) -> float:
        """Scores one image and stores the score in its info.

        Returns:
            the score.

        Raises:
            MONAILabelException: INFERENCE_ERROR when the infer task returns no prediction.
        """
        start = time.time()
        request: Dict[str, Any] = {
            "image": datastore.get_image_uri(image_id),
            "logging": "error",
            "cache_transforms": False,
        }
        if device:
            request["device"] = device
        samples = []
        for _ in range(simulation_size):
            data = self.infer_task(request)
            pred = data.get(self.infer_task.output_label_key) if isinstance(data, dict) else None
            if pred is None:
                raise MONAILabelException(
                    MONAILabelError.INFERENCE_ERROR,
                    f"infer task '{self.infer_task.description}' returned no prediction; "
                    "construct it with skip_writer=True (and train_mode=True for dropout)",
                )
            samples.append(as_probabilities(pred, self.dimension))
        stacked = stack_samples(samples)
        use_variance = self.use_variance if use_variance is None else use_variance
        score = float(np.nanmean(variance_map(stacked) if use_variance else entropy_map(stacked)))
        logger.info(
            f"EPISTEMIC:: {image_id} => iters: {simulation_size}; score: {round(score, 6)}; "
            f"latency: {round(time.time() - start, 3)}"
        )
        datastore.update_image_info(image_id, {self.key_output_entropy: score, self.key_output_ts: model_ts})
        return score

    def _clear(self) -> None:
        clear = getattr(self.infer_task, "clear_cache", None) or getattr(self.infer_task, "clear", None)
        if callable(clear):
            clear()
