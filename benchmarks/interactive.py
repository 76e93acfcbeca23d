"""Benchmark rows of interactive work: click to mask over Interact, and N annotators clicking at once."""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any, Dict, List, Tuple

import numpy as np

# the two kinds of app the fast path must serve: the template's integer argmax, and MONAI's standard
# post-transforms (Activationsd + AsDiscreted leave a float mask: deepgrow_3d)
MODELS = ("segmentation", "deepgrow_3d")


#: The app's own stages: its transforms and its model. What is left of a call's wall time is the
#: server's overhead (queueing, copying the session's volume, the writer, encoding, the wire).
APP_STAGES = ("pre", "infer", "invert", "post")


def _app_stages(latency: Dict[str, float]) -> float:
    return sum(float(latency.get(k, 0.0)) for k in APP_STAGES)


def _shapes(text: str) -> List[Tuple[int, ...]]:
    return [tuple(int(v) for v in part.split(",")) for part in text.split(";") if part.strip()]


def _p(values: List[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def _clicks(shape: Tuple[int, ...], model: str, i: int) -> Dict[str, Any]:
    """Alternating clicks (so consecutive masks differ) for the interactive model; none for the automatic one."""
    if model != "deepgrow_3d":
        return {}
    frac = (0.35, 0.65)[i % 2]
    return {"foreground": [[int(s * frac) for s in shape]]}


def _session(client: Any, shape: Tuple[int, ...]) -> Any:
    from monailabel.datasets import make_phantom

    image, _, _ = make_phantom(tuple(shape), 0)
    return client.create_session(image, affine=np.diag([1.0, 1.0, 2.0, 1.0]), ttl_seconds=600)


def interact_rows(client: Any, table: Any, args: Any) -> None:
    """Click to mask on a session over Interact: non-model overhead, bytes and time per click against Infer."""
    from monailabel_api.v1 import common_pb2

    for shape in _shapes(args.interact_shapes):
        session = _session(client, shape)
        voxels = int(np.prod(shape))
        target = 0.05 if voxels <= 256 * 256 * 128 else 0.15
        for model in MODELS:
            overheads, walls, wire = [], [], []
            with client.interact(session.session_id, model) as live:
                live.click(**_clicks(shape, model, 0))
                live.answer()  # warm: the first answer is the whole mask against the empty start
                for i in range(1, args.repeats + 1):
                    t = time.perf_counter()
                    live.click(**_clicks(shape, model, i))
                    answer = live.answer()
                    wall = time.perf_counter() - t
                    walls.append(wall)
                    overheads.append(wall - _app_stages(answer.latency))
                    wire.append(answer.wire_bytes)
                full_id = live.request_full()
                t = time.perf_counter()
                full = live.answer()
                assert full.click_id == full_id
            full_walls, full_bytes, full_over = [], [], []
            for i in range(1, args.repeats + 1):
                t = time.perf_counter()
                out = client.infer(model, session_id=session.session_id, encoding=common_pb2.ENCODING_NIFTI_GZ,
                                   **_clicks(shape, model, i))
                wall = time.perf_counter() - t
                full_walls.append(wall)
                full_over.append(wall - _app_stages({k: getattr(out.latency, k) for k in APP_STAGES}))
                full_bytes.append(len(out.data))
            med = statistics.median(overheads)
            table.add(
                f"click->mask server overhead, Interact, {model} {shape} (s)",
                f"{med:.3f}",
                f"Infer .nii.gz {statistics.median(full_over):.3f}",
                f"{med / max(statistics.median(full_over), 1e-9):.2f} of Infer",
                f"<= {target:.3f} s",
                med <= target,
            )
            delta_bytes, nii_gz = statistics.median(wire), statistics.median(full_bytes)
            table.add(
                f"bytes / time per click, Interact, {model} {shape}",
                f"{delta_bytes / 1e3:.1f} kB / {statistics.median(walls) * 1e3:.0f} ms",
                f"full .nii.gz {nii_gz / 1e3:.1f} kB / {statistics.median(full_walls) * 1e3:.0f} ms; raw "
                f"{voxels / 1e3:.0f} kB",
                f"{delta_bytes / max(nii_gz, 1):.2f} bytes, "
                f"{statistics.median(walls) / statistics.median(full_walls):.2f} time",
                "(reported)",
                None,
            )
        client.delete_session(session.session_id)


def _annotators(address: str, sessions: List[Any], n: int, shape: Tuple[int, ...],
                clicks: int) -> Tuple[List[float], List[BaseException], float]:
    """Runs ``n`` clients at once, each clicking on its own session; returns latencies, errors, seconds."""
    from monailabel_client import MonaiLabelClient

    latencies: List[float] = []
    errors: List[BaseException] = []
    lock = threading.Lock()
    started: List[float] = []
    barrier = threading.Barrier(n, action=lambda: started.append(time.perf_counter()))

    def annotator(k: int) -> None:
        own = MonaiLabelClient(address, timeout=None)
        try:
            with own.interact(sessions[k].session_id, "deepgrow_3d") as live:
                live.click(**_clicks(shape, "deepgrow_3d", 0))
                live.answer()
                barrier.wait(timeout=300)  # every annotator warm: the clock starts together
                for i in range(1, clicks + 1):
                    t = time.perf_counter()
                    live.click(**_clicks(shape, "deepgrow_3d", i + k))
                    live.answer()
                    with lock:
                        latencies.append(time.perf_counter() - t)
        except BaseException as exc:  # reported in the row
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=annotator, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=1800)
    return latencies, errors, time.perf_counter() - (started[0] if started else time.perf_counter())


def annotator_rows(client: Any, table: Any, args: Any) -> None:
    """N annotators, each on their own session, clicking (deepgrow_3d) as fast as answers come."""
    shape = tuple(args.annotator_shape)
    counts = [int(n) for n in args.annotators.split(",") if n.strip()]
    sessions = [_session(client, shape) for _ in range(max(counts))]
    single_p50 = None
    for n in counts:
        latencies, errors, elapsed = _annotators(args.address, sessions, n, shape, args.clicks)
        if errors or not latencies:
            table.add(f"{n} annotators clicking {shape}", "failed", str(errors[:1])[:60], "", "", False)
            continue
        p50, p99 = _p(latencies, 0.5), _p(latencies, 0.99)
        single_p50 = single_p50 or p50
        table.add(
            f"{n} annotator(s) clicking, deepgrow_3d {shape}: p50 / p99 (ms), clicks/s",
            f"{p50 * 1e3:.0f} / {p99 * 1e3:.0f}, {len(latencies) / elapsed:.1f}/s",
            f"1 annotator p50 {single_p50 * 1e3:.0f}",
            f"{p50 / single_p50:.1f}x p50",
            "(reported)",
            None,
        )
    for s in sessions:
        client.delete_session(s.session_id)
