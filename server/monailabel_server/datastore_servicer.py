"""DatastoreService: a thin adapter from protobuf to the datastore core (``core.datastore``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, TypeVar, Union

import grpc

from monailabel.interfaces.app import MONAILabelApp
from monailabel_api.v1 import datastore_pb2, datastore_pb2_grpc
from monailabel_server.auth import stamp_user
from monailabel_server.chunks import encoded_chunks
from monailabel_server.config import ServerConfig
from monailabel_server.convert import encoding_of_name, from_struct, timestamp_of, to_struct
from monailabel_server.core.datastore import MAX_APPEND_BYTES, DatastoreCore
from monailabel_server.ingest import chunks_of, header_of
from monailabel_server.store import ImageView, LabelView
from monailabel_server.transfer import read_chunks
from monailabel_server.validation import check_enum, invalid
from monailabel_server.volumes import content_header_for_file

__all__ = ["DatastoreServicer", "image_message", "label_message", "status_message"]

logger = logging.getLogger(__name__)

_FILTERS = {
    datastore_pb2.IMAGE_FILTER_UNSPECIFIED: "all",
    datastore_pb2.IMAGE_FILTER_LABELED: "labeled",
    datastore_pb2.IMAGE_FILTER_UNLABELED: "unlabeled",
}
_FILTER_NAMES: Dict[int, str] = {int(v): datastore_pb2.ImageFilter.Name(v) for v in _FILTERS}


def label_message(v: LabelView) -> datastore_pb2.Label:
    """Builds a Label message."""
    return datastore_pb2.Label(
        image_id=v.image_id, tag=v.tag, info=to_struct(v.info), size=v.size, sha256=v.sha256, file_extension=v.ext
    )


def image_message(v: ImageView) -> datastore_pb2.Image:
    """Builds an Image message."""
    return datastore_pb2.Image(
        image_id=v.id,
        info=to_struct(v.info),
        size=v.size,
        sha256=v.sha256,
        file_extension=v.ext,
        labels=[label_message(lv) for lv in v.labels],
    )


def status_message(status: Dict[str, Any]) -> datastore_pb2.DatastoreStatus:
    """Builds a DatastoreStatus message from MONAI Label's status dict."""
    tags = status.get("label_tags") or {}
    return datastore_pb2.DatastoreStatus(
        total=int(status.get("total", 0)),
        completed=int(status.get("completed", 0)),
        label_tags={str(k): int(v) for k, v in tags.items()},
    )


