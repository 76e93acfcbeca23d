"""Generic helpers, at the import path MONAI Label apps use (``monailabel.utils.others.generic``)."""

from monailabel.utils.others.generic import (
    device_list,
    download_file,
    file_checksum,
    file_ext,
    get_basename,
    get_basename_no_ext,
    name_to_device,
    remove_file,
    strtobool,
)

__all__ = [
    "device_list",
    "download_file",
    "file_checksum",
    "file_ext",
    "get_basename",
    "get_basename_no_ext",
    "name_to_device",
    "remove_file",
    "strtobool",
]
