"""Metric helpers that MONAI Label apps use in their train tasks."""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

from ignite.metrics import Metric
from monai.handlers import MeanDice, from_engine
from monai.utils import ensure_tuple

__all__ = ["region_wise_metrics", "from_engine_idx"]

Regions = Union[Sequence[str], Mapping[str, int], None]


def _region_indices(regions: Regions) -> Dict[str, int]:
    if not regions:
        return {}
    if isinstance(regions, Mapping):
        return {str(name): int(idx) for name, idx in regions.items()}
    if isinstance(regions, str):
        return {regions: 1}
    # channel 0 is the background, so the n-th named region is channel n
    return {str(name): idx for idx, name in enumerate(regions, start=1)}


def from_engine_idx(keys: Union[str, Sequence[str]], idx: int, first: bool = False) -> Callable[[Any], Tuple[Any, Any]]:
    """Like MONAI's ``from_engine``, but keeps only channel ``idx`` of each item (as a 1-channel tensor).

    Args:
        keys: the prediction and label keys, in that order.
        idx: the channel to keep.
        first: take only the first item of a decollated batch.

    Returns:
        an ``output_transform`` for ignite metrics returning ``(preds, labels)``.
    """
    keys = ensure_tuple(keys)

    def _channel(items: Any) -> Any:
        if isinstance(items, (list, tuple)):
            return [x[idx : idx + 1] for x in items]
        return items[:, idx : idx + 1]

    def _transform(data: Any) -> Tuple[Any, Any]:
        if isinstance(data, dict):
            values = [data[k] for k in keys]
        elif isinstance(data, list) and data and isinstance(data[0], dict):
            values = [data[0][k] if first else [item[k] for item in data] for k in keys]
        else:
            raise ValueError(f"from_engine_idx expects a dict or a list of dicts, got {type(data).__name__}")
        pred, label = values[0], values[1]
        return _channel(pred), _channel(label)

    return _transform


def region_wise_metrics(
    regions: Regions,
    metric: str,
    prefix: str,
    keys: Sequence[str] = ("pred", "label"),
) -> Dict[str, Metric]:
    """Mean Dice over all foreground channels plus one Dice per named region, as MONAI Label apps use it.

    ``region_wise_metrics(self._labels, self.TRAIN_KEY_METRIC, "train")`` gives
    ``{"train_dice": MeanDice, "train_<region>_dice": MeanDice, ...}``; the first entry is the key metric.
    Predictions and labels are expected one-hot (channel ``i`` = region ``i``, channel 0 = background).

    Args:
        regions: region names (channel ``n`` for the n-th name, from 1) or ``{name: channel}``.
        metric: name of the overall metric.
        prefix: prefix of the per-region metric names (``train`` or ``val``).
        keys: the prediction and label keys.

    Returns:
        the metrics by name, the overall one first.
    """
    metrics: Dict[str, Metric] = {metric: MeanDice(output_transform=from_engine(list(keys)), include_background=False)}
    for name, idx in _region_indices(regions).items():
        metrics[f"{prefix}_{name}_dice"] = MeanDice(output_transform=from_engine_idx(keys, idx))
    return metrics


def default_key_metric(regions: Regions, metric: str, prefix: str) -> Dict[str, Metric]:
    """The default key metric of :class:`BasicTrainTask`: Mean Dice, region-wise with several regions.

    Args:
        regions: the task's labels.
        metric: name of the key metric.
        prefix: ``train`` or ``val``.

    Returns:
        ``{metric: MeanDice}``, plus per-region Dice when ``regions`` names more than one region.
    """
    if len(_region_indices(regions)) > 1:
        return region_wise_metrics(regions, metric, prefix)
    return {metric: MeanDice(output_transform=from_engine(["pred", "label"]))}


def optional_int(value: Any) -> Optional[int]:
    """Returns ``value`` as an int when it is a whole number (or such a string), else ``None``.

    Args:
        value: the value to read.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None
