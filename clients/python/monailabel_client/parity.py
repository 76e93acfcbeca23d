"""Client calls for what MONAI Label's REST API offers beyond the core services.

Model weights and versions, batch inference, train-all and score-all, the dataset (datalist and
archive), the server's logs and GPUs, a session's image, and inference with an input label. Mixed
into ``MonaiLabelClient``, which sets ``channel``, ``timeout``, ``chunk_size`` and the stream helpers.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import grpc
import numpy as np
from google.protobuf import struct_pb2

from monailabel_api.digests import mismatch
from monailabel_api.v1 import (
    common_pb2,
    dataset_pb2,
    dataset_pb2_grpc,
    infer_pb2,
    job_pb2,
    model_pb2,
    model_pb2_grpc,
    server_pb2,
    server_pb2_grpc,
    strategy_pb2,
    train_pb2,
)

__all__ = ["ParityCalls", "ChecksumMismatch", "BATCH_IMAGES", "LOG_LEVELS"]

#: which images a batch inference runs on, by the names the client takes
BATCH_IMAGES = {"": model_pb2.BATCH_IMAGES_UNSPECIFIED, "all": model_pb2.BATCH_IMAGES_ALL,
                "unlabeled": model_pb2.BATCH_IMAGES_UNLABELED, "ids": model_pb2.BATCH_IMAGES_IDS}
#: log levels by name
LOG_LEVELS = {"": server_pb2.LOG_LEVEL_UNSPECIFIED, "debug": server_pb2.LOG_LEVEL_DEBUG,
              "info": server_pb2.LOG_LEVEL_INFO, "warning": server_pb2.LOG_LEVEL_WARNING,
              "error": server_pb2.LOG_LEVEL_ERROR, "critical": server_pb2.LOG_LEVEL_CRITICAL}

PathLike = Union[str, Path]


class ChecksumMismatch(RuntimeError):
    """Downloaded bytes do not match the size or checksum the server announced."""


def _gather(responses: Iterator[Any], what: str) -> Tuple[Any, bytes]:
    """The header and the bytes of a header-then-chunks stream, checked against the header's size and checksum."""
    header: Any = None
    parts: List[bytes] = []
    for message in responses:
        if message.HasField("header"):
            header = message.header
        else:
            parts.append(bytes(message.chunk.data))
    if header is None:
        raise RuntimeError(f"the server sent no {what} header")
    data = b"".join(parts)
    size = header.size if hasattr(header, "size") else header.total_size
    if len(data) != size:
        raise ChecksumMismatch(f"{what} is {len(data)} bytes; the server announced {size}")
    if isinstance(header, common_pb2.ContentHeader):
        wrong = mismatch(header, data)
    else:  # a model file's header: SHA-256 only
        wrong = "SHA-256 differs" if header.sha256 and hashlib.sha256(data).hexdigest() != header.sha256 else None
    if wrong:
        raise ChecksumMismatch(f"{what} bytes do not match the server's checksum: {wrong}")
    return header, data


def _save(data: bytes, dest: Optional[PathLike]) -> Union[bytes, Path]:
    if dest is None:
        return data
    path = Path(dest)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


