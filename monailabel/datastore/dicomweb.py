"""A datastore on a PACS through DICOMweb (QIDO-RS, WADO-RS, STOW-RS), as MONAI Label's ``DICOMWebDatastore``.

Images are the PACS' series (those the search filter finds; SEG series never), their ids the series
instance uids. A series' ``final`` label is the newest DICOM SEG instance that references it; saving a
``final`` label stores a new SEG instance in the PACS. Versioning: the labels of one image saved through
this datastore form one SEG series, each save a new instance with the next instance number (the newest
is the label; earlier ones stay in the PACS as history). Other tags (``original``, the output of models)
live in the local cache only, as in MONAI Label.

What lives locally, in ``<cache_path>/<hash of the URL>/``:

* ``images/``, ``labels/final/``: converted volumes (NIfTI) keyed by uid, rebuilt when the series (its
  set of instances) or the label's SEG instance changes, within a size limit (least recently used go);
* ``labels/<tag>/``: labels of other tags;
* ``state.db``: image and label info (strategy time stamps, client info), the SEG series each image's
  labels go to, and what was deleted through the API. Deleting hides an image or label here; it deletes
  from the PACS only with ``delete_from_pacs`` (DICOMweb DELETE, which not every PACS offers).

The PACS is asked at most every ``refresh_interval_s`` which series and SEGs it has; a PACS that cannot
be reached gives ``UNAVAILABLE`` with a retry hint, one that refuses the credentials
``FAILED_PRECONDITION``. The server and its training workers may share the cache folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import shutil
import sqlite3
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, TypeVar, Union

import numpy as np

from monailabel.datastore.dicom_cache import VolumeCache
from monailabel.datastore.dicom_seg import SEG_SOP_CLASS, label_to_seg, seg_referenced_series, seg_to_label
from monailabel.datastore.dicom_series import read_archive, save_nifti, series_geometry, series_to_volume
from monailabel.datastore.records import ImageRecord, LabelRecord
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.exception import (
    ImageNotFoundException,
    LabelNotFoundException,
    MONAILabelError,
    MONAILabelException,
)
from monailabel.interfaces.records import RecordDatastore

__all__ = ["DICOMWebDatastore", "create_dicomweb_client"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_RETRY_AFTER_S = 5.0
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_SERIES_FIELDS = ["SeriesDescription", "Modality", "NumberOfSeriesRelatedInstances", "SeriesNumber"]
_SEG_FIELDS = ["InstanceNumber", "ContentDate", "ContentTime", "SOPClassUID"]


def create_dicomweb_client(
    url: str,
    username: str = "",
    password: str = "",
    token: str = "",
    qido_prefix: str = "",
    wado_prefix: str = "",
    stow_prefix: str = "",
    timeout_s: float = 30.0,
) -> Any:
    """Returns a ``dicomweb_client.DICOMwebClient`` for a PACS, with basic or bearer auth.

    Args:
        url: the DICOMweb root, as ``http://pacs:8042/dicom-web``.
        username: basic auth user (with ``password``).
        password: basic auth password.
        token: a bearer token (instead of user and password).
        qido_prefix: path prefix of QIDO-RS, for PACS that serve it apart.
        wado_prefix: path prefix of WADO-RS.
        stow_prefix: path prefix of STOW-RS.
        timeout_s: connect and read timeout of each request.
    """
    import requests
    from dicomweb_client import DICOMwebClient

    session = requests.Session()
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    elif username:
        session.auth = (username, password)
    client = DICOMwebClient(
        url=url.rstrip("/"),
        session=session,
        qido_url_prefix=qido_prefix or None,
        wado_url_prefix=wado_prefix or None,
        stow_url_prefix=stow_prefix or None,
        timeout=timeout_s,
    )
    # a PACS under load answers 503: two tries, then the caller hears UNAVAILABLE with a retry hint
    client.set_http_retry_params(retry=True, max_attempts=2, wait_exponential_multiplier=200)
    return client


@dataclass
class _Series:
    uid: str
    study_uid: str
    modality: str
    description: str
    instances: int


@dataclass
class _SegRef:
    study_uid: str
    series_uid: str
    sop_uid: str
    instance_number: int
    order: tuple


def _value(item: Mapping[str, Any], tag: str, default: Any = "") -> Any:
    element = item.get(tag) or {}
    values = element.get("Value") or []
    if not values:
        return default
    v = values[0]
    if isinstance(v, dict):  # person names
        return v.get("Alphabetic", default)
    return v


class DICOMWebDatastore(Datastore, RecordDatastore):
    """A PACS as a datastore (see the module's docstring).

    Args:
        client: a ``dicomweb_client.DICOMwebClient`` (see :func:`create_dicomweb_client`).
        search_filter: QIDO-RS series filter that picks the images, as ``{"Modality": "CT"}``; None or
            ``{}`` for every series that is not a SEG.
        cache_path: the local cache root (``~/.cache/monailabel/dicom`` by default).
        fetch_by_frame: fetch pixel data frame by frame (WADO-RS frames) instead of whole instances.
        convert_to_nifti: kept for MONAI Label compatibility; volumes are always converted to NIfTI.
        label_names: ``{name: value}`` of the app's labels, for SEG segment names.
        cache_size_mb: size limit of the converted volumes (0 for none).
        delete_from_pacs: let ``remove_image``/``remove_label`` delete from the PACS too.
        refresh_interval_s: how long a listing of the PACS is reused.
    """

    def __init__(
        self,
        client: Any,
        search_filter: Optional[Dict[str, Any]] = None,
        cache_path: Optional[str] = None,
        fetch_by_frame: bool = False,
        convert_to_nifti: bool = True,
        *,
        label_names: Union[None, Mapping[str, Any], Sequence[str]] = None,
        cache_size_mb: int = 10240,
        delete_from_pacs: bool = False,
        refresh_interval_s: float = 2.0,
    ) -> None:
        self._client = client
        self._search_filter = dict(search_filter or {})
        self._fetch_by_frame = fetch_by_frame
        self._convert_to_nifti = convert_to_nifti
        if isinstance(label_names, Mapping):
            self._label_names = {str(k): int(v) for k, v in label_names.items() if str(k) != "background"}
        else:
            self._label_names = {str(n): i + 1 for i, n in enumerate(label_names or [])}
        self._delete_from_pacs = delete_from_pacs
        self._refresh_interval_s = refresh_interval_s
        url = str(client.base_url)
        self._url = url
        root = Path(cache_path) if cache_path else pathlib.Path.home() / ".cache" / "monailabel" / "dicom"
        self._root = root / hashlib.md5(url.encode("utf-8")).hexdigest()
        self._root.mkdir(parents=True, exist_ok=True)
        limit = int(cache_size_mb) << 20
        self._images = VolumeCache(self._root / "images", limit)
        self._finals = VolumeCache(self._root / "labels" / DefaultLabelTag.FINAL.value, limit)
        self._state = _State(self._root / "state.db")
        self._lock = threading.RLock()
        self._series: Dict[str, _Series] = {}
        self._segs: Dict[str, _SegRef] = {}
        self._seg_refs: Dict[str, tuple] = {}  # SEG sop uid -> referenced series uids (immutable)
        self._seg_instances: Dict[str, tuple] = {}  # SEG series uid -> (instance count, QIDO instances)
        self._checked: Dict[str, tuple] = {}  # series uid -> (time, fingerprint)
        self._last_refresh = 0.0
        self._name = url
        self._description = f"DICOMweb PACS at {url}"
        logger.info("DICOMweb datastore %s (cache %s, fetch by frame %s)", url, self._root, fetch_by_frame)

    # -- PACS calls -----------------------------------------------------------------------------------
    def _pacs(self, what: str, call: Callable[[], T]) -> T:
        """Runs a DICOMweb call; transport and HTTP failures become MONAILabelExceptions."""
        import requests

        try:
            return call()
        except MONAILabelException:
            raise
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise MONAILabelException(
                MONAILabelError.UNAVAILABLE,
                f"the PACS at {self._url} is not reachable ({what}): {type(exc).__name__}",
                retry_after_s=_RETRY_AFTER_S,
                reason="PACS_UNAVAILABLE",
                metadata={"url": self._url},
            ) from exc
        except requests.HTTPError as exc:
            code = exc.response.status_code if exc.response is not None else 0
            if code in (401, 403):
                raise MONAILabelException(
                    MONAILabelError.PRECONDITION_FAILED,
                    f"the PACS refused the credentials ({what}): HTTP {code}",
                    reason="PACS_AUTH_FAILED",
                    metadata={"url": self._url, "http_status": str(code)},
                ) from exc
            if code == 404:
                raise MONAILabelException(
                    MONAILabelError.NOT_FOUND, f"the PACS has no such object ({what})", reason="PACS_NOT_FOUND"
                ) from exc
            if code in (405, 501):
                raise MONAILabelException(
                    MONAILabelError.UNIMPLEMENTED, f"the PACS does not offer this ({what}): HTTP {code}"
                ) from exc
            if code >= 500 or code in (408, 429):
                raise MONAILabelException(
                    MONAILabelError.UNAVAILABLE,
                    f"the PACS failed ({what}): HTTP {code}",
                    retry_after_s=_RETRY_AFTER_S,
                    reason="PACS_UNAVAILABLE",
                    metadata={"url": self._url, "http_status": str(code)},
                ) from exc
            raise MONAILabelException(
                MONAILabelError.PRECONDITION_FAILED,
                f"the PACS rejected the request ({what}): HTTP {code}",
                reason="PACS_REJECTED",
                metadata={"http_status": str(code)},
            ) from exc
        except Exception as exc:
            # retrying's RetryError wraps a last 503; anything else from the client is a PACS fault too
            if type(exc).__name__ == "RetryError":
                raise MONAILabelException(
                    MONAILabelError.UNAVAILABLE,
                    f"the PACS kept failing ({what})",
                    retry_after_s=_RETRY_AFTER_S,
                    reason="PACS_UNAVAILABLE",
                ) from exc
            raise

    def _store(self, datasets: Sequence[Any], what: str) -> None:
        for ds in datasets:
            # pydicom writes what STOW-RS sends; without a preamble some PACS keep and serve the
            # instance without the "DICM" header, which WADO-RS readers then reject
            if getattr(ds, "preamble", None) is None:
                ds.preamble = b"\x00" * 128
        self._pacs(what, lambda: self._client.store_instances(list(datasets)))

    # -- the PACS' index ------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Reads the PACS' series and SEGs now."""
        self._refresh(force=True)

    def _refresh(self, force: bool = False) -> None:
        with self._lock:
            if not force and time.monotonic() - self._last_refresh < self._refresh_interval_s:
                return
            found = self._pacs(
                "search series",
                lambda: self._client.search_for_series(
                    search_filters=self._search_filter or None, fields=_SERIES_FIELDS, get_remaining=True
                ),
            )
            hidden_images = self._state.hidden("image")
            series: Dict[str, _Series] = {}
            for item in found:
                uid = str(_value(item, "0020000E"))
                modality = str(_value(item, "00080060"))
                if not uid or modality == "SEG" or uid in hidden_images:
                    continue
                series[uid] = _Series(
                    uid,
                    str(_value(item, "0020000D")),
                    modality,
                    str(_value(item, "0008103E")),
                    int(_value(item, "00201209", 0) or 0),
                )
            segs = self._find_segs(set(series))
            self._series, self._segs = series, segs
            self._last_refresh = time.monotonic()

    def _find_segs(self, images: set) -> Dict[str, _SegRef]:
        found = self._pacs(
            "search SEG series",
            lambda: self._client.search_for_series(
                search_filters={"Modality": "SEG"}, fields=["NumberOfSeriesRelatedInstances"], get_remaining=True
            ),
        )
        hidden = self._state.hidden("seg_series")
        best: Dict[str, _SegRef] = {}
        for item in found:
            study_uid, seg_series = str(_value(item, "0020000D")), str(_value(item, "0020000E"))
            if not seg_series or seg_series in hidden:
                continue
            count = int(_value(item, "00201209", -1) or -1)
            cached = self._seg_instances.get(seg_series)
            if cached is not None and count >= 0 and cached[0] == count:
                instances = cached[1]  # SEG instances do not change; a new one changes the count
            else:
                instances = self._pacs(
                    "search SEG instances",
                    lambda study_uid=study_uid, seg_series=seg_series: self._client.search_for_instances(
                        study_instance_uid=study_uid, series_instance_uid=seg_series, fields=_SEG_FIELDS
                    ),
                )
                self._seg_instances[seg_series] = (count, instances)
            for inst in instances:
                sop = str(_value(inst, "00080018"))
                if not sop or str(_value(inst, "00080016", SEG_SOP_CLASS)) != SEG_SOP_CLASS:
                    continue
                number = int(_value(inst, "00200013", 0) or 0)
                order = (str(_value(inst, "00080023")), str(_value(inst, "00080033")), number, sop)
                for image_uid in self._referenced(study_uid, seg_series, sop):
                    if image_uid not in images:
                        continue
                    ref = _SegRef(study_uid, seg_series, sop, number, order)
                    if image_uid not in best or ref.order > best[image_uid].order:
                        best[image_uid] = ref
        return best

    def _referenced(self, study_uid: str, series_uid: str, sop_uid: str) -> tuple:
        refs = self._seg_refs.get(sop_uid)
        if refs is None:
            from pydicom import Dataset

            meta = self._pacs(
                "read SEG metadata",
                lambda: self._client.retrieve_instance_metadata(study_uid, series_uid, sop_uid),
            )
            refs = seg_referenced_series(Dataset.from_json(meta, bulk_data_uri_handler=lambda *_: b""))
            self._seg_refs[sop_uid] = refs
        return refs

    def _get_series(self, image_id: str) -> _Series:
        self._refresh()
        with self._lock:
            s = self._series.get(image_id)
        if s is None:
            raise ImageNotFoundException(f"image '{image_id}' is not a series of the PACS", image_id)
        return s

    def _final_ref(self, image_id: str) -> Optional[_SegRef]:
        self._get_series(image_id)
        with self._lock:
            return self._segs.get(image_id)

    # -- volumes ----------------------------------------------------------------------------------------
    def _metadata(self, s: _Series) -> List[Any]:
        from pydicom import Dataset

        items = self._pacs(
            "read series metadata", lambda: self._client.retrieve_series_metadata(s.study_uid, s.uid)
        )
        return [Dataset.from_json(item, bulk_data_uri_handler=lambda *_: b"") for item in items]

    def _fingerprint(self, s: _Series) -> str:
        checked = self._checked.get(s.uid)
        if checked and time.monotonic() - checked[0] < self._refresh_interval_s:
            return checked[1]
        instances = self._pacs(
            "search instances",
            lambda: self._client.search_for_instances(study_instance_uid=s.study_uid, series_instance_uid=s.uid),
        )
        uids = sorted(str(_value(i, "00080018")) for i in instances)
        fingerprint = hashlib.sha256("\n".join(uids).encode()).hexdigest()
        self._checked[s.uid] = (time.monotonic(), fingerprint)
        return fingerprint

    def _download(self, s: _Series) -> List[Any]:
        if not self._fetch_by_frame:
            return self._pacs("retrieve series", lambda: self._client.retrieve_series(s.study_uid, s.uid))
        from pydicom.uid import ExplicitVRLittleEndian

        datasets = self._metadata(s)
        for ds in datasets:
            frames = self._pacs(
                "retrieve frames",
                lambda ds=ds: self._client.retrieve_instance_frames(
                    s.study_uid, s.uid, str(ds.SOPInstanceUID), frame_numbers=[1],
                    media_types=("application/octet-stream",),
                ),
            )
            ds.file_meta = getattr(ds, "file_meta", None) or _file_meta(ds)
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.PixelData = bytes(frames[0])
        return datasets

    def _image_path(self, image_id: str) -> Path:
        s = self._get_series(image_id)

        def build(tmp: Path) -> Dict[str, Any]:
            volume = series_to_volume(self._download(s))
            save_nifti(volume.array, volume.affine, tmp)
            return {"shape": list(volume.array.shape), "affine": volume.affine.tolist()}

        return self._images.get(image_id, self._fingerprint(s), build)

    def _final_path(self, image_id: str) -> Optional[Path]:
        ref = self._final_ref(image_id)
        if ref is None:
            return None
        s = self._get_series(image_id)

        def build(tmp: Path) -> Dict[str, Any]:
            source = self._metadata(s)
            seg = self._pacs(
                "retrieve SEG", lambda: self._client.retrieve_instance(ref.study_uid, ref.series_uid, ref.sop_uid)
            )
            label, segments = seg_to_label(seg, source, self._label_names)
            _, affine = series_geometry(source)
            save_nifti(label, _LPS_TO_RAS @ affine, tmp)
            return {"segments": segments}

        return self._finals.get(image_id, ref.sop_uid, build)

    def _local_label(self, image_id: str, tag: str) -> Optional[Path]:
        folder = self._root / "labels" / tag
        for ext in (".nii.gz", ".nii", ".nrrd"):
            p = folder / f"{image_id}{ext}"
            if p.exists():
                return p
        return None

    # -- Datastore: names -------------------------------------------------------------------------------
    def name(self) -> str:
        return self._name

    def set_name(self, name: str) -> None:
        self._name = name

    def description(self) -> str:
        return self._description

    def set_description(self, description: str) -> None:
        self._description = description

    # -- Datastore: reads -------------------------------------------------------------------------------
    def list_images(self) -> List[str]:
        self._refresh()
        with self._lock:
            return sorted(self._series)

    def get_labeled_images(self) -> List[str]:
        self._refresh()
        with self._lock:
            return sorted(i for i in self._series if i in self._segs)

    def get_unlabeled_images(self) -> List[str]:
        self._refresh()
        with self._lock:
            return sorted(i for i in self._series if i not in self._segs)

    def _tags(self, image_id: str) -> List[str]:
        tags = [DefaultLabelTag.FINAL.value] if self._final_ref(image_id) is not None else []
        folder = self._root / "labels"
        if folder.is_dir():
            for sub in sorted(folder.iterdir()):
                if sub.name != DefaultLabelTag.FINAL.value and self._local_label(image_id, sub.name):
                    tags.append(sub.name)
        return tags

    def get_labels_by_image_id(self, image_id: str) -> Dict[str, str]:
        return {tag: image_id for tag in self._tags(image_id)}

    def get_label_by_image_id(self, image_id: str, tag: str) -> str:
        return image_id if tag in self._tags(image_id) else ""

    def get_image_uri(self, image_id: str) -> str:
        return str(self._image_path(image_id))

    def get_image(self, image_id: str, params: Optional[Dict[str, Any]] = None) -> Any:
        return self._image_path(image_id).read_bytes()

    def get_label_uri(self, label_id: str, label_tag: str) -> str:
        path = self._final_path(label_id) if label_tag == DefaultLabelTag.FINAL.value else self._local_label(
            label_id, label_tag
        )
        if path is None:
            self._get_series(label_id)
            raise LabelNotFoundException(f"image '{label_id}' has no label tagged '{label_tag}'", label_id)
        return str(path)

    def get_label(self, label_id: str, label_tag: str, params: Optional[Dict[str, Any]] = None) -> Any:
        return Path(self.get_label_uri(label_id, label_tag)).read_bytes()

    def get_image_info(self, image_id: str) -> Dict[str, Any]:
        s = self._get_series(image_id)
        info = {
            "series_instance_uid": s.uid,
            "study_instance_uid": s.study_uid,
            "modality": s.modality,
            "series_description": s.description,
            "instances": s.instances,
            "source": "dicomweb",
        }
        info.update(self._state.info("image", image_id, ""))
        return info

    def get_label_info(self, label_id: str, label_tag: str) -> Dict[str, Any]:
        if not self.get_label_by_image_id(label_id, label_tag):
            raise LabelNotFoundException(f"image '{label_id}' has no label tagged '{label_tag}'", label_id)
        info: Dict[str, Any] = {}
        if label_tag == DefaultLabelTag.FINAL.value:
            ref = self._final_ref(label_id)
            if ref is not None:
                info.update(
                    {
                        "seg_series_instance_uid": ref.series_uid,
                        "seg_sop_instance_uid": ref.sop_uid,
                        "seg_instance_number": ref.instance_number,
                    }
                )
                meta = self._finals.meta(label_id)
                if meta and meta.get("fingerprint") == ref.sop_uid and "segments" in meta:
                    info["segments"] = meta["segments"]
        stored = self._state.info("label", label_id, label_tag)
        if label_tag == DefaultLabelTag.FINAL.value and stored.get("seg_sop_instance_uid") not in (
            None, info.get("seg_sop_instance_uid")
        ):
            stored = {}  # info of a SEG the PACS has replaced since (another viewer saved one)
        return {**stored, **info}

    def datalist(self) -> List[Dict[str, Any]]:
        return [
            {"image": self.get_image_uri(i), "label": self.get_label_uri(i, DefaultLabelTag.FINAL.value)}
            for i in self.get_labeled_images()
        ]

    def status(self) -> Dict[str, Any]:
        images = self.list_images()
        tags: Dict[str, int] = {}
        for i in images:
            for t in self._tags(i):
                tags[t] = tags.get(t, 0) + 1
        completed = tags.get(DefaultLabelTag.FINAL.value, 0)
        return {"total": len(images), "completed": completed, "label_tags": tags}

    def json(self) -> Dict[str, Any]:
        objects: Dict[str, Any] = {}
        for i in self.list_images():
            objects[i] = {
                "image": {"ext": ".nii.gz", "info": self.get_image_info(i)},
                "labels": {t: {"ext": ".nii.gz", "info": self.get_label_info(i, t)} for t in self._tags(i)},
            }
        return {"name": self._name, "description": self._description, "images_dir": ".", "labels_dir": "labels",
                "objects": objects}

    def get_dataset_archive(self, limit_cases: Optional[int]) -> str:
        fd, path = tempfile.mkstemp(prefix="monailabel-dicomweb-", suffix=".zip")
        os.close(fd)
        ids = self.get_labeled_images()[: limit_cases or None]
        with zipfile.ZipFile(path, "w") as z:
            for i in ids:
                z.write(self.get_image_uri(i), f"images/{i}.nii.gz")
                z.write(self.get_label_uri(i, DefaultLabelTag.FINAL.value), f"labels/final/{i}.nii.gz")
        return path

    # -- typed records: the SDK's record API (as LocalDatastore's), which the server lists with ---------
    def _label_record(self, image_id: str, tag: str, fetch: bool) -> LabelRecord:
        if fetch:
            path: Optional[Path] = Path(self.get_label_uri(image_id, tag))
        elif tag == DefaultLabelTag.FINAL.value:
            path = self._finals.path(image_id)
        else:
            path = self._local_label(image_id, tag)
        if path is None:
            raise LabelNotFoundException(f"image '{image_id}' has no label tagged '{tag}'", image_id)
        sha256 = ""
        if tag == DefaultLabelTag.FINAL.value:
            ref, meta = self._final_ref(image_id), self._finals.meta(image_id)
            if ref is not None and meta and meta.get("fingerprint") == ref.sop_uid:
                sha256 = str(meta.get("sha256", ""))
        size, mtime = _stat(path)
        ext = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
        return LabelRecord(image_id, tag, ext, self.get_label_info(image_id, tag), size, sha256, str(path), mtime)

    def _image_record(self, image_id: str, fetch: bool) -> ImageRecord:
        path = self._image_path(image_id) if fetch else self._images.path(image_id)
        meta = self._images.meta(image_id) or {}
        checked = self._checked.get(image_id)
        sha256 = str(meta.get("sha256", "")) if checked and meta.get("fingerprint") == checked[1] else ""
        size, mtime = _stat(path)
        labels = {t: self._label_record(image_id, t, False) for t in self._tags(image_id)}
        return ImageRecord(image_id, ".nii.gz", self.get_image_info(image_id), size, sha256, str(path), mtime,
                           False, labels)

    def image_record(self, image_id: str, compute_sha256: bool = True) -> ImageRecord:
        """Returns an image with its labels as a typed record; the series is fetched (and converted).

        Digests come from the series cache (``compute_sha256`` is kept for the record API).

        Raises:
            ImageNotFoundException: no such series.
            MONAILabelException: PRECONDITION_FAILED when the series is not a volume; UNAVAILABLE when
                the PACS cannot be reached.
        """
        return self._image_record(image_id, True)

    def label_record(self, image_id: str, tag: str) -> LabelRecord:
        """Returns a label as a typed record; a final label's SEG is fetched (and converted).

        Raises:
            LabelNotFoundException: no such label.
        """
        return self._label_record(image_id, tag, True)

    def list_image_records(
        self,
        filter: str = "all",
        label_tag: str = "final",
        page_size: int = 100,
        after_id: str = "",
        *,
        compute_sha256: bool = True,
    ) -> tuple:
        """Returns one page of images in id order, and how many pass the filter, without fetching any.

        A record's size and digest are those of its converted volume once it was fetched (0 and ""
        before), so that listing a PACS costs queries, not downloads; a series that is not a volume is
        listed, and reading it says why it cannot be served.

        Args:
            filter: ``"all"``, ``"labeled"`` or ``"unlabeled"`` (by ``label_tag``).
            label_tag: the tag the filter refers to; ``""`` for ``final``.
            page_size: records per page (100 when 0 or less).
            after_id: the last id of the previous page.
            compute_sha256: kept for the record API; digests come from the cache.
        """
        tag = label_tag or DefaultLabelTag.FINAL.value
        ids = self.list_images()
        if filter != "all":
            want = filter == "labeled"
            ids = [i for i in ids if (tag in self._tags(i)) == want]
        page = [i for i in ids if i > after_id][: page_size if page_size > 0 else 100]
        return [self._image_record(i, False) for i in page], len(ids)

    # -- Datastore: writes ------------------------------------------------------------------------------
    def add_image(self, image_id: str, image_filename: str, image_info: Dict[str, Any], **_: Any) -> str:
        """Stores a DICOM series (a zip or tar of its instances) in the PACS with STOW-RS.

        The image id must be the series instance uid, which is what the PACS names it by.

        Raises:
            MONAILabelException: INVALID_INPUT for no DICOM archive, several series or another uid;
                PRECONDITION_FAILED when the series is not a volume.
        """
        name = os.path.basename(image_filename).lower()
        if name.endswith((".nii", ".nii.gz", ".nrrd")):
            raise MONAILabelException(
                MONAILabelError.UNIMPLEMENTED,
                "a PACS stores DICOM: upload the series as a zip or tar of its instances",
                reason="PACS_NEEDS_DICOM",
            )
        datasets = read_archive(image_filename)
        series = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
        if series != {image_id}:
            raise MONAILabelException(
                MONAILabelError.INVALID_INPUT,
                f"the archive holds series {', '.join(sorted(series))}; the image id must be its series uid",
                field="image_id",
            )
        series_to_volume(datasets)  # a volume, or the reason it is not, before the PACS sees it
        self._store(datasets, "store series")
        self._state.unhide("image", image_id)
        if image_info:
            self._state.update_info("image", image_id, "", image_info)
        self._refresh(force=True)
        return image_id

    def remove_image(self, image_id: str) -> None:
        s = self._get_series(image_id)
        if self._delete_from_pacs:
            self._pacs("delete series", lambda: self._client.delete_series(s.study_uid, s.uid))
        else:
            self._state.hide("image", image_id)
        self._images.drop(image_id)
        self._finals.drop(image_id)
        for tag in self._tags(image_id):
            local = self._local_label(image_id, tag)
            if local is not None and tag != DefaultLabelTag.FINAL.value:
                local.unlink(missing_ok=True)
        self._state.forget(image_id)
        self._refresh(force=True)

    def save_label(
        self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any], **_: Any
    ) -> str:
        """Saves a label: a ``final`` one as a new DICOM SEG instance in the PACS, others in the cache.

        ``label_filename`` is a NIfTI label on the image's grid, or (for ``final``) a DICOM SEG file that
        references the image's series, stored as it is.

        Raises:
            MONAILabelException: NOT_FOUND for an unknown image; INVALID_INPUT for a label that does not
                fit the series; PRECONDITION_FAILED for a SEG of another series.
        """
        s = self._get_series(image_id)
        info = {k: v for k, v in (label_info or {}).items() if k != "sha256"}
        if label_tag != DefaultLabelTag.FINAL.value:
            folder = self._root / "labels" / label_tag
            folder.mkdir(parents=True, exist_ok=True)
            name = os.path.basename(label_filename)
            ext = ".nii.gz" if name.endswith(".nii.gz") else os.path.splitext(name)[1] or ".nii.gz"
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=ext, dir=folder)
            os.close(fd)
            shutil.copyfile(label_filename, tmp)
            for old in (folder / f"{image_id}{e}" for e in (".nii.gz", ".nii", ".nrrd")):
                old.unlink(missing_ok=True)
            os.replace(tmp, folder / f"{image_id}{ext}")
            self._state.set_info("label", image_id, label_tag, info)
            return image_id

        source = self._metadata(s)
        if _is_dicom(label_filename):
            import pydicom

            seg = pydicom.dcmread(label_filename)
            label, segments = seg_to_label(seg, source, self._label_names)  # checks it references this series
        else:
            import nibabel as nib

            try:
                label = np.asanyarray(nib.load(label_filename).dataobj)
            except Exception as exc:
                raise MONAILabelException(
                    MONAILabelError.INVALID_INPUT, f"cannot read the label as NIfTI: {type(exc).__name__}"
                ) from exc
            names = dict(self._label_names)
            extra = info.get("label_names")
            if isinstance(extra, Mapping):
                names.update({str(k): int(v) for k, v in extra.items() if str(k) != "background"})
            with self._lock:
                current = self._segs.get(image_id)
            series_uid, number = self._state.seg_series(image_id)
            if current is not None and current.series_uid == series_uid:
                number = max(number, current.instance_number)
            seg = label_to_seg(
                label,
                source,
                names,
                model=str(info.get("model") or ""),
                series_uid=series_uid or None,
                instance_number=number + 1,
                series_description=f"MONAI Label {label_tag}",
            )
            segments = {str(d.SegmentLabel): int(d.SegmentNumber) for d in seg.SegmentSequence}
            segments = {k: names.get(k, v) for k, v in segments.items() if k != "empty"}
        self._store([seg], "store SEG")
        if str(seg.get("Manufacturer", "")) == "MONAI Label":
            self._state.set_seg_series(image_id, str(seg.SeriesInstanceUID), int(seg.InstanceNumber))
        ref = _SegRef(str(seg.StudyInstanceUID), str(seg.SeriesInstanceUID), str(seg.SOPInstanceUID),
                      int(seg.get("InstanceNumber", 0) or 0), ("9", "", 0, ""))
        with self._lock:
            self._segs[image_id] = ref
            self._seg_refs[ref.sop_uid] = (image_id,)
        _, affine = series_geometry(source)
        label_ras = np.asarray(label)
        if label_ras.ndim == 4:
            label_ras = label_ras[..., 0]
        self._finals.put(
            image_id, ref.sop_uid,
            lambda tmp: save_nifti(label_ras.astype(np.uint8 if label_ras.max() < 256 else np.uint16),
                                   _LPS_TO_RAS @ affine, tmp),
            {"segments": segments},
        )
        self._state.set_info("label", image_id, label_tag, {**info, "seg_sop_instance_uid": ref.sop_uid})
        self._last_refresh = 0.0  # the next read asks the PACS again
        return image_id

    def remove_label(self, label_id: str, label_tag: str) -> None:
        if label_tag != DefaultLabelTag.FINAL.value:
            path = self._local_label(label_id, label_tag)
            if path is not None:
                path.unlink(missing_ok=True)
            self._state.set_info("label", label_id, label_tag, {})
            return
        ref = self._final_ref(label_id)
        if ref is None:
            return
        with self._lock:
            seg_series = {r.series_uid for i, r in self._segs.items() if i == label_id}
        for uid in seg_series:
            if self._delete_from_pacs:
                self._pacs("delete SEG", lambda uid=uid: self._client.delete_series(ref.study_uid, uid))
            else:
                self._state.hide("seg_series", uid)
        self._state.set_seg_series(label_id, "", 0)
        self._state.set_info("label", label_id, label_tag, {})
        self._finals.drop(label_id)
        self._refresh(force=True)
        # older SEG series of the image may now be its label; hide those too, the label is gone
        while True:
            with self._lock:
                older = self._segs.get(label_id)
            if older is None:
                break
            if self._delete_from_pacs:
                self._pacs("delete SEG", lambda o=older: self._client.delete_series(o.study_uid, o.series_uid))
            else:
                self._state.hide("seg_series", older.series_uid)
            self._refresh(force=True)

    def update_image_info(self, image_id: str, info: Dict[str, Any]) -> None:
        self._get_series(image_id)
        self._state.update_info("image", image_id, "", info)

    def update_label_info(self, label_id: str, label_tag: str, info: Dict[str, Any]) -> None:
        self.get_label_info(label_id, label_tag)
        self._state.update_info("label", label_id, label_tag, info)

    def series_metadata(self, image_id: str) -> List[Any]:
        """Returns the series' instances (metadata, no pixel data), for DICOM SEG output."""
        return self._metadata(self._get_series(image_id))

    def cache_path(self) -> str:
        """Returns the local cache folder of this PACS."""
        return str(self._root)

    def staging_dir(self) -> Path:
        """Returns a folder for uploads in progress (in the cache)."""
        path = self._root / "staging"
        path.mkdir(parents=True, exist_ok=True)
        return path


