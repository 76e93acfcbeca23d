"""JobService: get, list, cancel and watch jobs of every kind (training and scoring) over one job manager."""

from __future__ import annotations

import os
from typing import Any, Dict, Iterator, Sequence

import grpc

from monailabel_api.v1 import job_pb2, job_pb2_grpc
from monailabel_server import validation
from monailabel_server.auth import Role, require_role
from monailabel_server.convert import JOB_STATES, timestamp_of, to_struct
from monailabel_server.errors import scrub
from monailabel_server.jobs import JobEvent, JobManager, JobRecord
from monailabel_server.jobs.store import BATCH_INFER, SCORING, TRAIN, JobNode

__all__ = ["JobServicer", "job_message", "event_message", "KIND_OF", "KIND_NAMES"]

_DEFAULT_PAGE = 50
#: the store's kinds as the proto's enum, and back
KIND_OF: Dict[str, job_pb2.JobKind.ValueType] = {TRAIN: job_pb2.JOB_KIND_TRAIN, SCORING: job_pb2.JOB_KIND_SCORING,
                                                 BATCH_INFER: job_pb2.JOB_KIND_BATCH_INFER}
KIND_NAMES: Dict[job_pb2.JobKind.ValueType, str] = {v: k for k, v in KIND_OF.items()}
_STATE_NAMES: Dict[job_pb2.JobState.ValueType, str] = {v: k for k, v in JOB_STATES.items()}


def job_message(job: JobRecord, nodes: Sequence[JobNode] = ()) -> job_pb2.Job:
    """Returns the proto of a stored job (server paths reduced to file names, in its error and logs too).

    Args:
        job: the job.
        nodes: its nodes, when it spans several replicas.
    """
    msg = job_pb2.Job(
        job_id=job.job_id,
        kind=KIND_OF.get(job.kind, job_pb2.JOB_KIND_UNSPECIFIED),
        model=job.model,
        state=JOB_STATES.get(job.state, job_pb2.JOB_STATE_UNSPECIFIED),
        params=to_struct(job.params),
        create_time=timestamp_of(job.create_time),
        start_time=timestamp_of(job.start_time),
        end_time=timestamp_of(job.end_time),
        error=scrub(job.error),
        last_log_lines=[scrub(line, 2000) for line in job.last_log_lines],
        published_version=job.published_version,
        published_file=os.path.basename(job.published_path),
        trigger=job.trigger,
    )
    if job.kind == TRAIN:
        msg.progress.CopyFrom(
            job_pb2.JobProgress(
                epoch=job.epoch,
                max_epochs=job.max_epochs,
                best_metric=job.best_metric or 0.0,
                best_metric_epoch=job.best_metric_epoch,
            )
        )
    if job.kind == BATCH_INFER:  # images done and to do are kept in the epoch columns
        failed = job.result.get("failed", 0) if isinstance(job.result, dict) else 0
        msg.batch_progress.CopyFrom(job_pb2.BatchProgress(done=job.epoch, total=job.max_epochs, failed=int(failed)))
    for node in nodes:
        msg.nodes.add(node=node.node, replica_id=node.replica_id,
                      state=JOB_STATES.get(node.state, job_pb2.JOB_STATE_UNSPECIFIED), error=scrub(node.error))
    if job.kind != TRAIN and job.result:
        msg.result.CopyFrom(to_struct(job.result if isinstance(job.result, dict) else {"result": job.result}))
    return msg


