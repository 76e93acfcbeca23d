"""Registers the services that bring MONAI Label's remaining REST capabilities to gRPC.

ModelService (weights, versions, batch inference), DatasetService (training datalist, dataset
archive) and ServerService (logs, GPUs) are added here in one place, so that ``server.py`` needs one
line to serve them.
"""

from __future__ import annotations

import logging

import grpc

from monailabel.interfaces.app import MONAILabelApp
from monailabel_api.v1 import dataset_pb2, dataset_pb2_grpc, model_pb2, model_pb2_grpc, server_pb2, server_pb2_grpc
from monailabel_server.config import ServerConfig
from monailabel_server.core.dataset import DatasetCore
from monailabel_server.core.logs import LogBuffer
from monailabel_server.core.models import ModelCore
from monailabel_server.dataset_servicer import DatasetServicer
from monailabel_server.jobs import JobManager
from monailabel_server.model_servicer import ModelServicer
from monailabel_server.server_servicer import ServerServicer
from monailabel_server.store import Store

__all__ = ["SERVICE_NAMES", "add_services"]

SERVICE_NAMES = (
    model_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
    dataset_pb2.DESCRIPTOR.services_by_name["DatasetService"].full_name,
    server_pb2.DESCRIPTOR.services_by_name["ServerService"].full_name,
)


def add_services(server: grpc.Server, app: MONAILabelApp, config: ServerConfig, jobs: JobManager) -> LogBuffer:
    """Adds the three services to ``server``; returns the log buffer, now on the root logger (remove it at stop)."""
    logs = LogBuffer()
    logging.getLogger().addHandler(logs)
    model_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(ModelCore(app, jobs), jobs, config), server)
    dataset_pb2_grpc.add_DatasetServiceServicer_to_server(
        DatasetServicer(DatasetCore(Store(app.datastore())), config), server)
    server_pb2_grpc.add_ServerServiceServicer_to_server(ServerServicer(logs), server)
    return logs
