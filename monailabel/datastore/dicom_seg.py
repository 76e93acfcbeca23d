"""Labels as DICOM SEG (built and read with highdicom), on the grid of their source series.

A label volume has the layout of :mod:`monailabel.datastore.dicom_series` (``[column, row, slice]`` in
slice order), so slice ``k`` of the label is a segmentation frame of source instance ``k``. Each label
value becomes a segment (numbered 1..n in value order) named after the app's label names; a label a
model made carries the model as its algorithm identification (``AUTOMATIC``), one a person made is
``MANUAL``. Reading goes the other way: the SEG's segments are combined into one label volume, each
segment written with the value its name has in the app's labels (else its segment number).
"""

from __future__ import annotations

import io
import logging
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from monailabel.datastore.dicom_series import series_geometry
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException

__all__ = [
    "label_to_seg",
    "seg_to_label",
    "seg_referenced_series",
    "label_to_dicom_seg_file",
    "nifti_to_dicom_seg_file",
    "SEG_SOP_CLASS",
]

logger = logging.getLogger(__name__)

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
MANUFACTURER = "MONAI Label"
MODEL_NAME = "monailabel-grpc"
SOFTWARE_VERSION = "0.1.0"


def _names_by_value(label_names: Optional[Mapping[str, Any]]) -> Dict[int, str]:
    names: Dict[int, str] = {}
    for name, value in (label_names or {}).items():
        try:
            names[int(value)] = str(name)
        except (TypeError, ValueError):
            continue
    return names


