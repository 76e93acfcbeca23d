"""Benchmark rows of dynamic batching: infer throughput and latency at 1/4/16 concurrent clients, on and off."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, List, Tuple

import numpy as np

REQUESTS_PER_CLIENT = 4


def _p(values: List[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def _load(address: str, sessions: List[str], n: int) -> Tuple[List[float], float, List[BaseException]]:
    """``n`` clients, each running ``segmentation`` on its own session back to back; latencies and seconds."""
    from monailabel_api.v1 import common_pb2
    from monailabel_client import MonaiLabelClient

    latencies: List[float] = []
    errors: List[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(n + 1)

    def client(k: int) -> None:
        with MonaiLabelClient(address, timeout=None) as own:
            try:
                barrier.wait(timeout=120)
                for _ in range(REQUESTS_PER_CLIENT):
                    t = time.perf_counter()
                    own.infer("segmentation", session_id=sessions[k], encoding=common_pb2.ENCODING_RAW)
                    with lock:
                        latencies.append(time.perf_counter() - t)
            except BaseException as exc:  # reported in the row
                errors.append(exc)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    barrier.wait(timeout=120)
    began = time.perf_counter()
    for t in threads:
        t.join(timeout=1800)
    return latencies, time.perf_counter() - began, errors


def batching_rows(table: Any, args: Any, start: Callable[[Tuple[str, ...], str], Tuple[Any, int]],
                  procs: List[Any]) -> None:
    """Two servers in the same run, batching off (``--max-batch-size 1``) and on (``--max-batch-size 8``)."""
    from monai.data import MetaTensor  # noqa: F401 - torch loaded before the clock starts

    from monailabel.datasets import make_phantom
    from monailabel_client import MonaiLabelClient

    shape = tuple(args.batch_shape)
    counts = [int(n) for n in args.batch_clients.split(",") if n.strip()]
    results = {}
    for label, extra in (("off", ("--max-batch-size", "1")), ("on", ("--max-batch-size", "8"))):
        proc, port = start(extra, f"app-batch-{label}")
        procs.append(proc)
        address = f"127.0.0.1:{port}"
        with MonaiLabelClient(address, timeout=None) as c:
            sessions = [c.create_session(make_phantom(shape, k)[0], affine=np.eye(4)).session_id
                        for k in range(max(counts))]
            _load(address, sessions, 1)  # warm
            for n in counts:
                results[(label, n)] = _load(address, sessions, n)
        proc.terminate()
        proc.wait(timeout=60)
    for n in counts:
        row = []
        for label in ("off", "on"):
            latencies, seconds, errors = results[(label, n)]
            if errors or not latencies:
                row.append((label, float("nan"), float("nan"), float("nan")))
                continue
            row.append((label, len(latencies) / seconds, _p(latencies, 0.5), _p(latencies, 0.99)))
        (_, off_rate, off_p50, off_p99), (_, on_rate, on_p50, on_p99) = row
        table.add(
            f"infer throughput, {n} client(s), segmentation {shape}: batching on, infers/s (p50 / p99 ms)",
            f"{on_rate:.2f}/s ({on_p50 * 1e3:.0f} / {on_p99 * 1e3:.0f})",
            f"off {off_rate:.2f}/s ({off_p50 * 1e3:.0f} / {off_p99 * 1e3:.0f})",
            f"{on_rate / off_rate:.2f}x infers/s",
            "(reported)",
            None,
        )
