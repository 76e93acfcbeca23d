"""errors.py end to end: each MONAILabelException detail reaches a real client as google.rpc details,
messages are scrubbed of server paths and bounded, and the client's ``error_details`` reads them all.

The server here has one test method that raises the exception a test names, behind the same
interceptors as the MONAI Label server, so every check runs over a real channel and real trailers.
"""

from __future__ import annotations

import threading
from concurrent import futures
from typing import Callable, Dict, Iterator

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2
from grpc_status import rpc_status

from monailabel.interfaces.exception import (
    ImageNotFoundException,
    MONAILabelError,
    MONAILabelException,
)
from monailabel_client.errors import error_details
from monailabel_server.errors import (
    ERROR_DOMAIN,
    MAX_DETAIL_CHARS,
    MAX_MESSAGE_CHARS,
    STATUS_BY_ERROR,
    ErrorInterceptor,
    scrub,
)
from monailabel_server.streams import StreamGuard

SERVER_PATH = "/srv/monailabel/studies/.monailabel/staging/ct_01.nii.gz"
LONG = "x" * 20_000

RAISES: Dict[str, Callable[[], BaseException]] = {
    "field": lambda: MONAILabelException(
        MONAILabelError.INVALID_INPUT, "image_id 'a/b' is not valid", field="header.image_id",
        violations=[("header.content.total_size", "total_size is 0")]),
    "resource": lambda: ImageNotFoundException("image 'ct_09' not found", image_id="ct_09"),
    "retry": lambda: MONAILabelException(MONAILabelError.RESOURCE_EXHAUSTED, "queue full", retry_after_s=2.5),
    "reason": lambda: MONAILabelException(
        MONAILabelError.OUT_OF_RANGE, "chunk at 10 leaves a gap", reason="UPLOAD_OFFSET_MISMATCH",
        metadata={"committed_size": "4", "file": SERVER_PATH}),
    "all": lambda: MONAILabelException(
        MONAILabelError.CONFLICT, "busy", field="job", resource=("job", "train_1"), retry_after_s=0.25,
        reason="JOB_RUNNING", metadata={"running": "train_1"}),
    "path": lambda: MONAILabelException(
        MONAILabelError.INVALID_INPUT, f"cannot read {SERVER_PATH}: bad gzip data (from /opt/app/main.py)",
        field="header.content", resource=("image", SERVER_PATH)),
    "long": lambda: MONAILabelException(MONAILabelError.INVALID_INPUT, f"id {LONG} is too long", field=LONG,
                                        resource=("image", LONG), reason="TOO_LONG", metadata={"id": LONG}),
    "many": lambda: MONAILabelException(
        MONAILabelError.INVALID_INPUT, "many faults", violations=[(f"f{i}", LONG) for i in range(100)]),
    "bug": lambda: KeyError(f"{SERVER_PATH} secret"),
}
RAISES.update({f"kind_{e.name}": (lambda e=e: MONAILabelException(e, f"a {e.name} failure")) for e in STATUS_BY_ERROR})


def _unary(request: bytes, context: grpc.ServicerContext) -> bytes:
    raise RAISES[request.decode()]()


def _stream_in(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
    raise RAISES[next(requests).decode()]()


def _stream_out(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    yield b"first"
    raise RAISES[request.decode()]()


@pytest.fixture(scope="module")
def channel() -> Iterator[grpc.Channel]:
    guard = StreamGuard(30, 4)
    server = grpc.server(futures.ThreadPoolExecutor(4), interceptors=[guard, ErrorInterceptor()])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Errors", {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary),
        "StreamIn": grpc.stream_unary_rpc_method_handler(_stream_in),
        "StreamOut": grpc.unary_stream_rpc_method_handler(_stream_out),
    }),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch
    server.stop(0).wait()
    guard.close()


