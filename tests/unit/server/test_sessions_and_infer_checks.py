"""The inference core's bookkeeping without a server: session budget, TTL cap, expiry; request checks."""

from __future__ import annotations

import time

import pytest

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel_api.v1 import common_pb2
from monailabel_server.core.infer_request import (
    MAX_SLIDING_WINDOWS,
    MIN_CHUNK_SIZE,
    OutputSpec,
    check_device,
    check_extra,
    check_output,
    check_points,
)
from monailabel_server.core.sessions import SessionStore


class _Task:
    dimension = 3
    input_key = "image"
    output_label_key = "pred"
    output_json_key = "result"


def _error(fn) -> MONAILabelException:
    with pytest.raises(MONAILabelException) as info:
        fn()
    return info.value


# -- sessions -------------------------------------------------------------------------------------
def test_ttl_is_clamped_to_the_maximum_and_defaulted():
    store = SessionStore(4, 1000, default_ttl_s=60, max_ttl_s=120, sweep_interval_s=0)
    assert store.ttl_for(0) == 60 and store.ttl_for(30) == 30 and store.ttl_for(2**31 - 1) == 120
    assert _error(lambda: store.ttl_for(-1)).error == MONAILabelError.INVALID_INPUT


def test_reservations_count_against_the_budget_until_released_or_taken():
    store = SessionStore(4, 1000, 60, sweep_interval_s=0)
    first = store.reserve(600)
    err = _error(lambda: store.reserve(500))
    assert err.error == MONAILabelError.RESOURCE_EXHAUSTED and err.reason == "SESSION_MEMORY"
    first.release()
    first.release()  # twice is harmless
    assert store.held_bytes == 0
    with store.reserve(600) as r:
        session = store.add(object(), r, 60)
    assert store.held_bytes == 600 and len(store) == 1  # add took it: leaving the block kept it
    assert _error(lambda: store.reserve(2000)).error == MONAILabelError.RESOURCE_EXHAUSTED  # over the whole budget
    store.delete(session.session_id)
    assert store.held_bytes == 0


def test_session_count_limit_gives_a_retry_delay_and_expired_sessions_are_dropped():
    store = SessionStore(2, 10_000, 60, sweep_interval_s=0)
    sessions = [store.add(object(), store.reserve(10), 60) for _ in range(2)]
    err = _error(lambda: store.reserve(10))
    assert err.reason == "SESSION_LIMIT" and err.retry_after_s is not None and 0 < err.retry_after_s <= 60
    sessions[0].expires_at = time.time() - 1  # as if its ttl passed
    assert store.sweep() == 1 and len(store) == 1 and store.held_bytes == 10
    assert _error(lambda: store.get(sessions[0].session_id)).error == MONAILabelError.NOT_FOUND
    store.reserve(10).release()  # room again


def test_sweeper_thread_drops_expired_sessions():
    store = SessionStore(2, 10_000, 60, sweep_interval_s=0.05)
    session = store.add(object(), store.reserve(10), 60)
    session.expires_at = time.time() - 1
    deadline = time.monotonic() + 5
    while len(store) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(store) == 0, "the sweeper should drop the expired session without any call"
    store.close()


@pytest.mark.parametrize("sid", ["", "../x", "a" * 10_000, "a/b", ".hidden"])
def test_malformed_session_ids_are_invalid_and_not_echoed(sid):
    store = SessionStore(2, 10_000, 60, sweep_interval_s=0)
    err = _error(lambda: store.get(sid))
    assert err.error == MONAILabelError.INVALID_INPUT and len(err.msg) < 300


# -- request checks -------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["label_tag", "save_label", "model", "image", "image_id", "device", "cancel_check",
                                 "client_id", "result_dtype", "result_extension", "foreground", "label_info",
                                 "model_filename", "studies_path", "output_dir", "weights_file", "pred",
                                 "image_meta_dict", "sw_device", "_private"])
def test_reserved_extra_keys_are_refused_by_name(key):
    err = _error(lambda: check_extra({key: "x"}, "params.extra", _Task(), (40, 40, 20)))
    assert err.error == MONAILabelError.INVALID_INPUT
    assert err.violations[0][0] == f"params.extra.{key}"


def test_app_keys_and_sane_sliding_window_keys_pass():
    extra = {"output": "json", "min_poly_area": 3, "roi_size": [16, 16, 16], "sw_batch_size": 2, "sw_overlap": 0.5,
             "amp": True}
    assert check_extra(extra, "params.extra", _Task(), (40, 40, 20)) == extra


