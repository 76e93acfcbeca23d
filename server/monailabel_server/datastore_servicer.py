"""DatastoreService: a thin adapter from protobuf to the app's datastore."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import grpc

from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import DefaultLabelTag
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel_api.v1 import datastore_pb2, datastore_pb2_grpc
from monailabel_server.auth import stamp_user
from monailabel_server.chunks import encoded_chunks
from monailabel_server.config import ServerConfig
from monailabel_server.convert import encoding_of_name, from_struct, to_struct
from monailabel_server.ingest import chunks_of, header_of, receive, upload_status
from monailabel_server.store import ImageView, LabelView, Store, check_id
from monailabel_server.transfer import read_chunks
from monailabel_server.volumes import content_header_for_file

__all__ = ["DatastoreServicer", "image_message", "label_message", "status_message"]

logger = logging.getLogger(__name__)

_FILTERS = {
    datastore_pb2.IMAGE_FILTER_UNSPECIFIED: "all",
    datastore_pb2.IMAGE_FILTER_LABELED: "labeled",
    datastore_pb2.IMAGE_FILTER_UNLABELED: "unlabeled",
}
_MAX_PAGE = 1000


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


def status_message(status: dict) -> datastore_pb2.DatastoreStatus:
    """Builds a DatastoreStatus message from MONAI Label's status dict."""
    tags = status.get("label_tags") or {}
    return datastore_pb2.DatastoreStatus(
        total=int(status.get("total", 0)),
        completed=int(status.get("completed", 0)),
        label_tags={str(k): int(v) for k, v in tags.items()},
    )


def _tag(tag: str) -> str:
    return check_id(tag or DefaultLabelTag.FINAL.value, "tag")


