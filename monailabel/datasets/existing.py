"""Guards the sample-data writers against replacing a studies folder's images and labels."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, List

__all__ = ["taken_ids", "refuse_overwrite"]


def taken_ids(output: Path, ids: Iterable[str]) -> List[str]:
    """Returns the ids among ``ids`` that already have an image or a label (of any tag) in ``output``.

    An id is taken whatever the file's extension (``phantom_000.nrrd`` takes ``phantom_000``): the
    datastore would see one image either way.

    Args:
        output: a studies folder (it need not exist).
        ids: image ids a writer is about to write.
    """
    output = Path(output)
    wanted = set(ids)
    labels = output / "labels"
    folders = [output, *(sorted(p for p in labels.iterdir() if p.is_dir()) if labels.is_dir() else [])]
    taken = set()
    for folder in folders:
        if folder.is_dir():
            taken.update(p.name.split(".", 1)[0] for p in folder.iterdir() if p.name.split(".", 1)[0] in wanted)
    return sorted(taken)


def refuse_overwrite(output: Path, ids: Iterable[str]) -> None:
    """Raises before anything is written when an id already has files in ``output``.

    Args:
        output: a studies folder.
        ids: image ids a writer is about to write.

    Raises:
        FileExistsError: naming the taken ids (the first few) and how many there are.
    """
    taken = taken_ids(output, ids)
    if taken:
        shown = ", ".join(taken[:4]) + (f" and {len(taken) - 4} more" if len(taken) > 4 else "")
        raise FileExistsError(f"{output} already has images or labels named {shown}")