@pytest.mark.parametrize("value", ["true", 1, 1.0, None, [True], {"on": True}])
def test_amp_must_be_a_boolean(value):
    err = _error(lambda: check_extra({"amp": value}, "params.extra", _Task(), (40, 40, 20)))
    assert err.error == MONAILabelError.INVALID_INPUT and err.violations[0][0] == "params.extra.amp", err.msg


@pytest.mark.parametrize(("extra", "field"), [
    ({"roi_size": [-8, 16, 16]}, "params.extra.roi_size[0]"),
    ({"roi_size": [16, 16]}, "params.extra.roi_size"),
    ({"roi_size": 16}, "params.extra.roi_size"),
    ({"roi_size": [16, 16, 99_999]}, "params.extra.roi_size[2]"),
    ({"roi_size": [1, 1, 1]}, "params.extra.roi_size"),  # 32,000 windows over a 40x40x20 volume
    ({"roi_size": [8, 8, 8], "sw_overlap": 0.999}, "params.extra.roi_size"),  # 14,157 windows
    ({"sw_overlap": 1.0}, "params.extra.sw_overlap"),
    ({"sw_overlap": -0.1}, "params.extra.sw_overlap"),
    ({"sw_batch_size": 0}, "params.extra.sw_batch_size"),
    ({"sw_batch_size": 10_000}, "params.extra.sw_batch_size"),
    ({"sw_batch_size": 1.5}, "params.extra.sw_batch_size"),
])
def test_sliding_window_keys_are_bounded(extra, field):
    err = _error(lambda: check_extra(extra, "params.extra", _Task(), (40, 40, 20)))
    assert err.error == MONAILabelError.INVALID_INPUT and err.violations[0][0] == field, err.msg
    assert str(MAX_SLIDING_WINDOWS) in err.msg or "windows" not in err.msg


def test_clicks_must_match_the_model_and_lie_inside_the_volume():
    assert check_points([[0, 0, 0], [39, 39, 19]], "params.foreground", 3, (40, 40, 20)) == [[0, 0, 0], [39, 39, 19]]
    for points, where in (([[1, 2]], "[0]"), ([[0, 0, 0], [40, 0, 0]], "[1]"), ([[-1, 0, 0]], "[0]")):
        err = _error(lambda p=points: check_points(p, "params.foreground", 3, (40, 40, 20)))
        assert err.violations[0][0] == f"params.foreground{where}"
    assert _error(lambda: check_points([[0, 0, 0]] * 5000, "params.background", 3, None)).error \
        == MONAILabelError.INVALID_INPUT


def test_device_names():
    assert check_device("cpu", "params.device") == "cpu"
    assert _error(lambda: check_device("gpu please", "params.device")).error == MONAILabelError.INVALID_INPUT
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    err = _error(lambda: check_device("cuda:99", "params.device"))
    assert err.error == MONAILabelError.PRECONDITION_FAILED and "cuda" in err.msg
    if count == 0:
        assert _error(lambda: check_device("cuda", "params.device")).error == MONAILabelError.PRECONDITION_FAILED
    else:
        assert check_device("cuda", "params.device") == "cuda"


def test_output_options():
    assert check_output(OutputSpec(), False, 1 << 20) == (common_pb2.ENCODING_NIFTI_GZ, ".nii.gz", 1 << 20)
    assert check_output(OutputSpec(), True, 1 << 20)[:2] == (common_pb2.ENCODING_IMAGE_2D, ".png")
    assert check_output(OutputSpec(result_extension=".seg.nrrd"), False, 1 << 20)[:2] == \
        (common_pb2.ENCODING_NRRD, ".seg.nrrd")
    assert check_output(OutputSpec(chunk_size=MIN_CHUNK_SIZE), False, 1 << 20)[2] == MIN_CHUNK_SIZE
    for spec, where in ((OutputSpec(chunk_size=1), "output.chunk_size"),
                        (OutputSpec(chunk_size=(1 << 20) + 1), "output.chunk_size"),
                        (OutputSpec(encoding=99), "output.encoding"),
                        (OutputSpec(encoding=common_pb2.ENCODING_DICOM_ZIP), "output.encoding"),
                        (OutputSpec(result_extension=".exe"), "output.result_extension")):
        assert _error(lambda s=spec: check_output(s, False, 1 << 20)).violations[0][0] == where