class DatastoreServicer(datastore_pb2_grpc.DatastoreServiceServicer):
    """Serves the app's datastore.

    Args:
        app: the app.
        config: server settings.
        on_final_label: called with the image id after a final label is saved (ends the image's lease).
    """

    def __init__(
        self, app: MONAILabelApp, config: ServerConfig, on_final_label: Optional[Callable[[str], None]] = None
    ) -> None:
        self.app = app
        self.store = Store(app.datastore())
        self.config = config
        self.on_final_label = on_final_label

    def ListImages(self, request: datastore_pb2.ListImagesRequest, context: grpc.ServicerContext):
        size = request.page_size or 100
        if size < 0:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, "page_size must not be negative")
        views, token, total = self.store.list(
            _FILTERS[request.filter], _tag(request.label_tag), min(size, _MAX_PAGE), request.page_token
        )
        return datastore_pb2.ListImagesResponse(
            images=[image_message(v) for v in views], next_page_token=token, total_size=total
        )

    def GetImage(self, request: datastore_pb2.GetImageRequest, context: grpc.ServicerContext):
        return datastore_pb2.GetImageResponse(image=image_message(self.store.image(request.image_id)))

    def UpdateImageInfo(self, request: datastore_pb2.UpdateImageInfoRequest, context: grpc.ServicerContext):
        self.store.image(request.image_id)  # NOT_FOUND before any write
        self.store.ds.update_image_info(request.image_id, from_struct(request.info))
        return datastore_pb2.UpdateImageInfoResponse(image=image_message(self.store.image(request.image_id)))

    def UploadImage(self, request_iterator: Iterable[datastore_pb2.UploadImageRequest], context: grpc.ServicerContext):
        requests = iter(request_iterator)
        header = header_of(next(requests, None), "UploadImage")
        image_id = check_id(header.image_id)
        if not header.overwrite and self.store.exists(image_id):
            raise MONAILabelException(
                MONAILabelError.ALREADY_EXISTS, f"image '{image_id}' exists; set overwrite to replace it"
            )
        staging = self.store.staging_dir()
        received = receive(
            header.content,
            chunks_of(requests, "UploadImage"),
            staging,
            f"image--{image_id}",
            self.config.max_volume_bytes,
        )
        try:
            view = self.store.add_image(
                image_id, received.path, stamp_user(from_struct(header.info)), received.file_sha256, header.overwrite
            )
        finally:
            received.discard()
        logger.info("uploaded image %s (%d bytes)", image_id, view.size)
        return datastore_pb2.UploadImageResponse(image=image_message(view))

    def GetUploadStatus(self, request: datastore_pb2.GetUploadStatusRequest, context: grpc.ServicerContext):
        image_id = check_id(request.image_id)
        key = f"label--{_tag(request.label_tag)}--{image_id}" if request.label_tag else f"image--{image_id}"
        committed, total = upload_status(self.store.staging_dir(), key)
        return datastore_pb2.GetUploadStatusResponse(committed_size=committed, total_size=total)

    def DownloadImage(self, request: datastore_pb2.DownloadImageRequest, context: grpc.ServicerContext):
        view = self.store.image(request.image_id)
        yield from self._download(view.path, view.sha256, request, datastore_pb2.DownloadImageResponse)

    def DeleteImage(self, request: datastore_pb2.DeleteImageRequest, context: grpc.ServicerContext):
        self.store.image(request.image_id)
        self.store.ds.remove_image(request.image_id)
        return datastore_pb2.DeleteImageResponse()

    def SaveLabel(self, request_iterator: Iterable[datastore_pb2.SaveLabelRequest], context: grpc.ServicerContext):
        requests = iter(request_iterator)
        header = header_of(next(requests, None), "SaveLabel")
        tag = _tag(header.tag)
        image = self.store.image(header.image_id)  # NOT_FOUND before receiving any bytes
        received = receive(
            header.content,
            chunks_of(requests, "SaveLabel"),
            self.store.staging_dir(),
            f"label--{tag}--{image.id}",
            self.config.max_volume_bytes,
        )
        try:
            _check_label_fits(received.volume.shape, image.path)
            info = stamp_user(from_struct(header.info))  # who saved it, from the token (MONAI Label's "user")
            view = self.store.save_label(image.id, received.path, tag, info, received.file_sha256)
        finally:
            received.discard()
        if tag == DefaultLabelTag.FINAL.value:
            if self.on_final_label is not None:
                self.on_final_label(image.id)
            self.app.on_save_label(image.id, image.id)
        return datastore_pb2.SaveLabelResponse(label=label_message(view))

    def GetLabel(self, request: datastore_pb2.GetLabelRequest, context: grpc.ServicerContext):
        return datastore_pb2.GetLabelResponse(
            label=label_message(self.store.label(request.image_id, _tag(request.tag)))
        )

    def UpdateLabelInfo(self, request: datastore_pb2.UpdateLabelInfoRequest, context: grpc.ServicerContext):
        tag = _tag(request.tag)
        self.store.label(request.image_id, tag)
        self.store.ds.update_label_info(request.image_id, tag, from_struct(request.info))
        return datastore_pb2.UpdateLabelInfoResponse(label=label_message(self.store.label(request.image_id, tag)))

    def DownloadLabel(self, request: datastore_pb2.DownloadLabelRequest, context: grpc.ServicerContext):
        view = self.store.label(request.image_id, _tag(request.tag))
        yield from self._download(view.path, view.sha256, request, datastore_pb2.DownloadLabelResponse)

    def DeleteLabel(self, request: datastore_pb2.DeleteLabelRequest, context: grpc.ServicerContext):
        tag = _tag(request.tag)
        self.store.label(request.image_id, tag)
        self.store.ds.remove_label(request.image_id, tag)
        return datastore_pb2.DeleteLabelResponse()

    def GetDatastoreStatus(self, request: datastore_pb2.GetDatastoreStatusRequest, context: grpc.ServicerContext):
        return datastore_pb2.GetDatastoreStatusResponse(status=status_message(self.store.status()))

    # -- helpers ----------------------------------------------------------------------------------
    def _download(self, path: str, sha256: str, request: Any, message: Any) -> Iterator:
        offset, chunk_size = request.offset, request.chunk_size
        if os.path.isdir(path):
            raise MONAILabelException(
                MONAILabelError.UNIMPLEMENTED, "downloading a DICOM series folder is not supported; read it in place"
            )
        size = min(chunk_size or self.config.chunk_size, self.config.chunk_size)
        if size < 0:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, "chunk_size must not be negative")
        file = Path(path)
        yield message(header=content_header_for_file(file, encoding_of_name(file.name), sha256))
        yield from encoded_chunks(read_chunks(file, offset, size))


def _check_label_fits(label_shape: tuple, image_path: str) -> None:
    """Rejects a label whose spatial shape differs from its image's (when both are readable volumes)."""
    if not label_shape or os.path.isdir(image_path):
        return
    try:
        import nibabel as nib

        image_shape = tuple(nib.load(image_path).header.get_data_shape())
    except Exception:  # not a NIfTI image: nothing cheap to compare against
        return
    n = min(len(image_shape), 3)
    if tuple(label_shape[:n]) != tuple(image_shape[:n]):
        raise MONAILabelException(
            MONAILabelError.INVALID_INPUT,
            f"label shape {list(label_shape)} does not match image shape {list(image_shape)}",
        )
