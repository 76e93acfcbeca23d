"""Running lists of transforms with per-transform timing, typed errors and cancellation checks."""

from __future__ import annotations

import copy
import logging
import time
from typing import Any, Callable, Dict, Sequence, Union

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException

logger = logging.getLogger(__name__)

__all__ = ["CANCEL_CHECK_KEY", "check_cancelled", "copy_request", "dump_data", "run_transforms", "shape_info"]

#: Request key under which a caller may put a callable returning True once the work should stop.
CANCEL_CHECK_KEY = "cancel_check"


def check_cancelled(data: Any, where: str = "") -> None:
    """Raises CANCELLED when ``data["cancel_check"]`` is a callable that returns True.

    Args:
        data: the request or data dict.
        where: the stage, for the message.

    Raises:
        MONAILabelException: CANCELLED, when the caller went away.
    """
    check = data.get(CANCEL_CHECK_KEY) if isinstance(data, dict) else None
    if callable(check) and check():
        raise MONAILabelException(
            MONAILabelError.CANCELLED, f"Request cancelled by the caller{f' ({where})' if where else ''}"
        )


def copy_request(request: Dict[str, Any]) -> Dict[str, Any]:
    """Copies a request dict deeply, except arrays, tensors and callables, which are shared.

    A decoded volume must not be duplicated per call, and a ``cancel_check`` may be bound to an
    object (an RPC context) that cannot, and must not, be copied.

    Args:
        request: the request.
    """
    out: Dict[str, Any] = {}
    for k, v in request.items():
        if v is None or isinstance(v, (str, int, float, bool)) or callable(v) or hasattr(v, "shape"):
            out[k] = v
        else:
            try:
                out[k] = copy.deepcopy(v)
            except Exception:  # uncopyable objects are passed through, as the caller gave them
                out[k] = v
    return out


def dump_data(data: Any, level: int = logging.DEBUG) -> None:
    """Logs each key of a data dict with its shape (arrays) or value (plain types).

    Args:
        data: the dict.
        level: the log level to log at; nothing is done unless the logger is enabled for it.
    """
    if not data or not logger.isEnabledFor(level):
        return
    logger.log(level, "**************************** DATA ********************************************")
    for k in data:
        v = data[k]
        shown = (
            v.shape if hasattr(v, "shape") else v if type(v) in (int, float, bool, str, dict, tuple, list) else type(v)
        )
        logger.log(level, f"Data key: {k} = {shown}")
    logger.log(level, "******************************************************************************")


def shape_info(data: Any, keys: Sequence[str] = ("image", "label", "logits", "pred", "model", "points")) -> str:
    """Returns ``"key: shape(dtype); ..."`` for the array-valued keys of a data dict.

    Args:
        data: the dict.
        keys: the keys to describe.
    """
    info = []
    for key in keys:
        val = data.get(key) if data and hasattr(data, "get") else None
        if val is not None and hasattr(val, "shape"):
            info.append(f"{key}: {val.shape}({val.dtype})")
    return "; ".join(info)


def run_transforms(
    data: Dict[str, Any],
    callables: Union[None, Callable, Sequence[Callable]],
    inverse: bool = False,
    log_prefix: str = "POST",
    log_name: str = "Transform",
    use_compose: bool = False,
) -> Dict[str, Any]:
    """Runs transforms one by one, recording each one's latency in ``data["latencies"][stage]``.

    Unlike MONAI Label, a transform that raises is reported as a :class:`MONAILabelException`
    naming the transform (``INFERENCE_ERROR`` for the ``INF`` stage, ``TRANSFORM_ERROR``
    otherwise), and a ``cancel_check`` callable in ``data`` is consulted before each transform.

    Args:
        data: the data dict.
        callables: a transform, a list of them, or a ``monai.transforms.Compose``.
        inverse: run each transform's ``inverse`` instead of calling it.
        log_prefix: stage name (``PRE``, ``INF``, ``INV``, ``POST``), also the latency key (lowercase).
        log_name: what the callables are, for messages.
        use_compose: run each callable through a one-element ``Compose`` (MONAI's list handling).

    Returns:
        The processed data dict.

    Raises:
        MONAILabelException: a transform failed, is not callable, has no inverse, or the caller cancelled.
    """
    logger.debug(f"{log_prefix} - Run {log_name}(s); Input Keys: {list(data.keys()) if data else []}")
    if not callables:
        return data

    compose = None
    if use_compose:
        from monai.transforms import Compose

        compose = Compose()
    if isinstance(getattr(callables, "transforms", None), (list, tuple)):  # a Compose
        callables = list(callables.transforms)  # type: ignore[union-attr]
    elif callable(callables):
        callables = [callables]

    error = MONAILabelError.INFERENCE_ERROR if log_prefix.upper() == "INF" else MONAILabelError.TRANSFORM_ERROR
    stage = log_prefix.lower()
    for t in callables:  # type: ignore[union-attr]
        name = t.__class__.__name__
        check_cancelled(data, f"{log_prefix} {name}")
        start = time.time()
        dump_data(data)
        if inverse and not hasattr(t, "inverse"):
            raise MONAILabelException(MONAILabelError.TRANSFORM_ERROR, f"{log_name} '{name}' has no invert method")
        if not inverse and not callable(t):
            raise MONAILabelException(MONAILabelError.TRANSFORM_ERROR, f"{log_name} '{name}' is not callable")
        try:
            if inverse:
                data = t.inverse(data)
            elif compose is not None:
                compose.transforms = [t]
                data = compose(data)
            else:
                data = t(data)
        except MONAILabelException:
            raise
        except Exception as e:
            # MONAI wraps transform errors in RuntimeError("applying transform ..."); name the culprit plainly.
            raise MONAILabelException(error, f"{log_prefix} {log_name} '{name}' failed: {_root_cause(e)}") from e

        latency = round(time.time() - start, 4)
        if isinstance(data, dict):
            if data.get("latencies") is None:
                data["latencies"] = {}
            data["latencies"].setdefault(stage, {})[name] = latency
        logger.debug(f"{log_prefix} - {log_name} ({name}): Time: {latency}; {shape_info(data)}")

    dump_data(data)
    return data


def _root_cause(e: BaseException, limit: int = 500) -> str:
    # MONAI wraps errors as RuntimeError("applying transform ...") from the real one: report the real one.
    seen = {id(e)}
    while e.__cause__ is not None and id(e.__cause__) not in seen:
        e = e.__cause__
        seen.add(id(e))
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[-1][:limit] if lines else ''}"
