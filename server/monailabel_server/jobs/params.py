"""Checks a train or scoring request before any process starts, and turns image ids into the trainer's records.

A request comes from a client, so it may not name server paths or process counts: ``train_ds``/``val_ds``
(records of files to train on and publish from), ``distributed_url`` (a rendezvous file anywhere),
``world_size`` (processes to spawn) and the like are the app's to set in its trainer's config
(:data:`SERVER_KEYS`). Known numbers are bounded (:data:`BOUNDS`); any other key is kept, as MONAI
Label keeps them, but the request as a whole is bounded like free-form info.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.tasks.train.basic_train import BasicTrainTask
from monailabel.tasks.train.request import resolve_request
from monailabel_server import validation

__all__ = ["validate", "validate_scoring", "validate_batch_infer", "MAX_BATCH_IDS", "check_client_params", "records",
           "request", "NO_DATA", "SERVER_KEYS",
           "BOUNDS"]

#: keys that name server paths or process counts: an app sets them in its config, a client never does
SERVER_KEYS = frozenset({
    "train_ds", "val_ds", "distributed_url", "distributed_backend", "world_size", "nprocs", "tracking_uri",
    "model_dir", "run_id", "progress_callback", "cancel_check",
    # a run across nodes: where they meet and each node's part (the server sets them from 'nodes')
    "rdzv_endpoint", "rdzv_id", "rdzv_host", "node_addr", "join_timeout", "distributed_timeout",
})
#: bounds of the numeric keys a client may set: (lo, hi, integer)
BOUNDS: Dict[str, Tuple[float, float, bool]] = {
    "max_epochs": (1, 100_000, True),
    "epochs": (1, 100_000, True),
    "train_batch_size": (1, 4096, True),
    "val_batch_size": (1, 4096, True),
    "early_stop_patience": (-100_000, 100_000, True),
    "val_split": (0.0, 1.0, False),
    "val_interval": (1, 100_000, True),
    "num_workers": (0, 64, True),
    "num_samples": (1, 1024, True),
    "cache_rate": (0.0, 1.0, False),
    "lr": (0.0, 10.0, False),
    "learning_rate": (0.0, 10.0, False),
    "max_samples": (0, 1_000_000, True),
    "simulation_size": (1, 1024, True),
    "max_workers": (1, 64, True),
    "nodes": (1, 64, True),
}
#: inference's own keys: meaningless in a job, and refused rather than silently ignored
_INFER_KEYS = frozenset({"save_label", "result_extension", "result_dtype", "result_compress", "foreground",
                         "background", "session_id"})
_PATH_SUFFIXES = ("_dir", "_path", "_file", "_folder", "_uri", "_url")
_SIZE_KEYS = ("roi_size", "tile_size", "spatial_size", "patch_size")
# image id lists are checked id by id (and bounded by the message size), not as info
_ID_LISTS = ("train_ids", "val_ids")

NO_DATA = (
    "no labeled data to train on: no image has a final label. "
    "Save a final label for at least one image (or pass train_ids of labeled images) and try again"
)


def _invalid(msg: str) -> MONAILabelException:
    return MONAILabelException(MONAILabelError.INVALID_INPUT, msg)


def _number(value: Any) -> Any:
    """A number sent as a string ("5", "0.1") as MONAI Label clients do, else the value itself."""
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            return value
    return value


def check_client_params(params: Dict[str, Any], ids: bool = True) -> Dict[str, Any]:
    """Applies the client policy to a train or scoring request: no server keys, bounded numbers and size.

    Args:
        params: the request as the client sent it.
        ids: whether ``train_ids``/``val_ids`` may be in it (train requests).

    Returns:
        the request, numbers sent as strings turned into numbers.

    Raises:
        MONAILabelException: INVALID_INPUT with a field violation ``params.<key>``.
    """
    out = dict(params)
    for key in sorted(out):
        if key in _INFER_KEYS:
            raise validation.invalid(f"params.{key}", f"params.{key} is an inference parameter, not a job's")
        if key in SERVER_KEYS or key in ("studies", "path", "file", "dir", "folder") or key.endswith(_PATH_SUFFIXES):
            raise validation.invalid(
                f"params.{key}",
                f"params.{key} is not accepted from clients: it names a server path or a process count, which "
                "the app sets in its config",
            )
        if key in BOUNDS and out[key] is not None:
            lo, hi, integer = BOUNDS[key]
            value = _number(out[key])
            if integer:
                out[key] = validation.check_int(value, f"params.{key}", int(lo), int(hi))
            else:
                out[key] = validation.check_number(value, f"params.{key}", lo, hi)
    if "name" in out:
        validation.check_id(out["name"], "params.name")
    for key in _SIZE_KEYS:  # patch sizes: 1 to 3 positive edges, as a list or MONAI Label's "96,96,96"
        if key in out:
            value = out[key]
            edges = value.split(",") if isinstance(value, str) else value
            if not isinstance(edges, list) or not 1 <= len(edges) <= 3:
                raise validation.invalid(f"params.{key}", f"params.{key} must be 1 to 3 positive integers")
            out[key] = [validation.check_int(_number(e), f"params.{key}[{i}]", 1, 1024) for i, e in enumerate(edges)]
    if "device" in out:
        from monailabel_server.core.infer_request import check_device

        out["device"] = check_device(str(out["device"]), "params.device")
    for key in ("label_tag", "tag"):  # which labels to train on: a tag, never a path
        if key in out:
            validation.check_tag(out[key], f"params.{key}")
    for key in _ID_LISTS:
        if key in out and ids:
            if not isinstance(out[key], list):
                raise validation.invalid(f"params.{key}", f"'{key}' must be a list of image ids")
            for i, image_id in enumerate(out[key]):
                validation.check_id(image_id, f"params.{key}[{i}]")
    validation.check_info({k: v for k, v in out.items() if not (ids and k in _ID_LISTS)}, "params")
    return out


def validate(task: Any, params: Dict[str, Any], client: bool = True) -> int:
    """Validates ``params`` against the trainer's config, as the trainer itself would.

    Args:
        task: the train task.
        params: the request (with ``train_ids``/``val_ids`` instead of record lists).
        client: whether a client sent it (then :func:`check_client_params` applies); the app's own
            requests (``async_training``) may set any key.

    Returns:
        the epochs the job will train (0 when the task does not say).

    Raises:
        MONAILabelException: INVALID_INPUT naming the bad key.
    """
    if client:
        params.update(check_client_params(params))
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


def validate_scoring(method: Any, params: Dict[str, Any], client: bool = True) -> None:
    """Validates a scoring request with the method's own ``validate`` (a no-op unless the method has one).

    Args:
        method: the scoring method.
        params: the request.
        client: whether a client sent it (then :func:`check_client_params` applies).

    Raises:
        MONAILabelException: INVALID_INPUT naming the bad key.
    """
    if "method" in params:
        raise _invalid("'method' is not a parameter: name the scoring method in the request itself")
    if client:
        params.update(check_client_params(params, ids=False))
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


#: Images one batch inference may list by id.
MAX_BATCH_IDS = 10_000
#: What a batch inference runs on (MONAI Label's ``/batch/infer`` images: all, unlabeled, or a list).
BATCH_IMAGES = ("all", "unlabeled", "ids")


def validate_batch_infer(datastore: Datastore, params: Dict[str, Any]) -> None:
    """Checks a batch inference request: ``{"images": all|unlabeled|ids, "image_ids"?, "device"?}``.

    Listed ids must exist now; ``all`` and ``unlabeled`` are resolved when the job runs (as MONAI Label
    does), so that a queued job sees the images of its time.

    Raises:
        MONAILabelException: INVALID_INPUT naming the bad key or id, NOT_FOUND for an unknown image.
    """
    unknown = sorted(set(params) - {"images", "image_ids", "device"})
    if unknown:
        raise validation.invalid(unknown[0], f"batch inference takes images, image_ids and device, not {unknown}")
    images = params.get("images") or ("ids" if params.get("image_ids") else "all")
    if images not in BATCH_IMAGES:
        raise validation.invalid("images", f"images must be one of {', '.join(BATCH_IMAGES)}")
    params["images"] = images
    ids = list(params.get("image_ids") or [])
    if images != "ids" and ids:
        raise validation.invalid("image_ids", f"image_ids are for images=ids, not images={images}")
    if images == "ids":
        if not ids:
            raise validation.invalid("image_ids", "images=ids needs at least one image id")
        if len(ids) > MAX_BATCH_IDS:
            raise validation.invalid("image_ids", f"{len(ids)} image ids; at most {MAX_BATCH_IDS}")
        if len(set(ids)) != len(ids):
            raise validation.invalid("image_ids", "an image id is listed twice")
        for i, image_id in enumerate(ids):
            validation.check_id(image_id, f"image_ids[{i}]")
        known = set(datastore.list_images())
        missing = [i for i in ids if i not in known]
        if missing:
            raise MONAILabelException(MONAILabelError.NOT_FOUND, f"image {missing[0]!r} does not exist",
                                      resource=("image", missing[0][:128]))
        params["image_ids"] = ids
    if params.get("device"):
        from monailabel_server.core.infer_request import check_device

        params["device"] = check_device(str(params["device"]), "device")
