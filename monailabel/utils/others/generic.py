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
    "create_dataset_from_path",
    "download_file",
    "download_timeout",
    "failed_download",
    "file_checksum",
    "file_ext",
    "get_basename",
    "get_basename_no_ext",
    "get_bundle_models",
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


#: Destination path -> why its download failed (see :func:`failed_download`).
_FAILED_DOWNLOADS: Dict[str, str] = {}


def download_timeout() -> float:
    """Seconds a download may wait on the network (``MONAI_LABEL_DOWNLOAD_TIMEOUT``, 20 by default)."""
    try:
        return float(os.environ.get("MONAI_LABEL_DOWNLOAD_TIMEOUT", "20"))
    except ValueError:
        return 20.0


def failed_download(path: Optional[str]) -> Optional[str]:
    """Why the download to ``path`` failed (None when it did not fail or was never tried).

    Args:
        path: a destination given to :func:`download_file`.
    """
    return _FAILED_DOWNLOADS.get(os.path.abspath(path)) if path else None


def download_file(url: str, path: str, delay: float = 1, skip_on_exists: bool = True) -> str:
    """Fetches ``url`` into ``path``: ``file://`` URLs and local paths are copied, http(s) downloaded.

    The download goes to a temporary file in the target folder and is renamed at the end, so an
    interrupted download never leaves a truncated file behind that ``skip_on_exists`` would accept.

    A network download that fails (no network, a timeout of :func:`download_timeout` seconds, an
    HTTP error) does not raise: apps download pretrained weights while they load, and an app must
    still load offline. The failure is logged with where to put the file instead, and remembered
    (:func:`failed_download`), so the model using that file is listed as unavailable with the reason
    and calling it fails with FAILED_PRECONDITION.

    Args:
        url: ``http(s)://``, ``file://`` or a local path.
        path: the destination file.
        delay: seconds to wait after a network download (MONAI Label's politeness delay).
        skip_on_exists: do nothing when ``path`` exists already.

    Returns:
        ``path`` (which does not exist when a network download failed).

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
        timeout = download_timeout()

        def fetch(out: Any) -> None:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
                shutil.copyfileobj(response, out, 1 << 20)

        try:
            atomic_write(path, fetch)
        except Exception as e:  # offline, DNS, timeout, HTTP status: all mean "not downloadable here"
            reason = (
                f"could not download {os.path.basename(path)} from {url} ({type(e).__name__}: {e}); "
                f"put the file at model/{os.path.basename(path)} in the app folder, or start the app with "
                "--conf use_pretrained_model false to train it from scratch"
            )
            _FAILED_DOWNLOADS[os.path.abspath(path)] = reason
            logger.error(reason)
            return path
        _FAILED_DOWNLOADS.pop(os.path.abspath(path), None)
    else:
        atomic_copy(source, path)

    if is_remote and delay > 0:
        time.sleep(delay)
    return path


def create_dataset_from_path(
    folder: str, image_dir: str = "images", label_dir: str = "labels", img_ext: str = ".jpg", lab_ext: str = ".png"
) -> List[Dict[str, str]]:
    """Pairs images and labels of a folder by base name: ``[{"image": path, "label": path}, ...]``.

    Args:
        folder: the folder.
        image_dir: sub-folder of the images ("" for the folder itself).
        label_dir: sub-folder of the labels ("" for the folder itself).
        img_ext: extension of the images.
        lab_ext: extension of the labels.
    """

    def files(d: str, ext: str) -> List[str]:
        return sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(ext)) if os.path.isdir(d) else []

    images = files(os.path.join(folder, image_dir) if image_dir else folder, img_ext)
    label_folder = os.path.join(folder, label_dir) if label_dir else folder
    labels = {get_basename_no_ext(p): p for p in files(label_folder, lab_ext)}
    pairs = []
    for image in images:
        label = labels.get(get_basename_no_ext(image))
        if label is None:
            logger.warning(f"No label for image: {image}")
            continue
        pairs.append({"image": image, "label": label})
    return pairs


def get_bundle_models(app_dir: str, conf: Dict[str, str], conf_key: str = "models") -> Dict[str, str]:
    """Finds the MONAI bundles an app is asked to serve (``--conf models a,b``) and returns ``{name: folder}``.

    Nothing is downloaded. A bundle is found, in order, in the app's ``model/<name>`` folder or in
    the local zoo folder (``--conf zoo_dir DIR`` or the ``MONAI_LABEL_ZOO_DIR`` environment variable),
    where ``name`` may carry a version (``spleen_ct_segmentation_v0.5.0``, also looked up without
    it). A bundle found nowhere is still returned (at ``model/<name>``): its tasks then report
    as unavailable, saying where to put it; the log says so too.

    Args:
        app_dir: the app folder.
        conf: the app's ``--conf`` values.
        conf_key: the conf key listing the bundles (``bundles`` for the radiology app).
    """
    import re

    model_dir = os.path.join(app_dir, "model")
    zoo_dir = conf.get("zoo_dir") or os.environ.get("MONAI_LABEL_ZOO_DIR", "")
    names = [m.strip() for m in (conf.get(conf_key) or "").split(",") if m.strip()]
    bundles: Dict[str, str] = {}
    for name in names:
        match = re.match(r"(?P<name>.+)_v(?P<version>\d+\.\d+\.\d+)$", name)
        candidates = [os.path.join(model_dir, name)]
        if zoo_dir:
            candidates.append(os.path.join(zoo_dir, name))
            if match:
                candidates.append(os.path.join(zoo_dir, match.group("name")))
        found = next((c for c in candidates if os.path.isdir(c)), None)
        if found:
            logger.info(f"+++ Adding Bundle from Local: {name} => {found}")
            bundles[name] = found
        else:
            where = f"{model_dir}/{name}" + (f" or {zoo_dir}/{name}" if zoo_dir else "")
            logger.error(
                f"Bundle '{name}' is not available locally and nothing is downloaded from the MONAI Model Zoo here; "
                f"put the unpacked bundle (configs/, models/) at {where}"
            )
            bundles[name] = os.path.join(model_dir, name)
    logger.info(f"+++ Using Bundle Models: {list(bundles.keys())}")
    return bundles


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
