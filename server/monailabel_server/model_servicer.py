"""ModelService: a model's weights and versions (:mod:`monailabel_server.core.models`), batch inference jobs."""

from __future__ import annotations

from typing import Any, Dict, Iterator

import grpc

from monailabel_api.v1 import model_pb2, model_pb2_grpc
from monailabel_api.wire import encode_chunk_request
from monailabel_server.config import ServerConfig
from monailabel_server.convert import timestamp_of
from monailabel_server.core.models import ModelCore, ModelFileView, file_chunks
from monailabel_server.job_servicer import job_message
from monailabel_server.jobs import JobManager
from monailabel_server.jobs.store import BATCH_INFER
from monailabel_server.validation import check_chunk_size, check_enum

__all__ = ["ModelServicer"]

_IMAGES = {
    model_pb2.BATCH_IMAGES_ALL: "all",
    model_pb2.BATCH_IMAGES_UNLABELED: "unlabeled",
    model_pb2.BATCH_IMAGES_IDS: "ids",
}


def _file_message(view: ModelFileView) -> model_pb2.ModelFile:
    return model_pb2.ModelFile(model=view.model, file_name=view.file_name, size=view.size, sha256=view.sha256,
                               modify_time=timestamp_of(view.modify_time), version=view.version)


class ModelServicer(model_pb2_grpc.ModelServiceServicer):
    """Serves model weights, their versions, and batch inference jobs.

    Args:
        core: the model core.
        jobs: the job manager.
        config: server settings (chunk size).
    """

    def __init__(self, core: ModelCore, jobs: JobManager, config: ServerConfig) -> None:
        self.core = core
        self.jobs = jobs
        self.config = config

    def ListModelVersions(self, request: model_pb2.ListModelVersionsRequest,
                          context: grpc.ServicerContext) -> model_pb2.ListModelVersionsResponse:
        current, versions = self.core.list_versions(request.model)
        response = model_pb2.ListModelVersionsResponse(versions=[
            model_pb2.ModelVersion(version=v.version, job_id=v.job_id, publish_time=timestamp_of(v.publish_time),
                                   sha256=v.sha256, size=v.size, current=v.current)
            for v in versions
        ])
        if current is not None:
            response.current.CopyFrom(_file_message(current))
        return response

    def DownloadModel(self, request: model_pb2.DownloadModelRequest, context: grpc.ServicerContext) -> Iterator[Any]:
        chunk_size = check_chunk_size(request.chunk_size, "chunk_size", self.config.chunk_size)
        view, handle = self.core.open(request.model)
        with handle:
            yield model_pb2.DownloadModelResponse(header=_file_message(view))
            for offset, data in file_chunks(handle, view.size, chunk_size):
                yield encode_chunk_request(offset, data)

    def StartBatchInferJob(self, request: model_pb2.StartBatchInferJobRequest,
                           context: grpc.ServicerContext) -> model_pb2.StartBatchInferJobResponse:
        check_enum(request.images, "images", list(_IMAGES), names={int(k): model_pb2.BatchImages.Name(k)
                                                                      for k in _IMAGES})
        params: Dict[str, Any] = {}
        if request.images:
            params["images"] = _IMAGES[request.images]
        if request.image_ids:
            params["image_ids"] = list(request.image_ids)
        if request.device:
            params["device"] = request.device
        job = self.jobs.start(request.model, params, queue=request.queue, kind=BATCH_INFER)
        return model_pb2.StartBatchInferJobResponse(job=job_message(job))
