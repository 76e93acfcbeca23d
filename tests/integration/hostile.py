"""Hostile inputs and the checks around them, shared by the fuzz, fault and concurrency suites.

Requests are built in a few functions here (headers, streams, stubs), so a small proto change (an
``upload_id`` in the upload headers, jobs moving to one JobService) is an edit in one place.
Volumes are built as bytes (valid ones, then corrupted field by field), and the datastore is
observed from outside the server: every file under the studies folder hashed, and the SQLite
index rows dumped, so a suite can say "nothing changed" or "index and files agree".
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import queue
import signal
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import grpc
import nibabel as nib
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from monailabel.datasets import make_phantom
from monailabel_api.v1 import (
    app_pb2_grpc,
    common_pb2,
    datastore_pb2,
    datastore_pb2_grpc,
    infer_pb2_grpc,
    job_pb2,
    job_pb2_grpc,
    strategy_pb2_grpc,
    train_pb2,
    train_pb2_grpc,
)

SHAPE = (16, 16, 16)
# every RPC a suite makes carries a deadline: nothing here can hang
RPC_TIMEOUT_S = 30.0
HEALTH_TIMEOUT_S = 10.0
WORKER_MODULE = "monailabel_server.jobs.worker"
INDEX_DIR = ".monailabel"


# -- stubs and request builders ---------------------------------------------------------------------------


@dataclass
class Stubs:
    """Every service's stub on one channel (training and scoring jobs live in their own services today)."""

    channel: grpc.Channel
    app: app_pb2_grpc.AppServiceStub
    datastore: datastore_pb2_grpc.DatastoreServiceStub
    infer: infer_pb2_grpc.InferServiceStub
    train: train_pb2_grpc.TrainServiceStub
    jobs: job_pb2_grpc.JobServiceStub
    strategy: strategy_pb2_grpc.StrategyServiceStub
    health: health_pb2_grpc.HealthStub

    @classmethod
    def of(cls, channel: grpc.Channel) -> Stubs:
        return cls(
            channel,
            app_pb2_grpc.AppServiceStub(channel),
            datastore_pb2_grpc.DatastoreServiceStub(channel),
            infer_pb2_grpc.InferServiceStub(channel),
            train_pb2_grpc.TrainServiceStub(channel),
            job_pb2_grpc.JobServiceStub(channel),
            strategy_pb2_grpc.StrategyServiceStub(channel),
            health_pb2_grpc.HealthStub(channel),
        )


def content_header(
    data: bytes = b"", encoding: int = common_pb2.ENCODING_NIFTI, **fields: Any
) -> common_pb2.ContentHeader:
    """A stream's content header for ``data`` (size and checksum from the bytes unless given)."""
    fields.setdefault("total_size", len(data))
    fields.setdefault("sha256", hashlib.sha256(data).hexdigest() if data else "")
    return common_pb2.ContentHeader(encoding=encoding, **fields)


def upload_header(image_id: str, content: Optional[common_pb2.ContentHeader] = None, info: Any = None,
                  overwrite: bool = False, upload_id: str = "") -> datastore_pb2.UploadImageHeader:
    """An UploadImage header; ``upload_id`` is set only when the proto has the field."""
    header = datastore_pb2.UploadImageHeader(image_id=image_id, overwrite=overwrite)
    if content is not None:
        header.content.CopyFrom(content)
    if info is not None:
        header.info.CopyFrom(info)
    if upload_id and "upload_id" in header.DESCRIPTOR.fields_by_name:
        header.upload_id = upload_id
    return header


def label_header(image_id: str, tag: str = "final", content: Optional[common_pb2.ContentHeader] = None,
                 info: Any = None, upload_id: str = "") -> datastore_pb2.SaveLabelHeader:
    """A SaveLabel header; ``upload_id`` is set only when the proto has the field."""
    header = datastore_pb2.SaveLabelHeader(image_id=image_id, tag=tag)
    if content is not None:
        header.content.CopyFrom(content)
    if info is not None:
        header.info.CopyFrom(info)
    if upload_id and "upload_id" in header.DESCRIPTOR.fields_by_name:
        header.upload_id = upload_id
    return header


