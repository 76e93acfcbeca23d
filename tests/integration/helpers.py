"""Shared test helpers: volumes, raw request streams, status assertions."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional

import grpc
import nibabel as nib
import numpy as np
import pytest

from monailabel.datasets import make_phantom
from monailabel_api.v1 import common_pb2


def write_volume(path: Path, shape=(40, 40, 24), seed: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Writes a phantom image to ``path`` (format from its suffix) and returns image, label, affine."""
    image, label, affine = make_phantom(shape, seed)
    nib.save(nib.Nifti1Image(image, affine), str(path))
    return image, label, affine


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chunked(message: Any, header: Any, data: bytes, size: int = 64 << 10, offsets: Optional[List[int]] = None,
            fail_after: Optional[int] = None) -> Iterator[Any]:
    """A request stream: the header, then ``data`` in chunks (at the given offsets, or in order)."""
    yield message(header=header)
    starts = offsets if offsets is not None else list(range(0, len(data), size))
    for i, start in enumerate(starts):
        if fail_after is not None and i == fail_after:
            raise RuntimeError("client broke the stream")
        yield message(chunk=common_pb2.Chunk(offset=start, data=data[start:start + size]))


def assert_status(code: grpc.StatusCode, call: Callable[[], Any], contains: str = "") -> grpc.RpcError:
    """Runs a call that must fail with ``code`` (and a message containing ``contains``)."""
    with pytest.raises(grpc.RpcError) as info:
        result = call()
        if hasattr(result, "__iter__") and not isinstance(result, (bytes, str)):
            list(result)
    err = info.value
    assert err.code() == code, f"expected {code}, got {err.code()}: {err.details()}"
    assert contains.lower() in (err.details() or "").lower(), err.details()
    return err


def error_info(err: grpc.RpcError):
    """The google.rpc.ErrorInfo detail of a failed call."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(err)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError("no ErrorInfo in the status")
