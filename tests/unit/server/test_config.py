"""Server settings from the command line and the environment: the stream guard's fields included."""

from __future__ import annotations

from pathlib import Path

import pytest

from monailabel_server.cli import config_of, parser
from monailabel_server.config import ServerConfig


def _config(*flags: str) -> ServerConfig:
    return config_of(parser().parse_args(["start_server", "--app", "app", "--studies", "studies", *flags]))


def test_defaults_keep_threads_for_unary_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MONAI_LABEL_GRPC_STREAM_IDLE_TIMEOUT_S", raising=False)
    config = _config()
    assert config.stream_idle_timeout_s == 60.0
    assert config.rpc_threads == 16 and config.max_streams == 12
    assert ServerConfig(Path("a"), "s", rpc_threads=3, reserved_threads=4).max_streams == 1


def test_flag_and_environment_set_the_idle_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONAI_LABEL_GRPC_STREAM_IDLE_TIMEOUT_S", "7.5")
    monkeypatch.setenv("MONAI_LABEL_GRPC_RESERVED_THREADS", "6")
    config = _config()
    assert config.stream_idle_timeout_s == 7.5 and config.reserved_threads == 6 and config.max_streams == 10
    # the command line wins over the environment
    assert _config("--stream-idle-timeout", "2", "--rpc-threads", "8").stream_idle_timeout_s == 2.0
    assert _config("--stream-idle-timeout", "2", "--rpc-threads", "8").max_streams == 2


def test_session_device_from_flag_or_environment_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from monailabel_server.cli import StartError, _check_session_device

    monkeypatch.delenv("MONAI_LABEL_GRPC_SESSION_DEVICE", raising=False)
    assert _config().session_device == "auto"
    monkeypatch.setenv("MONAI_LABEL_GRPC_SESSION_DEVICE", "gpu")
    assert _config("--session-device", "cpu").session_device == "cpu"  # the command line wins
    with pytest.raises(StartError) as info:
        _check_session_device(_config().session_device)
    assert info.value.status == 2 and "auto, cpu, cuda" in str(info.value)
    _check_session_device("auto")
    _check_session_device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(StartError) as info:
            _check_session_device("cuda")
        assert info.value.status == 2 and str(info.value).startswith("--session-device cuda: torch sees no CUDA")
