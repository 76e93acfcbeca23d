"""TrainService: training jobs (start, get, list, cancel, watch) over the job manager."""

from __future__ import annotations

from typing import Any, Dict, Iterator

import grpc

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel_api.v1 import app_pb2, train_pb2, train_pb2_grpc
from monailabel_server.convert import JOB_STATES, from_struct, timestamp_of, to_struct
from monailabel_server.jobs import JobEvent, JobManager, JobRecord

__all__ = ["TrainServicer", "job_message", "event_message"]

_DEFAULT_PAGE, _MAX_PAGE = 50, 1000
# typed request fields that are only sent when set (proto3 optional)
_OPTIONAL = ("max_epochs", "val_split", "train_batch_size", "val_batch_size", "multi_gpu", "early_stop_patience")


def job_message(job: JobRecord) -> train_pb2.TrainJob:
    """Returns the proto of a stored job."""
    return train_pb2.TrainJob(
        job_id=job.job_id,
        model=job.model,
        state=JOB_STATES.get(job.state, train_pb2.JOB_STATE_UNSPECIFIED),
        params=to_struct(job.params),
        create_time=timestamp_of(job.create_time),
        start_time=timestamp_of(job.start_time),
        end_time=timestamp_of(job.end_time),
        error=job.error,
        last_log_lines=job.last_log_lines,
        best_metric=job.best_metric or 0.0,
        best_metric_epoch=job.best_metric_epoch,
        epoch=job.epoch,
        max_epochs=job.max_epochs,
        published_version=job.published_version,
        published_path=job.published_path,
    )


def _floats(values: Any) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for k, v in (values or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[str(k)] = float(v)
    return out


def event_message(event: JobEvent) -> train_pb2.TrainJobEvent:
    """Returns the proto of a stored event."""
    p = event.payload
    msg = train_pb2.TrainJobEvent(sequence=event.sequence, time=timestamp_of(event.time))
    kind = p.get("type")
    if kind == "state":
        msg.state_change.CopyFrom(
            train_pb2.JobStateChange(state=JOB_STATES.get(p.get("state"), 0), message=str(p.get("message") or ""))
        )
    elif kind == "iteration":
        msg.iteration.CopyFrom(
            train_pb2.IterationProgress(
                epoch=int(p.get("epoch") or 0),
                iteration=int(p.get("iteration") or 0),
                epoch_iteration=int(p.get("epoch_iteration") or 0),
                epoch_length=int(p.get("epoch_length") or 0),
                max_epochs=int(p.get("max_epochs") or 0),
                loss=float(p["loss"]) if p.get("loss") is not None else float("nan"),
            )
        )
    elif kind == "epoch":
        msg.epoch.CopyFrom(
            train_pb2.EpochProgress(
                epoch=int(p.get("epoch") or 0),
                max_epochs=int(p.get("max_epochs") or 0),
                train_metrics=_floats(p.get("train_metrics")),
                val_metrics=_floats(p.get("val_metrics")),
                best_metric=float(p["best_metric"]) if p.get("best_metric") is not None else 0.0,
                best_metric_epoch=int(p.get("best_metric_epoch") or 0),
                key_metric_name=str(p.get("key_metric_name") or ""),
            )
        )
    else:
        msg.log_line = str(p.get("text") or "")
    return msg


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
    """Serves training jobs.

    Args:
        jobs: the job manager.
    """

    def __init__(self, jobs: JobManager) -> None:
        self.jobs = jobs

    def ListTrainers(self, request: train_pb2.ListTrainersRequest, context: grpc.ServicerContext):
        return train_pb2.ListTrainersResponse(
            trainers=[
                app_pb2.TrainerInfo(
                    name=name, description=str(t["description"]), config=to_struct(t["config"]),
                    stats=to_struct(t["stats"]),
                )
                for name, t in self.jobs.trainers().items()
            ]
        )

    def StartTrainJob(self, request: train_pb2.StartTrainJobRequest, context: grpc.ServicerContext):
        if not request.model:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, "model is required")
        job = self.jobs.start(request.model, start_params(request), queue=request.queue)
        return train_pb2.StartTrainJobResponse(job=job_message(job))

    def GetTrainJob(self, request: train_pb2.GetTrainJobRequest, context: grpc.ServicerContext):
        return train_pb2.GetTrainJobResponse(job=job_message(self.jobs.get(request.job_id)))

    def ListTrainJobs(self, request: train_pb2.ListTrainJobsRequest, context: grpc.ServicerContext):
        if request.page_size < 0:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, "page_size must not be negative")
        size = min(request.page_size or _DEFAULT_PAGE, _MAX_PAGE)
        try:
            offset = int(request.page_token or 0)
        except ValueError:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, "bad page_token") from None
        if offset < 0:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, "bad page_token")
        jobs = self.jobs.list(offset, size + 1, request.model)
        token = str(offset + size) if len(jobs) > size else ""
        return train_pb2.ListTrainJobsResponse(jobs=[job_message(j) for j in jobs[:size]], next_page_token=token)

    def CancelTrainJob(self, request: train_pb2.CancelTrainJobRequest, context: grpc.ServicerContext):
        return train_pb2.CancelTrainJobResponse(job=job_message(self.jobs.cancel(request.job_id)))

    def WatchTrainJob(
        self, request: train_pb2.WatchTrainJobRequest, context: grpc.ServicerContext
    ) -> Iterator[train_pb2.WatchTrainJobResponse]:
        if request.after_sequence < 0:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, "after_sequence must not be negative")
        for event in self.jobs.watch(request.job_id, request.after_sequence, context.is_active):
            yield train_pb2.WatchTrainJobResponse(event=event_message(event))
