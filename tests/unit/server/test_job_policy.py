"""What a client may send to a job and what it sees back: request policy, error lines, log lines, lifetimes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.utils.lifetime import process_start_time
from monailabel_server.jobs.params import SERVER_KEYS, check_client_params
from monailabel_server.jobs.processes import ClientLog, kill_leftovers, session_members
from monailabel_server.jobs.worker import error_line, root_cause


@pytest.mark.parametrize("key", sorted(SERVER_KEYS))
def test_server_keys_are_refused_with_a_field_violation(key: str) -> None:
    with pytest.raises(MONAILabelException) as raised:
        check_client_params({"max_epochs": 2, key: "/etc"})
    assert raised.value.error == MONAILabelError.INVALID_INPUT
    assert raised.value.violations[0][0] == f"params.{key}"
    assert "the app sets it in its config" in raised.value.msg or "app sets in its config" in raised.value.msg


@pytest.mark.parametrize(
    "params, field",
    [
        ({"max_epochs": 0}, "params.max_epochs"),
        ({"max_epochs": 10**7}, "params.max_epochs"),
        ({"train_batch_size": 10**6}, "params.train_batch_size"),
        ({"val_split": 2.5}, "params.val_split"),
        ({"lr": -1.0}, "params.lr"),
        ({"max_epochs": "many"}, "params.max_epochs"),
        ({"name": "../up"}, "params.name"),
        ({"train_ids": ["ok", "../etc/passwd"]}, "params.train_ids[1]"),
        ({"anything": "x" * 20000}, "params"),
    ],
)
def test_numbers_and_sizes_are_bounded(params: dict, field: str) -> None:
    with pytest.raises(MONAILabelException) as raised:
        check_client_params(params)
    assert raised.value.violations[0][0] == field


def test_unknown_keys_and_numbers_as_strings_are_kept() -> None:
    out = check_client_params({"max_epochs": "3", "val_split": "0.25", "my_key": {"a": [1, 2]}, "train_ids": ["a"]})
    assert out == {"max_epochs": 3, "val_split": 0.25, "my_key": {"a": [1, 2]}, "train_ids": ["a"]}


def test_error_line_is_the_root_cause_without_paths() -> None:
    try:
        try:
            import no_such_module_for_this_test  # noqa: F401
        except ImportError as exc:
            raise RuntimeError("the app could not load /srv/secret/apps/main.py") from exc
    except RuntimeError as exc:
        assert type(root_cause(exc)) is ModuleNotFoundError
        assert error_line(exc) == "ModuleNotFoundError: No module named 'no_such_module_for_this_test'"
    try:
        open("/srv/secret/data/volume.nii.gz")
    except OSError as exc:
        line = error_line(exc)
        assert line.startswith("FileNotFoundError:") and "/srv" not in line and "volume.nii.gz" in line


def test_error_line_of_a_rank_is_the_rank_s_exception() -> None:
    from torch.multiprocessing.spawn import ProcessRaisedException

    text = ("\n\n-- Process 1 terminated with the following error:\nTraceback (most recent call last):\n"
            '  File "/srv/x.py", line 3, in f\n    import scipy\nModuleNotFoundError: No module named \'scipy\'\n')
    assert error_line(ProcessRaisedException(text, 1, 4242)) == "ModuleNotFoundError: No module named 'scipy'"


def test_client_log_drops_traceback_frames_and_paths() -> None:
    raw = [
        "epoch 1 starts",
        "Traceback (most recent call last):",
        '  File "/srv/app/lib/trainers/seg.py", line 10, in train',
        "    raise ValueError(path)",
        "ValueError: bad file /srv/data/img.nii.gz",
        "next line",
    ]
    log = ClientLog()
    shown = [line for r in raw for line in log.lines(r)]
    assert shown == ["epoch 1 starts", "ValueError: bad file img.nii.gz", "next line"]


def test_kill_leftovers_kills_a_session_by_pid_and_start_time_only() -> None:
    code = "import subprocess, time; subprocess.Popen(['sleep', '600']); time.sleep(600)"
    leader = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while len(session_members(leader.pid)) < 2:
            assert time.monotonic() < deadline, "the leader's child did not start"
            time.sleep(0.05)
        start = process_start_time(leader.pid)
        assert kill_leftovers(leader.pid, start + 1) == []  # another start time: a reused pid, left alone
        assert leader.poll() is None
        killed = kill_leftovers(leader.pid, start)
        assert leader.pid in killed and len(killed) == 2
        assert leader.wait(timeout=10) == -9
    finally:
        if leader.poll() is None:
            os.killpg(leader.pid, 9)
            leader.wait()
