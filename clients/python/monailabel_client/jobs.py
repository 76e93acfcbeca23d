"""Client calls of JobService: one API for jobs of every kind (training and scoring)."""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator, Optional

import grpc

from monailabel_api.v1 import job_pb2, job_pb2_grpc

__all__ = ["JobCalls", "KINDS", "STATES", "state_name", "kind_name"]

#: job kinds by the names the client and CLI take
KINDS = {"": job_pb2.JOB_KIND_UNSPECIFIED, "train": job_pb2.JOB_KIND_TRAIN, "scoring": job_pb2.JOB_KIND_SCORING,
         "batch_infer": job_pb2.JOB_KIND_BATCH_INFER}
#: job states by the names the client and CLI take
STATES = {"": job_pb2.JOB_STATE_UNSPECIFIED,
          **{job_pb2.JobState.Name(v).removeprefix("JOB_STATE_").lower(): v
             for v in job_pb2.JobState.values() if v != job_pb2.JOB_STATE_UNSPECIFIED}}


def state_name(state: int) -> str:
    """``RUNNING``, ``SUCCEEDED``, ... for a JobState value."""
    return job_pb2.JobState.Name(job_pb2.JobState.ValueType(state)).removeprefix("JOB_STATE_")


def kind_name(kind: int) -> str:
    """``train`` or ``scoring`` for a JobKind value."""
    return job_pb2.JobKind.Name(job_pb2.JobKind.ValueType(kind)).removeprefix("JOB_KIND_").lower()


class JobCalls:
    """JobService calls, mixed into ``MonaiLabelClient`` (which sets ``channel``, ``timeout`` and ``retries``)."""

    channel: grpc.Channel
    timeout: Optional[float]
    retries: int
    _job_stub: Optional[job_pb2_grpc.JobServiceStub] = None

    @property
    def jobs(self) -> job_pb2_grpc.JobServiceStub:
        """The raw JobService stub."""
        if self._job_stub is None:
            self._job_stub = job_pb2_grpc.JobServiceStub(self.channel)
        return self._job_stub

    def get_job(self, job_id: str) -> job_pb2.Job:
        """Returns a job (training or scoring)."""
        return self.jobs.GetJob(job_pb2.GetJobRequest(job_id=job_id), timeout=self.timeout).job

    def list_jobs(
        self, model: str = "", page_size: int = 50, *, kind: str = "", state: str = ""
    ) -> Iterator[job_pb2.Job]:
        """Yields jobs, newest first, page after page.

        Args:
            model: only this model's (or scoring method's) jobs, when set.
            page_size: jobs per call.
            kind: ``train`` or ``scoring`` (every kind when empty).
            state: ``queued``, ``running``, ``succeeded``, ``failed`` or ``cancelled`` (every state when empty).
        """
        request = job_pb2.ListJobsRequest(page_size=page_size, model=model, kind=KINDS[kind],
                                          state=STATES[state.lower()])
        while True:
            page = self.jobs.ListJobs(request, timeout=self.timeout)
            yield from page.jobs
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    def cancel_job(self, job_id: str) -> job_pb2.Job:
        """Cancels a queued or running job (its whole process group stops)."""
        return self.jobs.CancelJob(job_pb2.CancelJobRequest(job_id=job_id), timeout=self.timeout).job

    def watch_job(
        self, job_id: str, after_sequence: int = 0, timeout: Optional[float] = None
    ) -> Iterator[job_pb2.JobEvent]:
        """Yields a job's events until it ends; resumes from the last sequence seen when the stream drops.

        Args:
            job_id: the job.
            after_sequence: the last sequence number already seen (0: from the start).
            timeout: deadline of each stream, in seconds (None for none).
        """
        return self._watch(
            lambda last: self.jobs.WatchJob(
                job_pb2.WatchJobRequest(job_id=job_id, after_sequence=last), timeout=timeout
            ),
            after_sequence,
        )

    def wait_job(self, job_id: str, timeout: Optional[float] = None) -> job_pb2.Job:
        """Waits until a job ends; returns it."""
        for _ in self.watch_job(job_id, timeout=timeout):
            pass
        return self.get_job(job_id)

    def _watch(self, open_stream: Callable[[int], Iterator[Any]], after_sequence: int) -> Iterator[Any]:
        """Yields the events of a job's watch stream; when the stream drops (UNAVAILABLE), reopens it
        after the last sequence seen, up to ``retries`` times in a row."""
        last, attempt = after_sequence, 0
        while True:
            try:
                for response in open_stream(last):
                    attempt = 0
                    last = response.event.sequence
                    yield response.event
                return
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt >= self.retries:
                    raise
                time.sleep(min(2.0, 0.1 * 2**attempt))
                attempt += 1
