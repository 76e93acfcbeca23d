"""TrainService: list trainers and start training jobs (JobService follows them)."""

from __future__ import annotations

from typing import Any, Dict, Final

import grpc

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel_api.v1 import app_pb2, train_pb2, train_pb2_grpc
from monailabel_server.convert import from_struct, to_struct
from monailabel_server.job_servicer import job_message
from monailabel_server.jobs import JobManager
from monailabel_server.jobs.store import TRAIN
from monailabel_server.validation import check_names

__all__ = ["TrainServicer", "start_params"]

# typed request fields that are only sent when set (proto3 optional)
_OPTIONAL: Final = ("max_epochs", "val_split", "train_batch_size", "val_batch_size", "multi_gpu", "early_stop_patience",
                    "nodes")


def start_params(request: train_pb2.StartTrainJobRequest) -> Dict[str, Any]:
    """Returns the train request (MONAI Label's dict) that a StartTrainJobRequest carries."""
    params: Dict[str, Any] = from_struct(request.extra) if request.HasField("extra") else {}
    for name in _OPTIONAL:
        if request.HasField(name):
            params[name] = getattr(request, name)
    for name in ("device", "dataset", "dataloader"):
        if getattr(request, name):
            params[name] = getattr(request, name)
    if request.train_ids:
        params["train_ids"] = list(request.train_ids)
    if request.val_ids:
        params["val_ids"] = list(request.val_ids)
    return params


class TrainServicer(train_pb2_grpc.TrainServiceServicer):
    """Serves trainers and starts training jobs.

    Args:
        jobs: the job manager.
    """

    def __init__(self, jobs: JobManager) -> None:
        self.jobs = jobs

    def ListTrainers(
        self, request: train_pb2.ListTrainersRequest, context: grpc.ServicerContext
    ) -> train_pb2.ListTrainersResponse:
        return train_pb2.ListTrainersResponse(
            trainers=[
                app_pb2.TrainerInfo(
                    name=name, description=str(t["description"]), config=to_struct(t["config"]),
                    stats=to_struct(t["stats"]),
                )
                for name, t in self.jobs.trainers().items()
            ]
        )

    def StartTrainJob(
        self, request: train_pb2.StartTrainJobRequest, context: grpc.ServicerContext
    ) -> train_pb2.StartTrainJobResponse:
        if not request.model:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, "model is required")
        job = self.jobs.start(request.model, start_params(request), queue=request.queue)
        return train_pb2.StartTrainJobResponse(job=job_message(job))

    def StartTrainJobs(self, request: train_pb2.StartTrainJobsRequest,
                       context: grpc.ServicerContext) -> train_pb2.StartTrainJobsResponse:
        if request.params.model:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT,
                                      "params.model must be empty: name the trainers in models")
        models = check_names(list(request.models), request.all_models, "models", "all_models")
        jobs = self.jobs.start_many(TRAIN, models, start_params(request.params), queue=request.params.queue)
        return train_pb2.StartTrainJobsResponse(jobs=[job_message(j) for j in jobs])
