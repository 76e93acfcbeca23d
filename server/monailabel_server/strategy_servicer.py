"""StrategyService: next sample (with leases and the image streamed on request); starts scoring jobs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Union

import grpc

from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel_api.v1 import app_pb2, strategy_pb2, strategy_pb2_grpc
from monailabel_server.auth import caller_or
from monailabel_server.chunks import encoded_chunks
from monailabel_server.config import ServerConfig
from monailabel_server.convert import encoding_of_name, from_struct, timestamp_of, to_struct
from monailabel_server.datastore_servicer import image_message
from monailabel_server.job_servicer import job_message
from monailabel_server.jobs import JobManager
from monailabel_server.jobs.store import SCORING
from monailabel_server.sampling import ALL_LEASED, FOUND, NONE_LEFT, NextSampler
from monailabel_server.store import Store
from monailabel_server.transfer import read_chunks
from monailabel_server.validation import check_names
from monailabel_server.volumes import content_header_for_file

__all__ = ["StrategyServicer"]

_STATUS = {
    FOUND: strategy_pb2.SAMPLE_STATUS_FOUND,
    NONE_LEFT: strategy_pb2.SAMPLE_STATUS_NONE_LEFT,
    ALL_LEASED: strategy_pb2.SAMPLE_STATUS_ALL_LEASED,
}


def _invalid(msg: str) -> MONAILabelException:
    return MONAILabelException(MONAILabelError.INVALID_INPUT, msg)


class StrategyServicer(strategy_pb2_grpc.StrategyServiceServicer):
    """Serves strategies and next samples, and starts scoring jobs.

    Args:
        app: the app.
        config: server settings.
        sampler: runs strategies and holds the leases.
        jobs: the job manager (scoring jobs are its ``scoring`` kind).
    """

    def __init__(self, app: MONAILabelApp, config: ServerConfig, sampler: NextSampler, jobs: JobManager) -> None:
        self.app = app
        self.config = config
        self.sampler = sampler
        self.jobs = jobs
        self.store = Store(app.datastore())

    def ListStrategies(
        self, request: strategy_pb2.ListStrategiesRequest, context: grpc.ServicerContext
    ) -> strategy_pb2.ListStrategiesResponse:
        return strategy_pb2.ListStrategiesResponse(
            strategies=[
                app_pb2.MethodInfo(name=name, description=str(s.description), info=to_struct(s.info()))
                for name, s in self.app.strategies().items()
            ]
        )

    def ListScoringMethods(
        self, request: strategy_pb2.ListScoringMethodsRequest, context: grpc.ServicerContext
    ) -> strategy_pb2.ListScoringMethodsResponse:
        return strategy_pb2.ListScoringMethodsResponse(
            scoring_methods=[
                app_pb2.MethodInfo(name=name, description=str(s.description), info=to_struct(s.info()))
                for name, s in self.app.scoring_methods().items()
            ]
        )

    def GetNextSample(  # type: ignore[override] # chunks are sent pre-serialized, as bytes (ChunkCodecInterceptor)
        self, request: strategy_pb2.GetNextSampleRequest, context: grpc.ServicerContext
    ) -> Iterator[Union[strategy_pb2.GetNextSampleResponse, bytes]]:
        if request.chunk_size < 0:
            raise _invalid("chunk_size must not be negative")
        params = from_struct(request.params) if request.HasField("params") else {}
        # with auth on, the lease is the token's user's: a client id can't act for someone else
        sample = self.sampler.next(request.strategy, caller_or(request.client_id), params)
        msg = strategy_pb2.NextSample(
            status=_STATUS[sample.status],
            strategy=sample.strategy,
            client_id=sample.client_id,
            unlabeled_count=sample.unlabeled_count,
        )
        if sample.status != FOUND:
            yield strategy_pb2.GetNextSampleResponse(sample=msg)
            return
        view = self.store.image(sample.image_id)
        msg.image_id = sample.image_id
        msg.image.CopyFrom(image_message(view))
        msg.fields.CopyFrom(to_struct(sample.fields))
        expire = timestamp_of(sample.lease_expire_time)  # always set on a FOUND sample
        if expire is not None:
            msg.lease_expire_time.CopyFrom(expire)
        path = Path(view.path)
        stream = request.include_image and not os.path.isdir(path)  # a DICOM series folder is not one file
        if stream:
            msg.content.CopyFrom(content_header_for_file(path, encoding_of_name(path.name), view.sha256))
        yield strategy_pb2.GetNextSampleResponse(sample=msg)
        if stream:
            size = min(request.chunk_size or self.config.chunk_size, self.config.chunk_size)
            yield from encoded_chunks(read_chunks(path, 0, size))

    def StartScoringJob(
        self, request: strategy_pb2.StartScoringJobRequest, context: grpc.ServicerContext
    ) -> strategy_pb2.StartScoringJobResponse:
        if not request.method:
            raise _invalid("method is required")
        params = from_struct(request.params) if request.HasField("params") else {}
        job = self.jobs.start(request.method, params, queue=request.queue, kind=SCORING)
        return strategy_pb2.StartScoringJobResponse(job=job_message(job))

    def StartScoringJobs(self, request: strategy_pb2.StartScoringJobsRequest,
                         context: grpc.ServicerContext) -> strategy_pb2.StartScoringJobsResponse:
        params = from_struct(request.params) if request.HasField("params") else {}
        methods = check_names(list(request.methods), request.all_methods, "methods", "all_methods")
        jobs = self.jobs.start_many(SCORING, methods, params, queue=request.queue)
        return strategy_pb2.StartScoringJobsResponse(jobs=[job_message(j) for j in jobs])
