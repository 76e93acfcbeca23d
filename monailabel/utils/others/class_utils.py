"""Finding classes in an app's packages by name, as MONAI Label's sample apps do for their ``lib.configs``."""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import pkgutil
import sys
from types import ModuleType
from typing import Any, List, Optional

__all__ = ["get_class_names", "is_subclass", "unload_module"]

logger = logging.getLogger(__name__)


def is_subclass(name: str, obj: Any, base_name: str) -> bool:
    """Whether ``obj`` is a class (other than ``base_name`` itself) that directly extends a class named ``base_name``.

    Args:
        name: the attribute name ``obj`` was found under.
        obj: the object.
        base_name: the base class name, as ``"TaskConfig"``.
    """
    if not inspect.isclass(obj) or name == base_name:
        return False
    return base_name in [b.__name__ for b in obj.__bases__]


def _classes_of(module: ModuleType, subclass: Optional[str]) -> List[str]:
    found = []
    for attr in dir(module):
        obj = getattr(module, attr)
        if not inspect.isclass(obj) or inspect.isabstract(obj) or obj.__module__ != module.__name__:
            continue
        if subclass and not is_subclass(obj.__name__, obj, subclass):
            continue
        found.append(f"{obj.__module__}.{obj.__name__}")
    return found


def get_class_names(module: ModuleType, subclass: Optional[str] = None) -> List[str]:
    """Returns ``"module.Class"`` names of the concrete classes defined in a module or in a package's modules.

    For a package (``lib.configs``), every module directly inside it is imported and searched; classes
    are kept when they directly extend a class named ``subclass`` (any class when it is None).

    Args:
        module: a module or a package.
        subclass: name of the base class to look for.
    """
    path = getattr(module, "__file__", None) or ""
    if os.path.basename(path).startswith("__"):  # a package's __init__
        result: List[str] = []
        for info in sorted(pkgutil.iter_modules([os.path.dirname(path)]), key=lambda i: i.name):
            if info.name.startswith("__"):
                continue
            sub = importlib.import_module(f".{info.name}", package=module.__package__ or module.__name__)
            result.extend(_classes_of(sub, subclass))
        return result
    return _classes_of(module, subclass)


def unload_module(name: str) -> None:
    """Forgets an imported module and its submodules, so that the next import finds another one of that name.

    Bundles each bring a ``scripts`` package; the one of the bundle about to run must be imported afresh.

    Args:
        name: top-level module name.
    """
    for m in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
        del sys.modules[m]
