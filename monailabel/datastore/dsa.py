"""``DSADatastore``: slides and annotations of a Digital Slide Archive server (pathology app).

It needs the ``girder_client`` package and a reachable DSA server; this SDK does not include a DSA
client, so building one raises PRECONDITION_FAILED saying so (the pathology app then cannot serve a
DSA URL as its studies; a local folder works).
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any, Optional

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException

__all__ = ["DSADatastore"]

logger = logging.getLogger(__name__)


class DSADatastore(Datastore):
    """A datastore over a Digital Slide Archive (Girder) server.

    Args:
        api_url: the DSA API URL.
        api_key: the API key.
        folder: folder ids of the slides (comma separated).
        annotation_groups: annotation groups taken as labels.
        asset_store_path: local path of the DSA asset store, to read slides without downloading.
        cache_path: where downloaded slides are cached.

    Raises:
        MONAILabelException: PRECONDITION_FAILED, always: no DSA client here.
    """

    def __init__(
        self,
        api_url: str,
        api_key: Optional[str] = None,
        folder: Optional[str] = None,
        annotation_groups: Any = None,
        asset_store_path: str = "",
        cache_path: str = "",
    ) -> None:
        self.api_url = api_url
        self.folders = {f.strip() for f in folder.split(",")} if folder else set()
        missing = "the 'girder_client' package is not installed and " if importlib.util.find_spec(
            "girder_client") is None else ""
        reason = (f"the DSA datastore ({api_url}) is unavailable: {missing}this SDK has no Digital Slide Archive "
                  "client; serve a local studies folder instead")
        logger.error(reason)
        raise MONAILabelException(MONAILabelError.PRECONDITION_FAILED, reason, reason="DSA_UNAVAILABLE")


DSADatastore.__abstractmethods__ = frozenset()  # constructing it raises the reason, not a TypeError
