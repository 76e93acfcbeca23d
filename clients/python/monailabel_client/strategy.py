"""Client calls of StrategyService: strategies, next sample (with the image in the same call), start scoring."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import grpc
from google.protobuf import json_format, struct_pb2

from monailabel_api.digests import mismatch
from monailabel_api.v1 import app_pb2, job_pb2, strategy_pb2, strategy_pb2_grpc

__all__ = ["NextSampleResult", "StrategyCalls"]


def _struct(value: Optional[Dict[str, Any]]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    if value:
        s.update(value)
    return s


@dataclass
class NextSampleResult:
    """The answer of :meth:`StrategyCalls.next_sample`.

    Attributes:
        sample: the server's NextSample message.
        data: the image's bytes, when asked for without ``dest``.
        path: where the image was written, when asked for with ``dest``.
    """

    sample: strategy_pb2.NextSample
    data: Optional[bytes] = None
    path: Optional[Path] = None

    @property
    def found(self) -> bool:
        """Whether an image was served (and leased to this client)."""
        return self.sample.status == strategy_pb2.SAMPLE_STATUS_FOUND

    @property
    def none_left(self) -> bool:
        """Whether every image is labeled."""
        return self.sample.status == strategy_pb2.SAMPLE_STATUS_NONE_LEFT

    @property
    def all_leased(self) -> bool:
        """Whether unlabeled images remain but other clients are labeling all of them."""
        return self.sample.status == strategy_pb2.SAMPLE_STATUS_ALL_LEASED

    @property
    def status(self) -> str:
        """``FOUND``, ``NONE_LEFT`` or ``ALL_LEASED``."""
        return strategy_pb2.SampleStatus.Name(self.sample.status).removeprefix("SAMPLE_STATUS_")

    @property
    def image_id(self) -> str:
        """The image to label ("" unless found)."""
        return self.sample.image_id

    @property
    def fields(self) -> Dict[str, Any]:
        """The strategy's other fields (a score, for instance)."""
        return json_format.MessageToDict(self.sample.fields)

    @property
    def info(self) -> Dict[str, Any]:
        """The image's info."""
        return json_format.MessageToDict(self.sample.image.info)

    def as_dict(self) -> Dict[str, Any]:
        """The sample as JSON-able values (what the ``next`` command prints)."""
        out: Dict[str, Any] = {"status": self.status, "strategy": self.sample.strategy,
                               "client_id": self.sample.client_id, "unlabeled": self.sample.unlabeled_count}
        if self.found:
            out.update(image_id=self.image_id, fields=self.fields, info=self.info,
                       lease_expires=self.sample.lease_expire_time.ToJsonString())
        if self.path is not None:
            out["path"] = str(self.path)
        return out


class StrategyCalls:
    """StrategyService calls, mixed into ``MonaiLabelClient`` (which sets ``channel`` and ``timeout``)."""

    channel: grpc.Channel
    timeout: Optional[float]
    retries: int
    _strategy_stub: Optional[strategy_pb2_grpc.StrategyServiceStub] = None

    @property
    def strategy(self) -> strategy_pb2_grpc.StrategyServiceStub:
        """The raw StrategyService stub."""
        if self._strategy_stub is None:
            self._strategy_stub = strategy_pb2_grpc.StrategyServiceStub(self.channel)
        return self._strategy_stub

    def list_strategies(self) -> List[app_pb2.MethodInfo]:
        """Returns the app's active learning strategies."""
        return list(self.strategy.ListStrategies(strategy_pb2.ListStrategiesRequest(), timeout=self.timeout).strategies)

    def list_scoring_methods(self) -> List[app_pb2.MethodInfo]:
        """Returns the app's scoring methods."""
        return list(
            self.strategy.ListScoringMethods(
                strategy_pb2.ListScoringMethodsRequest(), timeout=self.timeout
            ).scoring_methods
        )

    def next_sample(
        self,
        strategy: str = "random",
        *,
        client_id: str = "",
        params: Optional[Dict[str, Any]] = None,
        include_image: bool = False,
        dest: Optional[Union[str, os.PathLike[str]]] = None,
    ) -> NextSampleResult:
        """Asks which image to label next; the image is leased to ``client_id`` until it asks again.

        Args:
            strategy: the strategy.
            client_id: who asks (each annotator its own).
            params: strategy parameters.
            include_image: also receive the image's bytes in the same call.
            dest: write the image there (implies ``include_image``); else the bytes are in ``data``.

        Returns:
            the result; check ``found`` (or ``none_left`` / ``all_leased``).

        Raises:
            grpc.RpcError: NOT_FOUND for an unknown strategy, INVALID_ARGUMENT for bad parameters.
            ValueError: when the received bytes do not match the server's checksum.
        """
        request = strategy_pb2.GetNextSampleRequest(
            strategy=strategy, client_id=client_id, params=_struct(params), include_image=include_image or bool(dest)
        )
        result: Optional[NextSampleResult] = None
        parts: List[bytes] = []
        for message in self.strategy.GetNextSample(request, timeout=self.timeout):
            if message.HasField("sample"):
                result = NextSampleResult(message.sample)
            else:
                parts.append(message.chunk.data)
        if result is None:
            raise RuntimeError("the server sent no sample")
        if result.sample.HasField("content"):
            data = b"".join(parts)
            wrong = mismatch(result.sample.content, data)
            if wrong:
                raise ValueError(f"received image bytes do not match the server's checksum: {wrong}")
            if dest is not None:
                path = Path(dest)
                tmp = path.with_name(path.name + ".part")
                tmp.write_bytes(data)
                os.replace(tmp, path)
                result.path = path
            else:
                result.data = data
        return result

    def start_scoring(
        self, method: str, params: Optional[Dict[str, Any]] = None, *, queue: bool = False
    ) -> job_pb2.Job:
        """Starts a scoring job (QUEUED behind the method's running job with ``queue``, else ABORTED then).

        Follow it with the job calls (``watch_job``, ``wait_job``, ``get_job``, ``cancel_job``)."""
        request = strategy_pb2.StartScoringJobRequest(method=method, params=_struct(params), queue=queue)
        return self.strategy.StartScoringJob(request, timeout=self.timeout).job