def _stat(path: Path) -> tuple:
    try:
        st = path.stat()
        return int(st.st_size), float(st.st_mtime)
    except OSError:
        return 0, 0.0


def _is_dicom(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def _file_meta(ds: Any) -> Any:
    from pydicom.dataset import FileMetaDataset

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return meta


class _State:
    """Local facts about the PACS' objects, in SQLite (shared by the server and its job processes)."""

    def __init__(self, path: Path) -> None:
        self._path = str(path)
        self._local = threading.local()
        with self._db() as db:
            db.executescript(
                """
                CREATE TABLE IF NOT EXISTS info (kind TEXT, id TEXT, tag TEXT, json TEXT, PRIMARY KEY (kind, id, tag));
                CREATE TABLE IF NOT EXISTS hidden (kind TEXT, uid TEXT, PRIMARY KEY (kind, uid));
                CREATE TABLE IF NOT EXISTS seg_series (image_id TEXT PRIMARY KEY, uid TEXT, number INTEGER);
                """
            )

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self._path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            self._local.db = db
        return db

    def info(self, kind: str, id_: str, tag: str) -> Dict[str, Any]:
        row = self._db().execute("SELECT json FROM info WHERE kind=? AND id=? AND tag=?", (kind, id_, tag)).fetchone()
        return json.loads(row[0]) if row else {}

    def set_info(self, kind: str, id_: str, tag: str, info: Dict[str, Any]) -> None:
        self._db().execute(
            "INSERT OR REPLACE INTO info VALUES (?, ?, ?, ?)", (kind, id_, tag, json.dumps(info, default=str))
        )

    def update_info(self, kind: str, id_: str, tag: str, info: Dict[str, Any]) -> None:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT json FROM info WHERE kind=? AND id=? AND tag=?", (kind, id_, tag)).fetchone()
            merged = {**(json.loads(row[0]) if row else {}), **info}
            row = (kind, id_, tag, json.dumps(merged, default=str))
            db.execute("INSERT OR REPLACE INTO info VALUES (?, ?, ?, ?)", row)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def forget(self, id_: str) -> None:
        self._db().execute("DELETE FROM info WHERE id=?", (id_,))
        self._db().execute("DELETE FROM seg_series WHERE image_id=?", (id_,))

    def hidden(self, kind: str) -> set:
        return {r[0] for r in self._db().execute("SELECT uid FROM hidden WHERE kind=?", (kind,))}

    def hide(self, kind: str, uid: str) -> None:
        self._db().execute("INSERT OR IGNORE INTO hidden VALUES (?, ?)", (kind, uid))

    def unhide(self, kind: str, uid: str) -> None:
        self._db().execute("DELETE FROM hidden WHERE kind=? AND uid=?", (kind, uid))

    def seg_series(self, image_id: str) -> tuple:
        row = self._db().execute("SELECT uid, number FROM seg_series WHERE image_id=?", (image_id,)).fetchone()
        return (row[0], int(row[1])) if row else ("", 0)

    def set_seg_series(self, image_id: str, uid: str, number: int) -> None:
        self._db().execute("INSERT OR REPLACE INTO seg_series VALUES (?, ?, ?)", (image_id, uid, number))
