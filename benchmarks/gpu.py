"""GPU rows: end-to-end inference against the same model called in-process on the same GPU, AMP on
against off, and a session's volume on the device against in host memory (``--session-device``).

Without a CUDA device the rows say so (skipped), visibly, in the table.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

SKIPPED = ("GPU: end-to-end infer vs in-process", "<= 1.2x"), ("GPU: AMP on vs off, session infer", "(reported)"), \
    ("GPU: session on the device vs in host memory", "(reported)")


def _median_s(fn: Callable[[], Any], repeats: int) -> float:
    """The median wall time of ``fn`` over ``repeats`` runs, after one to warm up."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def gpu_rows(client: Any, table: Any, args: Any,
             start: Optional[Callable[[Tuple[str, ...], str], Tuple[Any, int]]] = None,
             procs: Optional[List[Any]] = None) -> None:
    """End-to-end infer on ``cuda`` vs the template's network in-process; AMP; sessions on the device.

    Args:
        client: a client of the benchmark's server (default ``--session-device auto``).
        table: the result table.
        args: the benchmark's arguments (``infer_shape``, ``repeats``).
        start: starts another server with extra options (for the session-in-host-memory row).
        procs: where a started server's process goes (stopped at the end).
    """
    import torch

    if not torch.cuda.is_available():
        for name, target in SKIPPED:
            table.add(name, "skipped: no GPU", "no CUDA device on this machine", "", target, None)
        return
    from monailabel.datasets import make_phantom
    from monailabel_api.v1 import common_pb2

    shape = tuple(args.infer_shape)
    image, _, _ = make_phantom(shape, 0)
    session = client.create_session(image, affine=np.eye(4), ttl_seconds=600)
    client.infer("segmentation", session_id=session.session_id, device="cuda", encoding=common_pb2.ENCODING_RAW)
    ends = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        client.infer("segmentation", session_id=session.session_id, device="cuda", encoding=common_pb2.ENCODING_RAW)
        ends.append(time.perf_counter() - t)

    import importlib.util
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "monailabel" / "apps" / "radiology"
    sys.path.insert(0, str(root))
    try:
        spec = importlib.util.spec_from_file_location("bench_seg", root / "lib" / "infers" / "segmentation.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        net = module.make_network().cuda().eval()
    finally:
        sys.path.remove(str(root))
    from monai.inferers import SlidingWindowInferer

    inferer = SlidingWindowInferer(roi_size=(128, 128, 128), sw_batch_size=1)
    host = torch.from_numpy(np.asarray(image, np.float32)).pin_memory()
    inproc = []
    with torch.no_grad():
        for i in range(args.repeats + 1):
            t = time.perf_counter()
            x = host.to("cuda", non_blocking=True)[None, None]
            logits: Any = inferer(x, net)
            y = logits.argmax(1).to(torch.uint8).cpu()
            torch.cuda.synchronize()
            if i:
                inproc.append(time.perf_counter() - t)
    del y
    end, own = statistics.median(ends), statistics.median(inproc)
    table.add(f"GPU: end-to-end infer {shape} (s)", f"{end:.3f}", f"in-process {own:.3f}", f"{end / own:.2f}x",
              "<= 1.2x", end / own <= 1.2)
    _amp_row(client, table, args, session.session_id, shape)
    if start is not None and procs is not None:
        _session_device_row(client, table, args, image, shape, start, procs)
    client.delete_session(session.session_id)


def _amp_row(client: Any, table: Any, args: Any, session_id: str, shape: Tuple[int, ...]) -> None:
    """The same session infer on ``cuda`` with and without AMP (float16 autocast), and how many voxels agree."""
    from monailabel_api.v1 import common_pb2

    masks: Dict[bool, Any] = {}

    def infer(amp: bool) -> None:
        out = client.infer("segmentation", session_id=session_id, device="cuda", params={"amp": amp},
                           encoding=common_pb2.ENCODING_RAW)
        masks[amp] = out.array()

    off = _median_s(lambda: infer(False), args.repeats)
    on = _median_s(lambda: infer(True), args.repeats)
    agree = float(np.mean(masks[True] == masks[False]))
    table.add(f"GPU: AMP on vs off, session infer {shape} (s)", f"{on:.3f}", f"off {off:.3f}; {agree:.4f} voxels agree",
              f"{on / off:.2f}x", "(reported)", None)


def _session_device_row(client: Any, table: Any, args: Any, image: Any, shape: Tuple[int, ...],
                        start: Callable[[Tuple[str, ...], str], Tuple[Any, int]], procs: List[Any]) -> None:
    """A session infer on ``cuda`` with the volume on the device (this server) vs in host memory (another)."""
    from monailabel_api.v1 import common_pb2
    from monailabel_client import MonaiLabelClient

    proc, port = start(("--session-device", "cpu"), "app-gpu-host-sessions")
    procs.append(proc)
    with MonaiLabelClient(f"127.0.0.1:{port}", timeout=None) as host_client:
        host_client.wait_ready()
        timings = []
        for c in (client, host_client):
            session = c.create_session(image, affine=np.eye(4), ttl_seconds=600)
            timings.append(_median_s(lambda c=c, s=session.session_id: c.infer(
                "segmentation", session_id=s, device="cuda", encoding=common_pb2.ENCODING_RAW), args.repeats))
            c.delete_session(session.session_id)
    on_device, in_host = timings
    table.add(f"GPU: session on the device vs in host memory, infer {shape} (s)", f"{on_device:.3f}",
              f"host memory {in_host:.3f}", f"{on_device / in_host:.2f}x", "(reported)", None)
