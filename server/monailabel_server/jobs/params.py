"""Checks a train or scoring request before any process starts, and turns image ids into the trainer's records."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.tasks.train.basic_train import BasicTrainTask
from monailabel.tasks.train.request import resolve_request

__all__ = ["validate", "validate_scoring", "records", "request", "NO_DATA"]

NO_DATA = (
    "no labeled data to train on: no image has a final label. "
    "Save a final label for at least one image (or pass train_ids of labeled images) and try again"
)


def _invalid(msg: str) -> MONAILabelException:
    return MONAILabelException(MONAILabelError.INVALID_INPUT, msg)


def validate(task: Any, params: Dict[str, Any]) -> int:
    """Validates ``params`` against the trainer's config, as the trainer itself would.

    Args:
        task: the train task.
        params: the request (with ``train_ids``/``val_ids`` instead of record lists).

    Returns:
        the epochs the job will train (0 when the task does not say).

    Raises:
        MONAILabelException: INVALID_INPUT naming the bad key.
    """
    for key in ("train_ids", "val_ids"):
        ids = params.get(key)
        if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids)):
            raise _invalid(f"'{key}' must be a list of image ids")
    seed = params.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32):
        raise _invalid(f"'seed' must be an integer in [0, 2**32); got {seed!r}")
    if not isinstance(task, BasicTrainTask):
        return 0  # another TrainTask validates its own request, in its process
    rest = {k: v for k, v in params.items() if k not in ("train_ids", "val_ids")}
    resolved = resolve_request(task.config(), rest)
    device = str(resolved.get("device") or "cuda")
    try:
        torch.device(device)
    except RuntimeError:
        raise _invalid(f"'device' is not a torch device: {device!r}") from None
    return int(resolved["max_epochs"])


def validate_scoring(method: Any, params: Dict[str, Any]) -> None:
    """Validates a scoring request with the method's own ``validate`` (a no-op unless the method has one).

    Args:
        method: the scoring method.
        params: the request.

    Raises:
        MONAILabelException: INVALID_INPUT naming the bad key.
    """
    if "method" in params:
        raise _invalid("'method' is not a parameter: name the scoring method in the request itself")
    check = getattr(method, "validate", None)
    if callable(check):
        check(dict(params))


def _records(datastore: Datastore, ids: List[str], key: str) -> List[Dict[str, str]]:
    out = []
    for image_id in ids:
        try:
            image = datastore.get_image_uri(image_id)
        except Exception:  # noqa: BLE001 - any datastore's "no such image"
            image = ""
        if not image:
            raise _invalid(f"'{key}' names an image that does not exist: {image_id!r}")
        if "final" not in (datastore.get_labels_by_image_id(image_id) or {}):
            raise MONAILabelException(
                MONAILabelError.PRECONDITION_FAILED, f"'{key}' names image {image_id!r}, which has no final label"
            )
        out.append({"image": image, "label": datastore.get_label_uri(image_id, "final")})
    return out


Records = List[Dict[str, str]]


def records(datastore: Datastore, params: Dict[str, Any]) -> Tuple[Records, Optional[Records]]:
    """Returns the train records and the validation records (None: split by ``val_split``).

    Args:
        datastore: the app's datastore.
        params: the request.

    Raises:
        MONAILabelException: INVALID_INPUT for an unknown id, PRECONDITION_FAILED with no labeled data.
    """
    val = _records(datastore, list(params["val_ids"]), "val_ids") if params.get("val_ids") else None
    if params.get("train_ids"):
        train = _records(datastore, list(params["train_ids"]), "train_ids")
    else:
        train = datastore.datalist()
        if val is not None:
            held_out = {r["image"] for r in val}
            train = [r for r in train if r["image"] not in held_out]
    if not train:
        raise MONAILabelException(MONAILabelError.PRECONDITION_FAILED, NO_DATA)
    return train, val


def request(datastore: Datastore, params: Dict[str, Any]) -> Dict[str, Any]:
    """Returns the trainer's request: ``params`` with ids replaced by ``train_ds``/``val_ds`` records.

    Args:
        datastore: the app's datastore.
        params: the request.
    """
    out = {k: v for k, v in params.items() if k not in ("train_ids", "val_ids")}
    train, val = records(datastore, params)
    if params.get("train_ids") or params.get("val_ids"):
        out["train_ds"] = train
    if val is not None:
        out["val_ds"] = val
    return out
