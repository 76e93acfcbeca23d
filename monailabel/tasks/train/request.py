"""Resolution and validation of a train request: the task's config overlaid with the caller's keys."""

from __future__ import annotations

import copy
import os
import uuid
from datetime import datetime
from typing import Any, Dict, List, Mapping, Optional

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.tasks.train.utils import optional_int

__all__ = ["DATASETS", "DATALOADERS", "CALLABLE_KEYS", "default_config", "resolve_request"]

DATASETS = ("CacheDataset", "PersistentDataset", "SmartCacheDataset", "Dataset")
DATALOADERS = ("ThreadDataLoader", "DataLoader")
# keys a job runner passes in-process; they are never copied, pickled or written anywhere
CALLABLE_KEYS = ("progress_callback", "cancel_check")

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", "none", ""}


def default_config() -> Dict[str, Any]:
    """Returns MONAI Label's default train config (list values are choices; the first is the default)."""
    return {
        "name": "train_01",
        "pretrained": True,
        "device": "cuda",
        "max_epochs": 50,
        "early_stop_patience": -1,
        "val_split": 0.2,
        "train_batch_size": 1,
        "val_batch_size": 1,
        "multi_gpu": True,
        "gpus": "all",
        "dataset": list(DATASETS),
        "dataloader": list(DATALOADERS),
    }


def _invalid(msg: str) -> MONAILabelException:
    return MONAILabelException(MONAILabelError.INVALID_INPUT, msg)


def _int(req: Dict[str, Any], key: str, minimum: Optional[int] = None) -> None:
    value = optional_int(req.get(key))
    if value is None or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise _invalid(f"'{key}' must be an integer{bound}; got {req.get(key)!r}")
    req[key] = value


def _bool(req: Dict[str, Any], key: str) -> None:
    value = req.get(key)
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)) and value in (0, 1):
        req[key] = bool(value)
    elif isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        req[key] = value.strip().lower() in _TRUE
    else:
        raise _invalid(f"'{key}' must be true or false; got {value!r}")


def _choice(req: Dict[str, Any], key: str, choices: tuple) -> None:
    value = req.get(key)
    if isinstance(value, (list, tuple)) and value:
        value = value[0]  # a config's list of choices, not overridden by the caller
    if value not in choices:
        raise _invalid(f"'{key}' must be one of {', '.join(choices)}; got {req.get(key)!r}")
    req[key] = value


def _datalist(req: Dict[str, Any], key: str) -> None:
    value = req.get(key)
    if value is None:
        return
    if not isinstance(value, (list, tuple)) or not all(isinstance(d, Mapping) and "image" in d for d in value):
        raise _invalid(f"'{key}' must be a list of records like {{'image': path, 'label': path}}")
    req[key] = [dict(d) for d in value]


def _gpus(req: Dict[str, Any]) -> None:
    gpus = req.get("gpus")
    if gpus in (None, "", "all"):
        req["gpus"] = "all"
        return
    if isinstance(gpus, int) and not isinstance(gpus, bool):
        gpus = str(gpus)
    if isinstance(gpus, (list, tuple)):
        gpus = ",".join(str(g) for g in gpus)
    ids = [optional_int(g) for g in str(gpus).split(",")] if isinstance(gpus, str) else [None]
    if any(i is None or i < 0 for i in ids):
        raise _invalid(f"'gpus' must be 'all' or a list of GPU ids like '0,1'; got {req.get('gpus')!r}")
    req["gpus"] = ",".join(str(i) for i in ids)


def resolve_request(config: Mapping[str, Any], request: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """Overlays ``request`` on ``config``, validates the result and gives it a ``run_id``.

    Args:
        config: the task's config (:meth:`BasicTrainTask.config`).
        request: the caller's request; ``progress_callback`` and ``cancel_check`` must be removed first.

    Returns:
        the resolved request: numbers as numbers, choices resolved to one value, ``run_id`` set.

    Raises:
        MONAILabelException: ``INVALID_INPUT`` naming the first bad key.
    """
    if request is not None and not isinstance(request, Mapping):
        raise _invalid(f"a train request must be a dict; got {type(request).__name__}")
    req: Dict[str, Any] = copy.deepcopy(dict(config))
    req.update(copy.deepcopy(dict(request or {})))

    name = req.get("name")
    if not isinstance(name, str) or not name.strip() or os.sep in name or "/" in name or name in (".", ".."):
        raise _invalid(f"'name' must be a plain folder name; got {name!r}")

    _int(req, "max_epochs", minimum=1)
    _int(req, "train_batch_size", minimum=1)
    _int(req, "val_batch_size", minimum=1)
    _int(req, "early_stop_patience")
    try:
        val_split = float(req.get("val_split", 0.0))
    except (TypeError, ValueError):
        raise _invalid(f"'val_split' must be a number in [0, 1); got {req.get('val_split')!r}") from None
    if not 0.0 <= val_split < 1.0:
        raise _invalid(f"'val_split' must be a number in [0, 1); got {req.get('val_split')!r}")
    req["val_split"] = val_split

    for key in ("pretrained", "multi_gpu"):
        _bool(req, key)
    _choice(req, "dataset", DATASETS)
    _choice(req, "dataloader", DATALOADERS)
    _gpus(req)
    if req.get("world_size") is not None:
        _int(req, "world_size", minimum=1)
    if req.get("nodes") is not None:
        _int(req, "nodes", minimum=1)
    if not isinstance(req.get("device", "cuda"), str):
        raise _invalid(f"'device' must be a string like 'cuda' or 'cpu'; got {req.get('device')!r}")
    for key in ("train_ds", "val_ds"):
        _datalist(req, key)

    tracking = req.get("tracking")
    if isinstance(tracking, (list, tuple)):
        req["tracking"] = tracking[0] if tracking else None
    req["run_id"] = f"{datetime.now().strftime('%Y%m%d_%H%M%S')}_{uuid.uuid4().hex[:6]}"
    return req


def split_callables(request: Optional[Mapping[str, Any]]) -> tuple[Dict[str, Any], List[Any], Any]:
    """Takes the in-process hooks out of a request.

    Args:
        request: the caller's request.

    Returns:
        ``(request without hooks, progress callbacks, cancel check or None)``.

    Raises:
        MONAILabelException: ``INVALID_INPUT`` when a hook is not callable.
    """
    if request is not None and not isinstance(request, Mapping):
        raise _invalid(f"a train request must be a dict; got {type(request).__name__}")
    rest = {k: v for k, v in (request or {}).items() if k not in CALLABLE_KEYS}
    progress = (request or {}).get("progress_callback")
    callbacks = [] if progress is None else list(progress) if isinstance(progress, (list, tuple)) else [progress]
    if not all(callable(c) for c in callbacks):
        raise _invalid("'progress_callback' must be a callable (or a list of them) taking one dict")
    cancel = (request or {}).get("cancel_check")
    if cancel is not None and not callable(cancel):
        raise _invalid("'cancel_check' must be a callable returning a bool")
    return rest, callbacks, cancel
