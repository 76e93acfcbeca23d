"""The audit log: one JSON line per state-changing call, in its own file.

Each line holds ``time`` (UTC, ISO 8601), ``user`` (the token's user; ``anonymous`` when auth is
off; empty when the call failed before a token was accepted), ``rpc``, ``resource`` (``image/<id>``,
``label/<image>/<tag>``, ``job/<id>``, ``model/<name>``, ``scoring/<method>``), ``outcome`` (``OK`` or
the status code's name), the peer address, the client certificate's common name on an mTLS port,
and for a failure its (scrubbed) message. Denied and
failed attempts are logged too: who tried to delete what matters as much as who did.

Which calls change state is declared once, in :data:`AUDITED`, service by service; the
``AuditInterceptor`` sits outside the error interceptor so that it sees every call's final status.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, FrozenSet, Iterable, Iterator, Optional

import grpc

from monailabel_server.auth.interceptor import current_identity, set_identity
from monailabel_server.errors import replaced_handler

__all__ = ["AuditLog", "AuditInterceptor", "AUDITED", "default_path", "resource_of"]

logger = logging.getLogger(__name__)

#: ``{service full name: the methods that change state}``.
AUDITED: Dict[str, FrozenSet[str]] = {
    "monailabel.v1.DatastoreService": frozenset({
        "UploadImage", "SaveLabel", "DeleteImage", "DeleteLabel", "UpdateImageInfo", "UpdateLabelInfo",
        # unary uploads: their creation, commit and deletion (each chunk is not a record of its own)
        "CreateUpload", "CommitUpload", "DeleteUpload",
    }),
    "monailabel.v1.TrainService": frozenset({"StartTrainJob", "StartTrainJobs"}),
    "monailabel.v1.StrategyService": frozenset({"StartScoringJob", "StartScoringJobs"}),
    "monailabel.v1.ModelService": frozenset({"StartBatchInferJob"}),
    # admin's reads of the server itself: who read its logs is worth a record
    "monailabel.v1.ServerService": frozenset({"TailLogs", "GetGpuInfo"}),
    "monailabel.v1.JobService": frozenset({"CancelJob"}),
}
_MAX_DETAIL = 300


def default_path(studies: str, app_dir: Path) -> Path:
    """``<studies>/.monailabel/logs/audit.log`` (the app folder's when studies is not a folder)."""
    base = Path(studies) if Path(studies).is_dir() else Path(app_dir)
    return base / ".monailabel" / "logs" / "audit.log"


class AuditLog:
    """Appends audit records to a file, one JSON object per line, each written whole.

    Args:
        path: the log file (its folder is made; the file is only ever appended to).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # O_APPEND: every write lands at the end, even with another process appending to the same file
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def write(self, *, user: str, rpc: str, resource: str, outcome: str, **extra: Any) -> None:
        """Appends one record.

        Args:
            user: who made the call.
            rpc: the RPC (``monailabel.v1.DatastoreService/DeleteImage``) or the event.
            resource: what it concerned.
            outcome: ``OK`` or the status code's name.
            **extra: more fields (peer, detail, job_id, version ...).
        """
        record = {
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "user": user,
            "rpc": rpc,
            "resource": resource,
            "outcome": outcome,
            **{k: v for k, v in extra.items() if v not in (None, "")},
        }
        line = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        with self._lock:
            if self._fd < 0:
                return
            try:
                os.write(self._fd, line)
            except OSError:  # a full disk must not fail the call that was audited
                logger.exception("cannot write the audit log")

    def close(self) -> None:
        """Closes the file; later records are dropped."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def resource_of(request: Any, response: Any = None) -> str:
    """Names what a request concerns, from its fields (a streamed request's header counts as the request)."""
    msg = getattr(request, "header", None) if _has(request, "header") else request
    if msg is None:
        job = getattr(getattr(response, "job", None), "job_id", "")
        return f"job/{job}" if job else ""
    if _has(msg, "job_id"):
        return f"job/{msg.job_id}"
    if _has(msg, "image_id"):
        if _field(msg, "tag"):
            return f"label/{msg.image_id}/{msg.tag or 'final'}"
        return f"image/{msg.image_id}"
    if _has(msg, "model"):
        return f"model/{msg.model}"
    if _has(msg, "method"):
        return f"scoring/{msg.method}"
    if _field(msg, "upload_id") and msg.upload_id:
        return f"upload/{msg.upload_id}"
    for part in ("image", "label"):  # CreateUpload: the header of what the upload makes
        if _has(msg, part):
            return resource_of(getattr(msg, part))
    created = getattr(response, "upload_id", "")
    return f"upload/{created}" if created else ""


def _field(msg: Any, name: str) -> bool:
    descriptor = getattr(msg, "DESCRIPTOR", None)
    return descriptor is not None and name in descriptor.fields_by_name


def _has(msg: Any, name: str) -> bool:
    if not _field(msg, name):
        return False
    f = msg.DESCRIPTOR.fields_by_name[name]
    return msg.HasField(name) if f.message_type is not None else True


class _FirstKept:
    """A request stream that remembers its first message (the header of an upload)."""

    def __init__(self, requests: Iterable[Any]) -> None:
        self._it = iter(requests)
        self.first: Any = None

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        item = next(self._it)
        if self.first is None:
            self.first = item
        return item


class AuditInterceptor(grpc.ServerInterceptor):
    """Logs every call of :data:`AUDITED` with its caller, resource and final status.

    Args:
        log: where records go.
        auth_enabled: whether calls carry identities (else the user is ``anonymous``).
    """

    def __init__(self, log: AuditLog, auth_enabled: bool) -> None:
        self.log = log
        self.auth_enabled = auth_enabled

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Optional[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Optional[grpc.RpcMethodHandler[Any, Any]]:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        service, _, name = method.lstrip("/").partition("/")
        if name not in AUDITED.get(service, ()):
            return handler
        if handler.unary_unary is not None:
            return replaced_handler(handler, unary_unary=self._wrap(handler.unary_unary, method, False))
        if handler.stream_unary is not None:
            return replaced_handler(handler, stream_unary=self._wrap(handler.stream_unary, method, True))
        if handler.unary_stream is not None:  # an admin's read that streams (TailLogs)
            return replaced_handler(handler, unary_stream=self._wrap_stream(handler.unary_stream, method))
        return handler  # no state-changing call streams both ways

    def _wrap(self, behavior: Callable[..., Any], method: str, streamed: bool) -> Callable[..., Any]:
        def handler(request: Any, context: grpc.ServicerContext) -> Any:
            set_identity(None)
            arg = _FirstKept(request) if streamed else request
            try:
                response = behavior(arg, context)
            except BaseException:
                self._record(method, context, arg, None)
                raise
            self._record(method, context, arg, response)
            return response

        return handler

    def _wrap_stream(self, behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
        """Records a server-streaming call once its stream ends (done, failed, or closed by the client)."""
        def handler(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            set_identity(None)
            done = False
            try:
                yield from behavior(request, context)
                done = True
            finally:
                self._record(method, context, request, request if done else None)

        return handler

    def _record(self, method: str, context: grpc.ServicerContext, arg: Any, response: Any) -> None:
        request = arg.first if isinstance(arg, _FirstKept) else arg
        code = context.code() if hasattr(context, "code") else None
        if response is None and code is None:
            code = grpc.StatusCode.UNKNOWN
        outcome = "OK" if code in (None, grpc.StatusCode.OK) else code.name
        identity = current_identity()
        user = identity.username if identity is not None else ("" if self.auth_enabled else "anonymous")
        detail = ""
        if outcome != "OK":
            raw = context.details() if hasattr(context, "details") else ""
            detail = (raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw or ""))[:_MAX_DETAIL]
        job_id = getattr(getattr(response, "job", None), "job_id", "") if response is not None else ""
        try:
            resource = resource_of(request, response)
        except Exception:  # a request too broken to name: still audit the attempt
            resource = ""
        self.log.write(
            user=user, rpc=method.lstrip("/"), resource=resource, outcome=outcome,
            peer=context.peer(), peer_cert=_client_certificate_name(context), detail=detail, job_id=job_id,
        )


def _client_certificate_name(context: grpc.ServicerContext) -> str:
    """The common name of the client's certificate on an mTLS port ("" otherwise)."""
    names: Any = (context.auth_context() or {}).get("x509_common_name") or []
    first = names if isinstance(names, bytes) else (names[0] if names else b"")
    return first.decode("utf-8", "replace")
