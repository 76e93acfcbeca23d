"""Typed Python client of the MONAI Label gRPC API."""

from monailabel_client.client import InferOutput, MonaiLabelClient, UploadError

__all__ = ["MonaiLabelClient", "InferOutput", "UploadError"]