def chunk(offset: int, data: bytes) -> common_pb2.Chunk:
    return common_pb2.Chunk(offset=offset, data=data)


def chunks_of(data: bytes, size: int = 16 << 10, start: int = 0) -> List[common_pb2.Chunk]:
    """``data[start:]`` as in-order chunks of ``size`` bytes."""
    return [chunk(o, data[o:o + size]) for o in range(start, len(data), size)]


def stream(message: Any, parts: Iterable[Any]) -> Iterator[Any]:
    """A request stream: each part is a header message (wrapped as ``header=``), a Chunk (``chunk=``) or a
    ContentTrailer (``trailer=``)."""
    for part in parts:
        if isinstance(part, common_pb2.Chunk):
            yield message(chunk=part)
        elif isinstance(part, common_pb2.ContentTrailer):
            yield message(trailer=part)
        elif part.DESCRIPTOR.name.endswith("Header"):
            yield message(header=part)
        else:
            yield part


def upload_stream(header: Any, data: bytes, size: int = 16 << 10) -> Iterator[datastore_pb2.UploadImageRequest]:
    """A whole UploadImage stream: the header, then the bytes in order."""
    return stream(datastore_pb2.UploadImageRequest, [header, *chunks_of(data, size)])


def label_stream(header: Any, data: bytes, size: int = 16 << 10) -> Iterator[datastore_pb2.SaveLabelRequest]:
    """A whole SaveLabel stream: the header, then the bytes in order."""
    return stream(datastore_pb2.SaveLabelRequest, [header, *chunks_of(data, size)])


# -- volumes as bytes ----------------------------------------------------------------------------------------

# NIfTI-1 header offsets (little-endian, as nibabel writes on this machine)
_DIM, _DATATYPE, _PIXDIM, _VOX_OFFSET, _SFORM_CODE, _SROW_X = 40, 70, 76, 108, 254, 280


def nifti_bytes(shape: Sequence[int] = SHAPE, seed: int = 0, dtype: Any = np.int16, label: bool = False) -> bytes:
    """A small phantom (or its label) as a single-file NIfTI-1."""
    image, mask, affine = make_phantom(tuple(shape), seed)
    array = (mask if label else image).astype(dtype)
    img = nib.Nifti1Image(array, affine)
    img.header.set_sform(affine, code=1)
    return img.to_bytes()


def patch(data: bytes, offset: int, fmt: str, *values: Any) -> bytes:
    """``data`` with ``values`` packed at ``offset`` (little-endian ``fmt``)."""
    packed = struct.pack("<" + fmt, *values)
    return data[:offset] + packed + data[offset + len(packed):]


def corrupt_niftis(base: bytes) -> Dict[str, bytes]:
    """Named corruptions of a valid NIfTI-1 (3-D, 16^3)."""
    n = int(np.prod(SHAPE))
    return {
        "dim0_zero": patch(base, _DIM, "h", 0),
        "dim_zero": patch(base, _DIM + 4, "h", 0),
        "dim_negative": patch(base, _DIM + 2, "h", -16),
        "dims_huge": patch(base, _DIM + 2, "hhh", 32767, 32767, 32767),
        "one_d": patch(base, _DIM, "hhhh", 1, n, 1, 1),
        "seven_d": patch(base, _DIM, "8h", 7, 16, 16, 16, 1, 1, 1, 1),
        "dim0_nine": patch(base, _DIM, "h", 9),
        "vox_offset_huge": patch(base, _VOX_OFFSET, "f", 1e12),
        "vox_offset_negative": patch(base, _VOX_OFFSET, "f", -352.0),
        "vox_offset_nan": patch(base, _VOX_OFFSET, "f", float("nan")),
        "pixdim_nan": patch(base, _PIXDIM + 4, "f", float("nan")),
        "pixdim_inf": patch(base, _PIXDIM + 8, "f", float("inf")),
        "pixdim_zero": patch(base, _PIXDIM + 4, "fff", 0.0, 0.0, 0.0),
        "sform_nan": patch(patch(base, _SFORM_CODE, "h", 1), _SROW_X, "ffff", float("nan"), 0, 0, 0),
        "sform_singular": patch(patch(base, _SFORM_CODE, "h", 1), _SROW_X, "12f", *([0.0] * 12)),
        "datatype_unknown": patch(base, _DATATYPE, "hh", 9999, 16),
        "truncated_half": base[: len(base) // 2],
        "truncated_header": base[:200],
        "magic_wrong": patch(base, 344, "4s", b"xx1\x00"),
        "sizeof_hdr_wrong": patch(base, 0, "i", 12345),
    }


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=1, mtime=0)


