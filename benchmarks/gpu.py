"""GPU rows: end-to-end inference against the same model called in-process on the same GPU.

Without a CUDA device the rows say so (skipped), visibly, in the table.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np


def gpu_rows(client: Any, table: Any, args: Any) -> None:
    """End-to-end infer on ``cuda`` vs the template's network called in-process (pinned host->device copy)."""
    import torch

    if not torch.cuda.is_available():
        table.add("GPU: end-to-end infer vs in-process", "skipped", "no CUDA device on this machine", "", "<= 1.2x",
                  None)
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
    client.delete_session(session.session_id)
