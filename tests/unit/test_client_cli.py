"""``monailabel-client`` without a server: its help, and how errors map to one line and an exit status."""

from __future__ import annotations

import argparse

import grpc
import pytest

from monailabel_client.cli import EXIT_CODES, error_line, exit_code_of, main, parser


class _Rpc(grpc.RpcError):
    """An error as grpcio raises it for a failed call (code and details)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def test_every_option_has_a_sentence_and_defaults_show(capsys: pytest.CaptureFixture[str]) -> None:
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in {"": parser(), **sub.choices}.items():
        for action in command._actions:
            assert action.help, f"monailabel-client {name} {action.option_strings or action.dest} has no help"
    with pytest.raises(SystemExit):
        main(["infer", "--help"])
    text = capsys.readouterr().out
    assert "(default: nii.gz)" in text and "exit status:" in text and "4 not found" in text
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "(default: 127.0.0.1:50051)" in capsys.readouterr().out


def test_errors_map_to_one_line_and_a_status_per_class() -> None:
    cases = {
        grpc.StatusCode.NOT_FOUND: "not_found", grpc.StatusCode.INVALID_ARGUMENT: "invalid",
        grpc.StatusCode.FAILED_PRECONDITION: "invalid", grpc.StatusCode.ALREADY_EXISTS: "conflict",
        grpc.StatusCode.ABORTED: "conflict", grpc.StatusCode.UNAVAILABLE: "unavailable",
        grpc.StatusCode.RESOURCE_EXHAUSTED: "busy", grpc.StatusCode.PERMISSION_DENIED: "denied",
        grpc.StatusCode.INTERNAL: "server",
    }
    for code, kind in cases.items():
        assert exit_code_of(_Rpc(code, "x")) == EXIT_CODES[kind]
    assert len(set(EXIT_CODES.values())) == len(EXIT_CODES), "one status per class"
    line = error_line(_Rpc(grpc.StatusCode.NOT_FOUND, "model 'a' does not exist; models: b"), "h:1")
    assert line == "error: NOT_FOUND: model 'a' does not exist; models: b"
    down = _Rpc(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; last error: UNKNOWN: "
                "ipv4:127.0.0.1:9: Failed to connect to remote host: Connection refused")
    assert error_line(down, "127.0.0.1:9").startswith("error: UNAVAILABLE: no server answers at 127.0.0.1:9 "
                                                      "(Connection refused)")
    assert exit_code_of(FileNotFoundError(2, "No such file or directory", "a.nii")) == EXIT_CODES["usage"]
    assert error_line(FileNotFoundError(2, "No such file or directory", "a.nii"), "") == (
        "error: a.nii: No such file or directory")


def test_bad_json_argument_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    # the JSON is read before any call: no server needed
    assert main(["--address", "127.0.0.1:9", "next", "--params", "{not json"]) == EXIT_CODES["usage"]
    err = capsys.readouterr().err
    assert err.startswith("error: not valid JSON") and err.count("\n") == 1
