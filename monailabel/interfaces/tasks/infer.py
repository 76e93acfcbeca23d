"""MONAI Label's older import path of the inference task: ``InferTask`` is the full pre/infer/post task."""

from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask, CallBackTypes

# MONAI Label's documented apps subclass this InferTask and define only the transforms and inferer.
InferTask = BasicInferTask

__all__ = ["BasicInferTask", "CallBackTypes", "InferTask", "InferType"]