def _fail(channel: grpc.Channel, case: str, shape: str = "Unary") -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        if shape == "Unary":
            channel.unary_unary("/test.Errors/Unary")(case.encode(), timeout=10)
        elif shape == "StreamIn":
            channel.stream_unary("/test.Errors/StreamIn")(iter([case.encode()]), timeout=10)
        else:
            assert list(channel.unary_stream("/test.Errors/StreamOut")(case.encode(), timeout=10)) == [b"first"]
    return info.value


def _details(err: grpc.RpcError) -> list:
    status = rpc_status.from_call(err)
    assert status is not None, "no grpc-status-details-bin trailer"
    assert status.code == err.code().value[0] and status.message == err.details()
    out = []
    for packed in status.details:
        for cls in (error_details_pb2.BadRequest, error_details_pb2.ResourceInfo, error_details_pb2.RetryInfo,
                    error_details_pb2.ErrorInfo):
            if packed.Is(cls.DESCRIPTOR):
                message = cls()
                packed.Unpack(message)
                out.append(message)
    assert len(out) == len(status.details), "a detail of an unknown type"
    return out


@pytest.mark.parametrize("shape", ["Unary", "StreamIn", "StreamOut"])
def test_field_violations_arrive_as_bad_request(channel, shape: str) -> None:
    err = _fail(channel, "field", shape)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    (bad,) = _details(err)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("header.image_id", "image_id 'a/b' is not valid"), ("header.content.total_size", "total_size is 0")]
    read = error_details(err)
    assert read.code == grpc.StatusCode.INVALID_ARGUMENT and read.message == "image_id 'a/b' is not valid"
    assert read.field_violations == (("header.image_id", "image_id 'a/b' is not valid"),
                                     ("header.content.total_size", "total_size is 0"))
    assert read.retry_after_s is None and read.resource is None and read.reason is None


def test_resource_info_arrives(channel) -> None:
    err = _fail(channel, "resource")
    assert err.code() == grpc.StatusCode.NOT_FOUND
    (info,) = _details(err)
    assert (info.resource_type, info.resource_name) == ("image", "ct_09")
    assert error_details(err).resource == ("image", "ct_09")


def test_retry_info_arrives(channel) -> None:
    err = _fail(channel, "retry", "StreamIn")
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    (retry,) = _details(err)
    assert retry.retry_delay.ToNanoseconds() == 2_500_000_000
    assert error_details(err).retry_after_s == 2.5


def test_error_info_arrives_with_scrubbed_metadata(channel) -> None:
    err = _fail(channel, "reason")
    assert err.code() == grpc.StatusCode.OUT_OF_RANGE
    (cause,) = _details(err)
    assert (cause.reason, cause.domain) == ("UPLOAD_OFFSET_MISMATCH", ERROR_DOMAIN)
    assert dict(cause.metadata) == {"committed_size": "4", "file": "ct_01.nii.gz"}
    read = error_details(err)
    assert (read.reason, read.domain, read.metadata) == (
        "UPLOAD_OFFSET_MISMATCH", ERROR_DOMAIN, {"committed_size": "4", "file": "ct_01.nii.gz"})


def test_all_details_together(channel) -> None:
    err = _fail(channel, "all", "StreamOut")
    assert err.code() == grpc.StatusCode.ABORTED
    kinds = {type(d).__name__ for d in _details(err)}
    assert kinds == {"BadRequest", "ResourceInfo", "RetryInfo", "ErrorInfo"}
    read = error_details(err)
    assert read.field_violations == (("job", "busy"),)
    assert read.resource == ("job", "train_1") and read.retry_after_s == 0.25
    assert read.reason == "JOB_RUNNING" and read.metadata == {"running": "train_1"}


@pytest.mark.parametrize("error", list(STATUS_BY_ERROR))
def test_every_error_kind_has_its_status_code(channel, error: MONAILabelError) -> None:
    err = _fail(channel, f"kind_{error.name}")
    assert err.code() == STATUS_BY_ERROR[error]
    assert err.details() == f"a {error.name} failure"
    assert error_details(err).code == STATUS_BY_ERROR[error]


