"""Where a model's weights come from: the app's own checkpoints, never a download.

MONAI Label fetches pretrained weights from the internet when ``use_pretrained_model`` is true. This
template works offline: each model looks for ``model/pretrained_<name>.pt`` (a checkpoint you put
there) and ``model/<name>.pt`` (what training publishes); with neither it starts from random weights
(seeded, so every start is the same) and says so in the log and in app info (``weights``).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

logger = logging.getLogger(__name__)

RANDOM = "random weights (seed 0): no checkpoint yet, nothing is downloaded"


def model_paths(model_dir: str, name: str, network: str, default_network: str, use_pretrained: bool) -> List[str]:
    """Returns the checkpoints a model may load, lowest priority first (the last that exists wins).

    Args:
        model_dir: the app's model folder.
        name: the model name.
        network: the network chosen by ``--conf network``.
        default_network: the config's default network (its files carry no network suffix).
        use_pretrained: whether ``pretrained_<name>.pt`` may be used.
    """
    stem = name if network == default_network else f"{name}_{network}"
    published = os.path.join(model_dir, f"{stem}.pt")
    return [os.path.join(model_dir, f"pretrained_{stem}.pt"), published] if use_pretrained else [published]


def describe(path: Optional[str]) -> str:
    """Says which weights a model uses: a checkpoint file, or random weights."""
    return f"checkpoint {path}" if path else RANDOM


def log_weights(name: str, paths: Sequence[str]) -> str:
    """Logs (and returns) where ``name``'s weights come from at start."""
    existing = [p for p in paths if os.path.exists(p)]
    text = describe(existing[-1] if existing else None)
    if existing:
        logger.info("%s: using %s", name, text)
    else:
        logger.warning("%s: %s (looked for %s)", name, text, ", ".join(paths))
    return text


def seeded(build: Any, seed: int = 0) -> torch.nn.Module:
    """Builds a network with seeded initial weights, leaving torch's global random state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def parse_labels(value: Optional[str], default: Dict[str, int]) -> Dict[str, int]:
    """Reads ``--conf labels``: JSON ``{"name": value}`` or comma-separated names (values 1, 2, ...).

    Args:
        value: the conf value (None for the default).
        default: the config's labels.
    """
    if not value:
        return dict(default)
    value = value.strip()
    if value.startswith("{"):
        labels = {str(k): int(v) for k, v in json.loads(value).items()}
    else:
        labels = {n.strip(): i for i, n in enumerate((n for n in value.split(",") if n.strip()), start=1)}
    labels.pop("background", None)
    if not labels or any(v <= 0 for v in labels.values()):
        raise ValueError(f"labels must name at least one structure with a value > 0; got {value!r}")
    return labels


def parse_size(value: Optional[str], default: Tuple[int, ...]) -> Tuple[int, ...]:
    """Reads a size such as ``"96,96,96"`` or ``"[96, 96, 96]"``."""
    if not value:
        return tuple(default)
    return tuple(int(v) for v in value.strip("[]() ").split(",") if v.strip())
