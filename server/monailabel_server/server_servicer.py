"""ServerService: the server's log for admins (:mod:`monailabel_server.core.logs`) and its GPUs."""

from __future__ import annotations

import logging
from typing import Dict, Iterator

import grpc

from monailabel_api.v1 import server_pb2, server_pb2_grpc
from monailabel_server.convert import timestamp_of
from monailabel_server.core.gpu import gpu_info
from monailabel_server.core.logs import LogBuffer, LogRecordView
from monailabel_server.validation import check_enum, check_int

__all__ = ["ServerServicer", "DEFAULT_TAIL", "DEFAULT_IDLE_TIMEOUT_S", "MAX_IDLE_TIMEOUT_S"]

#: Lines sent first when the request asks for none.
DEFAULT_TAIL = 100
#: Seconds a follow waits for a new line before it ends, when the request asks for no time.
DEFAULT_IDLE_TIMEOUT_S = 60
#: The longest idle timeout a request may ask for.
MAX_IDLE_TIMEOUT_S = 3600

_LEVEL_OF: Dict[int, int] = {
    server_pb2.LOG_LEVEL_DEBUG: logging.DEBUG,
    server_pb2.LOG_LEVEL_INFO: logging.INFO,
    server_pb2.LOG_LEVEL_WARNING: logging.WARNING,
    server_pb2.LOG_LEVEL_ERROR: logging.ERROR,
    server_pb2.LOG_LEVEL_CRITICAL: logging.CRITICAL,
}


def _level_enum(level: int) -> server_pb2.LogLevel.ValueType:
    best = server_pb2.LOG_LEVEL_DEBUG
    for enum, value in sorted(_LEVEL_OF.items(), key=lambda kv: kv[1]):
        if level >= value:
            best = server_pb2.LogLevel.ValueType(enum)
    return best


def _line(r: LogRecordView) -> server_pb2.TailLogsResponse:
    return server_pb2.TailLogsResponse(line=server_pb2.LogLine(
        sequence=r.sequence, time=timestamp_of(r.time), level=_level_enum(r.level), logger=r.logger,
        message=r.message))


class ServerServicer(server_pb2_grpc.ServerServiceServicer):
    """Serves the log buffer and GPU information.

    Args:
        logs: the server's log buffer.
    """

    def __init__(self, logs: LogBuffer) -> None:
        self.logs = logs

    def TailLogs(self, request: server_pb2.TailLogsRequest,
                 context: grpc.ServicerContext) -> Iterator[server_pb2.TailLogsResponse]:
        lines = check_int(request.lines, "lines", 0, self.logs.capacity) or DEFAULT_TAIL
        idle = check_int(request.idle_timeout_s, "idle_timeout_s", 0, MAX_IDLE_TIMEOUT_S) or DEFAULT_IDLE_TIMEOUT_S
        check_enum(request.min_level, "min_level", list(_LEVEL_OF),
                   names={k: server_pb2.LogLevel.Name(server_pb2.LogLevel.ValueType(k)) for k in _LEVEL_OF})
        min_level = _LEVEL_OF.get(request.min_level, 0)
        tail, last = self.logs.tail(lines, min_level)
        for record in tail:
            yield _line(record)
        if request.follow:
            for record in self.logs.follow(last, min_level, float(idle), context.is_active):
                yield _line(record)

    def GetGpuInfo(self, request: server_pb2.GetGpuInfoRequest,
                   context: grpc.ServicerContext) -> server_pb2.GetGpuInfoResponse:
        available, devices = gpu_info()
        return server_pb2.GetGpuInfoResponse(cuda_available=available, devices=[
            server_pb2.GpuDevice(index=d.index, name=d.name, total_memory_bytes=d.total_memory_bytes,
                                 free_memory_bytes=d.free_memory_bytes,
                                 allocated_memory_bytes=d.allocated_memory_bytes,
                                 utilization_percent=d.utilization_percent, compute_capability=d.compute_capability)
            for d in devices
        ])
