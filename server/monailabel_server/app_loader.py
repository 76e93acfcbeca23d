"""Loads the MONAILabelApp subclass of an app folder's ``main.py``, as MONAI Label does."""

from __future__ import annotations

import importlib.util
import inspect
import logging
import os
import sys
from pathlib import Path
from typing import Dict

from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException

__all__ = ["load_app"]

logger = logging.getLogger(__name__)


def load_app(app_dir: Path, studies: str, conf: Dict[str, str]) -> MONAILabelApp:
    """Imports ``app_dir/main.py`` and constructs its MONAILabelApp subclass.

    The app folder goes on ``sys.path`` first, so that ``main.py`` imports its own ``lib`` package the
    way MONAI Label apps do.

    Args:
        app_dir: the app folder.
        studies: datastore folder passed to the app.
        conf: ``--conf`` pairs passed to the app.

    Returns:
        The app.

    Raises:
        MONAILabelException: APP_INIT_ERROR when there is no main.py or no app class in it.
    """
    app_dir = Path(app_dir).resolve()
    main_py = app_dir / "main.py"
    if not main_py.is_file():
        raise MONAILabelException(MONAILabelError.APP_INIT_ERROR, f"no main.py in app folder {app_dir}")
    # The app's folder goes first, and a ``lib`` package imported from another app's folder (apps of one
    # process, as in tests) is forgotten, so that ``import lib...`` finds this app's own.
    if str(app_dir) in sys.path:
        sys.path.remove(str(app_dir))
    sys.path.insert(0, str(app_dir))
    for name in [n for n in sys.modules if n == "lib" or n.startswith("lib.")]:
        origin = getattr(sys.modules[name], "__file__", None) or ""
        if not os.path.abspath(origin).startswith(str(app_dir) + os.sep):
            del sys.modules[name]
    spec = importlib.util.spec_from_file_location("main", main_py)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["main"] = module
    spec.loader.exec_module(module)
    classes = [
        c
        for _, c in inspect.getmembers(module, inspect.isclass)
        if issubclass(c, MONAILabelApp) and c is not MONAILabelApp and c.__module__ == module.__name__
    ]
    if not classes:
        raise MONAILabelException(MONAILabelError.APP_INIT_ERROR, f"{main_py} defines no MONAILabelApp subclass")
    cls = classes[0]
    logger.info("loading app %s from %s (studies %s, conf %s)", cls.__name__, app_dir, studies, conf)
    return cls(app_dir=str(app_dir), studies=studies, conf=conf)
