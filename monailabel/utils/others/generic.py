"""Generic helpers that MONAI Label apps import from ``monailabel.utils.others.generic``.

Only cheap, dependency-free helpers live here; torch is imported inside the functions that need it so
that importing this module (as every app does) stays fast.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import os
import pathlib
import shutil
import subprocess
import time
from typing import Any, Dict, List, Optional, Sequence, Union

logger = logging.getLogger(__name__)

__all__ = [
    "device_list",
    "device_map",
    "download_file",
    "file_checksum",
    "file_ext",
    "get_basename",
    "get_basename_no_ext",
    "get_mime_type",
    "handle_torch_linalg_multithread",
    "is_openslide_supported",
    "name_to_device",
    "remove_file",
    "run_command",
    "strtobool",
]

# Extensions made of two suffixes; anything else is the last suffix only (so "a.b.nii" gives ".nii").
_DOUBLE_EXTENSIONS = (".nii.gz", ".seg.nrrd", ".tar.gz", ".tar.bz2", ".tar.xz")


def strtobool(val: Union[str, bool, int, None]) -> bool:
    """Converts a truth value (``"true"``, ``"1"``, ``"yes"``, ``"off"`` ...) to a bool.

    Args:
        val: the value; bools and ints are taken as they are, ``None`` is False.

    Returns:
        The boolean.

    Raises:
        ValueError: the string is not a known truth value.
    """
    if isinstance(val, bool):
        return val
    if val is None:
        return False
    if isinstance(val, int):
        return val != 0
    v = str(val).strip().lower()
    if v in ("y", "yes", "t", "true", "on", "1"):
        return True
    if v in ("n", "no", "f", "false", "off", "0", ""):
        return False
    raise ValueError(f"invalid truth value {val!r}")


def file_ext(name: Optional[str]) -> str:
    """Returns the extension of a file name, keeping double extensions such as ``.nii.gz`` whole.

    Args:
        name: a file name or path; None or empty gives ``""``.

    Returns:
        The extension with its leading dot (``".nii.gz"``, ``".nrrd"``), in its original case.
    """
    if not name or not isinstance(name, str):
        return ""
    base = os.path.basename(name)
    lower = base.lower()
    for ext in _DOUBLE_EXTENSIONS:
        if lower.endswith(ext) and len(base) > len(ext):
            return base[-len(ext) :]
    return pathlib.Path(base).suffix


def get_basename(path: str) -> str:
    """Returns the last component of a path, ignoring a trailing separator.

    Args:
        path: the path.
    """
    return os.path.basename(os.path.normpath(path)) if path else ""


def get_basename_no_ext(path: str) -> str:
    """Returns the file name without its extension (``img.nii.gz`` gives ``img``).

    Args:
        path: the path.
    """
    base = get_basename(path)
    ext = file_ext(base)
    return base[: -len(ext)] if ext else base


def remove_file(path: Optional[str]) -> None:
    """Removes a file or a directory tree if it exists; missing paths are fine.

    Args:
        path: what to remove.
    """
    if not path or not os.path.lexists(path):
        return
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        os.unlink(path)


def file_checksum(file: str, algo: str = "SHA256") -> str:
    """Returns the hex digest of a file.

    Args:
        file: the path.
        algo: ``SHA256``, ``SHA512`` or ``MD5``.

    Raises:
        ValueError: unsupported algorithm.
    """
    if algo.upper() not in ("SHA256", "SHA512", "MD5"):
        raise ValueError(f"unsupported hashing algorithm {algo}")
    digest = hashlib.new(algo.lower())
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def get_mime_type(file: str) -> str:
    """Guesses a file's MIME type, ``application/octet-stream`` when unknown.

    Args:
        file: the path or name.
    """
    m_type = mimetypes.guess_type(file, strict=False)[0]
    return m_type if m_type else "application/octet-stream"


def download_file(url: str, path: str, delay: float = 1, skip_on_exists: bool = True) -> str:
    """Fetches ``url`` into ``path``: ``file://`` URLs and local paths are copied, http(s) downloaded.

    The download goes to a temporary file in the target folder and is renamed at the end, so an
    interrupted download never leaves a truncated file behind that ``skip_on_exists`` would accept.

    Args:
        url: ``http(s)://``, ``file://`` or a local path.
        path: the destination file.
        delay: seconds to wait after a network download (MONAI Label's politeness delay).
        skip_on_exists: do nothing when ``path`` exists already.

    Returns:
        ``path``.

    Raises:
        FileNotFoundError: a local source does not exist.
    """
    if skip_on_exists and os.path.exists(path):
        return path
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    import urllib.parse
    import urllib.request  # slow to import; only downloads need it

    from monailabel.utils.others.atomic import atomic_copy, atomic_write

    parsed = urllib.parse.urlparse(url)
    is_remote = parsed.scheme in ("http", "https", "ftp")
    source = urllib.request.url2pathname(parsed.path) if parsed.scheme == "file" else url

    if not is_remote and not os.path.exists(source):
        raise FileNotFoundError(f"download source does not exist: {source}")
    if is_remote:
        logger.info(f"Downloading resource: {path} from {url}")

        def fetch(out: Any) -> None:
            with urllib.request.urlopen(url) as response:  # noqa: S310
                shutil.copyfileobj(response, out, 1 << 20)

        atomic_write(path, fetch)
    else:
        atomic_copy(source, path)

    if is_remote and delay > 0:
        time.sleep(delay)
    return path


def run_command(command: str, args: Optional[Sequence[Any]] = None, plogger: Optional[logging.Logger] = None) -> int:
    """Runs a command, logging its output line by line.

    Args:
        command: the executable.
        args: its arguments.
        plogger: logger for the output (this module's by default).

    Returns:
        The exit code.
    """
    plogger = plogger if plogger else logger
    cmd = [command] + [str(a) for a in (args or [])]
    plogger.info("Running Command:: {}".format(" ".join(cmd)))
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        assert process.stdout is not None
        for line in process.stdout:
            if line.rstrip():
                plogger.info(line.rstrip())
    plogger.info(f"Return code: {process.returncode}")
    return process.returncode


def device_list() -> List[str]:
    """Returns the devices a task may run on: ``cuda``, ``cuda:0`` ... first when present, then ``cpu``."""
    import torch

    devices: List[str] = []
    if torch.cuda.is_available() and torch.cuda.device_count():
        devices.append("cuda")
        devices.extend(f"cuda:{i}" for i in range(torch.cuda.device_count()))
    devices.append("cpu")
    return devices


def device_map() -> Dict[str, str]:
    """Maps device names to concrete devices (``cuda`` to ``cuda:0``; ``cpu`` to itself)."""
    result = {d: d for d in device_list()}
    if "cuda" in result:
        result["cuda"] = "cuda:0"
    return result


def name_to_device(device: Union[None, str, Sequence[str], Any]) -> str:
    """Resolves a requested device name to one that exists here.

    A list (as found in a task's config) gives its first entry; ``None`` gives ``cuda`` when CUDA is
    available, else ``cpu``; a CUDA device asked for on a machine without CUDA falls back to ``cpu``
    with a warning, so requests written for a GPU server still run.

    Args:
        device: the requested device.

    Returns:
        A device string torch accepts.
    """
    import torch

    if isinstance(device, (list, tuple)):
        device = device[0] if device else None
    name = str(device).strip() if device is not None else ""
    if not name:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        logger.warning(f"Device '{name}' requested but CUDA is not available; using 'cpu'")
        return "cpu"
    return name


def is_openslide_supported(name: str) -> bool:
    """Whether a file is a whole-slide image openslide could read; always False (no openslide here).

    Args:
        name: the path.
    """
    return False


def handle_torch_linalg_multithread(req: Optional[Dict[str, Any]] = None) -> None:
    """Warms up ``torch.linalg`` on CUDA, as MONAI Label does to avoid a lazy-init race in threads.

    Args:
        req: the request (its ``device``); unused on CPU.
    """
    import torch

    if torch.cuda.is_available():
        try:
            torch.inverse(torch.eye(2, device=name_to_device((req or {}).get("device"))))
        except RuntimeError:  # pragma: no cover - depends on the driver
            pass
