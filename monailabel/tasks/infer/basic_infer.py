"""MONAI Label's ``BasicInferTask``: pre-transforms, a network through an inferer, post-transforms, a writer.

Additions to MONAI Label's behaviour, all opt-in through the request and harmless to existing apps:

* **Pre-decoded images.** When ``request["image"]`` is already an array, tensor or MetaTensor (an
  interactive session keeps its volume decoded), image-loading transforms (``LoadImaged`` ...) are
  skipped for the keys that hold decoded data; a MetaTensor carries affine and metadata as
  ``LoadImage`` would have produced them.
* **Masks in memory.** :meth:`BasicInferTask.infer_in_memory` returns the mask as an array with its
  affine (an :class:`~monailabel.interfaces.tasks.infer_v2.InferOutcome`) instead of a temporary file;
  ``__call__`` still writes the file, and tasks that override ``writer`` or ``__call__`` keep it.
* **Cancellation.** ``infer_in_memory(request, cancel=fn)`` (or, as MONAI Label passed it, a callable
  under ``request["cancel_check"]``) that returns True once the caller is gone is checked between
  stages and transforms and before every network forward (each sliding-window
  batch too); the task then raises ``MONAILabelException(CANCELLED)`` and keeps no reference to its
  tensors.
* **MONAI 1.x metadata.** After a loader runs with ``image_only=True``, ``{key}_meta_dict`` is filled
  from the MetaTensor when absent, as MONAI Label 0.8 apps (written for MONAI 0.8) expect.
* **GPU path.** A CPU input bound for CUDA is copied through pinned memory, asynchronously; with
  ``amp`` (the task's attribute or config, or the request) the forward runs under ``torch.autocast``
  and its outputs come back as float32 (see :mod:`monailabel.tasks.infer._device`).
* Everything runs under ``torch.no_grad()``; transform errors name the transform.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from abc import abstractmethod
from enum import Enum
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from monai.data import decollate_batch
from monai.inferers import Inferer, SimpleInferer, SlidingWindowInferer

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import CancelCheck, InferOutcome, InferTask, InferType
from monailabel.interfaces.utils.transform import CANCEL_CHECK_KEY, check_cancelled, copy_request, run_transforms
from monailabel.tasks.infer._device import host_to_device, mixed_precision, to_float32
from monailabel.tasks.infer._network import CancellableNetwork, load_network
from monailabel.tasks.infer._pipeline import add_meta_dicts, as_list, is_loader, loader_for_keys
from monailabel.tasks.infer.batching import batcher
from monailabel.tasks.infer.decode_cache import decode_cache
from monailabel.transform.writer import ClassificationWriter, PreparedMask, Writer
from monailabel.utils.others.generic import device_list, device_map, name_to_device

logger = logging.getLogger(__name__)

__all__ = ["BasicInferTask", "CallBackTypes", "IMAGE_PATH_KEY", "stash_colliding_keys"]

#: Where the input's file path stays available to every stage, pre-transforms included; MONAI Label's
#: ``image_path`` is there too except while the pre-transforms run (see :func:`stash_colliding_keys`).
IMAGE_PATH_KEY = "input_image_path"


def stash_colliding_keys(data: Dict[str, Any]) -> Dict[str, Any]:
    """Removes and returns the plain values whose key extends another key (``image_path`` next to ``image``).

    MONAI 1.6's ``Spacingd`` calls ``update()`` on every ``<key>_*`` entry when it resamples ``<key>``
    (to refresh meta dicts), which fails on a string. Dicts and objects with ``update`` stay.

    Args:
        data: the data dict, changed in place.
    """
    keys = [k for k in data if isinstance(k, str)]
    aside: Dict[str, Any] = {}
    for k in keys:
        v = data[k]
        if hasattr(v, "update") or v is None:
            continue
        if any(k != base and k.startswith(f"{base}_") for base in keys):
            aside[k] = data.pop(k)
    return aside


class CallBackTypes(str, Enum):
    """Stages after which ``__call__`` can run a callback ``data -> data``."""

    PRE_TRANSFORMS = "PRE_TRANSFORMS"
    INFERER = "INFERER"
    INVERT_TRANSFORMS = "INVERT_TRANSFORMS"
    POST_TRANSFORMS = "POST_TRANSFORMS"
    WRITER = "WRITER"


class BasicInferTask(InferTask):
    """An inference task made of pre-transforms, an inferer over a network, inverse and post-transforms.

    Args:
        path: model file, or list of candidate files (the last existing one is used).
        network: the network; None to load TorchScript from ``path``.
        type: kind of model.
        labels: label names (a name, a list, or ``{name: value}``).
        dimension: spatial dimension of the input.
        description: what the model does.
        model_state_dict: checkpoint key holding the state dict (the whole checkpoint if absent).
        input_key: data key of the network input.
        output_label_key: data key of the network output.
        output_json_key: data key of the result dict.
        config: user-visible config (clients may override values per request).
        load_strict: load the state dict strictly.
        roi_size: sliding-window ROI; inputs larger than it run through a sliding window.
        preload: load the network on every device at construction.
        train_mode: run the network in train mode (e.g. dropout for uncertainty).
        skip_writer: return the data dict instead of writing a file.

    Attributes:
        amp: run the forward under ``torch.autocast`` (float16 on CUDA, bfloat16 on the CPU) unless the
            request (or the task's config) says otherwise with ``amp``; outputs come back as float32.
    """

    amp: bool = False

    def __init__(
        self,
        path: Union[None, str, Sequence[str]] = None,
        network: Optional[Any] = None,
        type: Union[str, InferType] = InferType.SEGMENTATION,
        labels: Union[str, None, Sequence[str], Dict[Any, Any]] = None,
        dimension: int = 3,
        description: str = "",
        model_state_dict: str = "model",
        input_key: str = "image",
        output_label_key: str = "pred",
        output_json_key: str = "result",
        config: Optional[Dict[str, Any]] = None,
        load_strict: bool = False,
        roi_size: Optional[Sequence[int]] = None,
        preload: bool = False,
        train_mode: bool = False,
        skip_writer: bool = False,
    ) -> None:
        super().__init__(type, labels, dimension, description, config)
        self.path = [] if not path else [path] if isinstance(path, (str, os.PathLike)) else list(path)
        self.network = network
        self.model_state_dict = model_state_dict
        self.input_key = input_key
        self.output_label_key = output_label_key
        self.output_json_key = output_json_key
        self.load_strict = load_strict
        self.roi_size = roi_size
        self.train_mode = train_mode
        self.skip_writer = skip_writer

        # device -> (network, checkpoint stamp); reloaded when the checkpoint changes on disk
        self._networks: Dict[str, Tuple[Any, Any]] = {}
        self._networks_lock = threading.Lock()

        self._config.update({"device": device_list()})
        if config:
            self._config.update(config)
        if preload:
            for device in device_map().values():
                self._get_network(device, None)

    def is_valid(self) -> bool:
        """Whether there is a network or an existing model file (scribbles need neither)."""
        if self.network is not None or self.type == InferType.SCRIBBLES:
            return True
        return self.get_path() is not None

    def unavailable_reason(self) -> Optional[str]:
        """Why the task cannot run: its weights were to be downloaded and the download failed."""
        if self.network is None or self.get_path() is None:
            from monailabel.utils.others.generic import failed_download

            for p in self.path:
                reason = failed_download(str(p))
                if reason:
                    return reason
        return None

    def get_path(self, validate: bool = True) -> Optional[str]:
        """Returns the model file: the last of ``path`` that exists (any, if ``validate`` is False)."""
        for p in reversed(self.path):
            if p and (not validate or os.path.exists(p)):
                return str(p)
        return None

    def add_cache_transform(self, t: Any, data: Any, keys: Any = None, hash_key: Any = None) -> None:
        """Deprecated in MONAI Label 0.8; does nothing."""

    @abstractmethod
    def pre_transforms(self, data: Optional[Dict[str, Any]] = None) -> Sequence[Callable]:
        """Returns the pre-transforms (e.g. ``LoadImaged``, ``EnsureChannelFirstd``, ``Spacingd`` ...).

        Args:
            data: the request/data dict, to choose transforms per request.
        """

    def inverse_transforms(self, data: Optional[Dict[str, Any]] = None) -> Union[None, Sequence[Any]]:
        """Returns which pre-transforms to invert on the output (MONAI Label's semantics).

        Args:
            data: the data dict.

        Returns:
            None to invert nothing (default); ``[]`` to invert every pre-transform that has an
            ``inverse``; or a list of pre-transform classes or class names to invert.
        """
        return None

    @abstractmethod
    def post_transforms(self, data: Optional[Dict[str, Any]] = None) -> Sequence[Callable]:
        """Returns the post-transforms (e.g. ``Activationsd``, ``AsDiscreted``, ``Restored`` ...).

        Args:
            data: the data dict.
        """

    def inferer(self, data: Optional[Dict[str, Any]] = None) -> Inferer:
        """Returns a sliding-window inferer when the input is larger than ``roi_size``, else a simple one.

        ``roi_size``, ``sw_batch_size`` and ``sw_overlap`` may be overridden per request.

        Args:
            data: the pre-processed data dict.
        """
        data = data or {}
        value = data.get(self.input_key)
        input_shape = tuple(value.shape) if hasattr(value, "shape") else None
        roi_size = data.get("roi_size", self.roi_size)
        if input_shape and roi_size:
            roi = list(roi_size)
            spatial = input_shape[-len(roi) :]
            if any(int(s) > int(r) for s, r in zip(spatial, roi, strict=False)):
                device = data.get("device")
                return SlidingWindowInferer(
                    roi_size=roi,
                    overlap=data.get("sw_overlap", 0.25),
                    sw_batch_size=data.get("sw_batch_size", 1),
                    sw_device=device,
                    device=device,
                )
        return SimpleInferer()

    def detector(self, data: Optional[Dict[str, Any]] = None) -> Optional[Callable]:
        """Returns the detector for DETECTION tasks (None by default)."""
        return None

    def __call__(
        self,
        request: Dict[str, Any],
        callbacks: Optional[Dict[CallBackTypes, Any]] = None,
        *,
        cancel: Optional[CancelCheck] = None,
    ) -> Union[Dict[str, Any], Tuple[Any, Dict[str, Any]]]:
        """Runs pre-transforms, inferer, inverse transforms, post-transforms and the writer.

        Args:
            request: ``image`` (path, or decoded array/MetaTensor), ``device`` and any model
                parameters; values of the task's config are the defaults. MONAI Label's
                ``cancel_check`` key still works; ``cancel`` is the typed way.
            callbacks: optional ``{CallBackTypes: fn(data) -> data}`` run after each stage.
            cancel: returns True once the caller is gone.

        Returns:
            ``(result_file, result_json)`` with ``result_json["latencies"]`` in seconds (``pre``,
            ``infer``, ``invert``, ``post``, ``write``, ``total``, per-``transform``); the data dict
            instead when ``skip_writer`` is set.

        Raises:
            MONAILabelException: TRANSFORM_ERROR / INFERENCE_ERROR naming the failing step, or
                CANCELLED when the caller went away.
        """
        return self._execute(request, callbacks, cancel, in_memory=False)

    def writes_in_memory(self) -> bool:
        """Whether :meth:`infer_in_memory` can hand the mask back without a file.

        True unless the task overrides ``writer`` or ``__call__`` (their file is then used), writes
        no mask (classification, detection, ``skip_writer``).
        """
        cls = type(self)
        return (
            cls.writer is BasicInferTask.writer
            and cls.__call__ is BasicInferTask.__call__
            and not self.skip_writer
            and self.type not in (InferType.CLASSIFICATION, InferType.DETECTION)
        )

    def infer_in_memory(self, request: Dict[str, Any], *, cancel: Optional[CancelCheck] = None) -> InferOutcome:
        """Runs the task and returns the mask as an array with its affine, written to no file.

        Args:
            request: as for ``__call__``.
            cancel: returns True once the caller is gone; the task stops with CANCELLED.

        Returns:
            The outcome: ``mask`` set for tasks that :meth:`writes_in_memory`, else what their
            ``__call__`` wrote (``file``).
        """
        if type(self).__call__ is not BasicInferTask.__call__:
            return super().infer_in_memory(request, cancel=cancel)  # the override sees MONAI Label's dict
        if not self.writes_in_memory():
            return InferOutcome.of_classic(self._execute(request, None, cancel, in_memory=False))
        answer: Any = self._execute(request, None, cancel, in_memory=True)
        mask, result = answer
        return InferOutcome(result=dict(result), mask=mask)

    def _execute(
        self,
        request: Dict[str, Any],
        callbacks: Optional[Dict[CallBackTypes, Any]],
        cancel: Optional[CancelCheck],
        in_memory: bool,
    ) -> Union[Dict[str, Any], Tuple[Any, Dict[str, Any]]]:
        begin = time.time()
        req = copy_request(self._config)
        req.update(request)
        data = copy_request(req)
        data["device"] = device = name_to_device(req.get("device"))
        if cancel is not None:
            data[CANCEL_CHECK_KEY] = cancel  # the stages and the network wrapper look here

        image = data.get(self.input_key)
        if isinstance(image, (str, os.PathLike)):
            data["image_path"] = str(image)
        elif image is not None and "image_path" not in data:
            name = getattr(image, "meta", {}).get("filename_or_obj") if hasattr(image, "meta") else None
            if isinstance(name, str) and name:
                data["image_path"] = name
        if data.get("image_path"):
            data[IMAGE_PATH_KEY] = data["image_path"]

        cancelled: Optional[str] = None
        try:
            with torch.no_grad():
                return self._run(data, device, callbacks or {}, begin, in_memory)
        except MONAILabelException as e:
            if e.error != MONAILabelError.CANCELLED:
                raise
            cancelled = e.msg
        # Raised outside the handler: the original traceback (and the tensors its frames hold) is dropped.
        data.clear()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        raise MONAILabelException(MONAILabelError.CANCELLED, cancelled)

    def _run(
        self, data: Dict[str, Any], device: str, callbacks: Dict[CallBackTypes, Any], begin: float,
        in_memory: bool = False,
    ) -> Union[Dict[str, Any], Tuple[Any, Dict[str, Any]]]:
        def stage(name: CallBackTypes, fn: Callable[[Dict[str, Any]], Dict[str, Any]], d: Dict[str, Any]):
            check_cancelled(d, name.value)
            start = time.time()
            d = fn(d)
            if callbacks.get(name):
                d = callbacks[name](d)
            return d, time.time() - start

        pre_transforms = self.pre_transforms(data)
        # MONAI 1.x dict transforms (Spacingd ...) treat every ``<key>_*`` entry as that key's meta dict
        # and update() it: plain values such as ``image_path`` or ``image_id`` step aside while they run.
        aside = stash_colliding_keys(data)
        data, latency_pre = stage(
            CallBackTypes.PRE_TRANSFORMS, lambda d: self.run_pre_transforms(d, pre_transforms), data
        )
        for k, v in aside.items():
            data.setdefault(k, v)
        if self.type == InferType.DETECTION:
            data, latency_infer = stage(CallBackTypes.INFERER, lambda d: self.run_detector(d, device=device), data)
        else:
            data, latency_infer = stage(CallBackTypes.INFERER, lambda d: self.run_inferer(d, device=device), data)
        data, latency_invert = stage(
            CallBackTypes.INVERT_TRANSFORMS,
            lambda d: self.run_invert_transforms(d, pre_transforms, self.inverse_transforms(d)),
            data,
        )
        data, latency_post = stage(
            CallBackTypes.POST_TRANSFORMS, lambda d: self.run_post_transforms(d, self.post_transforms(d)), data
        )
        if self.skip_writer:
            return dict(data)

        check_cancelled(data, "writer")
        start = time.time()
        if in_memory:
            result_file_name, result_json = self._prepare_mask(data)
        else:
            result_file_name, result_json = self.writer(data)
        if callbacks.get(CallBackTypes.WRITER):
            data = callbacks[CallBackTypes.WRITER](data)
        latency_write = time.time() - start
        latency_total = time.time() - begin

        result_json = dict(result_json) if result_json is not None else {}
        result_json["label_names"] = self.labels
        result_json["latencies"] = {
            "pre": round(latency_pre, 4),
            "infer": round(latency_infer, 4),
            "invert": round(latency_invert, 4),
            "post": round(latency_post, 4),
            "write": round(latency_write, 4),
            "total": round(latency_total, 4),
            "transform": data.get("latencies"),
        }
        logger.info(f"{self.description or type(self).__name__}: latencies {result_json['latencies']}")
        return result_file_name, result_json

    def run_pre_transforms(self, data: Dict[str, Any], transforms: Sequence[Callable]) -> Dict[str, Any]:
        """Runs the pre-transforms; loaders skip keys that hold decoded data already.

        Args:
            data: the data dict.
            transforms: the pre-transforms.
        """
        add_meta_dicts(data, [self.input_key])
        for t in as_list(transforms):
            if is_loader(t):
                keys = [k for k in t.keys if not (k in data and data[k] is not None and hasattr(data[k], "shape"))]
                if len(keys) < len(tuple(t.keys)):
                    if not keys:
                        logger.debug(f"Skipping {type(t).__name__}: the image is decoded already")
                        continue
                    t = loader_for_keys(t, keys)
                key = decode_cache.key(t, keys, data)
                cached = decode_cache.get(key) if key is not None else None
                if cached is not None:
                    data.update(cached)
                else:
                    data = run_transforms(data, [t], log_prefix="PRE")
                    if key is not None:
                        decode_cache.put(key, {k: data[k] for k in keys if k in data})
                add_meta_dicts(data, keys)
            else:
                data = run_transforms(data, [t], log_prefix="PRE")
        return data

    def run_invert_transforms(
        self, data: Dict[str, Any], pre_transforms: Sequence[Callable], names: Union[None, Sequence[Any]]
    ) -> Dict[str, Any]:
        """Inverts pre-transforms on the output (see :meth:`inverse_transforms`).

        Args:
            data: the data dict after inference.
            pre_transforms: the pre-transforms that ran.
            names: None, ``[]`` or a list of classes / class names.
        """
        if names is None:
            return data
        by_name: Dict[str, Any] = {}
        transforms = []
        for t in reversed(as_list(pre_transforms)):
            if hasattr(t, "inverse"):
                by_name[t.__class__.__name__] = t
                transforms.append(t)
        if len(names) > 0:
            wanted = [n if isinstance(n, str) else n.__name__ for n in names]
            missing = [n for n in wanted if n not in by_name]
            if missing:
                raise MONAILabelException(MONAILabelError.TRANSFORM_ERROR, f"no invertible pre-transform {missing}")
            transforms = [by_name[n] for n in wanted]
        d = dict(data)  # shallow: the output takes the input's place, everything else is shared
        d[self.input_key] = data[self.output_label_key]
        d = run_transforms(d, transforms, inverse=True, log_prefix="INV")
        data[self.output_label_key] = d[self.input_key]
        return data

    def run_post_transforms(self, data: Dict[str, Any], transforms: Sequence[Callable]) -> Dict[str, Any]:
        """Runs the post-transforms.

        Args:
            data: the data dict.
            transforms: the post-transforms.
        """
        return run_transforms(data, transforms, log_prefix="POST")

    def amp_of(self, data: Dict[str, Any]) -> bool:
        """Whether this call's forward runs in mixed precision: the request's or config's ``amp``, else :attr:`amp`.

        Args:
            data: the data dict.

        Raises:
            MONAILabelException: INVALID_INPUT when ``amp`` is not a boolean.
        """
        value = data.get("amp", self.amp)
        if value is None:
            return bool(self.amp)
        if not isinstance(value, bool):
            raise MONAILabelException(MONAILabelError.INVALID_INPUT,
                                      f"amp must be true or false, not {type(value).__name__}")
        return value

    def _get_network(self, device: str, data: Optional[Dict[str, Any]]) -> Any:
        """Returns the network on ``device``, loading it again when the checkpoint file changed.

        Args:
            device: the device.
            data: the data dict (``model_filename`` may choose another file in the model folder).

        Raises:
            MONAILabelException: INFERENCE_ERROR when there is neither a network nor a model file.
        """
        path = self.get_path()
        if data and self._config.get("model_filename") and data.get("model_filename") and self.path:
            name = data["model_filename"]
            user_path = os.path.join(os.path.dirname(self.path[0]), name if isinstance(name, str) else name[0])
            path = user_path if os.path.exists(user_path) else path
        if not path and self.network is None:
            if self.type == InferType.SCRIBBLES:
                return None
            raise MONAILabelException(MONAILabelError.INFERENCE_ERROR, f"Model Path ({self.path}) does not exist/valid")

        st = os.stat(path) if path else None
        stamp = (path, st.st_mtime_ns, st.st_size) if st else None
        with self._networks_lock:
            cached = self._networks.get(device)
            if cached and cached[1] == stamp:
                return cached[0]
            if cached:
                logger.info(f"Reloading model for {device}: {path} changed")
            network = load_network(self.network, path, device, self.model_state_dict, self.load_strict)
            network.train() if self.train_mode else network.eval()
            self._networks[device] = (network, stamp)
            return network

    def run_inferer(self, data: Dict[str, Any], convert_to_batch: bool = True, device: str = "cuda") -> Dict[str, Any]:
        """Runs the inferer over the pre-processed input; the output goes to ``data[output_label_key]``.

        Args:
            data: pre-processed data.
            convert_to_batch: add (and then remove) a batch axis.
            device: where to run.
        """
        inferer = self.inferer(data)
        network = self._get_network(device, data)
        if not network:
            return run_transforms(data, inferer, log_prefix="INF", log_name="Inferer")

        inputs = data[self.input_key]
        inputs = inputs if torch.is_tensor(inputs) else torch.as_tensor(inputs)
        inputs = inputs[None] if convert_to_batch else inputs
        inputs, _ = host_to_device(inputs, device)
        amp = self.amp_of(data)
        check = data.get(CANCEL_CHECK_KEY)
        predictor = CancellableNetwork(network, check) if callable(check) else network
        try:
            with mixed_precision(device, amp):
                if self.batchable and convert_to_batch:
                    # concurrent requests for this network may share one forward (see batching)
                    outputs = batcher.run(network, inferer, inputs, predictor, check if callable(check) else None)
                else:
                    outputs = inferer(inputs, predictor)
            if amp:
                outputs = to_float32(outputs)
        except MONAILabelException:
            raise
        except Exception as e:
            raise MONAILabelException(
                MONAILabelError.INFERENCE_ERROR, f"Inferer '{type(inferer).__name__}' failed: {type(e).__name__}: {e}"
            ) from e
        del inputs
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        if convert_to_batch:
            outputs = decollate_batch(outputs)[0] if isinstance(outputs, dict) else outputs[0]
        data[self.output_label_key] = outputs
        return data

    def run_detector(self, data: Dict[str, Any], convert_to_batch: bool = True, device: str = "cuda") -> Dict[str, Any]:
        """Runs :meth:`detector` with the network over the pre-processed input (DETECTION tasks).

        Args:
            data: pre-processed data.
            convert_to_batch: add (and then remove) a batch axis.
            device: where to run.
        """
        detector = self.detector(data)
        if detector is None:
            raise MONAILabelException(MONAILabelError.INFERENCE_ERROR, "Detector is Not Provided")
        network = self._get_network(device, data)
        inputs = data[self.input_key]
        inputs = inputs if torch.is_tensor(inputs) else torch.as_tensor(inputs)
        inputs, _ = host_to_device(inputs[None] if convert_to_batch else inputs, device)
        if hasattr(detector, "network"):
            detector.network = network
        if callable(getattr(detector, "eval", None)):
            detector.eval()
        outputs = detector(inputs, use_inferer=True)
        if convert_to_batch:
            outputs = decollate_batch(outputs)[0] if isinstance(outputs, dict) else outputs[0]
        if isinstance(outputs, dict):
            data.update(outputs)
        else:
            data[self.output_label_key] = outputs
        return data

    def writer(
        self, data: Dict[str, Any], extension: Optional[str] = None, dtype: Optional[Any] = None
    ) -> Tuple[Any, Any]:
        """Writes the result mask to a temporary file and returns it with the result dict.

        Args:
            data: post-processed data.
            extension: output extension (overrides ``result_extension``).
            dtype: output dtype (overrides ``result_dtype``).

        Returns:
            ``(file_path or None, result_json)``.
        """
        if extension is not None:
            data["result_extension"] = extension
        if dtype is not None:
            data["result_dtype"] = dtype
        if self.labels is not None:
            data["labels"] = self.labels
        if self.type == InferType.CLASSIFICATION:
            labels = self.labels
            names = {v: k for k, v in labels.items()} if isinstance(labels, dict) else dict(enumerate(labels or []))
            return ClassificationWriter(label=self.output_label_key, label_names=names)(data)
        if self.type == InferType.DETECTION:
            return None, data.get(self.output_json_key, {})
        return Writer(label=self.output_label_key, json=self.output_json_key)(data)

    def _prepare_mask(self, data: Dict[str, Any]) -> Tuple[Optional[PreparedMask], Dict[str, Any]]:
        """The in-memory counterpart of :meth:`writer` for segmentation-like tasks."""
        if self.labels is not None:
            data["labels"] = self.labels
        return Writer(label=self.output_label_key, json=self.output_json_key).prepare(data)

    def clear(self) -> None:
        """Drops the cached networks (they are loaded again on the next call)."""
        with self._networks_lock:
            self._networks.clear()

    clear_cache = clear

    def set_loglevel(self, level: str) -> None:
        """Sets this module's log level.

        Args:
            level: ``DEBUG``, ``INFO`` ...
        """
        logger.setLevel(level.upper())
