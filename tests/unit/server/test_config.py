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