class ParityCalls:
    """ModelService, DatasetService and ServerService calls, and the newer InferService/Train/Strategy calls."""

    channel: grpc.Channel
    timeout: Optional[float]
    chunk_size: int
    infers: Any
    train: Any
    strategy: Any
    _infer: Any
    _infer_volume: Any
    _model_stub: Optional[model_pb2_grpc.ModelServiceStub] = None
    _dataset_stub: Optional[dataset_pb2_grpc.DatasetServiceStub] = None
    _server_stub: Optional[server_pb2_grpc.ServerServiceStub] = None

    # the mixing class provides these
    _source: Callable[..., Tuple[common_pb2.ContentHeader, Callable[[], BinaryIO]]]
    _params: Callable[..., infer_pb2.InferParams]
    _stream: Callable[..., Iterator[Any]]
    _collect: Callable[..., Any]

    @property
    def models(self) -> model_pb2_grpc.ModelServiceStub:
        """The raw ModelService stub."""
        if self._model_stub is None:
            self._model_stub = model_pb2_grpc.ModelServiceStub(self.channel)
        return self._model_stub

    @property
    def datasets(self) -> dataset_pb2_grpc.DatasetServiceStub:
        """The raw DatasetService stub."""
        if self._dataset_stub is None:
            self._dataset_stub = dataset_pb2_grpc.DatasetServiceStub(self.channel)
        return self._dataset_stub

    @property
    def server(self) -> server_pb2_grpc.ServerServiceStub:
        """The raw ServerService stub."""
        if self._server_stub is None:
            self._server_stub = server_pb2_grpc.ServerServiceStub(self.channel)
        return self._server_stub

    # -- models -----------------------------------------------------------------------------------
    def list_model_versions(self, model: str) -> model_pb2.ListModelVersionsResponse:
        """The weights a model loads now (``current``) and the versions train jobs published (newest first)."""
        return self.models.ListModelVersions(model_pb2.ListModelVersionsRequest(model=model), timeout=self.timeout)

    def download_model(self, model: str, dest: Optional[PathLike] = None,
                       timeout: Optional[float] = None) -> Tuple[model_pb2.ModelFile, Union[bytes, Path]]:
        """Downloads a model's current weights (checked against the server's SHA-256); to ``dest`` when given.

        Returns:
            ``(file header, bytes or the path written)``.
        """
        header, data = _gather(self.models.DownloadModel(model_pb2.DownloadModelRequest(model=model),
                                                         timeout=timeout), "model file")
        return header, _save(data, dest)

    def start_batch_infer(self, model: str, images: str = "", image_ids: Sequence[str] = (), device: str = "",
                          queue: bool = False) -> job_pb2.Job:
        """Starts a batch inference job (``images``: ``all``, ``unlabeled`` or ``ids``); follow it as any job."""
        request = model_pb2.StartBatchInferJobRequest(model=model, images=BATCH_IMAGES[images],
                                                      image_ids=list(image_ids), device=device, queue=queue)
        return self.models.StartBatchInferJob(request, timeout=self.timeout).job

    # -- train all / score all ----------------------------------------------------------------------
    def start_train_jobs(self, models: Sequence[str] = (), queue: bool = False,
                         **params: Any) -> List[job_pb2.Job]:
        """Starts a train job for each model (every trainer when empty); ``params`` as StartTrainJobRequest's fields."""
        extra = params.pop("extra", None)
        request = train_pb2.StartTrainJobsRequest(models=list(models), all_models=not models,
                                                  params=train_pb2.StartTrainJobRequest(queue=queue, **params))
        if extra:
            request.params.extra.update(extra)
        return list(self.train.StartTrainJobs(request, timeout=self.timeout).jobs)

    def start_scoring_jobs(self, methods: Sequence[str] = (), params: Optional[Dict[str, Any]] = None,
                           queue: bool = False) -> List[job_pb2.Job]:
        """Starts a job for each scoring method (every one when empty)."""
        struct = struct_pb2.Struct()
        if params:
            struct.update(params)
        request = strategy_pb2.StartScoringJobsRequest(methods=list(methods), params=struct, queue=queue,
                                                       all_methods=not methods)
        return list(self.strategy.StartScoringJobs(request, timeout=self.timeout).jobs)

    # -- dataset ----------------------------------------------------------------------------------
    def train_datalist(self) -> List[dataset_pb2.DatalistEntry]:
        """The training datalist: every image with a final label, by id."""
        return list(self.datasets.GetTrainDatalist(dataset_pb2.GetTrainDatalistRequest(), timeout=self.timeout).entries)

    def export_dataset(self, dest: Optional[PathLike] = None, limit: int = 0,
                       timeout: Optional[float] = None) -> Union[bytes, Path]:
        """Downloads a zip of the labeled images and their final labels (checked); to ``dest`` when given."""
        _, data = _gather(self.datasets.ExportDataset(dataset_pb2.ExportDatasetRequest(limit=limit), timeout=timeout),
                          "dataset archive")
        return _save(data, dest)

    # -- server -----------------------------------------------------------------------------------
    def tail_logs(self, lines: int = 0, follow: bool = False, idle_timeout_s: int = 0, min_level: str = "",
                  timeout: Optional[float] = None) -> Iterator[server_pb2.LogLine]:
        """Yields the server's latest log lines, then (``follow``) new ones until idle (admin role)."""
        request = server_pb2.TailLogsRequest(lines=lines, follow=follow, idle_timeout_s=idle_timeout_s,
                                             min_level=LOG_LEVELS[min_level.lower()])
        for response in self.server.TailLogs(request, timeout=timeout):
            yield response.line

    def gpu_info(self) -> server_pb2.GetGpuInfoResponse:
        """The server's GPUs (admin role); an empty list without CUDA."""
        return self.server.GetGpuInfo(server_pb2.GetGpuInfoRequest(), timeout=self.timeout)

    # -- sessions and input labels -----------------------------------------------------------------
    def download_session_image(self, session_id: str, encoding: int = 0,
                               timeout: Optional[float] = None) -> Tuple[common_pb2.ContentHeader, bytes]:
        """A session's decoded volume (float32; NIfTI gzip unless ``encoding`` says NIfTI or raw), checked."""
        request = infer_pb2.DownloadSessionImageRequest(session_id=session_id,
                                                        encoding=common_pb2.Encoding.ValueType(encoding))
        header, data = _gather(self.infers.DownloadSessionImage(request, timeout=timeout), "session image")
        return header, data

    def infer_with_label(self, model: str, source: Union[PathLike, np.ndarray], label: Union[PathLike, np.ndarray],
                         *, affine: Optional[np.ndarray] = None, params: Optional[Dict[str, Any]] = None,
                         device: str = "", encoding: int = 0, timeout: Optional[float] = None) -> Any:
        """Runs an infer task on a volume sent in the call, with an input label sent after it (scribbles,
        a label to edit: MONAI Label's ``label``). Arrays travel as raw voxels placed by ``affine``."""
        content, opener = self._source(source, affine, None)
        label_content, label_opener = self._source(label, affine, None)
        header = infer_pb2.InferVolumeHeader(model=model, content=content, label=label_content,
                                             params=self._params((), (), params, device),
                                             output=infer_pb2.OutputOptions(encoding=common_pb2.Encoding.ValueType(encoding)))

        def requests() -> Iterator[Any]:
            yield from self._stream(infer_pb2.InferVolumeRequest, header, opener, 0, content.total_size)
            with label_opener() as f:
                pos = 0
                while block := f.read(self.chunk_size):
                    yield infer_pb2.InferVolumeRequest(label_chunk=common_pb2.Chunk(offset=pos, data=block))
                    pos += len(block)

        return self._collect(self._infer_volume(requests(), timeout=timeout))

    def infer_image_with_label(self, model: str, image_id: str, input_label_tag: str, *,
                               params: Optional[Dict[str, Any]] = None, save_label: bool = False,
                               timeout: Optional[float] = None) -> Any:
        """Runs an infer task on a datastore image with one of its labels (by tag) as the input label."""
        request = infer_pb2.InferRequest(model=model, image_id=image_id, input_label_tag=input_label_tag,
                                         params=self._params((), (), params, ""),
                                         output=infer_pb2.OutputOptions(save_label=save_label))
        return self._collect(self._infer(request, timeout=timeout))
