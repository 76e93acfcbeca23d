"""``MONAILabelApp``: the base class of every app, with MONAI Label's extension points and names.

An app subclasses it and overrides ``init_infers``, ``init_trainers``, ``init_strategies`` and
``init_scoring_methods``. The server calls :meth:`MONAILabelApp.infer`, :meth:`train`,
:meth:`next_sample` and :meth:`scoring` with MONAI Label's request dicts. Importing this module is
cheap: torch, MONAI and the datastore are imported only when used.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

from monailabel.config import settings
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import CancelCheck, InferOutcome, InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.interfaces.utils.transform import copy_request
from monailabel.tasks.activelearning.random import Random
from monailabel.utils.others.generic import download_file, strtobool

logger = logging.getLogger(__name__)

__all__ = ["MONAILabelApp"]

#: ``fn(kind, request) -> result`` that queues background work ("scoring", "train"); set by the server.
JobSubmitter = Callable[[str, Dict[str, Any]], Any]


def _lookup(tasks: Dict[str, Any], name: Optional[str], what: str) -> Any:
    if not name:
        raise MONAILabelException(MONAILabelError.INVALID_INPUT, f"{what} is not provided")
    task = tasks.get(name)
    if task is None:
        available = ", ".join(sorted(tasks)) or "none"
        raise MONAILabelException(MONAILabelError.NOT_FOUND, f"{what} '{name}' does not exist; available: {available}")
    return task


class MONAILabelApp:
    """Base class of a MONAI Label app.

    Args:
        app_dir: the app's folder.
        studies: the studies folder (or URL) the datastore serves.
        conf: the app's ``--conf`` key/value pairs.
        name: app name.
        description: app description.
        version: app version.
        labels: label names the app offers (aggregated from the models when empty).
    """

    PRE_TRAINED_PATH: str = "https://github.com/Project-MONAI/MONAILabel/releases/download/data"

    def __init__(
        self,
        app_dir: str,
        studies: str,
        conf: Optional[Dict[str, str]],
        name: str = "",
        description: str = "",
        version: str = "",
        labels: Union[None, Sequence[str], Dict[Any, Any]] = None,
    ) -> None:
        self.app_dir = app_dir
        self.studies = studies
        self.conf = conf if conf else {}
        self.name = name
        self.description = description
        self.version = version
        self.labels = labels

        self._datastore: Datastore = self.init_datastore()
        self._infers: Dict[str, InferTask] = self.init_infers()
        self._trainers: Dict[str, TrainTask] = self.init_trainers() if settings.MONAI_LABEL_TASKS_TRAIN else {}
        self._strategies: Dict[str, Strategy] = self.init_strategies() if settings.MONAI_LABEL_TASKS_STRATEGY else {}
        self._scoring_methods: Dict[str, ScoringMethod] = (
            self.init_scoring_methods() if settings.MONAI_LABEL_TASKS_SCORING else {}
        )
        # MONAI Label's setting, which the app's conf may override: --conf auto_update_scoring false
        self._auto_update_scoring = strtobool(
            str(self.conf.get("auto_update_scoring", settings.MONAI_LABEL_AUTO_UPDATE_SCORING))
        )
        self._sessions = None
        self._job_submitter: Optional[JobSubmitter] = None
        for model, reason in self.unavailable_models().items():
            logger.warning(f"Model '{model}' is unavailable: {reason}")

        concurrency = settings.MONAI_LABEL_INFER_CONCURRENCY
        self._infers_threadpool = (
            ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="INFER") if concurrency > 0 else None
        )
        self._server_mode = strtobool(self.conf.get("server_mode", "false"))

    # -- extension points ---------------------------------------------------------------------------
    def init_infers(self) -> Dict[str, InferTask]:
        """Returns the app's infer tasks by model name (none by default)."""
        return {}

    def init_trainers(self) -> Dict[str, TrainTask]:
        """Returns the app's training tasks by name (none by default)."""
        return {}

    def init_strategies(self) -> Dict[str, Strategy]:
        """Returns the app's active learning strategies by name (``random`` by default)."""
        return {"random": Random()}

    def init_scoring_methods(self) -> Dict[str, ScoringMethod]:
        """Returns the app's scoring methods by name (none by default)."""
        return {}

    def init_datastore(self) -> Datastore:
        """Returns the app's datastore: a ``LocalDatastore`` over ``studies`` by default.

        An ``http(s)://`` studies URL is a PACS' DICOMweb root (:meth:`init_remote_datastore`).
        """
        logger.info(f"Init Datastore for: {self.studies}")
        if str(self.studies).startswith(("http://", "https://")):
            return self.init_remote_datastore()
        from monailabel.datastore.local import LocalDatastore

        return LocalDatastore(
            self.studies,
            extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def init_remote_datastore(self) -> Datastore:
        """Returns the datastore for remote studies: a PACS through DICOMweb (``DICOMWebDatastore``).

        Configured by MONAI Label's settings: ``MONAI_LABEL_DICOMWEB_USERNAME``/``_PASSWORD`` (basic
        auth) or ``MONAI_LABEL_DICOMWEB_TOKEN`` (bearer), ``MONAI_LABEL_QIDO_PREFIX``/``WADO``/``STOW``,
        ``MONAI_LABEL_DICOMWEB_CACHE_PATH``, ``MONAI_LABEL_DICOMWEB_FETCH_BY_FRAME``,
        ``MONAI_LABEL_DICOMWEB_SEARCH_FILTER``, ``MONAI_LABEL_DICOMWEB_CACHE_SIZE_MB`` and
        ``MONAI_LABEL_DICOMWEB_DELETE_FROM_PACS``. Apps override it for XNAT, DSA or other stores.
        """
        from monailabel.datastore.dicom import DICOMWebDatastore
        from monailabel.datastore.dicomweb import create_dicomweb_client

        logger.info(f"Using DICOMweb: {self.studies}")
        client = create_dicomweb_client(
            str(self.studies),
            username=settings.MONAI_LABEL_DICOMWEB_USERNAME,
            password=settings.MONAI_LABEL_DICOMWEB_PASSWORD,
            token=settings.MONAI_LABEL_DICOMWEB_TOKEN,
            qido_prefix=settings.MONAI_LABEL_QIDO_PREFIX,
            wado_prefix=settings.MONAI_LABEL_WADO_PREFIX,
            stow_prefix=settings.MONAI_LABEL_STOW_PREFIX,
        )
        cache_path = (settings.MONAI_LABEL_DICOMWEB_CACHE_PATH or "").strip()
        return DICOMWebDatastore(
            client=client,
            search_filter=settings.MONAI_LABEL_DICOMWEB_SEARCH_FILTER,
            cache_path=cache_path or None,
            fetch_by_frame=settings.MONAI_LABEL_DICOMWEB_FETCH_BY_FRAME,
            convert_to_nifti=settings.MONAI_LABEL_DICOMWEB_CONVERT_TO_NIFTI,
            label_names=self.labels if isinstance(self.labels, (dict, list, tuple)) else None,
            cache_size_mb=settings.MONAI_LABEL_DICOMWEB_CACHE_SIZE_MB,
            delete_from_pacs=settings.MONAI_LABEL_DICOMWEB_DELETE_FROM_PACS,
        )

    # -- accessors ----------------------------------------------------------------------------------
    def datastore(self) -> Datastore:
        """Returns the app's datastore."""
        return self._datastore

    def infer_tasks(self) -> Dict[str, InferTask]:
        """Returns the infer tasks by model name (what ``init_infers`` built); the server serves these."""
        return self._infers

    def trainers(self) -> Dict[str, TrainTask]:
        """Returns the training tasks by name."""
        return self._trainers

    def strategies(self) -> Dict[str, Strategy]:
        """Returns the strategies by name."""
        return self._strategies

    def scoring_methods(self) -> Dict[str, ScoringMethod]:
        """Returns the scoring methods by name."""
        return self._scoring_methods

    def unavailable_models(self) -> Dict[str, str]:
        """Returns ``{model: reason}`` for the infer tasks that cannot run here.

        A task is unavailable when it says why (:meth:`InferTask.unavailable_reason`): a package, a
        server, a bundle or downloaded weights it needs is missing. Such tasks are still served and
        listed (``info()["unavailable_models"]``); running them fails with PRECONDITION_FAILED and
        the reason.
        """
        result: Dict[str, str] = {}
        for name, task in self._infers.items():
            check = getattr(task, "unavailable_reason", None)
            reason = check() if callable(check) else None
            if reason:
                result[name] = str(reason)
        return result

    def sessions(self) -> Any:
        """MONAI Label's session store; sessions live in the server here, so None."""
        return self._sessions

    def info(self) -> Dict[str, Any]:
        """Returns what clients need to know: name, labels, models, trainers, strategies, datastore status."""
        meta: Dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "version": self.version,
            "labels": self.labels,
            "models": {k: v.info() for k, v in self._infers.items() if v.is_valid()},
            "trainers": {k: v.info() for k, v in self._trainers.items()},
            "strategies": {k: v.info() for k, v in self._strategies.items()},
            "scoring": {k: v.info() for k, v in self._scoring_methods.items()},
            "train_stats": {k: v.stats() for k, v in self._trainers.items()},
            "datastore": self._datastore.status(),
            "unavailable_models": self.unavailable_models(),
        }
        if not self.labels:
            merged: list = []
            for labels in (v.get("labels", []) for v in meta["models"].values()):
                if labels and isinstance(labels, dict):
                    labels = [k for k, _ in sorted(labels.items(), key=lambda item: item[1])]
                for label in labels or []:
                    if label not in merged:
                        merged.append(label)
            meta["labels"] = merged
        return meta

    # -- operations ---------------------------------------------------------------------------------
    def infer(self, request: Dict[str, Any], datastore: Optional[Datastore] = None) -> Dict[str, Any]:
        """Runs a model.

        ``request["image"]`` is a datastore image id (resolved with ``get_image_uri``), an existing
        file path, or an already decoded array / MetaTensor (an interactive session's volume), which
        is passed to the task as it is. The label is saved in the datastore (tag ``label_tag``,
        ``original`` by default) when ``save_label`` is set and the image has an id: the id itself,
        or ``request["image_id"]`` for paths and decoded images. A callable ``request["cancel_check"]``
        lets the task stop early (CANCELLED).

        Args:
            request: ``{"model", "image", "image_id"?, "save_label"?, "label_tag"?, "device"?,
                "cancel_check"?, ...model parameters}``.
            datastore: where to resolve ids and save labels (the app's by default).

        Returns:
            ``{"label": label id or result file, "tag": tag, "file": result file or None,
            "params": result json}``. The result file is a temporary file the caller removes.

        Raises:
            MONAILabelException: INVALID_INPUT without ``model``/``image``, NOT_FOUND for an unknown
                model or image id, and whatever the task raises.
        """
        model = request.get("model")
        task = _lookup(self._infers, model, "model")
        datastore = datastore if datastore else self.datastore()
        request, image_id = self._resolve_infer_request(task, request, datastore)

        if self._infers_threadpool:
            timeout = request.get("timeout", settings.MONAI_LABEL_INFER_TIMEOUT)
            result_file_name, result_json = self._infers_threadpool.submit(task, request).result(timeout)
        else:
            result_file_name, result_json = task(request)

        tag = request.get("label_tag", DefaultLabelTag.ORIGINAL.value)
        tag = tag.value if isinstance(tag, DefaultLabelTag) else tag
        label_id = None
        if isinstance(result_file_name, str) and os.path.exists(result_file_name):
            if request.get("save_label", False) and image_id:
                label_id = datastore.save_label(
                    image_id, result_file_name, tag, {"model": model, "params": result_json}
                )
            else:
                label_id = result_file_name
        if request.get("output") == "dicom_seg" and isinstance(result_file_name, str):
            result_file_name = self._dicom_seg_output(datastore, image_id, request, result_file_name, model)
            if label_id is not None and not request.get("save_label", False):
                label_id = result_file_name
        return {"label": label_id, "tag": tag, "file": result_file_name, "params": result_json}

    def infer_in_memory(
        self,
        request: Dict[str, Any],
        *,
        cancel: Optional[CancelCheck] = None,
        datastore: Optional[Datastore] = None,
    ) -> InferOutcome:
        """Runs a model and returns its mask in memory (no temporary file where the task allows it).

        Unlike :meth:`infer`, nothing is saved in the datastore: the caller decides what to do with
        the mask. The image is resolved as :meth:`infer` does.

        Args:
            request: ``{"model", "image", "image_id"?, "device"?, ...model parameters}``.
            cancel: returns True once the caller is gone; the task stops early with CANCELLED.
            datastore: where to resolve image ids (the app's by default).

        Returns:
            The task's outcome (see :meth:`InferTask.infer_in_memory`).

        Raises:
            MONAILabelException: as :meth:`infer`.
        """
        task = _lookup(self._infers, request.get("model"), "model")
        request, _ = self._resolve_infer_request(task, request, datastore if datastore else self.datastore())
        return task.infer_in_memory(request, cancel=cancel)

    @staticmethod
    def _resolve_infer_request(
        task: InferTask, request: Dict[str, Any], datastore: Datastore
    ) -> Tuple[Dict[str, Any], Optional[str]]:
        """Copies the request and resolves its image: an id to its file, a path as it is; returns the image id.

        Raises:
            MONAILabelException: PRECONDITION_FAILED when the task is unavailable, with the reason.
        """
        check = getattr(task, "unavailable_reason", None)
        reason = check() if callable(check) else None
        if reason:
            raise MONAILabelException(MONAILabelError.PRECONDITION_FAILED, f"model is unavailable: {reason}",
                                      reason="MODEL_UNAVAILABLE")
        request = copy_request(request)
        request["description"] = task.description
        if str(getattr(task.type, "value", task.type)) in ("deepgrow", "deepedit"):
            # MONAI Label's clients always send both click lists; the apps' click transforms index them
            request.setdefault("foreground", [])
            request.setdefault("background", [])
        image = request.get("image")
        if image is None:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, "image is not provided")
        image_id = request.get("image_id") or None
        if isinstance(image, os.PathLike):
            image = request["image"] = os.fspath(image)
        if isinstance(image, str):
            if not os.path.exists(image):
                image_id = image_id or image
                request["image"] = datastore.get_image_uri(image)
            if os.path.isdir(request["image"]):
                logger.info("Input is a Directory; Consider it as DICOM")
        if not image_id:
            request["save_label"] = False
        return request, image_id

    def dicom_seg_output(
        self,
        label: Any,
        image_id: Optional[str] = None,
        image: Optional[str] = None,
        model: str = "",
        datastore: Optional[Datastore] = None,
    ) -> str:
        """Writes a mask as a DICOM SEG file on the image's series (MONAI Label's ``output=dicom_seg``).

        The image must be a DICOM series: a PACS series (``image_id`` of a DICOMweb datastore), or a
        DICOM series folder (``image``). Segments are named after the app's labels; ``model`` goes in as
        the algorithm identification.

        Args:
            label: the mask, as a NIfTI file path or an array on the image's grid.
            image_id: the image's id in the datastore.
            image: the image's path (a DICOM series folder), when it has no id.
            model: the model that made the mask ("" for a person's label).
            datastore: where the image lives (the app's by default).

        Returns:
            A temporary ``.dcm`` file, which the caller removes.

        Raises:
            MONAILabelException: INVALID_INPUT when the image is no DICOM series, or the mask does not
                fit its grid.
        """
        from monailabel.datastore.dicom_seg import label_to_dicom_seg_file, nifti_to_dicom_seg_file

        datastore = datastore if datastore else self.datastore()
        labels = self.labels if isinstance(self.labels, (dict, list, tuple)) else None
        if hasattr(datastore, "series_metadata") and image_id:
            source = datastore.series_metadata(image_id)
        elif image and os.path.isdir(image):
            from monailabel.datastore.dicom_series import read_folder

            source = read_folder(image)
        else:
            raise MONAILabelException(
                MONAILabelError.INVALID_INPUT,
                "output dicom_seg needs a DICOM image: a PACS series or a DICOM series folder",
                field="params.extra.output",
            )
        if isinstance(label, (str, os.PathLike)):
            return nifti_to_dicom_seg_file(os.fspath(label), source, labels, model)
        return label_to_dicom_seg_file(label, source, labels, model)

    def _dicom_seg_output(
        self, datastore: Datastore, image_id: Optional[str], request: Dict[str, Any], result: str, model: str
    ) -> str:
        """Replaces an infer result file by its DICOM SEG (the mask file is removed)."""
        image = request.get("image") if isinstance(request.get("image"), str) else None
        try:
            return self.dicom_seg_output(result, image_id, image, model, datastore)
        finally:
            if os.path.exists(result):
                os.unlink(result)

    def train(self, request: Dict[str, Any]) -> Any:
        """Runs a training task: ``task(request, datastore)``.

        Args:
            request: ``{"model": trainer name, ...training parameters}``.

        Raises:
            MONAILabelException: INVALID_INPUT without ``model``; NOT_FOUND for an unknown trainer.
        """
        task = _lookup(self._trainers, request.get("model"), "trainer")
        result = task(copy_request(request), self.datastore())
        if self._auto_update_scoring:
            self.async_scoring(None)
        return result

    def next_sample(self, request: Dict[str, Any], datastore: Optional[Datastore] = None) -> Dict[str, Any]:
        """Runs an active learning strategy and returns the image to label next.

        The time it was served is recorded in the image's info (``strategy.<name>.ts``), which the
        ``Random`` strategy uses to spread images among annotators.

        Args:
            request: ``{"strategy": name (default "random"), "client_id"?, ...}``.
            datastore: the datastore the strategy sees (the app's by default; the server passes a view
                that hides images other annotators are labeling).

        Returns:
            ``{"id": image id, "path": image uri, ...}``, or ``{}`` when nothing is left to label.

        Raises:
            MONAILabelException: NOT_FOUND for an unknown strategy.
        """
        strategy = request.get("strategy") or "random"
        task = _lookup(self._strategies, strategy, "strategy")
        datastore = datastore if datastore is not None else self.datastore()
        res = task(dict(request, strategy=strategy), datastore)
        if not res:
            return {}
        res = dict(res) if isinstance(res, dict) else {"id": res}
        image_id = res["id"]

        info = copy.deepcopy(datastore.get_image_info(image_id) or {}).get("strategy", {})
        info[strategy] = {"ts": int(time.time()), "client_id": request.get("client_id", "user-xyz")}
        datastore.update_image_info(image_id, {"strategy": info})

        res["path"] = datastore.get_image_uri(image_id)
        if self._auto_update_scoring:
            self.async_scoring(None)
        return res

    def scoring(self, request: Dict[str, Any], datastore: Optional[Datastore] = None) -> Any:
        """Runs a scoring method: ``method(request, datastore)``.

        Args:
            request: ``{"method": name, ...}``.
            datastore: the datastore (the app's by default).

        Raises:
            MONAILabelException: INVALID_INPUT without ``method``; NOT_FOUND for an unknown method.
        """
        task = _lookup(self._scoring_methods, request.get("method"), "scoring method")
        return task(copy_request(request), datastore if datastore else self.datastore())

    def on_init_complete(self) -> None:
        """Called by the server once the app is loaded; starts scoring when auto-update is on."""
        logger.info("App Init - completed")
        if self._auto_update_scoring:
            self.async_scoring(None)

    def on_save_label(self, image_id: str, label_id: str) -> None:
        """Called after a client saved a label.

        Args:
            image_id: the image.
            label_id: the saved label.
        """
        logger.info(f"New label saved for: {image_id} => {label_id}")

    # -- background work ----------------------------------------------------------------------------
    def set_job_submitter(self, submitter: Optional[JobSubmitter]) -> None:
        """Lets the server queue background work the app asks for (``async_scoring``, ``async_training``).

        Args:
            submitter: ``fn(kind, request) -> result`` with kind ``"scoring"`` or ``"train"``.
        """
        self._job_submitter = submitter

    def server_mode(self, mode: bool) -> None:
        """Sets MONAI Label's server-mode flag.

        Args:
            mode: the flag.
        """
        self._server_mode = mode

    def _submit(self, kind: str, names: Sequence[str], params: Optional[Dict[str, Any]], key: str) -> Dict[str, Any]:
        result: Dict[str, Any] = {}
        if self._job_submitter is None:
            logger.debug(f"No job submitter; {kind} for {list(names)} not queued")
            return result
        for n in names:
            request = {key: n}
            request.update(params[n] if params and params.get(n) else {})
            result[n] = self._job_submitter(kind, request)
        return result

    def async_scoring(self, method: Optional[str], params: Optional[Dict[str, Any]] = None) -> Any:
        """Queues scoring methods (all when ``method`` is None) through the server's job submitter.

        Args:
            method: a method name, or None for all.
            params: ``{method: request params}``.
        """
        if not method and not self._scoring_methods:
            return {}
        result = self._submit("scoring", [method] if method else list(self._scoring_methods), params, "method")
        return result.get(method) if method else result

    def async_training(
        self, model: Union[None, str, Sequence[str]], params: Optional[Dict[str, Any]] = None, enqueue: bool = False
    ) -> Any:
        """Queues training tasks (all when ``model`` is None) through the server's job submitter.

        Args:
            model: a trainer name, several, or None for all.
            params: ``{trainer: request params}``.
            enqueue: kept for MONAI Label compatibility (the server's queue decides).
        """
        if not model and not self._trainers:
            return {}
        models = list(self._trainers) if not model else [model] if isinstance(model, str) else list(model)
        result = self._submit("train", models, params, "model")
        return result.get(models[0]) if len(models) == 1 else result

    # -- helpers ------------------------------------------------------------------------------------
    @staticmethod
    def partition_datalist(datalist: Sequence[Any], val_split: float, shuffle: bool = True) -> Tuple[Any, Any]:
        """Splits a datalist into train and validation parts.

        Args:
            datalist: the items.
            val_split: fraction for validation (0 for none).
            shuffle: shuffle before splitting.
        """
        if val_split > 0.0:
            from monai.data import partition_dataset

            train, val = partition_dataset(list(datalist), ratios=[(1 - val_split), val_split], shuffle=shuffle)
            return train, val
        return datalist, []

    @staticmethod
    def download(resources: Optional[Sequence[Tuple[str, str]]]) -> None:
        """Fetches ``(path, url)`` resources that are not present yet.

        Args:
            resources: pairs of destination path and URL (or local path).
        """
        for path, url in resources or []:
            download_file(url, path)

    def cleanup(self) -> None:
        """Releases resources: the infer thread pool and the infer tasks' cached networks."""
        if self._infers_threadpool:
            self._infers_threadpool.shutdown(wait=False, cancel_futures=True)
            self._infers_threadpool = None
        for task in self._infers.values():
            clear = getattr(task, "clear", None)
            if callable(clear):
                clear()

    def cleanup_sessions(self) -> None:
        """MONAI Label's session cleanup; sessions live in the server here, so nothing to do."""
