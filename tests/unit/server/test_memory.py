"""Freed memory kept for reuse: after ``retain_freed_memory`` a large freed buffer stays resident (the
next call reuses it instead of faulting in fresh pages); without it, it is returned at once.

Each case runs in a fresh interpreter: the allocator's settings are process-wide and one-way.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

_PROBE = r"""
import json, sys
import numpy as np
from monailabel_server.memory import retain_freed_memory

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) << 10

applied = retain_freed_memory(int(sys.argv[1]))
before = rss()
buffer = np.ones(64 << 20, dtype=np.uint8)  # 64 MiB, written: resident
during = rss()
del buffer
after = rss()
again = np.ones(64 << 20, dtype=np.uint8)  # reuses the freed pages when they were kept
print(json.dumps({"applied": applied, "during": during - before, "after": after - before,
                  "again": rss() - before}))
"""


def _probe(keep_bytes: int) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE, str(keep_bytes)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator and /proc: Linux only")
def test_a_freed_large_buffer_stays_resident_and_is_reused() -> None:
    kept = _probe(256 << 20)
    assert kept["applied"] is True
    assert kept["during"] >= 60 << 20
    assert kept["after"] >= 60 << 20, "the freed buffer went back to the system"
    assert kept["again"] < kept["after"] + (16 << 20), "the second buffer did not reuse the first one's memory"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator and /proc: Linux only")
def test_without_it_a_freed_large_buffer_is_returned() -> None:
    default = _probe(0)
    assert default["applied"] is False
    assert default["during"] >= 60 << 20
    assert default["after"] < 16 << 20


def test_the_setting_is_on_the_command_line_and_in_the_environment(monkeypatch, capsys) -> None:
    from pathlib import Path

    from monailabel_server.cli import main
    from monailabel_server.config import ServerConfig

    assert ServerConfig.__dataclass_fields__["retain_memory_mb"].default == 1024
    monkeypatch.setenv("MONAI_LABEL_GRPC_RETAIN_MEMORY_MB", "0")
    assert ServerConfig.from_env(Path("."), "studies").retain_memory_mb == 0
    with pytest.raises(SystemExit) as info:
        main(["start_server", "--help"])
    assert info.value.code == 0
    assert "--retain-memory-mb" in capsys.readouterr().out
