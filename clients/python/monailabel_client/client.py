"""A typed client: context manager, chunked and resumable transfers, numpy and NIfTI conveniences.

Example::

    with MonaiLabelClient("127.0.0.1:50051") as client:
        client.upload_image("ct_001", "ct_001.nii.gz")
        out = client.infer("segmentation", image_id="ct_001")
        out.save("ct_001_seg.nii.gz")
"""

from __future__ import annotations

import hashlib
import io
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    BinaryIO,
    Callable,
    Dict,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
    cast,
)

import grpc
import numpy as np
from google.protobuf import duration_pb2, json_format, struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from monailabel_api.buffers import FilledBytes
from monailabel_api.digests import SHA256, XXH3_128, Digests, mismatch
from monailabel_api.files import reserve
from monailabel_api.v1 import (
    app_pb2,
    app_pb2_grpc,
    common_pb2,
    datastore_pb2,
    datastore_pb2_grpc,
    infer_pb2,
    infer_pb2_grpc,
    job_pb2,
    train_pb2,
    train_pb2_grpc,
)
from monailabel_api.wire import (
    DTYPE_BY_ENUM,
    ENUM_BY_DTYPE,
    affine_of_geometry,
    decode_chunk_message,
    encoding_of_name,
    geometry_of_affine,
    read_chunk_request,
    serialize_request,
)
from monailabel_client.affinity import with_affinity
from monailabel_client.credentials import TOKEN_ENV, TokenSource, secure_channel, with_token
from monailabel_client.interact import Interaction
from monailabel_client.jobs import JobCalls
from monailabel_client.parity import ParityCalls
from monailabel_client.strategy import StrategyCalls

if TYPE_CHECKING:
    from nibabel.spatialimages import SpatialImage

__all__ = ["MonaiLabelClient", "InferOutput", "UploadError", "ChecksumError"]

MIB = 1 << 20
PathLike = Union[str, os.PathLike[str]]
_Response = TypeVar("_Response")

_RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
}


class UploadError(RuntimeError):
    """An upload failed after its retries."""


class ChecksumError(RuntimeError):
    """Received bytes do not match the size or checksum the server announced for them."""


def encoding_of(name: str) -> int:
    """Returns the encoding a file name implies (NIfTI, NIfTI gzip, NRRD, 2D image).

    Raises:
        ValueError: the name has no known extension.
    """
    encoding = encoding_of_name(name)
    if encoding in (common_pb2.ENCODING_UNSPECIFIED, common_pb2.ENCODING_DICOM_ZIP):
        raise ValueError(f"cannot tell the encoding of {name!r}; pass encoding=")
    return encoding