_BOMB: Dict[int, bytes] = {}


def nifti_gz_bomb(inflated_bytes: int) -> bytes:
    """A small .nii.gz whose header is honest but whose voxels inflate to ``inflated_bytes`` of zeros."""
    if inflated_bytes not in _BOMB:
        side = int(round((inflated_bytes) ** (1 / 3))) + 1
        header = nib.Nifti1Header()
        header.set_data_dtype(np.uint8)
        header.set_data_shape((side, side, side))
        header["vox_offset"] = 352
        head = header.binaryblock + b"\x00" * 4
        comp = zlib.compressobj(9, zlib.DEFLATED, 31)
        out = [comp.compress(head)]
        block = b"\x00" * (1 << 20)
        for _ in range(side ** 3 // len(block) + 1):
            out.append(comp.compress(block))
        out.append(comp.flush())
        _BOMB[inflated_bytes] = b"".join(out)
    return _BOMB[inflated_bytes]


def nrrd_bytes(
    fields: Optional[Dict[str, str]] = None, data: Optional[bytes] = None, drop: Sequence[str] = ()
) -> bytes:
    """An NRRD (attached raw int16 16^3) with header ``fields`` replaced or added, ``drop`` removed."""
    header = {
        "type": "short",
        "dimension": "3",
        "space": "left-posterior-superior",
        "sizes": " ".join(str(s) for s in SHAPE),
        "space directions": "(1,0,0) (0,1,0) (0,0,1)",
        "kinds": "domain domain domain",
        "endian": "little",
        "encoding": "raw",
        "space origin": "(0,0,0)",
    }
    header.update(fields or {})
    for key in drop:
        header.pop(key, None)
    text = "NRRD0004\n" + "".join(f"{k}: {v}\n" for k, v in header.items()) + "\n"
    body = data if data is not None else np.zeros(SHAPE, np.int16).tobytes()
    return text.encode() + body


def corrupt_nrrds() -> Dict[str, bytes]:
    """Named corruptions of a valid NRRD."""
    n = int(np.prod(SHAPE)) * 2
    return {
        "directions_nan": nrrd_bytes({"space directions": "(nan,0,0) (0,1,0) (0,0,1)"}),
        "directions_singular": nrrd_bytes({"space directions": "(0,0,0) (0,0,0) (0,0,0)"}),
        "origin_inf": nrrd_bytes({"space origin": "(inf,0,0)"}),
        "data_file_passwd": nrrd_bytes({"data file": "/etc/passwd"}, data=b""),
        "data_file_relative": nrrd_bytes({"data file": "../../../../../../etc/passwd"}, data=b""),
        "data_file_list": nrrd_bytes({"data file": "LIST"}, data=b"/etc/passwd\n/etc/hosts\n"),
        "sizes_negative": nrrd_bytes({"sizes": "-16 16 16"}),
        "sizes_zero": nrrd_bytes({"sizes": "0 16 16"}),
        "sizes_huge": nrrd_bytes({"sizes": "100000 100000 100000"}),
        "sizes_garbage": nrrd_bytes({"sizes": "a b c"}),
        "sizes_too_few": nrrd_bytes({"sizes": "16 16"}),
        "dimension_zero": nrrd_bytes({"dimension": "0"}),
        "dimension_nine": nrrd_bytes({"dimension": "9", "sizes": " ".join(["1"] * 9)}),
        "type_unknown": nrrd_bytes({"type": "quaternion"}),
        "type_string": nrrd_bytes({"type": "S2000"}),
        "encoding_unknown": nrrd_bytes({"encoding": "lzma"}),
        "gzip_truncated": nrrd_bytes({"encoding": "gzip"}, data=gz(b"\x00" * n)[:40]),
        "gzip_bomb": nrrd_bytes({"encoding": "gzip", "sizes": "512 512 256", "type": "uchar"},
                                data=zlib.compress(b"\x00" * (64 << 20), 9)),
        "truncated_data": nrrd_bytes(data=b"\x00" * 100),
        "no_blank_line": b"NRRD0004\ntype: short\ndimension: 3\nsizes: 16 16 16\n",
        "magic_only": b"NRRD0004\n",
    }


def zip_bytes(entries: Dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buf.getvalue()


def png_ihdr_bomb() -> bytes:
    """A PNG whose IHDR announces 100000 x 100000 pixels over a tiny image stream."""
    def part(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 0, 0, 0, 0)
    idat = part(b"IDAT", zlib.compress(b"\x00" * 1000))
    return b"\x89PNG\r\n\x1a\n" + part(b"IHDR", ihdr) + idat + part(b"IEND", b"")


# -- observing the datastore from outside ------------------------------------------------------------------------


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def studies_files(studies: Path) -> Dict[str, Tuple[int, str]]:
    """Every file under the studies folder outside the server's own ``.monailabel`` folder: size, sha256."""
    out: Dict[str, Tuple[int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(studies):
        if Path(dirpath) == studies and INDEX_DIR in dirnames:
            dirnames.remove(INDEX_DIR)
        for name in filenames:
            path = Path(dirpath) / name
            out[str(path.relative_to(studies))] = (path.stat().st_size, _sha(path))
    return out


def _rows(db: Path, query: str) -> List[tuple]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return [tuple(r) for r in conn.execute(query).fetchall()]
    finally:
        conn.close()


def index_rows(studies: Path) -> Dict[str, List[tuple]]:
    """The datastore index's image and label rows, and the job ids, as the server committed them."""
    home = studies / INDEX_DIR
    return {
        "images": _rows(home / "datastore.db", "SELECT id, ext, is_dir, info, size, sha256 FROM images ORDER BY id"),
        "labels": _rows(home / "datastore.db",
                        "SELECT image_id, tag, ext, is_dir, info, size, sha256 FROM labels ORDER BY image_id, tag"),
        "jobs": _rows(home / "jobs.db", "SELECT job_id, model FROM jobs ORDER BY job_id"),
    }


def snapshot(studies: Path, images_dir: str = "", labels_dir: str = "labels") -> Dict[str, Any]:
    """What a malformed request must not change: the files and the index rows.

    Two index changes that valid reads make are normalised away: a checksum the server computes
    lazily (NULL until a read needs it) reads as the file's checksum, and the ``strategy`` entry that
    GetNextSample records in an image's info (MONAI Label's bookkeeping of which client got it) is left
    out.
    """
    files = studies_files(studies)
    rows = index_rows(studies)

    def on_disk(rel: str, sha: Optional[str]) -> Optional[str]:
        return sha if sha is not None or rel not in files else files[rel][1]

    def info_without_strategy(info: str) -> str:
        try:
            value = json.loads(info)
        except ValueError:
            return info
        if isinstance(value, dict):
            value.pop("strategy", None)
        return json.dumps(value, sort_keys=True)

    images = [(i, ext, d, info_without_strategy(info), size, on_disk(str(Path(images_dir) / f"{i}{ext}"), sha))
              for i, ext, d, info, size, sha in rows["images"]]
    labels = [(i, tag, ext, d, info, size, on_disk(str(Path(labels_dir) / tag / f"{i}{ext}"), sha))
              for i, tag, ext, d, info, size, sha in rows["labels"]]
    return {"files": files, "images": images, "labels": labels, "jobs": rows["jobs"]}


def diff(before: Dict[str, Any], after: Dict[str, Any]) -> str:
    """A short description of what changed between two snapshots ("" when nothing did)."""
    lines = []
    for key in before:
        a, b = before[key], after[key]
        if a == b:
            continue
        if isinstance(a, dict):
            added = sorted(set(b) - set(a))
            gone = sorted(set(a) - set(b))
            changed = sorted(k for k in set(a) & set(b) if a[k] != b[k])
            lines.append(f"{key}: added {added[:5]} removed {gone[:5]} changed {changed[:5]}")
        else:
            lines.append(f"{key}: added {sorted(set(b) - set(a))[:5]} removed {sorted(set(a) - set(b))[:5]}")
    return "; ".join(lines)


def agreement_problems(studies: Path, images_dir: str = "", labels_dir: str = "labels") -> List[str]:
    """Where index and files disagree: indexed files missing or with other bytes, files nobody indexed.

    Args:
        studies: the studies folder.
        images_dir: images folder relative to it (the template app keeps images at the top).
        labels_dir: labels folder relative to it.

    Returns:
        One line per problem; empty when they agree.
    """
    files = studies_files(studies)
    problems: List[str] = []
    expected: Dict[str, Tuple[int, str]] = {}
    for image_id, ext, is_dir, _info, size, sha in index_rows(studies)["images"]:
        if not is_dir:
            expected[str(Path(images_dir) / f"{image_id}{ext}")] = (size, sha)
    for image_id, tag, ext, is_dir, _info, size, sha in index_rows(studies)["labels"]:
        if not is_dir:
            expected[str(Path(labels_dir) / tag / f"{image_id}{ext}")] = (size, sha)
    for rel, (size, sha) in expected.items():
        if rel not in files:
            problems.append(f"indexed {rel} is missing")
        elif files[rel][0] != size or (sha is not None and files[rel][1] != sha):
            # a file the server found by scanning has its checksum computed lazily (NULL until then)
            problems.append(f"{rel}: on disk {files[rel]}, indexed {(size, sha)}")
    # which rows an unindexed file could have belonged to (its stem), to tell "stale" from "lost"
    by_stem = {str(Path(rel).parent / Path(rel).name.split(".")[0]): rel for rel in expected}
    for rel in sorted(set(files) - set(expected)):
        stem = str(Path(rel).parent / Path(rel).name.split(".")[0])
        row = f"the index has {by_stem[stem]}" if stem in by_stem else "no index row for it"
        problems.append(f"{rel} is on disk but not indexed ({row})")
    return problems


def staging_files(studies: Path) -> List[str]:
    """Files in the server's staging and temporary places (``.monailabel/staging``, hidden temporaries)."""
    out = []
    staging = studies / INDEX_DIR / "staging"
    if staging.exists():
        out += [str(p.relative_to(studies)) for p in staging.rglob("*") if p.is_file()]
    for dirpath, dirnames, filenames in os.walk(studies):
        if Path(dirpath) == studies and INDEX_DIR in dirnames:
            dirnames.remove(INDEX_DIR)
        out += [str((Path(dirpath) / n).relative_to(studies)) for n in filenames if n.startswith(".")]
    return out


# -- the server, its health, and its processes ------------------------------------------------------------------


def serving(channel: grpc.Channel, timeout: float = HEALTH_TIMEOUT_S) -> bool:
    """True when the health service answers SERVING within ``timeout`` seconds."""
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
    except grpc.RpcError:
        return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


@dataclass
class ServerProcess:
    """``python -m monailabel_server start_server`` in its own process (so it can be killed with -9)."""

    proc: subprocess.Popen
    address: str
    reader: Optional[threading.Thread] = None

    def kill9(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._close()

    def _close(self) -> None:
        # the reader closes the pipe at its end of file, which comes when the process is gone
        if self.reader is not None:
            self.reader.join(timeout=30)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not drained within a few seconds."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill9()
        self._close()


def start_server_process(app: Path, studies: Path, conf: Dict[str, str], args: Sequence[str] = (),
                         env: Optional[Dict[str, str]] = None, timeout_s: float = 120.0) -> ServerProcess:
    """Starts a server process on port 0 and reads the port it prints.

    Raises:
        RuntimeError: when it exits or prints no address within ``timeout_s``.
    """
    command = [sys.executable, "-m", "monailabel_server", "start_server", "--app", str(app), "--studies",
               str(studies), "--port", "0", *args]
    for key, value in conf.items():
        command += ["--conf", key, value]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, **(env or {})})
    lines: queue.Queue[str] = queue.Queue()

    def drain() -> None:  # reads the address, then keeps the pipe empty until the process ends
        assert proc.stdout is not None
        with proc.stdout:
            for line in proc.stdout:
                lines.put(line)
        lines.put("")

    reader = threading.Thread(target=drain, daemon=True, name="server-stdout")
    reader.start()
    deadline = time.monotonic() + timeout_s
    address = ""
    while not address and time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        if not line:
            break
        if "listening on" in line:
            address = line.strip().rsplit(" ", 1)[1]
    if not address:
        proc.kill()
        proc.wait(timeout=30)
        reader.join(timeout=30)
        raise RuntimeError(f"server did not start within {timeout_s}s (exit status {proc.poll()})")
    return ServerProcess(proc, address, reader)


def worker_processes(marker: str = "") -> List[Tuple[int, str]]:
    """Live job worker processes (pid, command line), optionally only those whose command line has ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        cmdline = raw.replace(b"\x00", b" ").decode(errors="replace")
        if WORKER_MODULE in cmdline and (not marker or marker in cmdline) and state != "Z":
            found.append((int(entry.name), cmdline))
    return found


def wait_until(what: str, check: Any, timeout_s: float, interval_s: float = 0.1) -> Any:
    """Polls ``check`` until it returns something true, at most ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    value = check()
    while not value and time.monotonic() < deadline:
        time.sleep(interval_s)
        value = check()
    assert value, f"timed out after {timeout_s}s waiting for {what}"
    return value


# -- jobs (training and scoring jobs may move to one JobService: only these functions change) ---------------------


def start_train(stubs: Stubs, model: str, max_epochs: int, **fields: Any) -> str:
    """Starts a training job and returns its id."""
    reply = stubs.train.StartTrainJob(train_pb2.StartTrainJobRequest(model=model, max_epochs=max_epochs, **fields),
                                      timeout=RPC_TIMEOUT_S)
    return reply.job.job_id


def job_state(stubs: Stubs, job_id: str) -> str:
    """A training job's state name, as ``JOB_STATE_RUNNING``."""
    job = stubs.jobs.GetJob(job_pb2.GetJobRequest(job_id=job_id), timeout=RPC_TIMEOUT_S).job
    return job_pb2.JobState.Name(job.state)


def upload_status(stubs: Stubs, image_id: str, label_tag: str = "") -> datastore_pb2.GetUploadStatusResponse:
    """What the server committed of an interrupted upload (its ``upload_id`` too, where the proto has one)."""
    return stubs.datastore.GetUploadStatus(
        datastore_pb2.GetUploadStatusRequest(image_id=image_id, label_tag=label_tag), timeout=RPC_TIMEOUT_S
    )
