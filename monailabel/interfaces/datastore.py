"""The datastore interface of MONAI Label: images and their labels, tagged ``original`` and ``final``."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from enum import Enum
from typing import Any, Dict, List, Optional

__all__ = ["Datastore", "DefaultLabelTag"]


class DefaultLabelTag(str, Enum):
    """Label tags every datastore knows.

    Attributes:
        ORIGINAL: a label made by a model.
        FINAL: a label approved or drawn by a person.
    """

    ORIGINAL = "original"
    FINAL = "final"


class Datastore(metaclass=ABCMeta):
    """A store of images and labels, as MONAI Label's apps and tasks use it.

    Image ids are file names without extension; a label is addressed by the id of its image
    (MONAI Label's ``label_id``) and a tag.
    """

    @abstractmethod
    def name(self) -> str:
        """Returns the datastore's name."""

    @abstractmethod
    def set_name(self, name: str) -> None:
        """Sets the datastore's name.

        Args:
            name: the new name.
        """

    @abstractmethod
    def description(self) -> str:
        """Returns the datastore's description."""

    @abstractmethod
    def set_description(self, description: str) -> None:
        """Sets the datastore's description.

        Args:
            description: the new description.
        """

    @abstractmethod
    def datalist(self) -> List[Dict[str, Any]]:
        """Returns ``[{"image": path, "label": path}, ...]`` for every image with a final label."""

    @abstractmethod
    def get_labels_by_image_id(self, image_id: str) -> Dict[str, str]:
        """Returns the image's labels as ``{tag: label_id}``.

        Args:
            image_id: the image id.
        """

    @abstractmethod
    def get_label_by_image_id(self, image_id: str, tag: str) -> str:
        """Returns the label id of the image's label with that tag, or ``""`` when there is none.

        Args:
            image_id: the image id.
            tag: the label tag.
        """

    @abstractmethod
    def get_image(self, image_id: str, params: Optional[Dict[str, Any]] = None) -> Any:
        """Returns the image's bytes (or a stream of them).

        Args:
            image_id: the image id.
            params: datastore-specific options.

        Raises:
            ImageNotFoundException: no such image.
        """

    @abstractmethod
    def get_image_uri(self, image_id: str) -> str:
        """Returns a path (or URI) a loader can read the image from.

        Args:
            image_id: the image id.

        Raises:
            ImageNotFoundException: no such image.
        """

    @abstractmethod
    def get_label(self, label_id: str, label_tag: str, params: Optional[Dict[str, Any]] = None) -> Any:
        """Returns the label's bytes.

        Args:
            label_id: the label id (the image id).
            label_tag: the label tag.
            params: datastore-specific options.

        Raises:
            LabelNotFoundException: no such label.
        """

    @abstractmethod
    def get_label_uri(self, label_id: str, label_tag: str) -> str:
        """Returns a path (or URI) a loader can read the label from.

        Args:
            label_id: the label id (the image id).
            label_tag: the label tag.

        Raises:
            LabelNotFoundException: no such label.
        """

    @abstractmethod
    def get_image_info(self, image_id: str) -> Dict[str, Any]:
        """Returns the image's info dict.

        Args:
            image_id: the image id.

        Raises:
            ImageNotFoundException: no such image.
        """

    @abstractmethod
    def get_label_info(self, label_id: str, label_tag: str) -> Dict[str, Any]:
        """Returns the label's info dict.

        Args:
            label_id: the label id (the image id).
            label_tag: the label tag.

        Raises:
            LabelNotFoundException: no such label.
        """

    @abstractmethod
    def get_labeled_images(self) -> List[str]:
        """Returns the ids of images that have a final label."""

    @abstractmethod
    def get_unlabeled_images(self) -> List[str]:
        """Returns the ids of images that have no final label."""

    @abstractmethod
    def list_images(self) -> List[str]:
        """Returns every image id."""

    @abstractmethod
    def refresh(self) -> None:
        """Brings the index up to date with the files (images added or removed by hand)."""

    @abstractmethod
    def add_image(self, image_id: str, image_filename: str, image_info: Dict[str, Any]) -> str:
        """Adds an image file to the datastore.

        Args:
            image_id: the id to give it.
            image_filename: path of the file to add.
            image_info: info to store with it.

        Returns:
            The image id.
        """

    @abstractmethod
    def remove_image(self, image_id: str) -> None:
        """Removes an image and its labels.

        Args:
            image_id: the image id.
        """

    @abstractmethod
    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any]) -> str:
        """Saves a label file for an image under a tag, replacing one with the same tag.

        Args:
            image_id: the image id.
            label_filename: path of the label file.
            label_tag: the tag.
            label_info: info to store with it.

        Returns:
            The label id.
        """

    @abstractmethod
    def remove_label(self, label_id: str, label_tag: str) -> None:
        """Removes a label.

        Args:
            label_id: the label id (the image id).
            label_tag: the tag.
        """

    @abstractmethod
    def update_image_info(self, image_id: str, info: Dict[str, Any]) -> None:
        """Merges keys into the image's info.

        Args:
            image_id: the image id.
            info: keys to merge.
        """

    @abstractmethod
    def update_label_info(self, label_id: str, label_tag: str, info: Dict[str, Any]) -> None:
        """Merges keys into the label's info.

        Args:
            label_id: the label id (the image id).
            label_tag: the tag.
            info: keys to merge.
        """

    @abstractmethod
    def status(self) -> Dict[str, Any]:
        """Returns counts: ``{"total", "completed", "label_tags": {tag: count}, ...}``."""

    @abstractmethod
    def json(self) -> Dict[str, Any]:
        """Returns the whole index as a dict (MONAI Label's ``datastore_v2.json`` layout)."""

    @abstractmethod
    def get_dataset_archive(self, limit_cases: Optional[int]) -> str:
        """Writes a zip of labeled images and their final labels, and returns its path.

        Args:
            limit_cases: most cases to include; None for all.
        """