def test_server_paths_never_reach_the_client(channel) -> None:
    err = _fail(channel, "path")
    text = err.details() + "".join(f"{k}{v!r}" for k, v in err.trailing_metadata())
    for secret in ("/srv", "monailabel/studies", "staging", "/opt/app"):
        assert secret not in text
    assert err.details() == "cannot read ct_01.nii.gz: bad gzip data (from main.py)"
    read = error_details(err)
    assert read.field_violations == (("header.content", err.details()),)
    assert read.resource == ("image", "ct_01.nii.gz")


def test_a_bug_is_internal_and_tells_nothing(channel) -> None:
    err = _fail(channel, "bug")
    assert err.code() == grpc.StatusCode.INTERNAL
    assert err.details() == "internal error (KeyError); see the server log"
    assert "srv" not in repr(err.trailing_metadata())


def test_a_20kb_value_is_never_echoed_in_full(channel) -> None:
    err = _fail(channel, "long")
    # the client's 8 KiB metadata limit would turn an echoed id into RESOURCE_EXHAUSTED
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(err.details()) <= MAX_MESSAGE_CHARS
    assert sum(len(k) + len(v) for k, v in err.trailing_metadata()) < 4096
    read = error_details(err)
    (violation,) = read.field_violations
    assert len(violation[0]) <= MAX_DETAIL_CHARS and len(violation[1]) <= MAX_DETAIL_CHARS
    assert read.resource is not None and len(read.resource[1]) <= MAX_DETAIL_CHARS
    assert len(read.metadata["id"]) <= MAX_DETAIL_CHARS


def test_violations_are_capped(channel) -> None:
    err = _fail(channel, "many")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    read = error_details(err)
    assert len(read.field_violations) == 16
    assert all(len(d) <= MAX_DETAIL_CHARS for _, d in read.field_violations)


def test_error_details_of_a_call_without_details() -> None:
    # a call that never reached a server: code and message only, no trailers to read
    with grpc.insecure_channel("127.0.0.1:1") as ch:
        with pytest.raises(grpc.RpcError) as info:
            ch.unary_unary("/test.Errors/Unary")(b"", timeout=2)
    read = error_details(info.value)
    assert read.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert read.field_violations == () and read.retry_after_s is None and read.reason is None


@pytest.mark.parametrize(("text", "expected"), [
    ("cannot open /data/studies/ct_01.nii.gz", "cannot open ct_01.nii.gz"),
    ("folder /data/studies/ is missing", "folder <folder> is missing"),
    ("'/home/u/app/main.py', line 3", "'main.py', line 3"),
    ("see https://example.org/docs/page", "see https://example.org/docs/page"),
    ("ratio 3/4 and 1/2", "ratio 3/4 and 1/2"),
    ("just /tmp", "just /tmp"),
])
def test_scrub_keeps_last_components_only(text: str, expected: str) -> None:
    assert scrub(text) == expected


def test_scrub_bounds_length() -> None:
    out = scrub("y" * 5000)
    assert len(out) <= MAX_MESSAGE_CHARS and out.endswith("more)")
    assert scrub("short") == "short"


def test_codes_match_google_rpc_numbers() -> None:
    for code in STATUS_BY_ERROR.values():
        assert code.value[0] == code_pb2.Code.Value(code.name)


def test_concurrent_failures_keep_their_own_details(channel) -> None:
    cases = ["field", "resource", "retry", "reason"] * 5
    results: Dict[int, grpc.StatusCode] = {}

    def run(i: int) -> None:
        results[i] = error_details(_fail(channel, cases[i])).code

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    expected = {"field": grpc.StatusCode.INVALID_ARGUMENT, "resource": grpc.StatusCode.NOT_FOUND,
                "retry": grpc.StatusCode.RESOURCE_EXHAUSTED, "reason": grpc.StatusCode.OUT_OF_RANGE}
    assert results == {i: expected[c] for i, c in enumerate(cases)}
