"""DatasetService: the training datalist and the dataset archive (:mod:`monailabel_server.core.dataset`)."""

from __future__ import annotations

from typing import Any, Iterator

import grpc

from monailabel_api.v1 import common_pb2, dataset_pb2, dataset_pb2_grpc
from monailabel_api.wire import encode_chunk_request
from monailabel_server.config import ServerConfig
from monailabel_server.core.dataset import FINAL, DatasetCore
from monailabel_server.core.models import file_chunks
from monailabel_server.validation import check_chunk_size, check_int

__all__ = ["DatasetServicer"]

#: Pairs one export may be limited to (0: all).
MAX_EXPORT_LIMIT = 1_000_000


class DatasetServicer(dataset_pb2_grpc.DatasetServiceServicer):
    """Serves the datastore as a dataset.

    Args:
        core: the dataset core.
        config: server settings (chunk size).
    """

    def __init__(self, core: DatasetCore, config: ServerConfig) -> None:
        self.core = core
        self.config = config

    def GetTrainDatalist(self, request: dataset_pb2.GetTrainDatalistRequest,
                         context: grpc.ServicerContext) -> dataset_pb2.GetTrainDatalistResponse:
        return dataset_pb2.GetTrainDatalistResponse(entries=[
            dataset_pb2.DatalistEntry(image_id=p.image.id, label_tag=FINAL, image_sha256=p.image.sha256,
                                      label_sha256=p.label.sha256)
            for p in self.core.pairs()
        ])

    def ExportDataset(self, request: dataset_pb2.ExportDatasetRequest, context: grpc.ServicerContext) -> Iterator[Any]:
        limit = check_int(request.limit, "limit", 0, MAX_EXPORT_LIMIT)
        chunk_size = check_chunk_size(request.chunk_size, "chunk_size", self.config.chunk_size)
        path, sha256, size = self.core.export(limit)
        try:
            yield dataset_pb2.ExportDatasetResponse(header=common_pb2.ContentHeader(
                total_size=size, sha256=sha256, file_extension=".zip"))
            with open(path, "rb") as handle:
                for offset, data in file_chunks(handle, size, chunk_size):
                    yield encode_chunk_request(offset, data)
        finally:
            path.unlink(missing_ok=True)
