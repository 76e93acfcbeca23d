"""Typed Python client of the MONAI Label gRPC API."""

from monailabel_client.client import InferOutput, MonaiLabelClient, UploadError
from monailabel_client.errors import ErrorDetails, error_details
from monailabel_client.strategy import NextSampleResult

__all__ = ["MonaiLabelClient", "InferOutput", "UploadError", "NextSampleResult", "ErrorDetails", "error_details"]