def label_to_seg(
    label: np.ndarray,
    source: Sequence,
    label_names: Optional[Mapping[str, Any]] = None,
    model: str = "",
    series_uid: Optional[str] = None,
    instance_number: int = 1,
    series_description: str = "MONAI Label",
) -> Any:
    """Builds a DICOM SEG of a label volume on its source series.

    Args:
        label: integer label ``[column, row, slice]`` on the series' grid (0 = background).
        source: the source series' instances (metadata is enough), in any order.
        label_names: ``{name: value}`` of the app's labels; unnamed values get ``label_<value>``.
        model: the model that made the label ("" for a person's label).
        series_uid: the SEG series (a new one when None); saving again uses the same series.
        instance_number: the SEG instance's number within its series.
        series_description: the SEG series' description.

    Returns:
        The ``highdicom.seg.Segmentation`` dataset.

    Raises:
        MONAILabelException: INVALID_INPUT when the label does not fit the series' grid.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    images, _ = series_geometry(source)
    columns, rows = int(images[0].Columns), int(images[0].Rows)
    label = np.asarray(label)
    if label.ndim == 4 and label.shape[-1] == 1:
        label = label[..., 0]
    if label.shape != (columns, rows, len(images)):
        raise MONAILabelException(
            MONAILabelError.INVALID_INPUT,
            f"label shape {list(label.shape)} does not match the series grid {[columns, rows, len(images)]}",
            reason="LABEL_GRID_MISMATCH",
        )
    if not np.issubdtype(label.dtype, np.integer):
        if not np.all(np.equal(np.mod(label, 1), 0)):
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, "a label holds integer values only")
        label = label.astype(np.int64)
    if label.min() < 0:
        raise MONAILabelException(MONAILabelError.INVALID_INPUT, "a label holds no negative values")
    names = _names_by_value(label_names)
    values = sorted({*names, *(int(v) for v in np.unique(label) if v > 0)})
    frames = np.transpose(label, (2, 1, 0))  # (slices, rows, columns)
    segments = np.zeros(frames.shape, dtype=np.uint8 if len(values) < 256 else np.uint16)
    algorithm = None
    if model:
        algorithm = hd.AlgorithmIdentificationSequence(
            name=model[:64], family=codes.cid7162.ArtificialIntelligence, version=SOFTWARE_VERSION
        )
    descriptions = []
    for number, value in enumerate(values, start=1):
        segments[frames == value] = number
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=names.get(value, f"label_{value}")[:64],
                segmented_property_category=codes.SCT.Tissue,
                segmented_property_type=codes.SCT.Tissue,
                algorithm_type=(
                    hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC if model else hd.seg.SegmentAlgorithmTypeValues.MANUAL
                ),
                algorithm_identification=algorithm,
                tracking_id=f"label {value}",
                tracking_uid=generate_uid(),
            )
        )
    if not descriptions:  # an empty label is still a label: one empty segment says so
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=1,
                segment_label="empty",
                segmented_property_category=codes.SCT.Tissue,
                segmented_property_type=codes.SCT.Tissue,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            )
        )
    seg = hd.seg.Segmentation(
        source_images=images,
        pixel_array=segments,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_uid or generate_uid(),
        series_number=9000,
        sop_instance_uid=generate_uid(),
        instance_number=int(instance_number),
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME,
        software_versions=SOFTWARE_VERSION,
        device_serial_number="0",
        series_description=series_description[:64],
        content_label="MONAILABEL",
        omit_empty_frames=False,
    )
    return seg


def seg_referenced_series(seg: Any) -> Tuple[str, ...]:
    """Returns the series uids a SEG names in its ReferencedSeriesSequence (or its source images)."""
    uids = [str(item.SeriesInstanceUID) for item in getattr(seg, "ReferencedSeriesSequence", None) or []]
    for study in getattr(seg, "StudiesContainingOtherReferencedInstancesSequence", None) or []:
        uids += [str(item.SeriesInstanceUID) for item in getattr(study, "ReferencedSeriesSequence", None) or []]
    return tuple(dict.fromkeys(uids))


def seg_to_label(
    seg_bytes_or_dataset: Any, source: Sequence, label_names: Optional[Mapping[str, Any]] = None
) -> Tuple[np.ndarray, Dict[str, int]]:
    """Reads a DICOM SEG as a label volume on its source series' grid.

    Args:
        seg_bytes_or_dataset: the SEG's bytes, or a pydicom dataset of it.
        source: the source series' instances (metadata is enough).
        label_names: ``{name: value}`` of the app's labels; a segment with one of these names gets that
            value, others their segment number.

    Returns:
        ``(label uint8/uint16 [column, row, slice], {segment name: value})``.

    Raises:
        MONAILabelException: PRECONDITION_FAILED when the SEG does not reference the series or its
            frames do not lie on the series' instances; INVALID_INPUT when it is no readable SEG.
    """
    import highdicom as hd
    import pydicom

    try:
        dataset = (
            pydicom.dcmread(io.BytesIO(seg_bytes_or_dataset))
            if isinstance(seg_bytes_or_dataset, (bytes, bytearray))
            else seg_bytes_or_dataset
        )
        seg = hd.seg.Segmentation.from_dataset(dataset, copy=False)
    except Exception as exc:  # highdicom and pydicom raise several types for a bad SEG
        raise MONAILabelException(
            MONAILabelError.INVALID_INPUT, f"not a readable DICOM SEG: {exc}", reason="BAD_DICOM_SEG"
        ) from exc
    images, _ = series_geometry(source)
    series_uid = str(images[0].SeriesInstanceUID)
    referenced = seg_referenced_series(seg)
    if series_uid not in referenced:
        raise MONAILabelException(
            MONAILabelError.PRECONDITION_FAILED,
            f"the SEG references series {', '.join(referenced) or 'none'}, not {series_uid}",
            reason="SEG_OTHER_SERIES",
        )
    known = {str(name): int(value) for name, value in (label_names or {}).items() if str(value).isdigit()}
    numbers = list(seg.get_segment_numbers())
    values: Dict[str, int] = {}
    for number in numbers:
        name = str(seg.get_segment_description(number).segment_label)
        values[name] = known.get(name, number)
    uids = [str(ds.SOPInstanceUID) for ds in images]
    if not _references_by_position(dataset) and not {uid for _, _, uid in seg.get_source_image_uids()} & set(uids):
        raise MONAILabelException(
            MONAILabelError.PRECONDITION_FAILED,
            "the SEG's frames reference no instance of the series",
            reason="SEG_OTHER_INSTANCES",
        )
    try:
        pixels = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=uids,
            segment_numbers=numbers,
            combine_segments=False,
            skip_overlap_checks=True,
            dtype=np.uint8,
        )  # (slices, rows, columns, segments)
    except Exception as exc:  # highdicom: frames without source references, or not on these instances
        logger.debug("SEG frames not placed by source instance (%s); placing them by position", exc)
        pixels = _pixels_by_position(dataset, images, numbers)
    dtype = np.uint8 if max(values.values(), default=0) < 256 else np.uint16
    label = np.zeros(pixels.shape[:3], dtype=dtype)
    for index, number in enumerate(numbers):
        name = str(seg.get_segment_description(number).segment_label)
        if name == "empty" and len(numbers) == 1:
            continue
        label[(pixels[..., index] > 0) & (label == 0)] = values[name]
    values.pop("empty", None)
    return np.ascontiguousarray(np.transpose(label, (2, 1, 0))), values


def label_to_dicom_seg_file(label: np.ndarray, source: Sequence, label_names: Any = None, model: str = "") -> str:
    """Writes a label array (on the series' grid) as a DICOM SEG file and returns its path.

    Args:
        label: the label ``[column, row, slice]`` (a model's output, or a person's label).
        source: the series' instances (metadata is enough).
        label_names: ``{name: value}`` or a list of names (values 1, 2, ...).
        model: the model that made it ("" for a person's label).

    Returns:
        A temporary ``.dcm`` file, which the caller removes.
    """
    import os
    import tempfile

    if label_names is not None and not isinstance(label_names, Mapping):
        label_names = {str(n): i + 1 for i, n in enumerate(label_names)}
    label = np.asarray(label)
    while label.ndim > 3 and label.shape[0] == 1:  # a channel-first mask (1, x, y, z)
        label = label[0]
    seg = label_to_seg(label, source, label_names, model=model)
    fd, path = tempfile.mkstemp(prefix="monailabel-seg-", suffix=".dcm")
    os.close(fd)
    try:
        seg.save_as(path, enforce_file_format=True)
    except BaseException:
        os.unlink(path)
        raise
    return path


def nifti_to_dicom_seg_file(label_path: str, source: Sequence, label_names: Any = None, model: str = "") -> str:
    """Writes a label file (NIfTI, on the series' grid) as a DICOM SEG file and returns its path.

    Args:
        label_path: the label file.
        source: the series' instances (metadata is enough).
        label_names: ``{name: value}`` or a list of names (values 1, 2, ...).
        model: the model that made it ("" for a person's label).

    Returns:
        A temporary ``.dcm`` file, which the caller removes.
    """
    import nibabel as nib

    return label_to_dicom_seg_file(np.asanyarray(nib.load(label_path).dataobj), source, label_names, model)


def _references_by_position(seg: Any) -> bool:
    """Whether every frame has a plane position (so it can be placed without source references)."""
    frames = getattr(seg, "PerFrameFunctionalGroupsSequence", None) or []
    return bool(frames) and all("PlanePositionSequence" in f for f in frames)


def _pixels_by_position(seg: Any, images: Sequence, numbers: Sequence[int]) -> np.ndarray:
    """Places a SEG's frames on a series' slices by their plane positions (any frame layout).

    Returns:
        ``(slices, rows, columns, segments)`` uint8 masks.

    Raises:
        MONAILabelException: PRECONDITION_FAILED when a frame lies on no slice of the series.
    """

    def mismatch(msg: str) -> MONAILabelException:
        return MONAILabelException(
            MONAILabelError.PRECONDITION_FAILED, f"the SEG's frames do not fit the series: {msg}",
            reason="SEG_GRID_MISMATCH",
        )

    rows, columns = int(images[0].Rows), int(images[0].Columns)
    if (int(seg.Rows), int(seg.Columns)) != (rows, columns):
        raise mismatch(f"frames of {seg.Rows}x{seg.Columns} pixels on slices of {rows}x{columns}")
    if not _references_by_position(seg):
        raise mismatch("frames have neither source references nor plane positions")
    orientation = np.array([float(v) for v in images[0].ImageOrientationPatient])
    shared = (getattr(seg, "SharedFunctionalGroupsSequence", None) or [None])[0]
    planes = getattr(shared, "PlaneOrientationSequence", None) if shared is not None else None
    if planes and np.abs(np.array([float(v) for v in planes[0].ImageOrientationPatient]) - orientation).max() > 1e-3:
        raise mismatch("the SEG's planes have another orientation")
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in images])
    step = float(np.median(np.linalg.norm(np.diff(positions, axis=0), axis=1))) if len(images) > 1 else 1.0
    frames = np.asarray(seg.pixel_array)
    frames = frames.reshape((-1, rows, columns))
    out = np.zeros((len(images), rows, columns, len(numbers)), dtype=np.uint8)
    index = {n: i for i, n in enumerate(numbers)}
    for i, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        position = np.array([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient])
        distance = np.linalg.norm(positions - position, axis=1)
        k = int(np.argmin(distance))
        if distance[k] > 0.05 * step:
            raise mismatch(f"frame {i + 1} lies on no slice of the series")
        identification = getattr(item, "SegmentIdentificationSequence", None)
        if identification:
            number = int(identification[0].ReferencedSegmentNumber)
            if number in index:
                out[k, :, :, index[number]] |= (frames[i] > 0).astype(np.uint8)
        else:  # a label map: the pixel values are segment numbers
            for number, j in index.items():
                out[k, :, :, j] |= (frames[i] == number).astype(np.uint8)
    return out
