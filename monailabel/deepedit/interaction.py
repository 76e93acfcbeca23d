"""Click simulation during DeepEdit training: an ignite iteration function that adds clicks where the model errs."""

from __future__ import annotations

from typing import Any, Callable, Dict, Sequence, Union

import numpy as np
import torch
from monai.data import decollate_batch, list_data_collate
from monai.engines.utils import IterationEvents
from monai.transforms import Compose
from monai.utils.enums import CommonKeys

__all__ = ["Interaction"]


class Interaction:
    """Runs up to ``max_interactions`` rounds of predict-then-click before the real training iteration.

    With probability ``deepgrow_probability`` per iteration, the network predicts, and ``transforms``
    (typically discrepancy + random click + guidance signal) add clicks from the errors; otherwise the
    guidance channels of the input are zeroed, so the model also learns without clicks.

    Args:
        deepgrow_probability: chance of simulating clicks in an iteration.
        transforms: click transforms run on each item after a prediction.
        train: training (click probability decays over rounds) or evaluation.
        click_probability_key: item key the click probability goes to.
        max_interactions: rounds per iteration.
    """

    def __init__(
        self,
        deepgrow_probability: float,
        transforms: Union[Sequence[Callable], Callable],
        train: bool,
        click_probability_key: str = "probability",
        max_interactions: int = 1,
    ) -> None:
        self.deepgrow_probability = deepgrow_probability
        self.transforms = transforms if isinstance(transforms, Compose) else Compose(transforms)
        self.train = train
        self.click_probability_key = click_probability_key
        self.max_interactions = max_interactions

    def __call__(self, engine: Any, batchdata: Dict[str, Any]) -> Any:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        if np.random.random() < self.deepgrow_probability:
            for j in range(self.max_interactions):
                inputs, _ = engine.prepare_batch(batchdata)
                inputs = inputs.to(engine.state.device)
                engine.fire_event(IterationEvents.INNER_ITERATION_STARTED)
                engine.network.eval()
                with torch.no_grad():
                    predictions = engine.inferer(inputs, engine.network)
                batchdata.update({CommonKeys.PRED: predictions})
                items = decollate_batch(batchdata, detach=True)
                for i, item in enumerate(items):
                    item[self.click_probability_key] = (1.0 - j / self.max_interactions) if self.train else 1.0
                    items[i] = self.transforms(item)
                batchdata = list_data_collate(items)
                engine.fire_event(IterationEvents.INNER_ITERATION_COMPLETED)
        else:
            items = decollate_batch(batchdata, detach=True)
            for item in items:
                item[CommonKeys.IMAGE][1:] *= 0  # no clicks: guidance channels are zero
            batchdata = list_data_collate(items)
        engine.state.batch = batchdata
        return engine._iteration(engine, batchdata)