class _BackgroundHash:
    """SHA-256 on its own thread: hashlib releases the GIL on large buffers, so hashing a download
    overlaps with receiving it instead of adding to it."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=64)
        self._thread = threading.Thread(target=self._run, daemon=True, name="download-hasher")
        self._thread.start()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            self._digest.update(data)

    def update(self, data: Any) -> None:
        self._queue.put(data)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def hexdigest(self) -> str:
        self.close()
        return self._digest.hexdigest()


def _stream_digest(header: common_pb2.ContentHeader) -> Tuple[Any, str]:
    """A hasher for a download by the fastest checksum its header announces, and the value expected."""
    if header.xxh3_128:
        return Digests([XXH3_128]), header.xxh3_128
    if header.sha256:
        return _BackgroundHash(), header.sha256
    return None, ""


def _check_download(header: Optional[common_pb2.ContentHeader], received: int, digest: Any, expected: str) -> None:
    """Raises UploadError unless a download received every byte its header announced, with its checksum."""
    if header is None:
        raise UploadError("the download ended without a header")
    if received != header.total_size:
        raise UploadError(f"the download ended after {received} of the {header.total_size} bytes announced")
    if digest is not None:
        actual = digest.hexdigest(XXH3_128) if isinstance(digest, Digests) else digest.hexdigest()
        if actual != expected:
            raise UploadError("downloaded bytes do not match the server's checksum")


def _chunk_decoder(cls: Any) -> Callable[[bytes], Any]:
    return lambda raw: decode_chunk_message(raw, cls.FromString)


def _struct(value: Optional[Dict[str, Any]]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    if value:
        s.update(value)
    return s


@dataclass
class InferOutput:
    """The answer of an infer call.

    Attributes:
        result: the task's result dict (latencies, label names, app keys).
        labels: label name to voxel value.
        latency: seconds per stage.
        header: what the mask bytes are (None when there is no mask).
        data: the mask bytes.
    """

    result: Dict[str, Any]
    labels: Dict[str, int]
    latency: infer_pb2.Latency
    header: Optional[common_pb2.ContentHeader]
    data: bytes

    def save(self, path: PathLike) -> Path:
        """Writes the mask file as received (raw voxels are written as NIfTI)."""
        path = Path(path)
        if self.header is not None and self.header.encoding == common_pb2.ENCODING_RAW:
            import nibabel as nib

            array, affine = self.array_and_affine()
            nib.save(nib.Nifti1Image(array, affine), str(path))
        else:
            path.write_bytes(self.data)
        return path

    def array_and_affine(self) -> tuple[np.ndarray, np.ndarray]:
        """Returns the mask as an array with its affine."""
        if self.header is None:
            raise ValueError("the answer has no mask")
        if self.header.encoding == common_pb2.ENCODING_RAW:
            shape = tuple(self.header.shape)
            array = np.frombuffer(self.data, dtype=DTYPE_BY_ENUM[self.header.data_type]).reshape(shape, order="F")
            return array, affine_of_geometry(self.header.geometry, min(len(shape), 3))
        suffix = self.header.file_extension or ".nii.gz"
        import tempfile

        import nibabel as nib

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"mask{suffix}"
            path.write_bytes(self.data)
            if suffix in (".png", ".jpg", ".jpeg", ".tif", ".tiff"):  # 2D masks, indexed (x, y) as MONAI's
                from PIL import Image

                with Image.open(path) as im:
                    array = np.asarray(im)
                array = np.moveaxis(array, -1, 0).transpose(0, 2, 1) if array.ndim == 3 else array.T
                return np.ascontiguousarray(array), np.eye(3)
            if suffix == ".nrrd":
                import nrrd

                array, _ = nrrd.read(str(path))
                return array, np.eye(4)
            img = cast("SpatialImage", nib.load(str(path)))  # a NIfTI image
            return np.asarray(img.dataobj), np.asarray(img.affine)

    def array(self) -> np.ndarray:
        """Returns the mask as an array."""
        return self.array_and_affine()[0]


class MonaiLabelClient(StrategyCalls, JobCalls, ParityCalls):
    """Calls a MONAI Label gRPC server.

    Strategy, next-sample and start-scoring calls come from :class:`~monailabel_client.strategy.StrategyCalls`;
    the job calls for every kind of job (get, list, cancel, watch) from :class:`~monailabel_client.jobs.JobCalls`;
    model weights, batch inference, train/score all, the dataset, logs, GPUs, session images and input
    labels from :class:`~monailabel_client.parity.ParityCalls`.

    Args:
        address: ``host:port``.
        timeout: default deadline of unary calls, in seconds (None for none).
        chunk_size: bytes per uploaded chunk.
        progress: show progress on transfers over 16 MiB (a bar on a terminal, plain lines on a pipe).
        channel: a channel to use instead of dialing ``address``.
        retries: times a broken upload resumes before UploadError.
        token: bearer token sent with every call, or a function returning the current one; None reads
            ``MONAI_LABEL_TOKEN`` from the environment, ``""`` sends none.
        tls: dial with TLS (implied by ``ca_file``, ``cert_file``); without ``ca_file`` the system's roots
            verify the server.
        ca_file: PEM CA certificates that sign the server's certificate.
        cert_file: PEM client certificate chain (mTLS), with ``key_file``.
        key_file: PEM private key of ``cert_file``.
        server_name: name the server's certificate must carry, when it is not the address's host.
    """

    def __init__(
        self,
        address: str = "127.0.0.1:50051",
        *,
        timeout: Optional[float] = 60.0,
        chunk_size: int = MIB,
        progress: bool = False,
        channel: Optional[grpc.Channel] = None,
        retries: int = 3,
        token: Optional[TokenSource] = None,
        tls: bool = False,
        ca_file: Optional[PathLike] = None,
        cert_file: Optional[PathLike] = None,
        key_file: Optional[PathLike] = None,
        server_name: Optional[str] = None,
    ) -> None:
        if channel is None and (tls or ca_file or cert_file or key_file):
            channel = secure_channel(
                address, ca_file=ca_file, cert_file=cert_file, key_file=key_file, server_name=server_name
            )
        token = os.environ.get(TOKEN_ENV) if token is None else token
        # one affinity key per client: behind a load balancer its calls (and sessions) stay on one replica
        self.channel = with_affinity(with_token(channel or grpc.insecure_channel(address), token))
        self.timeout = timeout
        self.chunk_size = chunk_size
        self.progress = progress
        self.retries = retries
        self._digest_name: Optional[str] = None  # the checksum uploads announce, once the server said
        self.app = app_pb2_grpc.AppServiceStub(self.channel)
        self.datastore = datastore_pb2_grpc.DatastoreServiceStub(self.channel)
        self.infers = infer_pb2_grpc.InferServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        # The streaming uploads send chunks pre-serialized (read_chunk_request reads a file straight
        # into the message: one copy of the data instead of three); headers still go through protobuf.
        ch = self.channel
        self._upload_image = ch.stream_unary(
            "/monailabel.v1.DatastoreService/UploadImage",
            serialize_request,
            datastore_pb2.UploadImageResponse.FromString,
        )
        self._save_label = ch.stream_unary(
            "/monailabel.v1.DatastoreService/SaveLabel", serialize_request, datastore_pb2.SaveLabelResponse.FromString
        )
        self._infer_volume = ch.stream_stream(
            "/monailabel.v1.InferService/InferVolume", serialize_request, _chunk_decoder(infer_pb2.InferVolumeResponse)
        )
        # Streamed answers decode their chunks as views of the received buffers (no copies).
        self._download_image = ch.unary_stream(
            "/monailabel.v1.DatastoreService/DownloadImage",
            datastore_pb2.DownloadImageRequest.SerializeToString,
            _chunk_decoder(datastore_pb2.DownloadImageResponse),
        )
        self._download_label = ch.unary_stream(
            "/monailabel.v1.DatastoreService/DownloadLabel",
            datastore_pb2.DownloadLabelRequest.SerializeToString,
            _chunk_decoder(datastore_pb2.DownloadLabelResponse),
        )
        self._infer = ch.unary_stream(
            "/monailabel.v1.InferService/Infer",
            infer_pb2.InferRequest.SerializeToString,
            _chunk_decoder(infer_pb2.InferResponse),
        )
        self._create_session = ch.stream_unary(
            "/monailabel.v1.InferService/CreateSession",
            serialize_request,
            infer_pb2.CreateSessionResponse.FromString,
        )
        self._interact = ch.stream_stream(
            "/monailabel.v1.InferService/Interact",
            infer_pb2.InteractRequest.SerializeToString,
            _chunk_decoder(infer_pb2.InteractResponse),
        )
        self.train = train_pb2_grpc.TrainServiceStub(self.channel)

    def __enter__(self) -> MonaiLabelClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the channel."""
        self.channel.close()

    # -- app and health ---------------------------------------------------------------------------
    def wait_ready(self, timeout: float = 30.0) -> None:
        """Waits until the server reports SERVING."""
        grpc.channel_ready_future(self.channel).result(timeout=timeout)
        # types-grpcio-health-checking's HealthStub declares no methods
        self.health.Check(health_pb2.HealthCheckRequest(), timeout=timeout)  # type: ignore[attr-defined]

    def info(self) -> app_pb2.GetAppInfoResponse:
        """Returns the app's info."""
        return self.app.GetAppInfo(app_pb2.GetAppInfoRequest(), timeout=self.timeout)

    # -- datastore --------------------------------------------------------------------------------
    def list_images(self, filter: str = "all", tag: str = "", page_size: int = 100) -> Iterator[datastore_pb2.Image]:
        """Yields every image, page after page.

        Args:
            filter: "all", "labeled" or "unlabeled".
            tag: label tag the filter looks at (default final).
            page_size: images per call.
        """
        f = {
            "all": datastore_pb2.IMAGE_FILTER_UNSPECIFIED,
            "labeled": datastore_pb2.IMAGE_FILTER_LABELED,
            "unlabeled": datastore_pb2.IMAGE_FILTER_UNLABELED,
        }[filter]
        token = ""
        while True:
            page = self.datastore.ListImages(
                datastore_pb2.ListImagesRequest(page_size=page_size, page_token=token, filter=f, label_tag=tag),
                timeout=self.timeout,
            )
            yield from page.images
            token = page.next_page_token
            if not token:
                return

    def get_image(self, image_id: str) -> datastore_pb2.Image:
        """Returns an image's record."""
        return self.datastore.GetImage(datastore_pb2.GetImageRequest(image_id=image_id), timeout=self.timeout).image

    def status(self) -> datastore_pb2.DatastoreStatus:
        """Returns the datastore's counts."""
        return self.datastore.GetDatastoreStatus(datastore_pb2.GetDatastoreStatusRequest(), timeout=self.timeout).status

    def update_image_info(self, image_id: str, info: Dict[str, Any]) -> datastore_pb2.Image:
        """Merges keys into an image's info."""
        return self.datastore.UpdateImageInfo(
            datastore_pb2.UpdateImageInfoRequest(image_id=image_id, info=_struct(info)), timeout=self.timeout
        ).image

    def delete_image(self, image_id: str) -> None:
        """Deletes an image and its labels."""
        self.datastore.DeleteImage(datastore_pb2.DeleteImageRequest(image_id=image_id), timeout=self.timeout)

    def delete_label(self, image_id: str, tag: str = "final") -> None:
        """Deletes a label."""
        self.datastore.DeleteLabel(datastore_pb2.DeleteLabelRequest(image_id=image_id, tag=tag), timeout=self.timeout)

    def upload_image(
        self,
        image_id: str,
        source: Union[PathLike, bytes, np.ndarray],
        *,
        affine: Optional[np.ndarray] = None,
        info: Optional[Dict[str, Any]] = None,
        overwrite: bool = False,
        encoding: Optional[int] = None,
        sha256: Optional[str] = None,
    ) -> datastore_pb2.Image:
        """Uploads an image (a file, its bytes, or an array with its affine), resuming after a broken stream.

        Args:
            image_id: id to give it.
            source: a file path, the file's bytes (then pass ``encoding``), or an array (raw voxels,
                stored as NIfTI).
            affine: the array's voxel-to-world matrix.
            info: info to store with it.
            overwrite: replace an existing image.
            encoding: the file's encoding; guessed from the name when None.
            sha256: the file's SHA-256 when the caller has it already; computed when None.
        """
        content, opener = self._source(source, affine, encoding, sha256, trailer=True)
        header = datastore_pb2.UploadImageHeader(
            image_id=image_id, content=content, info=_struct(info), overwrite=overwrite
        )
        message = datastore_pb2.UploadImageRequest
        return self._upload(message, header, opener, self._upload_image, image_id, "").image

    def upload_array(
        self,
        image_id: str,
        array: np.ndarray,
        affine: Optional[np.ndarray] = None,
        *,
        info: Optional[Dict[str, Any]] = None,
        overwrite: bool = False,
    ) -> datastore_pb2.Image:
        """Uploads an array as raw voxels with its affine (stored as NIfTI)."""
        return self.upload_image(image_id, array, affine=affine, info=info, overwrite=overwrite)

    def save_label(
        self,
        image_id: str,
        source: Union[PathLike, bytes, np.ndarray],
        *,
        tag: str = "final",
        affine: Optional[np.ndarray] = None,
        info: Optional[Dict[str, Any]] = None,
        encoding: Optional[int] = None,
    ) -> datastore_pb2.Label:
        """Saves a label (file, bytes, or array with its affine) for an image under a tag."""
        content, opener = self._source(source, affine, encoding, trailer=True)
        header = datastore_pb2.SaveLabelHeader(image_id=image_id, tag=tag, content=content, info=_struct(info))
        return self._upload(datastore_pb2.SaveLabelRequest, header, opener, self._save_label, image_id, tag).label

    def download_image(self, image_id: str, dest: Optional[PathLike] = None) -> Union[bytes, Path]:
        """Downloads an image's file; to ``dest`` when given, else as bytes."""
        return self._download(
            lambda offset: self._download_image(datastore_pb2.DownloadImageRequest(image_id=image_id, offset=offset)),
            dest,
        )

    def download_label(self, image_id: str, dest: Optional[PathLike] = None, tag: str = "final") -> Union[bytes, Path]:
        """Downloads a label's file; to ``dest`` when given, else as bytes."""
        return self._download(
            lambda offset: self._download_label(
                datastore_pb2.DownloadLabelRequest(image_id=image_id, tag=tag, offset=offset)
            ),
            dest,
        )

    # -- inference --------------------------------------------------------------------------------
    def infer(
        self,
        model: str,
        *,
        image_id: str = "",
        session_id: str = "",
        foreground: Sequence[Sequence[int]] = (),
        background: Sequence[Sequence[int]] = (),
        params: Optional[Dict[str, Any]] = None,
        device: str = "",
        encoding: int = 0,
        save_label: bool = False,
        timeout: Optional[float] = None,
    ) -> InferOutput:
        """Runs an infer task on a datastore image or a session.

        Args:
            model: the infer task.
            image_id: a datastore image (or use ``session_id``).
            session_id: an interactive session.
            foreground: foreground clicks.
            background: background clicks.
            params: app-specific request keys.
            device: device to run on.
            encoding: mask encoding (e.g. ``common_pb2.ENCODING_RAW``); default NIfTI gzip.
            save_label: also save the mask as the image's ``original`` label.
            timeout: deadline in seconds.
        """
        request = infer_pb2.InferRequest(
            model=model,
            params=self._params(foreground, background, params, device),
            output=infer_pb2.OutputOptions(encoding=common_pb2.Encoding.ValueType(encoding), save_label=save_label,
                                           checksum=self._fast_checksum()),
        )
        if session_id:
            request.session_id = session_id
        else:
            request.image_id = image_id
        return self._collect(self._infer(request, timeout=timeout))

    def infer_file(
        self,
        model: str,
        source: Union[PathLike, np.ndarray],
        *,
        affine: Optional[np.ndarray] = None,
        foreground: Sequence[Sequence[int]] = (),
        background: Sequence[Sequence[int]] = (),
        params: Optional[Dict[str, Any]] = None,
        device: str = "",
        encoding: int = 0,
        timeout: Optional[float] = None,
    ) -> InferOutput:
        """Runs an infer task on a volume sent in the call: a file, or an array with its affine."""
        content, opener = self._source(source, affine, None)
        header = infer_pb2.InferVolumeHeader(
            model=model,
            content=content,
            params=self._params(foreground, background, params, device),
            output=infer_pb2.OutputOptions(encoding=common_pb2.Encoding.ValueType(encoding),
                                           checksum=self._fast_checksum()),
        )
        requests = self._stream(infer_pb2.InferVolumeRequest, header, opener, 0, content.total_size)
        return self._collect(self._infer_volume(requests, timeout=timeout))

    def create_session(
        self,
        source: Union[PathLike, np.ndarray, None] = None,
        *,
        image_id: str = "",
        affine: Optional[np.ndarray] = None,
        ttl_seconds: int = 0,
    ) -> infer_pb2.Session:
        """Creates an interactive session from a file, an array, or a datastore image."""
        if image_id:
            header = infer_pb2.CreateSessionHeader(ttl=duration_pb2.Duration(seconds=ttl_seconds), image_id=image_id)
            created: infer_pb2.CreateSessionResponse = self.infers.CreateSession(
                iter([infer_pb2.CreateSessionRequest(header=header)]), timeout=self.timeout
            )
            return created.session
        if source is None:
            raise ValueError("pass a file, an array or image_id")
        content, opener = self._source(source, affine, None, trailer=True)
        header = infer_pb2.CreateSessionHeader(ttl=duration_pb2.Duration(seconds=ttl_seconds), content=content)
        requests = self._stream(infer_pb2.CreateSessionRequest, header, opener, 0, content.total_size)
        return self._create_session(requests, timeout=self.timeout).session

    def interact(self, session_id: str, model: str, *, compression: int = 0,
                 timeout: Optional[float] = None) -> Interaction:
        """Opens an Interact stream on a session: clicks in, mask deltas out (see :mod:`monailabel_client.interact`).

        Args:
            session_id: the session.
            model: the infer task that takes clicks.
            compression: ``interact.COMPRESSION_ZLIB`` (default) or ``interact.COMPRESSION_NONE`` (loopback).
            timeout: deadline of the whole stream in seconds.
        """
        return Interaction(self._interact, session_id, model, compression, timeout, self._fast_checksum())

    def delete_session(self, session_id: str) -> None:
        """Deletes a session."""
        self.infers.DeleteSession(infer_pb2.DeleteSessionRequest(session_id=session_id), timeout=self.timeout)

    # -- internals --------------------------------------------------------------------------------
    # -- training ---------------------------------------------------------------------------------
    def list_trainers(self) -> List[app_pb2.TrainerInfo]:
        """Returns the app's trainers with their config and last stats."""
        return list(self.train.ListTrainers(train_pb2.ListTrainersRequest(), timeout=self.timeout).trainers)

    def start_train(
        self,
        model: str,
        *,
        max_epochs: Optional[int] = None,
        val_split: Optional[float] = None,
        train_batch_size: Optional[int] = None,
        val_batch_size: Optional[int] = None,
        device: str = "",
        multi_gpu: Optional[bool] = None,
        dataset: str = "",
        dataloader: str = "",
        early_stop_patience: Optional[int] = None,
        train_ids: Sequence[str] = (),
        val_ids: Sequence[str] = (),
        queue: bool = False,
        extra: Optional[Dict[str, Any]] = None,
        nodes: Optional[int] = None,
    ) -> job_pb2.Job:
        """Starts a training job (unset values take the trainer's defaults).

        Args:
            model: the trainer.
            max_epochs: epochs to train.
            val_split: share of the labeled images held out for validation.
            train_batch_size: training batch size.
            val_batch_size: validation batch size.
            device: "cuda", "cpu", ...
            multi_gpu: train on several GPUs.
            dataset: dataset type (CacheDataset, Dataset, ...).
            dataloader: data loader type (ThreadDataLoader, DataLoader).
            early_stop_patience: epochs without improvement before stopping.
            train_ids: images to train on instead of all labeled ones.
            val_ids: images to validate on instead of a split.
            queue: queue behind the model's running job instead of failing with ABORTED.
            extra: other keys of the trainer's config.
            nodes: server replicas the job spans (a multi-node ``multi_gpu`` run; the server's
                ``--train-nodes`` when unset).

        Returns:
            the job (RUNNING, or QUEUED).
        """
        request = train_pb2.StartTrainJobRequest(
            model=model,
            device=device,
            dataset=dataset,
            dataloader=dataloader,
            train_ids=list(train_ids),
            val_ids=list(val_ids),
            queue=queue,
        )
        for name, value in (
            ("max_epochs", max_epochs),
            ("val_split", val_split),
            ("train_batch_size", train_batch_size),
            ("val_batch_size", val_batch_size),
            ("multi_gpu", multi_gpu),
            ("early_stop_patience", early_stop_patience),
            ("nodes", nodes),
        ):
            if value is not None:
                setattr(request, name, value)
        if extra:
            request.extra.CopyFrom(_struct(extra))
        started: train_pb2.StartTrainJobResponse = self.train.StartTrainJob(request, timeout=self.timeout)
        return started.job

    @staticmethod
    def _params(
        foreground: Sequence[Sequence[int]],
        background: Sequence[Sequence[int]],
        params: Optional[Dict[str, Any]],
        device: str,
    ) -> infer_pb2.InferParams:
        return infer_pb2.InferParams(
            foreground=[infer_pb2.Point(coordinates=[int(c) for c in p]) for p in foreground],
            background=[infer_pb2.Point(coordinates=[int(c) for c in p]) for p in background],
            device=device,
            extra=_struct(params),
        )

    def _source(
        self,
        source: Union[PathLike, bytes, np.ndarray],
        affine: Optional[np.ndarray],
        encoding: Optional[int],
        sha256: Optional[str] = None,
        trailer: bool = False,
    ) -> tuple[common_pb2.ContentHeader, Callable[[], BinaryIO]]:
        if isinstance(source, np.ndarray):
            return self._raw(source, affine)
        return self._content(source, encoding, sha256, trailer)

    def upload_digest(self) -> str:
        """The checksum uploads announce: ``xxh3_128`` when the server verifies it (its limits list it),
        else ``sha256``. Asked once per client."""
        if self._digest_name is None:
            try:
                digests = self.info().limits.digests
            except grpc.RpcError:
                return SHA256  # the upload itself will say what is wrong; asked again next time
            self._digest_name = XXH3_128 if XXH3_128 in digests else SHA256
        return self._digest_name

    def _fast_checksum(self) -> str:
        """What answers' checksums should be: ``xxh3_128`` when the server has it, else "" (its default)."""
        return XXH3_128 if self.upload_digest() == XXH3_128 else ""

    def _with_checksum(self, header: common_pb2.ContentHeader, data: Any) -> common_pb2.ContentHeader:
        name = self.upload_digest()
        setattr(header, name, Digests.of(data, name))  # sha256 or xxh3_128
        return header

    def _content(
        self, source: Union[PathLike, bytes], encoding: Optional[int], sha256: Optional[str] = None,
        trailer: bool = False,
    ) -> tuple[common_pb2.ContentHeader, Callable[[], BinaryIO]]:
        """The header and an opener of a file or bytes; a file's checksum goes in a trailer when ``trailer``
        and the server takes XXH3-128 (the file is read once, as it is sent), else it is computed now."""
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
            if encoding is None:
                raise ValueError("pass encoding= with bytes")
            header = common_pb2.ContentHeader(encoding=common_pb2.Encoding.ValueType(encoding), total_size=len(data))
            return self._with_checksum(header, data), lambda: io.BytesIO(data)
        path = Path(source)
        lower = path.name.lower()
        header = common_pb2.ContentHeader(
            encoding=common_pb2.Encoding.ValueType(encoding if encoding is not None else encoding_of(path.name)),
            total_size=path.stat().st_size,
            file_extension=".nii.gz" if lower.endswith(".nii.gz") else path.suffix.lower(),
        )
        if sha256 is not None:  # the caller's: the server checks it (and stores it without hashing again)
            header.sha256 = sha256
        elif trailer and self.upload_digest() == XXH3_128:  # a server this new takes trailers
            header.trailer_checksum = XXH3_128
        else:
            name = self.upload_digest()
            digests, buf = Digests([name]), bytearray(4 * MIB)
            view = memoryview(buf)
            with open(path, "rb", buffering=0) as f:
                while n := f.readinto(buf):
                    digests.update(view[:n])
            setattr(header, name, digests.hexdigest(name) or "")
        return header, lambda: open(path, "rb")

    def _raw(
        self, array: np.ndarray, affine: Optional[np.ndarray]
    ) -> tuple[common_pb2.ContentHeader, Callable[[], BinaryIO]]:
        a = np.asarray(array)
        dtype = a.dtype.newbyteorder("=")
        if dtype not in ENUM_BY_DTYPE:
            raise ValueError(f"dtype {a.dtype} cannot travel as raw voxels")
        data = np.asarray(a, dtype=dtype).tobytes(order="F")
        header = common_pb2.ContentHeader(
            encoding=common_pb2.ENCODING_RAW,
            total_size=len(data),
            data_type=common_pb2.DataType.ValueType(ENUM_BY_DTYPE[dtype]),
            shape=list(a.shape),
            geometry=common_pb2.Geometry() if affine is None else geometry_of_affine(affine, min(a.ndim, 3)),
        )
        return self._with_checksum(header, data), lambda: io.BytesIO(data)

    def _bar(self, total: int, desc: str) -> Any:
        if not self.progress or total < 16 * MIB:
            return None
        from monailabel_client.progress import transfer_progress

        return transfer_progress(total, desc)  # a bar on a terminal, plain lines on a pipe

    def _stream(
        self, message: Any, header: Any, opener: Callable[[], BinaryIO], offset: int, total: int
    ) -> Iterator[Any]:
        yield message(header=header)
        bar = self._bar(total, "upload")
        if bar is not None:
            bar.update(offset)
        name = header.content.trailer_checksum
        digests = Digests([name]) if name else None
        with opener() as f:
            if digests is not None and offset:  # a resumed stream's trailer covers all the bytes
                left = offset
                while left and (held := f.read(min(self.chunk_size, left))):
                    digests.update(held)
                    left -= len(held)
            f.seek(offset)
            pos = offset
            while True:
                # the file is read straight into the message sent (one copy of its bytes)
                request, data = read_chunk_request(f, pos, self.chunk_size)
                if not data:
                    break
                if digests is not None:
                    digests.update(data)
                n = len(data)
                pos += n
                del data  # the message is whole: no view of it stays writable once it is sent
                yield request
                if bar is not None:
                    bar.update(n)
        if digests is not None:
            yield message(trailer=common_pb2.ContentTrailer(**{name: digests.hexdigest(name) or ""}))
        if bar is not None:
            bar.close()

    def _upload(
        self,
        message: Any,
        header: Any,
        opener: Callable[[], BinaryIO],
        call: Callable[[Iterator[Any]], _Response],
        image_id: str,
        tag: str,
    ) -> _Response:
        """Streams an upload, and after a broken stream resumes it by its upload id from what the server committed.

        The first stream starts a new upload (empty ``upload_id``); after a break, the target's partial
        upload (its id and committed size, from GetUploadStatus) is resumed when it announced the same
        size, else the upload starts over.
        """
        total = header.content.total_size
        offset = 0
        header.upload_id = ""
        for attempt in range(self.retries + 1):
            try:
                return call(self._stream(message, header, opener, offset, total))
            except grpc.RpcError as exc:
                code = exc.code()
                if code not in _RETRYABLE and code != grpc.StatusCode.ABORTED or attempt == self.retries:
                    raise
                time.sleep(min(2.0, 0.1 * 2**attempt))
                # ABORTED: another writer holds the target; its stream is not ours to wait for
                status = self._settled_upload(image_id, tag, 0.0 if code == grpc.StatusCode.ABORTED else 5.0)
                if code == grpc.StatusCode.ABORTED and not header.upload_id and status.upload_id:
                    raise  # another client's upload to this target is in progress: not ours to resume
                resumable = bool(status.upload_id) and status.total_size == total
                header.upload_id = status.upload_id if resumable else ""
                offset = status.committed_size if resumable else 0
        raise UploadError(f"upload of {image_id} failed")

    def _settled_upload(self, image_id: str, tag: str, wait_s: float = 5.0) -> datastore_pb2.GetUploadStatusResponse:
        """The target's partial upload once the server has ended the broken stream (or after ``wait_s``).

        Right after a stream breaks on the client's side the server may still be taking it down, and
        a status read then shows the upload as active (or not yet resumable); resuming needs what
        the server committed once that stream has ended.
        """
        deadline = time.monotonic() + wait_s
        while True:
            status: datastore_pb2.GetUploadStatusResponse = self.datastore.GetUploadStatus(
                datastore_pb2.GetUploadStatusRequest(image_id=image_id, label_tag=tag), timeout=self.timeout
            )
            if not (status.upload_id and status.active) or time.monotonic() > deadline:
                return status
            time.sleep(0.02)

    def _download(self, call: Callable[[int], Iterator[Any]], dest: Optional[PathLike]) -> Union[bytes, Path]:
        """Receives a file (into memory, or to ``dest`` through a ``.part`` file), resuming after a broken
        stream, and checks it by the fastest checksum the header announces (XXH3-128 inline, SHA-256 on
        a thread of its own)."""
        # into memory: straight into the bytes handed back, sized by the header (FilledBytes)
        tmp = Path(str(dest) + ".part") if dest is not None else None
        sink: Any = open(tmp, "wb") if tmp is not None else None
        header: Optional[common_pb2.ContentHeader] = None
        digest: Any = None
        expected = ""
        received, bar = 0, None
        try:
            try:
                for attempt in range(self.retries + 1):
                    try:
                        for message in call(received):
                            if message.HasField("header"):
                                if header is not None and message.header.total_size != header.total_size:
                                    raise UploadError(f"the file changed during the download: {header.total_size} "
                                                      f"bytes, then {message.header.total_size}")
                                header = message.header
                                bar = bar or self._bar(header.total_size, "download")
                                if sink is None:
                                    sink = FilledBytes(header.total_size)
                                elif tmp is not None and received == 0:
                                    reserve(sink.fileno(), 0, header.total_size)
                                if digest is None:
                                    digest, expected = _stream_digest(header)
                                continue
                            data = message.chunk.data
                            if message.chunk.offset != received:
                                raise UploadError(f"chunk at {message.chunk.offset}, expected {received}")
                            if header is None:
                                raise UploadError("the server sent bytes before their header")
                            if received + len(data) > header.total_size:
                                raise UploadError(
                                    f"the server sent more than the {header.total_size} bytes it announced")
                            sink.write(data)
                            if digest is not None:
                                digest.update(data)
                            received += len(data)
                            if bar is not None:
                                bar.update(len(data))
                        break
                    except grpc.RpcError as exc:
                        if exc.code() not in _RETRYABLE or attempt == self.retries:
                            raise
            finally:
                if isinstance(digest, _BackgroundHash):
                    digest.close()
                if bar is not None:
                    bar.close()
                if tmp is not None:
                    sink.close()
            _check_download(header, received, digest, expected)
        except BaseException:
            if tmp is not None:
                tmp.unlink(missing_ok=True)  # nothing resumes from it: a broken file is not left behind
            raise
        if tmp is None:
            return cast(FilledBytes, sink).getvalue()
        assert dest is not None
        os.replace(tmp, dest)
        return Path(dest)

    def _collect(self, responses: Iterator[Any]) -> InferOutput:
        result: Optional[infer_pb2.InferResult] = None
        parts: List[bytes] = []
        for message in responses:
            if message.HasField("result"):
                result = message.result
            else:
                parts.append(message.chunk.data)
        if result is None:
            raise RuntimeError("the server sent no result")
        data = b"".join(parts)
        header = result.mask if result.HasField("mask") else None
        if header is not None:
            if len(data) != header.total_size:
                raise ChecksumError(f"mask is {len(data)} bytes; the server announced {header.total_size}")
            wrong = mismatch(header, data)
            if wrong:
                raise ChecksumError(f"mask bytes do not match the server's checksum: {wrong}")
        return InferOutput(
            result=json_format.MessageToDict(result.result),
            labels=dict(result.labels),
            latency=result.latency,
            header=header,
            data=data,
        )
