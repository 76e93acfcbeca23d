"""The template's own small transforms: clicks from the API into MONAI's guidance formats, label helpers.

Clicks arrive as MONAI Label sends them: ``foreground`` / ``background`` lists of voxel indices in the
image as ``LoadImage`` returns it (x, y, z), or, for DeepEdit, one list per label name.
"""

from __future__ import annotations

from typing import Any, Dict, Hashable, List, Mapping, Optional, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable, Transform


def _points(value: Any, ndim: int) -> List[List[int]]:
    pts = [[int(round(float(c))) for c in p] for p in (value or [])]
    bad = [p for p in pts if len(p) != ndim]
    if bad:
        raise ValueError(f"clicks must have {ndim} coordinates; got {bad[0]}")
    return pts


class ClicksToGuidanced(Transform):
    """Deepgrow: ``foreground``/``background`` clicks to ``guidance = [[fg...], [bg...]]`` (MONAI's layout).

    MONAI's ``AddGuidanceSignald`` then draws each click as a Gaussian in its own channel. Clicks out of
    the image are clipped to its border there.

    Args:
        ref_image: key of the (channel-first) image.
        guidance: key to write.
        foreground: key of the foreground clicks.
        background: key of the background clicks.
    """

    def __init__(self, ref_image: str = "image", guidance: str = "guidance", foreground: str = "foreground",
                 background: str = "background") -> None:
        self.ref_image = ref_image
        self.guidance = guidance
        self.foreground = foreground
        self.background = background

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        d = dict(data)
        ndim = len(d[self.ref_image].shape) - 1
        d[self.guidance] = [_points(d.get(self.foreground), ndim), _points(d.get(self.background), ndim)]
        return d


class LabelClicksd(Transform):
    """DeepEdit: puts ``foreground``/``background`` clicks under label names, as MONAI Label's clients send them.

    Foreground clicks go to the label named by ``data["label"]`` (the first label by default);
    background clicks to ``background``. Clicks already keyed by label name are kept.

    Args:
        label_names: ``{name: value}`` including ``background``.
    """

    def __init__(self, label_names: Mapping[str, int]) -> None:
        self.label_names = dict(label_names)

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        d = dict(data)
        names = [n for n in self.label_names if n != "background"]
        target = d.get("label") if d.get("label") in names else names[0]
        if d.get("foreground"):
            d[target] = list(d.get(target) or []) + list(d["foreground"])
        if d.get("background"):
            d["background"] = list(d["background"])
        for name in self.label_names:
            d.setdefault(name, [])
        return d


class SelectOneLabeld(Randomizable, MapTransform):
    """Training deepgrow on multi-label data: keeps one label present in the sample, as a binary mask.

    Args:
        keys: the label key(s).
        allow_missing_keys: skip absent keys.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            values = [v for v in torch.unique(torch.as_tensor(label)).tolist() if v > 0]
            if values:
                value = values[self.R.randint(len(values))]
                d[key] = (label == value).to(torch.float32) if torch.is_tensor(label) else (
                    (np.asarray(label) == value).astype(np.float32))
        return d


class MapChannelsToValuesd(MapTransform):
    """Maps a label map of channel indices (0, 1, 2 ...) to the labels' values (0, v1, v2 ...).

    Args:
        keys: keys of the label maps.
        values: the value of channel 1, 2, ...
    """

    def __init__(self, keys: KeysCollection, values: Sequence[int]) -> None:
        super().__init__(keys)
        self.lookup = torch.tensor([0, *values], dtype=torch.int64)

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            x = torch.as_tensor(d[key])
            out = self.lookup[x.long()]
            d[key] = out.to(torch.uint8 if int(self.lookup.max()) < 256 else torch.int32)
        return d


class ScaleMaskd(MapTransform):
    """Turns a binary mask into the value of the label a click session targets (``data["label"]``).

    Args:
        keys: keys of the masks.
        labels: ``{name: value}``.
        default: value when the request names no label.
    """

    def __init__(self, keys: KeysCollection, labels: Optional[Mapping[str, int]], default: int = 1) -> None:
        super().__init__(keys)
        self.labels = dict(labels or {})
        self.default = default

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        d = dict(data)
        value = self.labels.get(str(d.get("label")), self.default)
        for key in self.key_iterator(d):
            d[key] = (torch.as_tensor(d[key]) > 0).to(torch.uint8) * value
        return d


class SequentialLabelsd(MapTransform):
    """Maps label values to channel indices 1..N in value order (background 0), and sets ``label_names``.

    The order the infer tasks use to map channels back to values. (MONAI's ``RemapLabelsToSequentiald``
    sorts by name and its predecessor by dictionary order; this one does not depend on the MONAI release.)

    Args:
        keys: the label key(s).
        label_names: ``{name: value}``; ``background`` is 0 whether listed or not.
        set_names: also write ``data["label_names"]`` (MONAI's deepedit transforms read it).
    """

    def __init__(self, keys: KeysCollection, label_names: Mapping[str, int], set_names: bool = False) -> None:
        super().__init__(keys)
        self.set_names = set_names
        ordered = sorted(((n, v) for n, v in label_names.items() if n != "background"), key=lambda kv: kv[1])
        self.values = [v for _, v in ordered]
        self.names = {"background": 0, **{n: i for i, (n, _) in enumerate(ordered, start=1)}}

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            out = torch.zeros_like(x) if torch.is_tensor(x) else np.zeros_like(x)
            for idx, value in enumerate(self.values, start=1):
                out[x == value] = idx
            d[key] = out
            if self.set_names:
                d["label_names"] = dict(self.names)
        return d


def ordered_labels(labels: Mapping[str, int], background: bool = False) -> Dict[str, int]:
    """Returns labels in value order (the channel order), with ``background: 0`` first when asked."""
    ordered = dict(sorted(((n, v) for n, v in labels.items() if n != "background"), key=lambda kv: kv[1]))
    return {"background": 0, **ordered} if background else ordered