class DatastoreServicer(datastore_pb2_grpc.DatastoreServiceServicer):
    """Serves the app's datastore: converts protobuf to :class:`DatastoreCore` calls and back.

    Args:
        app: the app.
        config: server settings.
        on_final_label: called with the image id after a final label is saved (ends the image's lease).
    """

    def __init__(
        self, app: MONAILabelApp, config: ServerConfig, on_final_label: Optional[Callable[[str], None]] = None
    ) -> None:
        self.app = app
        self.config = config
        self.on_final_label = on_final_label
        self.core = DatastoreCore(
            app.datastore(),
            max_volume_bytes=config.max_volume_bytes,
            chunk_size=config.chunk_size,
            upload_ttl_s=config.upload_ttl_s,
            max_partial_uploads=config.max_partial_uploads,
            on_final_label=self._final_label_saved,
        )
        self.store = self.core.store

    def _final_label_saved(self, image_id: str) -> None:
        if self.on_final_label is not None:
            self.on_final_label(image_id)
        self.app.on_save_label(image_id, image_id)

    def ListImages(
        self, request: datastore_pb2.ListImagesRequest, context: grpc.ServicerContext
    ) -> datastore_pb2.ListImagesResponse:
        check_enum(request.filter, "filter", [int(v) for v in _FILTERS][1:], names=_FILTER_NAMES)
        views, token, total = self.core.list_images(
            _FILTERS[request.filter], request.label_tag, request.page_size, request.page_token
        )
        # a page stays well under the message limit: cut it short (with a token for the rest) when needed
        budget, used = self.config.max_message_bytes // 2, 0
        images: List[datastore_pb2.Image] = []
        for view in views:
            message = image_message(view)
            used += message.ByteSize() + 8
            if images and used > budget:
                token = self.core.page_token_after(images[-1].image_id)
                break
            images.append(message)
        return datastore_pb2.ListImagesResponse(images=images, next_page_token=token, total_size=total)

    def GetImage(
        self, request: datastore_pb2.GetImageRequest, context: grpc.ServicerContext
    ) -> datastore_pb2.GetImageResponse:
        return datastore_pb2.GetImageResponse(image=image_message(self.core.get_image(request.image_id)))

    def UpdateImageInfo(
        self, request: datastore_pb2.UpdateImageInfoRequest, context: grpc.ServicerContext
    ) -> datastore_pb2.UpdateImageInfoResponse:
        view = self.core.update_image_info(request.image_id, from_struct(request.info))
        return datastore_pb2.UpdateImageInfoResponse(image=image_message(view))

    def UploadImage(
        self, request_iterator: Iterable[datastore_pb2.UploadImageRequest], context: grpc.ServicerContext
    ) -> datastore_pb2.UploadImageResponse:
        requests = iter(request_iterator)
        header = header_of(next(requests, None), "UploadImage")
        view = self.core.upload_image(
            header.image_id,
            header.content,
            chunks_of(requests, "UploadImage"),
            info=stamp_user(from_struct(header.info)),  # who uploaded it, from the token (MONAI Label's "user")
            overwrite=header.overwrite,
            upload_id=header.upload_id,
        )
        return datastore_pb2.UploadImageResponse(image=image_message(view))

    def GetUploadStatus(
        self, request: datastore_pb2.GetUploadStatusRequest, context: grpc.ServicerContext
    ) -> datastore_pb2.GetUploadStatusResponse:
        status = self.core.upload_status(request.upload_id, request.image_id, request.label_tag)
        return datastore_pb2.GetUploadStatusResponse(
            committed_size=status.committed_size,
            total_size=status.total_size,
            upload_id=status.upload_id,
            expire_time=timestamp_of(status.expire_time),
            active=status.active,
        )

    def DownloadImage(  # type: ignore[override] # chunks are sent pre-serialized, as bytes (ChunkCodecInterceptor)
        self, request: datastore_pb2.DownloadImageRequest, context: grpc.ServicerContext
    ) -> Iterator[Union[datastore_pb2.DownloadImageResponse, bytes]]:
        path, sha256, size = self.core.image_file(request.image_id, request.offset, request.chunk_size)
        yield from _download(path, sha256, request.offset, size, datastore_pb2.DownloadImageResponse)

    def DeleteImage(
        self, request: datastore_pb2.DeleteImageRequest, context: grpc.ServicerContext
    ) -> datastore_pb2.DeleteImageResponse:
        self.core.delete_image(request.image_id)
        return datastore_pb2.DeleteImageResponse()

    def SaveLabel(
        self, request_iterator: Iterable[datastore_pb2.SaveLabelRequest], context: grpc.ServicerContext
    ) -> datastore_pb2.SaveLabelResponse:
        requests = iter(request_iterator)
        header = header_of(next(requests, None), "SaveLabel")
        view = self.core.save_label(
            header.image_id,
            header.tag,
            header.content,
            chunks_of(requests, "SaveLabel"),
            info=stamp_user(from_struct(header.info)),  # who saved it, from the token (MONAI Label's "user")
            upload_id=header.upload_id,
        )
        return datastore_pb2.SaveLabelResponse(label=label_message(view))

    def GetLabel(
        self, request: datastore_pb2.GetLabelRequest, context: grpc.ServicerContext
    ) -> datastore_pb2.GetLabelResponse:
        return datastore_pb2.GetLabelResponse(label=label_message(self.core.get_label(request.image_id, request.tag)))

    def UpdateLabelInfo(
        self, request: datastore_pb2.UpdateLabelInfoRequest, context: grpc.ServicerContext
    ) -> datastore_pb2.UpdateLabelInfoResponse:
        view = self.core.update_label_info(request.image_id, request.tag, from_struct(request.info))
        return datastore_pb2.UpdateLabelInfoResponse(label=label_message(view))

    def DownloadLabel(  # type: ignore[override] # chunks are sent pre-serialized, as bytes (ChunkCodecInterceptor)
        self, request: datastore_pb2.DownloadLabelRequest, context: grpc.ServicerContext
    ) -> Iterator[Union[datastore_pb2.DownloadLabelResponse, bytes]]:
        path, sha256, size = self.core.label_file(request.image_id, request.tag, request.offset, request.chunk_size)
        yield from _download(path, sha256, request.offset, size, datastore_pb2.DownloadLabelResponse)

    def DeleteLabel(
        self, request: datastore_pb2.DeleteLabelRequest, context: grpc.ServicerContext
    ) -> datastore_pb2.DeleteLabelResponse:
        self.core.delete_label(request.image_id, request.tag)
        return datastore_pb2.DeleteLabelResponse()

    def GetDatastoreStatus(
        self, request: datastore_pb2.GetDatastoreStatusRequest, context: grpc.ServicerContext
    ) -> datastore_pb2.GetDatastoreStatusResponse:
        return datastore_pb2.GetDatastoreStatusResponse(status=status_message(self.core.status()))

    # -- unary uploads: the browser's path (gRPC-Web and Connect cannot send a client stream) -------
    def CreateUpload(self, request: datastore_pb2.CreateUploadRequest,
                    context: grpc.ServicerContext) -> datastore_pb2.CreateUploadResponse:
        kind = request.WhichOneof("target")
        if kind == "image":
            image = request.image
            if image.upload_id:
                raise invalid("image.upload_id", "leave upload_id empty; append to an upload with AppendUploadChunk")
            status = self.core.create_upload("image", image.content, image_id=image.image_id,
                                             info=stamp_user(from_struct(image.info)), overwrite=image.overwrite)
        elif kind == "label":
            label = request.label
            if label.upload_id:
                raise invalid("label.upload_id", "leave upload_id empty; append to an upload with AppendUploadChunk")
            status = self.core.create_upload("label", label.content, image_id=label.image_id, tag=label.tag,
                                             info=stamp_user(from_struct(label.info)))
        elif kind == "volume":
            status = self.core.create_upload("volume", request.volume)
        else:
            raise invalid("target", "set image, label or volume")
        return datastore_pb2.CreateUploadResponse(upload_id=status.upload_id,
                                                  expire_time=timestamp_of(status.expire_time),
                                                  max_chunk_size=self.max_append_bytes)

    @property
    def max_append_bytes(self) -> int:
        """The largest chunk an AppendUploadChunk may carry: within the message limit, less room for the envelope."""
        return min(MAX_APPEND_BYTES, self.config.max_message_bytes - (64 << 10))

    def AppendUploadChunk(self, request: datastore_pb2.AppendUploadChunkRequest,
                         context: grpc.ServicerContext) -> datastore_pb2.AppendUploadChunkResponse:
        committed, total = self.core.append_upload(request.upload_id, request.chunk.offset, request.chunk.data)
        return datastore_pb2.AppendUploadChunkResponse(committed_size=committed, total_size=total)

    def CommitUpload(self, request: datastore_pb2.CommitUploadRequest,
                    context: grpc.ServicerContext) -> datastore_pb2.CommitUploadResponse:
        view = self.core.commit_upload(request.upload_id)
        if isinstance(view, LabelView):
            return datastore_pb2.CommitUploadResponse(label=label_message(view))
        return datastore_pb2.CommitUploadResponse(image=image_message(view))

    def DeleteUpload(self, request: datastore_pb2.DeleteUploadRequest,
                    context: grpc.ServicerContext) -> datastore_pb2.DeleteUploadResponse:
        self.core.delete_upload(request.upload_id)
        return datastore_pb2.DeleteUploadResponse()


_Header = TypeVar("_Header", datastore_pb2.DownloadImageResponse, datastore_pb2.DownloadLabelResponse)


def _download(
    path: Path, sha256: str, offset: int, chunk_size: int, message: Callable[..., _Header]
) -> Iterator[Union[_Header, bytes]]:
    yield message(header=content_header_for_file(path, encoding_of_name(path.name), sha256))
    yield from encoded_chunks(read_chunks(path, offset, chunk_size))
