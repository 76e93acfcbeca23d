"""The inference pipeline and its sessions, free of protobuf: the InferService servicer only converts.

A call is checked whole before it is queued (model, source, clicks, app keys, device, output), then
runs on a model worker through the app's typed interface (:meth:`MONAILabelApp.infer_in_memory`,
cancellation as an argument). The mask comes back in memory, is encoded here in the asked-for
format and hashed before the first byte is sent; ``save_label`` stores it as the image's
``original`` label, never over the human ``final`` one.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional, Set, Tuple

import numpy as np

from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferOutcome, InferTask
from monailabel.transform.writer import PreparedMask, encode_mask, fortran_bytes
from monailabel.utils.others import fastgzip
from monailabel_api.v1 import common_pb2
from monailabel_server.config import ServerConfig
from monailabel_server.convert import DTYPE_BY_ENUM, ENUM_BY_DTYPE, encoding_of_name, jsonable
from monailabel_server.core.infer_request import (
    InferParams,
    OutputSpec,
    check_device,
    check_extra,
    check_label_info,
    check_output,
    check_points,
)
from monailabel_server.core.sessions import Session, SessionStore
from monailabel_server.ingest import Received, receive
from monailabel_server.store import LabelView, Store
from monailabel_server.validation import check_enum, check_id, invalid, shown
from monailabel_server.workers import ModelWorkers

__all__ = ["InferCore", "InferAnswer", "EncodedMask", "decoded_nbytes", "result_dtype_name", "shape_of_file"]

logger = logging.getLogger(__name__)

_LATENCY_KEYS = ("pre", "infer", "invert", "post", "write", "total")
# MONAI's LoadImage decodes to float32, whatever the file's type: the memory a decoded volume holds
_DECODED_ITEMSIZE = 4


@dataclass
class EncodedMask:
    """A mask as it is sent: its bytes and what they are.

    Attributes:
        data: the bytes.
        encoding: an ``Encoding`` value (0 for a result file of another kind, e.g. polygons).
        extension: the file extension the bytes are (``.nii.gz`` ...).
        shape: array shape, for NIfTI and raw voxels.
        dtype: element type, for NIfTI and raw voxels.
        affine: voxel-to-world (4x4), for NIfTI and raw voxels.
    """

    data: bytes
    encoding: int
    extension: str
    shape: Tuple[int, ...] = ()
    dtype: Optional[np.dtype] = None
    affine: Optional[np.ndarray] = None


@dataclass
class InferAnswer:
    """The outcome of an infer call.

    Attributes:
        result: the task's result dict, JSON-able.
        labels: label name to voxel value.
        latency: seconds per stage (``pre``, ``infer``, ``invert``, ``post``, ``write``, ``total``, ``queue``).
        mask: the mask, unless there is none or it was not asked for.
        saved_label: the ``original`` label saved, when asked.
        chunk_size: bytes per chunk to send.
        checksum: the checksum the mask's header carries (``OutputOptions.checksum``).
    """

    result: Dict[str, Any]
    labels: Dict[str, int]
    latency: Dict[str, float]
    mask: Optional[EncodedMask] = None
    saved_label: Optional[LabelView] = None
    chunk_size: int = 1 << 20
    checksum: str = ""


def decoded_nbytes(shape: Tuple[int, ...]) -> int:
    """Memory a volume of this shape holds once decoded (float32, as MONAI's LoadImage gives it)."""
    return int(np.prod([int(s) for s in shape], dtype=np.float64)) * _DECODED_ITEMSIZE if shape else 0


def shape_of_file(path: str) -> Optional[Tuple[int, ...]]:
    """Reads a volume's shape from its header only (NIfTI, NRRD, 2D images); None when it cannot tell."""
    lower = path.lower()
    try:
        if lower.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            header: Any = nib.load(path).header
            return tuple(int(s) for s in header.get_data_shape())
        if lower.endswith(".nrrd"):
            import nrrd

            return tuple(int(s) for s in nrrd.read_header(path)["sizes"])
        if lower.endswith((".png", ".jpg", ".jpeg", ".tif", ".tiff")):
            from PIL import Image

            with Image.open(path) as im:  # reads the header only
                width, height = im.size
                bands = len(im.getbands())
            return (width, height, bands) if bands > 1 else (width, height)
    except Exception:  # noqa: BLE001 - an unreadable header is for the decoder to report
        return None
    return None


def _decode(path: str) -> Any:
    """Decodes a volume once, as a MetaTensor carrying its affine (MONAI's LoadImage)."""
    from monai.transforms.io.array import LoadImage

    fastgzip.install_nibabel_reader()  # .nii.gz inflates through ISA-L when it is installed

    # 2D TIFF needs Pillow's reader named: MONAI's default order tries the DICOM reader on it
    reader = "PILReader" if path.lower().endswith((".tif", ".tiff")) else None
    try:
        return LoadImage(image_only=True, reader=reader)(path)
    except Exception as exc:  # MONAI raises several types for unreadable files
        raise MONAILabelException(MONAILabelError.INVALID_INPUT, f"cannot decode the volume: {exc}") from exc


def _nifti_affine(affine: Optional[np.ndarray]) -> np.ndarray:
    """The 4x4 affine NIfTI stores for a mask's affine (2D affines are embedded, as the writer does)."""
    out = np.eye(4)
    if affine is not None:
        n = affine.shape[0] - 1
        out[:n, :n] = affine[:n, :n]
        out[:n, 3] = affine[:n, n]
    return out


class InferCore:
    """Runs the app's infer tasks on datastore images, streamed volumes and sessions.

    Args:
        app: the app.
        config: server settings (volume, session and chunk limits).
        workers: the model workers.
        store: the datastore adapter (one over the app's datastore by default).
        volumes: takes a complete volume upload by id as a checked file (``DatastoreCore.take_volume``);
            None when this server has no unary uploads.
    """

    def __init__(self, app: MONAILabelApp, config: ServerConfig, workers: ModelWorkers,
                 store: Optional[Store] = None, volumes: Optional[Callable[[str, str], Received]] = None) -> None:
        fastgzip.install_nibabel_reader()  # the app's LoadImaged reads .nii.gz through ISA-L too
        self.app = app
        self.volumes = volumes
        self.config = config
        self.workers = workers
        self.store = store if store is not None else Store(app.datastore())
        self.sessions = SessionStore(config.max_sessions, config.max_session_bytes, config.session_ttl_s,
                                     config.max_session_ttl_s, device=config.session_device)
        self._host_input_models: Set[str] = set()  # models whose transforms take no GPU copy of a session

    # -- tasks ------------------------------------------------------------------------------------
    def task(self, model: str, field_name: str = "model") -> InferTask:
        """Returns the infer task named ``model``.

        Raises:
            MONAILabelException: INVALID_INPUT for an empty name, NOT_FOUND listing the models.
        """
        if not model:
            raise invalid(field_name, f"{field_name} is required: the name of an infer task")
        infers = self.app.infer_tasks()
        if model not in infers:
            names = ", ".join(sorted(infers)) or "none"
            raise MONAILabelException(MONAILabelError.NOT_FOUND,
                                      f"model {shown(model)} does not exist; models: {names}",
                                      resource=("model", model[:128]))
        return infers[model]

    # -- inference --------------------------------------------------------------------------------
    def infer_image(self, model: str, image_id: str, params: InferParams, output: OutputSpec,
                    cancel: Callable[[], bool], input_label_tag: str = "") -> InferAnswer:
        """Runs a model on a datastore image (with one of its labels as the input label, when a tag is given)."""
        task = self.task(model)
        check_id(image_id, "image_id")
        path = self.store.image(image_id, compute_sha256=False).path  # NOT_FOUND before queueing
        label = self._input_label(image_id, input_label_tag)
        return self._run(task, model, path, image_id, shape_of_file(path), params, output, cancel, label)

    def infer_session(self, model: str, session_id: str, params: InferParams, output: OutputSpec,
                      cancel: Callable[[], bool], input_label_tag: str = "") -> InferAnswer:
        """Runs a model on a session's decoded volume."""
        task = self.task(model)
        session = self.sessions.get(session_id)
        if input_label_tag and not session.image_id:
            raise invalid("input_label_tag", "input_label_tag needs a session made from a datastore image; send "
                                             "the label with InferVolume instead")
        label = self._input_label(session.image_id, input_label_tag)
        return self._run(task, model, session, session.image_id, session.spatial_shape, params, output, cancel,
                         label)

    def _infer(self, request: Dict[str, Any], cancel: Callable[[], bool],
               session: Optional[Session] = None) -> Tuple[InferOutcome, float]:
        """Runs the task on a model worker; on a session, over its own view (or device copy) of the volume.

        A session on the GPU hands the call a device copy, taken on the worker (a queued call holds no
        device memory). When the task's transforms fail on it (an app transform that takes numpy
        arrays only), the call runs again on a host copy, and so does every later call of that model.
        """
        if session is None:
            return self.workers.run(lambda: self.app.infer_in_memory(request, cancel=cancel), cancel)
        model, device = str(request.get("model", "")), str(request.get("device") or "")
        on_host = session.device == "cpu" or device == "cpu" or model in self._host_input_models

        def run(where: str) -> InferOutcome:
            request["image"] = session.shared(where)
            return self.app.infer_in_memory(request, cancel=cancel)

        try:
            return self.workers.run(lambda: run("cpu" if on_host else device), cancel)
        except MONAILabelException as e:
            if on_host or e.error != MONAILabelError.TRANSFORM_ERROR:
                raise
            logger.warning("model %s: its transforms failed on the session's GPU copy (%s); running on a host copy",
                           model, e.msg)
        answer = self.workers.run(lambda: run("cpu"), cancel)
        self._host_input_models.add(model)  # the host copy worked: skip the device copy from now on
        return answer

    def session_mask(self, model: str, session_id: str, params: InferParams,
                     cancel: Callable[[], bool]) -> Tuple[np.ndarray, Dict[str, int], Dict[str, float]]:
        """Runs a model on a session and returns its mask as an array, encoded in no format (Interact).

        Args:
            model: the infer task.
            session_id: the session.
            params: the click's parameters.
            cancel: the click's cancellation.

        Returns:
            ``(mask, labels, latency)``: the mask spatial axes first (channel first for channels).

        Raises:
            MONAILabelException: as :meth:`infer_session`; PRECONDITION_FAILED for a task that
                gives no mask.
        """
        task = self.task(model)
        session = self.sessions.get(session_id)
        request = self._request(task, model, None, session.image_id, session.spatial_shape, params, ".nii")
        outcome, queued = self._infer(request, cancel, session)
        try:
            latencies = jsonable(outcome.result).get("latencies") or {}
            latency = {k: float(latencies.get(k, 0.0) or 0.0) for k in _LATENCY_KEYS}
            latency["queue"] = queued
            if outcome.mask is not None:
                array = outcome.mask.array
            elif outcome.file and encoding_of_name(outcome.file) in (common_pb2.ENCODING_NIFTI,
                                                                      common_pb2.ENCODING_NIFTI_GZ):
                import nibabel as nib

                loaded: Any = nib.load(str(outcome.file))
                array = np.asanyarray(loaded.dataobj)
            else:
                raise MONAILabelException(MONAILabelError.PRECONDITION_FAILED,
                                          f"model {shown(model)} gives no volume mask; Interact needs one",
                                          reason="NO_MASK")
        finally:
            if outcome.file and _is_temporary(outcome.file):
                Path(outcome.file).unlink(missing_ok=True)
        return array, task.label_map(), latency

    def infer_volume(self, model: str, content: common_pb2.ContentHeader, chunks: Iterable[common_pb2.Chunk],
                     params: InferParams, output: OutputSpec, cancel: Callable[[], bool],
                     label_content: Optional[common_pb2.ContentHeader] = None,
                     label_chunks: Optional[Callable[[], Iterable[common_pb2.Chunk]]] = None) -> InferAnswer:
        """Receives a volume (and an input label after it) and runs a model on it; both are removed afterwards.

        Args:
            label_content: the input label's header, when the call carries one.
            label_chunks: returns the label's chunks, once the volume's have all been read.
        """
        task = self.task(model, "header.model")
        received = receive(content, chunks, self.store.staging_dir(), None, self.config.max_volume_bytes,
                           want_sha256=False)
        label = None
        try:
            shape = self._checked_shape(str(received.path), received.volume.shape, "header.content")
            if output.save_label:
                raise invalid("header.output.save_label", "save_label needs a datastore image")
            if label_content is not None and label_chunks is not None:
                label = receive(label_content, label_chunks(), self.store.staging_dir(), None,
                                self.config.max_volume_bytes, want_sha256=False)
                label_shape = tuple(label.volume.shape) or shape_of_file(str(label.path)) or ()
                _check_same_grid(label_shape, shape, "header.label")
            return self._run(task, model, str(received.path), "", shape, params, output, cancel,
                             str(label.path) if label is not None else None)
        finally:
            received.discard()
            if label is not None:
                label.discard()

    def _input_label(self, image_id: str, tag: str) -> Optional[str]:
        """The file of the image's label ``tag``, handed to the task as its input label; None without a tag."""
        if not tag:
            return None
        check_id(tag, "input_label_tag")
        return self.store.label(image_id, tag).path  # NOT_FOUND names the label

    def infer_upload(self, model: str, upload_id: str, params: InferParams, output: OutputSpec,
                     cancel: Callable[[], bool]) -> InferAnswer:
        """Runs a model on a volume upload (the unary calls' InferVolume); the upload is consumed."""
        task = self.task(model)
        received = self._take(upload_id, "upload_id")
        try:
            shape = self._checked_shape(str(received.path), received.volume.shape, "upload_id")
            return self._run(task, model, str(received.path), "", shape, params, output, cancel)
        finally:
            received.discard()

    def _take(self, upload_id: str, field_name: str) -> Received:
        if self.volumes is None:
            raise MONAILabelException(MONAILabelError.UNIMPLEMENTED, "this server takes no volume uploads")
        return self.volumes(upload_id, field_name)

    def _checked_shape(self, path: str, shape: Tuple[int, ...], field_name: str) -> Optional[Tuple[int, ...]]:
        """The volume's shape, once its decoded size is known to fit ``max_volume_bytes``."""
        shape = tuple(shape) or shape_of_file(path) or ()
        needed = decoded_nbytes(shape)
        if needed > self.config.max_volume_bytes:
            raise MONAILabelException(
                MONAILabelError.RESOURCE_EXHAUSTED,
                f"the volume decodes to {needed} bytes ({list(shape)} voxels); this server's limit is "
                f"{self.config.max_volume_bytes}", field=field_name, reason="VOLUME_TOO_LARGE")
        return shape or None

    def _request(self, task: InferTask, model: str, image: Any, image_id: str, shape: Optional[Tuple[int, ...]],
                 params: InferParams, extension: str) -> Dict[str, Any]:
        """Builds MONAI Label's request dict from checked, typed parameters."""
        p = params.field_prefix
        dimension = int(task.dimension)
        request: Dict[str, Any] = check_extra(params.extra, f"{p}.extra", task, shape)
        request.update(model=model, image=image, result_extension=extension)
        if image_id:
            request["image_id"] = image_id
        if params.foreground:
            request["foreground"] = check_points(params.foreground, f"{p}.foreground", dimension, shape)
        if params.background:
            request["background"] = check_points(params.background, f"{p}.background", dimension, shape)
        if params.label_info:
            entries = check_label_info(params.label_info, f"{p}.label_info")
            request["label_info"] = [{"name": name, "idx": index} for name, index in entries]
        if params.device:
            request["device"] = check_device(params.device, f"{p}.device")
        if params.result_dtype:
            request["result_dtype"] = params.result_dtype
        return request

    def _run(self, task: InferTask, model: str, source: Any, image_id: str, shape: Optional[Tuple[int, ...]],
             params: InferParams, output: OutputSpec, cancel: Callable[[], bool],
             label: Optional[str] = None) -> InferAnswer:
        """Runs the task on ``source`` (a file path, or a :class:`Session` whose volume it shares)."""
        encoding, extension, chunk = check_output(output, task.dimension == 2, self.config.chunk_size)
        if output.save_label and not image_id:
            raise invalid(f"{output.field_prefix}.save_label", "save_label needs a datastore image")
        session = source if isinstance(source, Session) else None
        request = self._request(task, model, None if session else source, image_id, shape, params, extension)
        if label is not None:
            request["label"] = label  # MONAI Label's input label: a file its transforms load, as REST saved it
        started = time.perf_counter()
        outcome, queued = self._infer(request, cancel, session)
        image = request["image"]
        try:
            result = jsonable(outcome.result)
            latencies = result.get("latencies") or {}
            latency = {k: float(latencies.get(k, 0.0) or 0.0) for k in _LATENCY_KEYS}
            latency["queue"] = queued
            answer = InferAnswer(result, task.label_map(), latency, chunk_size=chunk, checksum=output.checksum)
            mask = None
            if request.get("output") == "dicom_seg" and not output.skip_mask:
                # MONAI Label's output=dicom_seg: the mask as a DICOM SEG on the image's series
                answer.mask = self._dicom_seg(outcome, image_id, image, model)
                if not output.save_label:
                    return answer
            if not output.skip_mask or output.save_label:
                encode_started = time.perf_counter()
                mask = self._encode(outcome, encoding, extension)
                encoding_s = time.perf_counter() - encode_started  # part of writing the mask
                latency["write"] += encoding_s
                latency["total"] += encoding_s
            if output.save_label and mask is not None:
                answer.saved_label = self._save_original(image_id, model, outcome, mask, result)
            if answer.mask is None:
                answer.mask = None if output.skip_mask else mask
        finally:
            if outcome.file and _is_temporary(outcome.file):
                Path(outcome.file).unlink(missing_ok=True)
        logger.info("infer %s: %.3f s (model %.3f s)", model, time.perf_counter() - started, latency["infer"])
        return answer

    # -- masks ------------------------------------------------------------------------------------
    def _dicom_seg(self, outcome: InferOutcome, image_id: str, image: Any, model: str) -> EncodedMask:
        """The task's mask as a DICOM SEG file's bytes (the image must be a DICOM series)."""
        label: Any = outcome.mask.array if outcome.mask is not None else outcome.file
        path = self.app.dicom_seg_output(label, image_id=image_id or None,
                                         image=image if isinstance(image, str) else None, model=model)
        try:
            data = Path(path).read_bytes()
        finally:
            Path(path).unlink(missing_ok=True)
        return EncodedMask(data, 0, ".dcm")

    def _encode(self, outcome: InferOutcome, encoding: int, extension: str) -> Optional[EncodedMask]:
        """Encodes the task's mask (in memory, or its result file) in the asked-for encoding."""
        if outcome.mask is not None:
            return _encode_prepared(outcome.mask, encoding, extension)
        if not outcome.file:
            return None
        path = Path(outcome.file)
        file_encoding = encoding_of_name(path.name)
        if encoding == common_pb2.ENCODING_RAW and file_encoding in (common_pb2.ENCODING_NIFTI,
                                                                      common_pb2.ENCODING_NIFTI_GZ):
            import nibabel as nib

            img: Any = nib.load(str(path))
            array = np.asanyarray(img.dataobj)
            return _encode_prepared(PreparedMask(array, np.asarray(img.affine), ".nii"), encoding, ".nii")
        data = path.read_bytes()
        name = path.name.lower()
        ext = ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()
        mask = EncodedMask(data, file_encoding if file_encoding != common_pb2.ENCODING_DICOM_ZIP else 0, ext)
        if file_encoding in (common_pb2.ENCODING_NIFTI, common_pb2.ENCODING_NIFTI_GZ):
            import nibabel as nib

            header_img: Any = nib.load(str(path))
            img = header_img
            mask.shape = tuple(int(s) for s in img.header.get_data_shape())
            mask.dtype = img.header.get_data_dtype().newbyteorder("=")
            mask.affine = np.asarray(img.affine)
        return mask

    def _save_original(self, image_id: str, model: str, outcome: InferOutcome, mask: EncodedMask,
                       result: Dict[str, Any]) -> LabelView:
        """Saves the mask as the image's ``original`` label (model output; never the human ``final``)."""
        if mask.encoding == common_pb2.ENCODING_RAW:
            assert outcome.mask is not None or outcome.file
            prepared = outcome.mask if outcome.mask is not None else None
            if prepared is None:
                import nibabel as nib

                img: Any = nib.load(str(outcome.file))
                prepared = PreparedMask(np.asanyarray(img.dataobj), np.asarray(img.affine), ".nii.gz")
            mask = _encode_prepared(prepared, common_pb2.ENCODING_NIFTI_GZ, ".nii.gz")
        staged = self.store.staging_dir() / f"{uuid.uuid4().hex}{mask.extension}"
        staged.write_bytes(mask.data)
        try:
            info = {"model": model, "params": result}
            return self.store.save_label(image_id, staged, "original", info, "")  # the store hashes the file
        finally:
            staged.unlink(missing_ok=True)

    # -- sessions ---------------------------------------------------------------------------------
    def create_session(self, ttl_seconds: int, content: Optional[common_pb2.ContentHeader], image_id: str,
                       chunks: Iterable[common_pb2.Chunk], upload_id: str = "",
                       field_prefix: str = "header.") -> Session:
        """Decodes a volume (streamed, or a datastore image) into a new session.

        The decoded size is checked against ``max_volume_bytes`` and reserved in the sessions'
        budget before the volume is decoded, so a small compressed file cannot make the server hold
        a large volume.

        Raises:
            MONAILabelException: RESOURCE_EXHAUSTED over a limit; INVALID_INPUT for bad input.
        """
        ttl = self.sessions.ttl_for(ttl_seconds)
        if image_id:
            path = self.store.image(check_id(image_id, f"{field_prefix}image_id"), compute_sha256=False).path
            shape = self._checked_shape(path, (), f"{field_prefix}image_id")
            with self.sessions.reserve(decoded_nbytes(shape or ())) as reservation:
                image = _decode(path)
                return self._add(image, reservation, ttl, image_id)
        source = f"{field_prefix}upload_id" if upload_id else f"{field_prefix}content"
        if upload_id:
            received = self._take(upload_id, source)
        elif content is None:
            raise invalid(f"{field_prefix}source", "a session needs a volume: content, image_id or upload_id")
        else:
            received = receive(content, chunks, self.store.staging_dir(), None, self.config.max_volume_bytes,
                           want_sha256=False)
        try:
            shape = self._checked_shape(str(received.path), received.volume.shape, source)
            with self.sessions.reserve(decoded_nbytes(shape or ())) as reservation:
                image = _decode(str(received.path))
                return self._add(image, reservation, ttl, "")
        finally:
            received.discard()

    def session_image(self, session_id: str, encoding: int) -> EncodedMask:
        """A session's decoded volume, encoded (MONAI Label's session ``image=true``); extends its expiry.

        Args:
            session_id: the session.
            encoding: ENCODING_NIFTI_GZ (0 as well), ENCODING_NIFTI or ENCODING_RAW; the voxels are float32.

        Raises:
            MONAILabelException: NOT_FOUND for an unknown session, INVALID_INPUT for another encoding.
        """
        names: Dict[int, str] = {common_pb2.ENCODING_NIFTI: "ENCODING_NIFTI",
                                 common_pb2.ENCODING_NIFTI_GZ: "ENCODING_NIFTI_GZ",
                                 common_pb2.ENCODING_RAW: "ENCODING_RAW"}
        check_enum(encoding, "encoding", list(names), names=names)
        session = self.sessions.get(session_id)
        with session.lock:
            array = np.asarray(session.image.detach().cpu().numpy(), dtype=np.float32)
            affine = getattr(session.image, "affine", None)
        affine_np = _nifti_affine(np.asarray(affine, dtype=np.float64) if affine is not None else None)
        shape = tuple(int(s) for s in array.shape)
        if encoding == common_pb2.ENCODING_RAW:
            data = fortran_bytes(array)
            return EncodedMask(data, encoding, "", shape, array.dtype, affine_np)
        import gzip

        import nibabel as nib

        data = nib.Nifti1Image(array, affine_np).to_bytes()
        extension = ".nii"
        if encoding != common_pb2.ENCODING_NIFTI:
            encoding, extension = common_pb2.ENCODING_NIFTI_GZ, ".nii.gz"
            data = gzip.compress(data, compresslevel=1, mtime=0)  # speed over size: it is sent at once
        return EncodedMask(data, encoding, extension, shape, array.dtype, affine_np)

    def _add(self, image: Any, reservation: Any, ttl: int, image_id: str) -> Session:
        nbytes = int(image.numel() * image.element_size())
        if nbytes > reservation.nbytes:  # the header did not tell (or told less): check what was decoded
            if nbytes > self.config.max_volume_bytes:
                raise MONAILabelException(MONAILabelError.RESOURCE_EXHAUSTED,
                                          f"the volume decodes to {nbytes} bytes; this server's limit is "
                                          f"{self.config.max_volume_bytes}", reason="VOLUME_TOO_LARGE")
            reservation.release()
            reservation = self.sessions.reserve(nbytes)
        try:
            session = self.sessions.add(image, reservation, ttl, image_id)
        finally:
            reservation.release()
        logger.info("session %s: %s volume of %d bytes on %s", session.session_id, tuple(image.shape), nbytes,
                    session.device)
        return session


def _check_same_grid(label_shape: Tuple[int, ...], shape: Optional[Tuple[int, ...]], field_name: str) -> None:
    """An input label must have the volume's spatial shape (a trailing channel of one aside)."""
    if not label_shape or not shape:
        return
    spatial = tuple(label_shape[: len(shape)])
    extra = tuple(label_shape[len(shape):])
    if spatial != tuple(shape) or any(int(s) != 1 for s in extra):
        raise invalid(field_name, f"{field_name}: the label's shape {list(label_shape)} is not the volume's "
                                  f"{list(shape)}")


def _encode_prepared(mask: PreparedMask, encoding: int, extension: str) -> EncodedMask:
    """Encodes an in-memory mask; hashes the bytes."""
    if encoding == common_pb2.ENCODING_RAW:
        array = mask.nifti_array()
        dtype = array.dtype.newbyteorder("=")
        if dtype not in ENUM_BY_DTYPE:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT,
                                      f"a {dtype.name} mask cannot travel as raw voxels; ask for NIfTI",
                                      field="output.encoding")
        data = fortran_bytes(np.asarray(array, dtype=dtype))
        return EncodedMask(data, encoding, "", tuple(int(s) for s in array.shape),
                           dtype, _nifti_affine(mask.affine))
    data = encode_mask(mask, extension)
    encoded = EncodedMask(data, encoding, extension)
    if encoding in (common_pb2.ENCODING_NIFTI, common_pb2.ENCODING_NIFTI_GZ):
        array = mask.nifti_array()
        encoded.shape = tuple(int(s) for s in array.shape)
        encoded.dtype = array.dtype.newbyteorder("=")
        encoded.affine = _nifti_affine(mask.affine)
    return encoded


def _is_temporary(file: str) -> bool:
    return os.path.abspath(file).startswith(os.path.abspath(tempfile.gettempdir()) + os.sep)


def result_dtype_name(value: int, field_name: str) -> str:
    """The numpy name of a ``DataType`` enum value; empty for unspecified.

    Raises:
        MONAILabelException: INVALID_INPUT for a value this server does not know.
    """
    check_enum(value, field_name, list(DTYPE_BY_ENUM), names={k: v.name for k, v in DTYPE_BY_ENUM.items()})
    return DTYPE_BY_ENUM[value].name if value else ""
