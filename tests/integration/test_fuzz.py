"""Malformed requests and streams against every RPC of every service, on one real server.

Each case is one hostile call (bad ids, broken streams, corrupt volumes, bombs, odd geometry,
unknown enum numbers, hostile params, bad paging, bytes that are no message at all). For each:

* the status is a client's error (or OK), never INTERNAL/UNKNOWN (INTERNAL only where grpcio itself
  cannot parse the bytes and answers before our code runs), and the call ends within its deadline;
* the message names no server path and carries no traceback;
* the server still answers its health check with SERVING;
* the datastore is unchanged: every file under the studies folder has the same bytes and the index
  rows (images, labels, jobs) are the same (staging under ``.monailabel`` may hold a resumable part).

The cases come from a seeded generator, so a failure names a case that reproduces.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import pkgutil
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Sequence

import grpc
import numpy as np
import pytest
import xxhash
from google.protobuf import duration_pb2, struct_pb2
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message_factory import GetMessageClass

import monailabel_api.v1
from monailabel.datasets import write_phantoms
from monailabel_api.v1 import (
    common_pb2,
    dataset_pb2,
    datastore_pb2,
    infer_pb2,
    job_pb2,
    strategy_pb2,
    train_pb2,
)
from monailabel_server.config import ServerConfig
from monailabel_server.server import RunningServer, start

from .conftest import copy_template
from .hostile import (
    SHAPE,
    Stubs,
    chunk,
    chunks_of,
    content_header,
    corrupt_niftis,
    corrupt_nrrds,
    diff,
    gz,
    label_header,
    nifti_bytes,
    nifti_gz_bomb,
    png_ihdr_bomb,
    serving,
    snapshot,
    stream,
    upload_header,
    zip_bytes,
)

SEED = 20261127
# a malformed request is answered at once; a bomb the server inflates runs into this
RPC_TIMEOUT_S = 15.0
MAX_VOLUME = 4 << 20
MAX_MESSAGE = 1 << 20
MODEL = "segmentation"
STRATEGY = "random"
IMAGE = "phantom_000"  # has a final label
OTHER = "phantom_001"

BAD_CODES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED,
             grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS}

# ids every service must refuse (the id pattern allows none of them)
BAD_IDS: Dict[str, str] = {
    "empty": "",
    "dot": ".",
    "dotdot": "..",
    "slash": "/",
    "absolute": "/etc/passwd",
    "traversal": "../phantom_000",
    "nested_traversal": "a/../../b",
    "backslash": "..\\..\\x",
    "len129": "a" * 129,
    "len300": "b" * 300,
    "len20k": "c" * 20000,
    "unicode": "ünïcødé",
    "emoji": "scan😀",
    "nul": "phantom_000\x00.nii",
    "only_nul": "\x00",
    "newline": "x\ny",
    "space": "a b",
    "hidden": ".monailabel",
    "shell": "$(id)",
}

TTL_60 = duration_pb2.Duration(seconds=60)


@dataclass
class Ctx:
    """What a case needs at run time."""

    stubs: Stubs
    studies: Path
    scoring: str


@dataclass(frozen=True)
class Case:
    """One hostile call: ``call`` makes it and returns the reply (iterators are drained by the test)."""

    id: str
    method: str
    call: Callable[[Ctx], Any]
    raw: bool = False


CASES: List[Case] = []


def _discover() -> Dict[str, MethodDescriptor]:
    """Every RPC of every service in the generated package, as ``Service.Method`` -> descriptor."""
    found: Dict[str, MethodDescriptor] = {}
    for info in pkgutil.iter_modules(monailabel_api.v1.__path__):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(f"monailabel_api.v1.{info.name}")
            for service in module.DESCRIPTOR.services_by_name.values():
                for method in service.methods:
                    found[f"{service.name}.{method.name}"] = method
    return found


METHODS = _discover()
ALL_METHODS = sorted(METHODS)


def _invoke(ctx: Ctx, method: str, request: Any) -> Any:
    """Calls ``method`` with a request (or an iterator of requests, for client-streaming RPCs)."""
    d = METHODS[method]
    path = f"/{d.containing_service.full_name}/{d.name}"
    kind = {(False, False): ctx.stubs.channel.unary_unary, (False, True): ctx.stubs.channel.unary_stream,
            (True, False): ctx.stubs.channel.stream_unary, (True, True): ctx.stubs.channel.stream_stream}
    call = kind[(d.client_streaming, d.server_streaming)](
        path, request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=GetMessageClass(d.output_type).FromString)
    return call(request, timeout=RPC_TIMEOUT_S)


def case(method: str, name: str, call: Callable[[Ctx], Any], raw: bool = False) -> None:
    # an RPC the protos no longer have drops its cases (the coverage test asks for cases of new ones)
    if method in METHODS:
        CASES.append(Case(f"{method}-{name}-{len(CASES):03d}", method, call, raw))


def lazy(method: str, name: str, build: Callable[[Ctx], Any]) -> None:
    """A call whose request (or request iterator) is built when the case runs."""
    case(method, name, lambda ctx: _invoke(ctx, method, build(ctx)))


def unary(method: str, name: str, request: Any) -> None:
    """A call with one request (unary or server-streaming)."""
    lazy(method, name, lambda ctx: request)


def streamed(method: str, name: str, message: Any, parts: Callable[[], List[Any]]) -> None:
    """A client-streaming call; ``parts`` builds the headers and chunks (built when the case runs)."""
    lazy(method, name, lambda ctx: stream(message, parts()))


# -- hostile values ----------------------------------------------------------------------------------------------------

rng = random.Random(SEED)


def struct(value: Dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(value)
    return s


def _nested(depth: int) -> Dict[str, Any]:
    value: Dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        value = {"n": value}
    return value


def _nan_struct() -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.fields["a"].number_value = float("nan")
    s.fields["b"].number_value = float("inf")
    return s


BAD_STRUCTS: Dict[str, Callable[[], struct_pb2.Struct]] = {
    "huge_value": lambda: struct({"k": "x" * (1 << 19)}),
    "many_keys": lambda: struct({f"k{i}": i for i in range(5000)}),
    "deep": lambda: struct(_nested(20)),
    "nan_inf": _nan_struct,
    "huge_list": lambda: struct({"l": list(range(100000))}),
}

HOSTILE_PARAMS: Dict[str, Dict[str, Any]] = {
    "label_tag": {"label_tag": "../../etc"},
    "save_label": {"save_label": True, "label_tag": "final"},
    "train_ds": {"train_ds": [{"image": "/etc/passwd", "label": "/etc/passwd"}]},
    "distributed_url": {"distributed_url": "tcp://10.0.0.1:1234", "world_size": 1000, "rank": -1},
    "world_size": {"world_size": -5, "multi_gpu": True},
    "result_dtype_s2000": {"result_dtype": "S2000"},
    "roi_size_negative": {"roi_size": [-32, -32, -32]},
    "roi_size_huge": {"roi_size": [100000, 100000, 100000]},
    "roi_size_string": {"roi_size": "32,32,a"},
    "device": {"device": "cuda:99"},
    "studies": {"studies": "/", "output_dir": "/etc"},
    "max_epochs": {"max_epochs": 1e18, "epochs": -1},
}

PAGE_TOKENS: Dict[str, str] = {
    "garbage": "garbage!!",
    "base64_garbage": base64.urlsafe_b64encode(bytes(rng.randrange(256) for _ in range(48))).decode(),
    "base64_overflow": base64.urlsafe_b64encode(json.dumps({"offset": 2**80, "after": "\x00"}).encode()).decode(),
    "digits_overflow": "9" * 400,
    "negative": "-1",
    "nul": "\x00",
    "huge": "A" * 20000,
    "unicode": "ünïcødé",
}
PAGE_SIZES = {"negative": -1, "int32_min": -(2**31), "int32_max": 2**31 - 1}

GARBAGE: Dict[str, bytes] = {
    "random7": bytes(rng.randrange(256) for _ in range(7)),
    "random1000": bytes(rng.randrange(256) for _ in range(1000)),
    "bad_varint": b"\x08" + b"\xff" * 11,
    "huge_length": b"\x0a\xff\xff\xff\xff\x0f",
    "bad_utf8": b"\x0a\x02\xc3\x28",
    "wire_type_7": b"\x0f\x01",
}


def volume_bytes() -> bytes:
    return nifti_bytes(SHAPE, seed=1)


# -- all ids on all id-taking RPCs -------------------------------------------------------------------------------------

for label, bad in BAD_IDS.items():
    streamed("DatastoreService.UploadImage", f"id_{label}", datastore_pb2.UploadImageRequest,
             lambda bad=bad: [upload_header(bad, content_header(volume_bytes())), *chunks_of(volume_bytes())])
    streamed("DatastoreService.SaveLabel", f"id_{label}", datastore_pb2.SaveLabelRequest,
             lambda bad=bad: [label_header(bad, "final", content_header(nifti_bytes(label=True, dtype=np.uint8))),
                              *chunks_of(nifti_bytes(label=True, dtype=np.uint8))])
    streamed("DatastoreService.SaveLabel", f"tag_{label}", datastore_pb2.SaveLabelRequest,
             lambda bad=bad: [label_header(OTHER, bad or "/", content_header(nifti_bytes(label=True, dtype=np.uint8))),
                              *chunks_of(nifti_bytes(label=True, dtype=np.uint8))])
    streamed("InferService.CreateSession", f"image_{label}", infer_pb2.CreateSessionRequest,
             lambda bad=bad: [infer_pb2.CreateSessionHeader(image_id=bad, ttl=TTL_60)])
    unary("TrainService.StartTrainJob", f"train_ids_{label}",
          train_pb2.StartTrainJobRequest(model=MODEL, max_epochs=1, train_ids=[bad or "/"]))

# -- ids: every string field that names something, in every RPC that takes one request ------------------------------

CORE_IDS = ("empty", "dotdot", "slash", "absolute", "len129", "len300", "len20k", "unicode", "nul")
# fields that name a thing; the others of a request get a valid value, so the check at fault is the fuzzed one's
ID_FIELDS = ("image_id", "tag", "label_tag", "session_id", "job_id", "upload_id", "model", "method", "strategy",
             "client_id")
VALID = {"image_id": IMAGE, "tag": "final", "model": MODEL, "strategy": STRATEGY, "client_id": "fuzz"}
# an empty value of these means "the default" (a valid request), so "/" stands in for it
EMPTY_IS_DEFAULT = {"tag", "label_tag", "model", "method", "strategy", "client_id"}


def _id_requests() -> None:
    for key, d in METHODS.items():
        if d.client_streaming:
            continue
        cls = GetMessageClass(d.input_type)
        names = [f.name for f in d.input_type.fields if f.name in ID_FIELDS and f.type == f.TYPE_STRING]
        for name in names:
            # the spec's kinds of bad id every time, and a seeded pick of the others
            others_pool = sorted(set(BAD_IDS) - set(CORE_IDS))
            for label in [*CORE_IDS, *rng.sample(others_pool, 3)]:
                bad = BAD_IDS[label]
                value = "/" if not bad and name in EMPTY_IS_DEFAULT else bad
                others = {n: VALID[n] for n in names if n != name and n in VALID}
                # a oneof keeps its last field set: the fuzzed one goes last
                request = cls(**others)
                setattr(request, name, value)
                unary(key, f"{name}_{label}", request)


_id_requests()

# -- downloads: offsets and chunk sizes --------------------------------------------------------------------------------

for label, (offset, size) in {"offset_negative": (-1, 0), "offset_huge": (2**62, 0), "chunk_negative": (0, -1),
                              "chunk_int32_max": (0, 2**31 - 1), "chunk_int32_min": (0, -(2**31))}.items():
    unary("DatastoreService.DownloadImage", label,
          datastore_pb2.DownloadImageRequest(image_id=IMAGE, offset=offset, chunk_size=size))
    unary("DatastoreService.DownloadLabel", label,
          datastore_pb2.DownloadLabelRequest(image_id=IMAGE, tag="final", offset=offset, chunk_size=size))

# -- paging and enums: every RPC with a page, every top-level enum field ---------------------------------------------


def _paging_and_enums() -> None:
    for key, d in METHODS.items():
        if d.client_streaming:
            continue
        cls = GetMessageClass(d.input_type)
        fields = {f.name: f for f in d.input_type.fields}
        if "page_size" in fields:
            for label, size in PAGE_SIZES.items():
                unary(key, f"page_size_{label}", cls(page_size=size))
        if "page_token" in fields:
            for label, token in PAGE_TOKENS.items():
                unary(key, f"token_{label}", cls(page_size=1, page_token=token) if "page_size" in fields
                      else cls(page_token=token))
        for f in d.input_type.fields:
            if f.type == f.TYPE_ENUM and not f.is_repeated:
                # numbers no enum value has: a newer client's value, or garbage
                for number in (99, -1):
                    request = cls(**{n: VALID[n] for n in fields if n in VALID})
                    setattr(request, f.name, number)
                    unary(key, f"{f.name}_{number}", request)


_paging_and_enums()

# -- free-form info and params -----------------------------------------------------------------------------------------

for label, make in BAD_STRUCTS.items():
    lazy("DatastoreService.UpdateImageInfo", f"info_{label}",
         lambda ctx, make=make: datastore_pb2.UpdateImageInfoRequest(image_id=IMAGE, info=make()))
    lazy("DatastoreService.UpdateLabelInfo", f"info_{label}",
         lambda ctx, make=make: datastore_pb2.UpdateLabelInfoRequest(image_id=IMAGE, tag="final", info=make()))
    streamed("DatastoreService.UploadImage", f"info_{label}", datastore_pb2.UploadImageRequest,
             lambda make=make, label=label: [
                 upload_header(f"fz_info_{label}", content_header(volume_bytes()), info=make()),
                 *chunks_of(volume_bytes())])
    streamed("DatastoreService.SaveLabel", f"info_{label}", datastore_pb2.SaveLabelRequest,
             lambda make=make: [label_header(OTHER, "final", content_header(nifti_bytes(label=True, dtype=np.uint8)),
                                             info=make()), *chunks_of(nifti_bytes(label=True, dtype=np.uint8))])
    lazy("InferService.Infer", f"extra_{label}", lambda ctx, make=make: infer_pb2.InferRequest(
        model=MODEL, image_id=IMAGE, params=infer_pb2.InferParams(extra=make())))
    lazy("TrainService.StartTrainJob", f"extra_{label}", lambda ctx, make=make: train_pb2.StartTrainJobRequest(
        model=MODEL, max_epochs=1, extra=make()))
    lazy("StrategyService.GetNextSample", f"params_{label}", lambda ctx, make=make: strategy_pb2.GetNextSampleRequest(
        strategy=STRATEGY, client_id="fuzz", params=make()))
    lazy("StrategyService.StartScoringJob", f"params_{label}",
         lambda ctx, make=make: strategy_pb2.StartScoringJobRequest(method=ctx.scoring, params=make()))

for label, params in HOSTILE_PARAMS.items():
    unary("InferService.Infer", f"extra_{label}", infer_pb2.InferRequest(
        model=MODEL, image_id=IMAGE, params=infer_pb2.InferParams(extra=struct(params)),
        output=infer_pb2.OutputOptions(skip_mask=True)))
    unary("TrainService.StartTrainJob", f"extra_{label}", train_pb2.StartTrainJobRequest(
        model=MODEL, max_epochs=1, extra=struct(params)))
    lazy("StrategyService.StartScoringJob", f"params_{label}",
         lambda ctx, params=params: strategy_pb2.StartScoringJobRequest(method=ctx.scoring, params=struct(params)))
    unary("StrategyService.GetNextSample", f"params_{label}", strategy_pb2.GetNextSampleRequest(
        strategy=STRATEGY, client_id="fuzz", params=struct(params)))

# -- inference parameters ----------------------------------------------------------------------------------------------

INFER_PARAMS: Dict[str, infer_pb2.InferParams] = {
    "point_2d": infer_pb2.InferParams(foreground=[infer_pb2.Point(coordinates=[1, 2])]),
    "point_10d": infer_pb2.InferParams(foreground=[infer_pb2.Point(coordinates=list(range(10)))]),
    "point_huge": infer_pb2.InferParams(foreground=[infer_pb2.Point(coordinates=[2**62, -(2**62), 2**40])]),
    "point_negative": infer_pb2.InferParams(background=[infer_pb2.Point(coordinates=[-1, -1, -1])]),
    "points_many": infer_pb2.InferParams(foreground=[infer_pb2.Point(coordinates=[1, 1, 1])] * 50000),
    "label_info_bad": infer_pb2.InferParams(label_info=[infer_pb2.LabelEntry(name="\x00" * 3000, index=-(2**62))]),
    "device_bad": infer_pb2.InferParams(device="cuda:99"),
    "device_shell": infer_pb2.InferParams(device="cpu; rm -rf /"),
    "result_dtype_99": infer_pb2.InferParams(result_dtype=99),
    "result_dtype_negative": infer_pb2.InferParams(result_dtype=-3),
    "amp_string": infer_pb2.InferParams(extra=struct({"amp": "true"})),
    "amp_list": infer_pb2.InferParams(extra=struct({"amp": [True, {"x": None}]})),
}
for label, params in INFER_PARAMS.items():
    unary("InferService.Infer", label, infer_pb2.InferRequest(model=MODEL, image_id=IMAGE, params=params))
OUTPUTS: Dict[str, infer_pb2.OutputOptions] = {
    "encoding_99": infer_pb2.OutputOptions(encoding=99),
    "encoding_negative": infer_pb2.OutputOptions(encoding=-1),
    "extension_traversal": infer_pb2.OutputOptions(result_extension="/../../etc/x.nii"),
    "extension_huge": infer_pb2.OutputOptions(result_extension="." + "a" * 20000),
    "chunk_negative": infer_pb2.OutputOptions(chunk_size=-1),
    "chunk_int32_max": infer_pb2.OutputOptions(chunk_size=2**31 - 1),
    "checksum_unknown": infer_pb2.OutputOptions(checksum="md5"),
    "checksum_huge": infer_pb2.OutputOptions(checksum="x" * 20000),
    "checksum_nul": infer_pb2.OutputOptions(checksum="sha256\x00"),
}
for label, output in OUTPUTS.items():
    unary("InferService.Infer", f"output_{label}", infer_pb2.InferRequest(model=MODEL, image_id=IMAGE, output=output))
unary("InferService.Infer", "no_source", infer_pb2.InferRequest(model=MODEL))
unary("InferService.GetSession", "random_uuid", infer_pb2.GetSessionRequest(session_id="0" * 32))

# -- training parameters -----------------------------------------------------------------------------------------------

TRAIN: Dict[str, Dict[str, Any]] = {
    "max_epochs_negative": {"max_epochs": -1},
    "max_epochs_int32_max": {"max_epochs": 2**31 - 1},
    "val_split_nan": {"val_split": float("nan")},
    "val_split_negative": {"val_split": -0.5},
    "val_split_two": {"val_split": 2.0},
    "batch_zero": {"train_batch_size": 0},
    "batch_huge": {"val_batch_size": 2**31 - 1},
    "device_bad": {"device": "cuda:99"},
    "dataset_bad": {"dataset": "os.system"},
    "dataloader_bad": {"dataloader": "../../evil"},
    "patience_huge": {"early_stop_patience": 10**9},  # -1 is MONAI Label's "off": valid
    "train_ids_unknown": {"train_ids": ["no_such_image"]},
    "train_ids_many": {"train_ids": [f"id{i}" for i in range(20000)]},
    "val_ids_traversal": {"val_ids": ["../../etc/passwd"]},
}
for label, fields in TRAIN.items():
    unary("TrainService.StartTrainJob", label,
          train_pb2.StartTrainJobRequest(model=MODEL, **{"max_epochs": 1, **fields}))
for label, after in {"negative": -1, "huge": 2**62}.items():
    unary("JobService.WatchJob", f"after_{label}", job_pb2.WatchJobRequest(job_id="x" * 32, after_sequence=after))
for label, size in {"negative": -1, "int32_max": 2**31 - 1}.items():
    unary("StrategyService.GetNextSample", f"chunk_{label}", strategy_pb2.GetNextSampleRequest(
        strategy="no_such_strategy", client_id="fuzz", include_image=True, chunk_size=size))

# the calls that start many jobs: unknown names, path-like names, "all" with names, hostile shared params
for label, bad in {"unknown": "no_such_model", "traversal": "../../etc", "empty": "", "huge": "m" * 20000}.items():
    unary("TrainService.StartTrainJobs", f"models_{label}", train_pb2.StartTrainJobsRequest(models=[MODEL, bad]))
    unary("StrategyService.StartScoringJobs", f"methods_{label}",
          strategy_pb2.StartScoringJobsRequest(methods=["no_such_method", bad]))
unary("TrainService.StartTrainJobs", "nothing_asked", train_pb2.StartTrainJobsRequest())
unary("TrainService.StartTrainJobs", "all_and_names",
      train_pb2.StartTrainJobsRequest(models=[MODEL], all_models=True))
unary("TrainService.StartTrainJobs", "params_server_keys", train_pb2.StartTrainJobsRequest(
    models=[MODEL], params=train_pb2.StartTrainJobRequest(max_epochs=1, extra=struct({"train_ds": "/etc"}))))
unary("StrategyService.StartScoringJobs", "nothing_asked", strategy_pb2.StartScoringJobsRequest())
unary("StrategyService.StartScoringJobs", "params_nan", strategy_pb2.StartScoringJobsRequest(
    all_methods=True, params=_nan_struct()))
# the dataset export: sizes out of range
for label, value in {"negative": -1, "int32_min": -(2**31)}.items():
    unary("DatasetService.ExportDataset", f"limit_{label}", dataset_pb2.ExportDatasetRequest(limit=value))
    unary("DatasetService.ExportDataset", f"chunk_{label}", dataset_pb2.ExportDatasetRequest(chunk_size=value))
unary("DatasetService.ExportDataset", "chunk_one_byte", dataset_pb2.ExportDatasetRequest(chunk_size=1))
# unary uploads: no target, hostile headers
unary("DatastoreService.CreateUpload", "no_target", datastore_pb2.CreateUploadRequest())
for label, bad in {"traversal": "../../etc/x", "huge": "x" * 20000, "slash": "a/b"}.items():
    unary("DatastoreService.CreateUpload", f"image_id_{label}", datastore_pb2.CreateUploadRequest(
        image=datastore_pb2.UploadImageHeader(image_id=bad, content=content_header(b"\0" * 64))))
unary("DatastoreService.CreateUpload", "volume_size_negative", datastore_pb2.CreateUploadRequest(
    volume=common_pb2.ContentHeader(encoding=common_pb2.ENCODING_NIFTI, total_size=-1)))
unary("DatastoreService.CreateUpload", "volume_size_huge", datastore_pb2.CreateUploadRequest(
    volume=common_pb2.ContentHeader(encoding=common_pb2.ENCODING_NIFTI, total_size=2**62)))
unary("DatastoreService.CreateUpload", "label_unknown_image", datastore_pb2.CreateUploadRequest(
    label=datastore_pb2.SaveLabelHeader(image_id="no_such_image", tag="final", content=content_header(b"\0" * 64))))

# Interact (clicks on a session, answered with mask deltas): broken starts, then hostile clicks on a real session
def _interact(start: Any, *more: Any) -> List[Any]:
    return [infer_pb2.InteractRequest(start=start), *more]


def _session(ctx: Ctx) -> str:
    header = infer_pb2.CreateSessionHeader(ttl=TTL_60, image_id=IMAGE)
    return str(ctx.stubs.infer.CreateSession(iter([infer_pb2.CreateSessionRequest(header=header)]),
                                             timeout=RPC_TIMEOUT_S).session.session_id)


def _click(click_id: int, **params: Any) -> Any:
    return infer_pb2.InteractRequest(click=infer_pb2.Click(click_id=click_id, params=infer_pb2.InferParams(**params)))


streamed("InferService.Interact", "click_before_start", infer_pb2.InteractRequest, lambda: [_click(1)])
streamed("InferService.Interact", "empty", infer_pb2.InteractRequest, lambda: [])
for label, sid in {"unknown": "0" * 32, "traversal": "../../etc", "huge": "s" * 20000}.items():
    streamed("InferService.Interact", f"session_{label}", infer_pb2.InteractRequest,
             lambda sid=sid: _interact(infer_pb2.InteractStart(session_id=sid, model=MODEL), _click(1)))
lazy("InferService.Interact", "model_unknown", lambda ctx: iter(_interact(
    infer_pb2.InteractStart(session_id=_session(ctx), model="no_such_model"), _click(1))))
lazy("InferService.Interact", "compression_unknown", lambda ctx: iter(_interact(
    infer_pb2.InteractStart(session_id=_session(ctx), model=MODEL, compression=99), _click(1))))  # type: ignore[arg-type]
lazy("InferService.Interact", "chunk_negative", lambda ctx: iter(_interact(
    infer_pb2.InteractStart(session_id=_session(ctx), model=MODEL, chunk_size=-1), _click(1))))
lazy("InferService.Interact", "checksum_unknown", lambda ctx: iter(_interact(
    infer_pb2.InteractStart(session_id=_session(ctx), model=MODEL, checksum="crc32"), _click(1))))
for label, point in {"four_d": [1, 2, 3, 4], "outside": [10**6, 0, 0], "negative": [-5, -5, -5]}.items():
    lazy("InferService.Interact", f"click_{label}", lambda ctx, point=point: iter(_interact(
        infer_pb2.InteractStart(session_id=_session(ctx), model=MODEL),
        _click(1, foreground=[infer_pb2.Point(coordinates=point)]))))
lazy("InferService.Interact", "second_start", lambda ctx: iter(_interact(
    infer_pb2.InteractStart(session_id=_session(ctx), model=MODEL),
    infer_pb2.InteractRequest(start=infer_pb2.InteractStart(session_id="x", model=MODEL)))))

# -- volumes: corrupt NIfTI / NRRD / gzip / raw geometry / 2-D / DICOM zip ---------------------------------------------


def _raw_header(data: bytes, **over: Any) -> common_pb2.ContentHeader:
    fields: Dict[str, Any] = dict(data_type=common_pb2.DATA_TYPE_INT16, shape=list(SHAPE),
                                  geometry=common_pb2.Geometry(spacing=[1, 1, 1], origin=[0, 0, 0],
                                                               direction=[1, 0, 0, 0, 1, 0, 0, 0, 1]))
    fields.update(over)
    return content_header(data, common_pb2.ENCODING_RAW, **fields)


_RAW = np.zeros(SHAPE, np.int16).tobytes()
_NAN, _INF = float("nan"), float("inf")


def _geometry(**over: Any) -> common_pb2.Geometry:
    fields: Dict[str, Any] = dict(spacing=[1, 1, 1], origin=[0, 0, 0], direction=[1, 0, 0, 0, 1, 0, 0, 0, 1])
    fields.update(over)
    return common_pb2.Geometry(**fields)


def _volumes() -> Dict[str, Callable[[], tuple]]:
    """name -> (content header, bytes) builders of volumes the server must refuse."""
    out: Dict[str, Callable[[], tuple]] = {}
    for name in corrupt_niftis(b"\x00" * 400):
        out[f"nifti_{name}"] = lambda name=name: _enc(corrupt_niftis(volume_bytes())[name], common_pb2.ENCODING_NIFTI)
        out[f"niftigz_{name}"] = lambda name=name: _enc(gz(corrupt_niftis(volume_bytes())[name]),
                                                        common_pb2.ENCODING_NIFTI_GZ)
    for name in ("directions_nan", "data_file_passwd", "data_file_relative", "data_file_list", "sizes_negative",
                 "sizes_huge", "sizes_garbage", "dimension_zero", "type_string", "gzip_truncated", "gzip_bomb",
                 "truncated_data", "no_blank_line", "directions_singular", "origin_inf", "sizes_zero",
                 "dimension_nine", "encoding_unknown", "magic_only", "sizes_too_few", "type_unknown"):
        out[f"nrrd_{name}"] = lambda name=name: _enc(corrupt_nrrds()[name], common_pb2.ENCODING_NRRD)
    out["gz_truncated"] = lambda: _enc(gz(volume_bytes())[:-40], common_pb2.ENCODING_NIFTI_GZ)
    out["gz_not_gzip"] = lambda: _enc(volume_bytes(), common_pb2.ENCODING_NIFTI_GZ)
    out["gz_bomb"] = lambda: _enc(nifti_gz_bomb(64 << 20), common_pb2.ENCODING_NIFTI_GZ)
    out["gz_concatenated_bomb"] = lambda: _enc(gz(volume_bytes()) + nifti_gz_bomb(64 << 20),
                                               common_pb2.ENCODING_NIFTI_GZ)
    raw_cases: Dict[str, Dict[str, Any]] = {
        "origin_nan": {"geometry": _geometry(origin=[_NAN, 0, 0])},
        "origin_inf": {"geometry": _geometry(origin=[0, _INF, 0])},
        "spacing_nan": {"geometry": _geometry(spacing=[_NAN, 1, 1])},
        "spacing_inf": {"geometry": _geometry(spacing=[1, _INF, 1])},
        "spacing_zero": {"geometry": _geometry(spacing=[0, 0, 0])},
        "spacing_negative": {"geometry": _geometry(spacing=[-1, 1, 1])},
        "direction_singular": {"geometry": _geometry(direction=[0] * 9)},
        "direction_nan": {"geometry": _geometry(direction=[_NAN] * 9)},
        "direction_short": {"geometry": _geometry(direction=[1, 0, 0, 1])},
        "spacing_short": {"geometry": _geometry(spacing=[1])},
        "shape_overflow": {"shape": [2**40, 2**40, 2**40]},
        "shape_product_int64": {"shape": [2**31, 2**31, 4]},
        "shape_zero": {"shape": [16, 0, 16]},
        "shape_negative": {"shape": [-16, -16, 16]},
        "shape_1d": {"shape": [4096]},
        "shape_7d": {"shape": [16, 16, 16, 1, 1, 1, 1], "geometry": _geometry()},
        "shape_empty": {"shape": []},
        "dtype_unspecified": {"data_type": common_pb2.DATA_TYPE_UNSPECIFIED},
        "dtype_99": {"data_type": 99},
        "dtype_negative": {"data_type": -2},
    }
    for name, over in raw_cases.items():
        out[f"raw_{name}"] = lambda over=over: (_raw_header(_RAW, **over), _RAW)
    out["raw_byte_count_short"] = lambda: (_raw_header(_RAW[:-2]), _RAW[:-2])
    out["raw_byte_count_long"] = lambda: (_raw_header(_RAW + b"\x00" * 6), _RAW + b"\x00" * 6)
    out["image2d_random"] = lambda: _enc(bytes(random.Random(SEED + 1).randrange(256) for _ in range(3000)),
                                         common_pb2.ENCODING_IMAGE_2D, file_extension=".png")
    out["image2d_png_bomb"] = lambda: _enc(png_ihdr_bomb(), common_pb2.ENCODING_IMAGE_2D, file_extension=".png")
    out["image2d_jpeg_garbage"] = lambda: _enc(b"\xff\xd8\xff\xe0" + b"\x00" * 500, common_pb2.ENCODING_IMAGE_2D,
                                               file_extension=".jpg")
    out["image2d_no_extension"] = lambda: _enc(b"\x00" * 300, common_pb2.ENCODING_IMAGE_2D)
    out["dicom_zip_garbage"] = lambda: _enc(b"PK\x03\x04" + b"\x00" * 300, common_pb2.ENCODING_DICOM_ZIP)
    out["dicom_zip_traversal"] = lambda: _enc(zip_bytes({"../../../../tmp/evil.dcm": b"x" * 200,
                                                         "/etc/evil.dcm": b"y"}), common_pb2.ENCODING_DICOM_ZIP)
    out["dicom_zip_bomb"] = lambda: _enc(zip_bytes({"a.dcm": b"\x00" * (64 << 20)}), common_pb2.ENCODING_DICOM_ZIP)
    out["dicom_zip_not_dicom"] = lambda: _enc(zip_bytes({"a.dcm": b"hello"}), common_pb2.ENCODING_DICOM_ZIP)
    out["encoding_99"] = lambda: _enc(volume_bytes(), 99)
    out["encoding_negative"] = lambda: _enc(volume_bytes(), -5)
    out["extension_traversal"] = lambda: _enc(volume_bytes(), common_pb2.ENCODING_UNSPECIFIED,
                                              file_extension="/../../x.nii")
    out["extension_nul"] = lambda: _enc(volume_bytes(), common_pb2.ENCODING_UNSPECIFIED, file_extension=".nii\x00")
    out["extension_huge"] = lambda: _enc(volume_bytes(), common_pb2.ENCODING_UNSPECIFIED,
                                         file_extension="." + "a" * 20000)
    out["extension_unknown"] = lambda: _enc(volume_bytes(), common_pb2.ENCODING_UNSPECIFIED, file_extension=".exe")
    return out


def _enc(data: bytes, encoding: int, **fields: Any) -> tuple:
    return content_header(data, encoding, **fields), data


VOLUMES = _volumes()


def _image_stream(content: common_pb2.ContentHeader, data: bytes, image_id: str) -> List[Any]:
    return [upload_header(image_id, content), *chunks_of(data)]


for n, (name, make) in enumerate(VOLUMES.items()):
    # every corrupt volume goes to the upload; a deterministic share goes to labels, inference and sessions
    streamed("DatastoreService.UploadImage", f"volume_{name}", datastore_pb2.UploadImageRequest,
             lambda make=make, n=n: _image_stream(*make(), image_id=f"fz_vol_{n:03d}"))
    if rng.random() < 0.4 or "bomb" in name:
        streamed("DatastoreService.SaveLabel", f"volume_{name}", datastore_pb2.SaveLabelRequest,
                 lambda make=make: [label_header(OTHER, "final", make()[0]), *chunks_of(make()[1])])
    if rng.random() < 0.35 or "bomb" in name:
        streamed("InferService.InferVolume", f"volume_{name}", infer_pb2.InferVolumeRequest,
                 lambda make=make: [infer_pb2.InferVolumeHeader(model=MODEL, content=make()[0]),
                                    *chunks_of(make()[1])])
    if rng.random() < 0.3 or "bomb" in name:
        streamed("InferService.CreateSession", f"volume_{name}", infer_pb2.CreateSessionRequest,
                 lambda make=make: [infer_pb2.CreateSessionHeader(ttl=TTL_60, content=make()[0]),
                                    *chunks_of(make()[1])])

# a label of another grid than its image's
streamed("DatastoreService.SaveLabel", "label_shape_mismatch", datastore_pb2.SaveLabelRequest,
         lambda: [label_header(OTHER, "final", content_header(nifti_bytes((8, 8, 8), label=True, dtype=np.uint8))),
                  *chunks_of(nifti_bytes((8, 8, 8), label=True, dtype=np.uint8))])
streamed("DatastoreService.SaveLabel", "label_of_missing_image", datastore_pb2.SaveLabelRequest,
         lambda: [label_header("fz_missing", "final", content_header(nifti_bytes(label=True, dtype=np.uint8))),
                  *chunks_of(nifti_bytes(label=True, dtype=np.uint8))])

# -- stream shapes -----------------------------------------------------------------------------------------------------


def _shapes(header_for: Callable[[common_pb2.ContentHeader], Any], data: Callable[[], bytes]) -> Dict[str, Callable]:
    """name -> parts builders of broken streams around ``header_for(content)`` and ``data()``."""

    def with_content(**fields: Any) -> Callable[[], List[Any]]:
        def parts() -> List[Any]:
            d = data()
            content = content_header(d, common_pb2.ENCODING_NIFTI, **fields)
            return [header_for(content), *chunks_of(d)]
        return parts

    def h() -> Any:
        return header_for(content_header(data(), common_pb2.ENCODING_NIFTI))

    def huge_chunk() -> List[Any]:
        big = b"\x00" * (2 * MAX_MESSAGE)
        return [header_for(content_header(big, common_pb2.ENCODING_NIFTI)), chunk(0, big)]

    return {
        "empty_stream": lambda: [],
        "no_header": lambda: chunks_of(data()),
        "header_only": lambda: [h()],
        "header_twice": lambda: [h(), h(), *chunks_of(data())],
        "chunk_first": lambda: [chunks_of(data())[0], h(), *chunks_of(data())[1:]],
        "header_mid_stream": lambda: [h(), chunks_of(data())[0], h(), *chunks_of(data())[1:]],
        "gap": lambda: [h(), chunk(0, data()[:1000]), chunk(2000, data()[2000:])],
        "overlap": lambda: [h(), chunk(0, data()[:3000]), chunk(1000, data()[1000:])],
        "repeat": lambda: [h(), chunk(0, data()), chunk(0, data())],
        "past_end": lambda: [h(), chunk(0, data()), chunk(len(data()) + 100, b"xyz")],
        "negative_offset": lambda: [h(), chunk(-1, data())],
        "offset_huge": lambda: [h(), chunk(2**62, b"x")],
        "more_than_announced": lambda: [header_for(content_header(data()[:100], common_pb2.ENCODING_NIFTI)),
                                        chunk(0, data())],
        "short": lambda: [h(), chunk(0, data()[: len(data()) // 2])],
        "empty_chunks": lambda: [h(), *[chunk(0, b"")] * 50],
        "huge_chunk": huge_chunk,
        "total_zero": with_content(total_size=0),
        "total_negative": with_content(total_size=-1),
        "total_huge": with_content(total_size=2**62),
        "sha_mismatch": with_content(sha256=hashlib.sha256(b"other").hexdigest()),
        "sha_upper": with_content(sha256="AB" * 32),
        "sha_short": with_content(sha256="abc"),
        "sha_nul": with_content(sha256="\x00" * 64),
        "xxh3_mismatch": with_content(xxh3_128=xxhash.xxh3_128_hexdigest(b"other")),
        "xxh3_only_mismatch": with_content(sha256="", xxh3_128=xxhash.xxh3_128_hexdigest(b"other")),
        "xxh3_upper": with_content(xxh3_128="AB" * 16),
        "xxh3_short": with_content(xxh3_128="abc"),
        "xxh3_sha_length": with_content(xxh3_128="ab" * 32),
        "xxh3_nul": with_content(xxh3_128="\x00" * 32),
        "xxh3_right_sha_wrong": lambda: [header_for(content_header(
            data(), common_pb2.ENCODING_NIFTI, sha256=hashlib.sha256(b"other").hexdigest(),
            xxh3_128=xxhash.xxh3_128_hexdigest(data()))), *chunks_of(data())],
        "no_content": lambda: [header_for(None), *chunks_of(data())],
    }


def _label_bytes() -> bytes:
    return nifti_bytes(label=True, dtype=np.uint8)


for name in _shapes(lambda c: None, volume_bytes):
    parts = _shapes(lambda c, name=name: upload_header(f"fz_stream_{name}", c), volume_bytes)[name]
    streamed("DatastoreService.UploadImage", f"stream_{name}", datastore_pb2.UploadImageRequest, parts)
for name, parts in _shapes(lambda c: label_header(OTHER, "final", c), _label_bytes).items():
    streamed("DatastoreService.SaveLabel", f"stream_{name}", datastore_pb2.SaveLabelRequest, parts)
for name, parts in _shapes(lambda c: infer_pb2.InferVolumeHeader(model=MODEL, content=c), volume_bytes).items():
    streamed("InferService.InferVolume", f"stream_{name}", infer_pb2.InferVolumeRequest, parts)
for name, parts in _shapes(lambda c: infer_pb2.CreateSessionHeader(ttl=TTL_60, content=c), volume_bytes).items():
    streamed("InferService.CreateSession", f"stream_{name}", infer_pb2.CreateSessionRequest, parts)


def _trailer_shapes(header_for: Callable[[common_pb2.ContentHeader], Any],
                    data: Callable[[], bytes]) -> Dict[str, Callable]:
    """name -> parts of streams whose checksum comes (or should come) in a trailer."""

    def parts(trailer: Any, announce: str = "xxh3_128", tail: Sequence[Any] = ()) -> Callable[[], List[Any]]:
        def build() -> List[Any]:
            d = data()
            content = content_header(d, common_pb2.ENCODING_NIFTI, sha256="", trailer_checksum=announce)
            made = trailer(d) if callable(trailer) else trailer
            return [header_for(content), *chunks_of(d), *([made] if made is not None else []), *tail]
        return build

    def right(d: bytes) -> common_pb2.ContentTrailer:
        return common_pb2.ContentTrailer(xxh3_128=xxhash.xxh3_128_hexdigest(d))

    return {
        "trailer_missing": parts(None),
        "trailer_not_announced": parts(right, announce=""),
        "trailer_wrong": parts(common_pb2.ContentTrailer(xxh3_128=xxhash.xxh3_128_hexdigest(b"other"))),
        "trailer_empty": parts(common_pb2.ContentTrailer()),
        "trailer_upper": parts(common_pb2.ContentTrailer(xxh3_128="AB" * 16)),
        "trailer_other_checksum": parts(lambda d: common_pb2.ContentTrailer(
            xxh3_128=xxhash.xxh3_128_hexdigest(d), sha256=hashlib.sha256(d).hexdigest())),
        "trailer_sha_announced_xxh3_sent": parts(right, announce="sha256"),
        "trailer_checksum_unknown": parts(right, announce="md5"),
        "chunk_after_trailer": parts(right, tail=[chunk(0, b"x")]),
        "trailer_twice": parts(right, tail=[common_pb2.ContentTrailer(xxh3_128="00" * 16)]),
        "trailer_first": lambda: [header_for(content_header(data(), common_pb2.ENCODING_NIFTI, sha256="",
                                                            trailer_checksum="xxh3_128")),
                                  right(data()), *chunks_of(data())],
    }


for name in _trailer_shapes(lambda c: None, volume_bytes):
    parts = _trailer_shapes(lambda c, name=name: upload_header(f"fz_trailer_{name}", c), volume_bytes)[name]
    streamed("DatastoreService.UploadImage", f"stream_{name}", datastore_pb2.UploadImageRequest, parts)
for name, parts in _trailer_shapes(lambda c: label_header(OTHER, "final", c), _label_bytes).items():
    streamed("DatastoreService.SaveLabel", f"stream_{name}", datastore_pb2.SaveLabelRequest, parts)
for name, parts in _trailer_shapes(lambda c: infer_pb2.CreateSessionHeader(ttl=TTL_60, content=c),
                                   volume_bytes).items():
    streamed("InferService.CreateSession", f"stream_{name}", infer_pb2.CreateSessionRequest, parts)
streamed("InferService.InferVolume", "stream_trailer_checksum", infer_pb2.InferVolumeRequest, lambda: [
    infer_pb2.InferVolumeHeader(model=MODEL, content=content_header(volume_bytes(), sha256="",
                                                                    trailer_checksum="xxh3_128")),
    *chunks_of(volume_bytes())])
for label, ttl in {"negative": -1, "int32_max": 2**31 - 1, "int32_min": -(2**31)}.items():
    streamed("InferService.CreateSession", f"ttl_{label}", infer_pb2.CreateSessionRequest,
             lambda ttl=ttl: [infer_pb2.CreateSessionHeader(ttl=duration_pb2.Duration(seconds=ttl),
                                                            content=content_header(volume_bytes())),
                              *chunks_of(volume_bytes())])
streamed("InferService.CreateSession", "no_source", infer_pb2.CreateSessionRequest,
         lambda: [infer_pb2.CreateSessionHeader(ttl=TTL_60)])
streamed("InferService.InferVolume", "model_missing", infer_pb2.InferVolumeRequest, lambda: [
    infer_pb2.InferVolumeHeader(model="no_such_model", content=content_header(volume_bytes())),
    *chunks_of(volume_bytes())])
streamed("InferService.InferVolume", "params_hostile", infer_pb2.InferVolumeRequest, lambda: [
    infer_pb2.InferVolumeHeader(model=MODEL, content=content_header(volume_bytes()),
                                params=infer_pb2.InferParams(extra=struct(HOSTILE_PARAMS["roi_size_negative"])),
                                output=infer_pb2.OutputOptions(encoding=99)),
    *chunks_of(volume_bytes())])

# -- bytes that are no message: every RPC ------------------------------------------------------------------------------


def _raw_call(path: str, client_streaming: bool, server_streaming: bool, payloads: List[bytes]) -> Callable:
    def call(ctx: Ctx) -> Any:
        ch = ctx.stubs.channel
        if client_streaming:
            kind = ch.stream_stream if server_streaming else ch.stream_unary
            return kind(path)(iter(payloads), timeout=RPC_TIMEOUT_S)
        kind = ch.unary_stream if server_streaming else ch.unary_unary
        return kind(path)(payloads[0], timeout=RPC_TIMEOUT_S)
    return call


for key, method in METHODS.items():
    path = f"/{method.containing_service.full_name}/{method.name}"
    for label, payload in GARBAGE.items():
        case(key, f"garbage_{label}", _raw_call(path, method.client_streaming, method.server_streaming, [payload]),
             raw=True)
    if method.client_streaming:
        # a valid first message, then a message that is not one
        header_field = method.input_type.fields[0]
        first = GetMessageClass(method.input_type)(
            **{header_field.name: GetMessageClass(header_field.message_type)()}
        ).SerializeToString()
        case(key, "garbage_second", _raw_call(path, True, method.server_streaming, [first, b"\x12\xff\xff\xff"]),
             raw=True)


# -- the suite ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ctx]:
    root = tmp_path_factory.mktemp("fuzz")
    app_dir = copy_template(root / "app")
    studies = root / "studies"
    # two labeled images, so a training request is refused for its hostile field, not for too little data
    write_phantoms(studies, count=3, shape=SHAPE, labeled=2)
    config = ServerConfig(app_dir=app_dir, studies=str(studies), port=0, max_volume_bytes=MAX_VOLUME,
                          max_message_bytes=MAX_MESSAGE, conf={"roi_size": "16,16,16"})
    running: RunningServer = start(config)
    try:
        with grpc.insecure_channel(running.address) as channel:
            stubs = Stubs.of(channel)
            methods = stubs.strategy.ListScoringMethods(strategy_pb2.ListScoringMethodsRequest(), timeout=RPC_TIMEOUT_S)
            scoring = methods.scoring_methods[0].name if methods.scoring_methods else "no_such_method"
            yield Ctx(stubs, studies, scoring)
    finally:
        running.stop(grace=1)


def _outcome(reply: Any) -> tuple:
    try:
        if isinstance(reply, Iterator) or (hasattr(reply, "__iter__") and hasattr(reply, "cancel")):
            for _ in reply:
                pass
    except grpc.RpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


def test_enough_cases_on_every_rpc() -> None:
    assert len(CASES) >= 300, len(CASES)
    assert len({c.id for c in CASES}) == len(CASES)
    covered = {c.method for c in CASES if not c.raw}
    # every RPC that takes anything gets typed hostile requests, and every RPC gets garbage bytes
    takes_nothing = {m for m in ALL_METHODS if m.split(".")[1] in
                     ("GetAppInfo", "GetDatastoreStatus", "ListTrainers", "ListStrategies", "ListScoringMethods",
                      "GetTrainDatalist", "GetGpuInfo")}
    assert set(ALL_METHODS) - takes_nothing <= covered, sorted(set(ALL_METHODS) - takes_nothing - covered)
    assert set(ALL_METHODS) <= {c.method for c in CASES if c.raw}


@pytest.mark.parametrize("hostile", CASES, ids=[c.id for c in CASES])
def test_malformed_request(ctx: Ctx, hostile: Case) -> None:
    before = snapshot(ctx.studies)
    try:
        code, details = _outcome(hostile.call(ctx))
    except grpc.RpcError as err:
        code, details = err.code(), err.details() or ""
    if hostile.raw and code == grpc.StatusCode.INTERNAL and "deserializ" in details.lower():
        pass  # grpcio's own answer to bytes it cannot parse; no servicer ran
    else:
        assert code not in BAD_CODES, f"{code.name}: {details}"
    assert str(ctx.studies) not in details and "Traceback" not in details, details
    assert serving(ctx.stubs.channel), "the server must still answer SERVING"
    changed = diff(before, snapshot(ctx.studies))
    assert not changed, f"{code.name} ({details[:200]}) and the datastore changed: {changed}"
