"""Typed Python client of the MONAI Label gRPC API."""

from monailabel_client.client import ChecksumError, InferOutput, MonaiLabelClient, UploadError
from monailabel_client.errors import ErrorDetails, error_details
from monailabel_client.strategy import NextSampleResult

__all__ = [
    "MonaiLabelClient",
    "InferOutput",
    "UploadError",
    "ChecksumError",
    "NextSampleResult",
    "ErrorDetails",
    "error_details",
]