def _floats(values: Any) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for k, v in (values or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[str(k)] = float(v)
    return out


def event_message(event: JobEvent) -> job_pb2.JobEvent:
    """Returns the proto of a stored event."""
    p = event.payload
    msg = job_pb2.JobEvent(sequence=event.sequence, time=timestamp_of(event.time))
    kind = p.get("type")
    if kind == "state":
        msg.state_change.CopyFrom(
            job_pb2.JobStateChange(state=JOB_STATES.get(str(p.get("state")), job_pb2.JOB_STATE_UNSPECIFIED),
                                   message=scrub(str(p.get("message") or "")))
        )
    elif kind == "iteration":
        msg.iteration.CopyFrom(
            job_pb2.IterationProgress(
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
            job_pb2.EpochProgress(
                epoch=int(p.get("epoch") or 0),
                max_epochs=int(p.get("max_epochs") or 0),
                train_metrics=_floats(p.get("train_metrics")),
                val_metrics=_floats(p.get("val_metrics")),
                best_metric=float(p["best_metric"]) if p.get("best_metric") is not None else 0.0,
                best_metric_epoch=int(p.get("best_metric_epoch") or 0),
                key_metric_name=str(p.get("key_metric_name") or ""),
            )
        )
    elif kind == "batch_progress":
        msg.batch_progress.CopyFrom(
            job_pb2.BatchProgress(done=int(p.get("done") or 0), total=int(p.get("total") or 0),
                                  failed=int(p.get("failed") or 0), image_id=str(p.get("image_id") or ""))
        )
    else:
        msg.log_line = scrub(str(p.get("text") or ""), 2000)
    return msg


def _job_id(value: str) -> str:
    return validation.check_id(value, "job_id")


class JobServicer(job_pb2_grpc.JobServiceServicer):
    """Serves jobs of every kind.

    Args:
        jobs: the job manager.
    """

    def __init__(self, jobs: JobManager) -> None:
        self.jobs = jobs

    def GetJob(self, request: job_pb2.GetJobRequest, context: grpc.ServicerContext) -> job_pb2.GetJobResponse:
        job = self.jobs.get(_job_id(request.job_id))
        return job_pb2.GetJobResponse(job=job_message(job, self.jobs.nodes(job)))

    def ListJobs(self, request: job_pb2.ListJobsRequest, context: grpc.ServicerContext) -> job_pb2.ListJobsResponse:
        size = validation.check_int(request.page_size, "page_size", 0, validation.MAX_PAGE_SIZE) or _DEFAULT_PAGE
        try:
            offset = int(request.page_token or 0)
        except ValueError:
            raise validation.invalid("page_token", "bad page_token: pass a previous next_page_token") from None
        if not 0 <= offset <= 1 << 31:
            raise validation.invalid("page_token", "bad page_token: pass a previous next_page_token")
        kind = validation.check_enum(request.kind, "kind", list(KIND_NAMES),
                                     names={int(k): job_pb2.JobKind.Name(k) for k in KIND_NAMES})
        state = validation.check_enum(request.state, "state", list(_STATE_NAMES),
                                      names={int(k): job_pb2.JobState.Name(k) for k in _STATE_NAMES})
        jobs = self.jobs.list(
            offset, size + 1, request.model, KIND_NAMES.get(job_pb2.JobKind.ValueType(kind)),
            _STATE_NAMES.get(job_pb2.JobState.ValueType(state), ""),
        )
        token = str(offset + size) if len(jobs) > size else ""
        return job_pb2.ListJobsResponse(jobs=[job_message(j, self.jobs.nodes(j)) for j in jobs[:size]],
                                        next_page_token=token)

    def CancelJob(self, request: job_pb2.CancelJobRequest, context: grpc.ServicerContext) -> job_pb2.CancelJobResponse:
        job_id = _job_id(request.job_id)
        if self.jobs.get(job_id).kind == TRAIN:
            require_role(Role.ADMIN)  # cancelling training is admin's, as MONAI Label's DELETE /train
        job = self.jobs.cancel(job_id)
        return job_pb2.CancelJobResponse(job=job_message(job, self.jobs.nodes(job)))

    def WatchJob(
        self, request: job_pb2.WatchJobRequest, context: grpc.ServicerContext
    ) -> Iterator[job_pb2.WatchJobResponse]:
        if request.after_sequence < 0:
            raise validation.invalid("after_sequence", "after_sequence must not be negative")
        for event in self.jobs.watch(_job_id(request.job_id), request.after_sequence, context.is_active):
            yield job_pb2.WatchJobResponse(event=event_message(event))
