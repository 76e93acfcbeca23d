"""Settings of MONAI Label, with its names, read from environment variables.

MONAI Label uses a pydantic ``BaseSettings``; this is a plain class with the same attribute names and
defaults, so apps that read ``settings.MONAI_LABEL_...`` work without a pydantic dependency. Each value
can be overridden by an environment variable of the same name; lists and dicts are read as JSON (a
list may also be comma separated).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping, Optional

__all__ = ["Settings", "settings"]

_TRUE = ("1", "true", "yes", "y", "on", "t")


def _parse(raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        return raw.strip().lower() in _TRUE
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    if isinstance(default, list):
        raw = raw.strip()
        if raw.startswith("["):
            return list(json.loads(raw))
        return [s.strip() for s in raw.split(",") if s.strip()]
    if isinstance(default, dict):
        return dict(json.loads(raw)) if raw.strip() else {}
    return raw


class Settings:
    """MONAI Label's settings; every attribute may be set by the environment variable of its name.

    Args:
        env: where to read overrides from (``os.environ`` by default); tests pass a dict.
    """

    MONAI_LABEL_API_STR: str = ""
    MONAI_LABEL_PROJECT_NAME: str = "MONAILabel"

    MONAI_LABEL_APP_DIR: str = ""
    MONAI_LABEL_STUDIES: str = ""
    MONAI_LABEL_APP_CONF: Dict[str, str] = {}

    MONAI_LABEL_AUTH_ENABLE: bool = False
    MONAI_LABEL_TASKS_TRAIN: bool = True
    MONAI_LABEL_TASKS_STRATEGY: bool = True
    MONAI_LABEL_TASKS_SCORING: bool = True
    MONAI_LABEL_TASKS_BATCH_INFER: bool = True

    MONAI_LABEL_DATASTORE: str = ""
    MONAI_LABEL_DATASTORE_URL: str = ""
    MONAI_LABEL_DATASTORE_USERNAME: str = ""
    MONAI_LABEL_DATASTORE_PASSWORD: str = ""
    MONAI_LABEL_DATASTORE_API_KEY: str = ""
    MONAI_LABEL_DATASTORE_CACHE_PATH: str = ""
    MONAI_LABEL_DATASTORE_PROJECT: str = ""
    MONAI_LABEL_DATASTORE_ASSET_PATH: str = ""
    MONAI_LABEL_DATASTORE_DSA_ANNOTATION_GROUPS: str = ""

    MONAI_LABEL_DICOMWEB_USERNAME: str = ""
    MONAI_LABEL_DICOMWEB_PASSWORD: str = ""
    MONAI_LABEL_DICOMWEB_CACHE_PATH: str = ""
    MONAI_LABEL_QIDO_PREFIX: str = ""
    MONAI_LABEL_WADO_PREFIX: str = ""
    MONAI_LABEL_STOW_PREFIX: str = ""
    MONAI_LABEL_DICOMWEB_FETCH_BY_FRAME: bool = False
    MONAI_LABEL_DICOMWEB_SEARCH_FILTER: Dict[str, Any] = {"Modality": "CT"}
    MONAI_LABEL_DICOMWEB_CONVERT_TO_NIFTI: bool = True
    # not MONAI Label's: a bearer token for the PACS, the cache's size limit, deletes reaching the PACS
    MONAI_LABEL_DICOMWEB_TOKEN: str = ""
    MONAI_LABEL_DICOMWEB_CACHE_SIZE_MB: int = 10240
    MONAI_LABEL_DICOMWEB_DELETE_FROM_PACS: bool = False

    MONAI_LABEL_DATASTORE_AUTO_RELOAD: bool = True
    MONAI_LABEL_DATASTORE_READ_ONLY: bool = False
    MONAI_LABEL_DATASTORE_FILE_EXT: List[str] = [
        "*.nii.gz",
        "*.nii",
        "*.nrrd",
        "*.jpg",
        "*.png",
        "*.tif",
        "*.svs",
        "*.xml",
    ]

    MONAI_LABEL_SERVER_PORT: int = 8000
    MONAI_LABEL_CORS_ORIGINS: List[str] = []

    MONAI_LABEL_AUTO_UPDATE_SCORING: bool = True

    MONAI_LABEL_SESSIONS: bool = True
    MONAI_LABEL_SESSION_PATH: str = ""
    MONAI_LABEL_SESSION_EXPIRY: int = 3600

    MONAI_LABEL_INFER_CONCURRENCY: int = -1
    MONAI_LABEL_INFER_TIMEOUT: int = 600

    MONAI_LABEL_TRACKING_ENABLED: bool = False
    MONAI_LABEL_TRACKING_URI: str = ""

    MONAI_ZOO_SOURCE: str = "github"
    MONAI_ZOO_REPO: str = "Project-MONAI/model-zoo/hosting_storage_v1"
    MONAI_ZOO_AUTH_TOKEN: str = ""

    def __init__(self, env: Optional[Mapping[str, str]] = None) -> None:
        env = os.environ if env is None else env
        for name in self.names():
            default = getattr(type(self), name)
            # copy mutable defaults so one instance cannot change another's
            value = (
                list(default) if isinstance(default, list) else dict(default) if isinstance(default, dict) else default
            )
            raw = env.get(name)
            if raw is not None:
                try:
                    value = _parse(raw, default)
                except (ValueError, TypeError) as e:
                    raise ValueError(f"invalid value for {name}: {raw!r} ({e})") from e
            setattr(self, name, value)

    @classmethod
    def names(cls) -> List[str]:
        """Returns the names of all settings."""
        return [n for n in vars(cls) if n.isupper()]

    def dict(self) -> Dict[str, Any]:
        """Returns all settings as a dict (pydantic's ``.dict()``)."""
        return {n: getattr(self, n) for n in self.names()}


settings = Settings()
