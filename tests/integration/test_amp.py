"""AMP inference over a real server: the request's ``amp`` runs the forward under autocast (bfloat16 on
the CPU, float16 on CUDA), the mask agrees with the float32 one, and a non-boolean ``amp`` is refused."""

from __future__ import annotations

from typing import Any, List, Tuple

import grpc
import numpy as np
import torch

from monailabel_api.v1 import common_pb2
from monailabel_client import MonaiLabelClient
from monailabel_server.server import RunningServer

from .helpers import assert_status


def _watch_forward(server: RunningServer) -> Tuple[List[Tuple[bool, Any]], Any]:
    """Records, at each forward of the segmentation network on the CPU, whether autocast was on and to what."""
    task: Any = server.app.infer_tasks()["segmentation"]
    network = task._get_network("cpu", None)
    seen: List[Tuple[bool, Any]] = []

    def hook(module: Any, args: Any, output: Any) -> None:
        seen.append((torch.is_autocast_enabled("cpu"), output.dtype))

    return seen, network.register_forward_hook(hook)


def test_amp_request_runs_the_forward_under_autocast_and_keeps_the_mask(server: RunningServer,
                                                                        client: MonaiLabelClient) -> None:
    image_id = next(client.list_images()).image_id
    seen, handle = _watch_forward(server)
    try:
        fp32 = client.infer("segmentation", image_id=image_id, device="cpu", encoding=common_pb2.ENCODING_RAW)
        plain = list(seen)
        seen.clear()
        amp = client.infer("segmentation", image_id=image_id, device="cpu", params={"amp": True},
                           encoding=common_pb2.ENCODING_RAW)
    finally:
        handle.remove()
    assert plain and all(not on and dtype == torch.float32 for on, dtype in plain)
    assert seen and all(on and dtype == torch.bfloat16 for on, dtype in seen)
    a, b = fp32.array(), amp.array()
    assert a.shape == b.shape and a.dtype == b.dtype  # cast back to float32 before the post-transforms
    assert np.mean(a == b) >= 0.99


def test_amp_on_a_session_and_a_bad_amp_is_invalid(client: MonaiLabelClient) -> None:
    image_id = next(client.list_images()).image_id
    session = client.create_session(image_id=image_id)
    try:
        out = client.infer("segmentation", session_id=session.session_id, params={"amp": True},
                           encoding=common_pb2.ENCODING_RAW)
        assert out.array().size > 0
        for bad in ("yes", 1, [True]):
            assert_status(grpc.StatusCode.INVALID_ARGUMENT,
                          lambda bad=bad: client.infer("segmentation", session_id=session.session_id,
                                                       params={"amp": bad}))
    finally:
        client.delete_session(session.session_id)
