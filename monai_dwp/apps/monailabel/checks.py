"""Checks of MONAI Label requests that need no MONAI Label import (so they are tested in the project's environment)."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["check_request_image"]


def check_request_image(image: Any, key: str = "image") -> Any:
    """Return a request's ``image`` if it is an existing file or folder (DICOM series), or not a path at all.

    MONAI Label's app turns a study id into the study's path with ``datastore.get_image_uri``, which returns ``""``
    for an id the datastore does not hold; without this check the bundle's ``LoadImaged`` then fails on an empty
    file name with a message that names neither the request nor the fix.

    Args:
        image: the request's image: a path (``str``), or an array that MONAI Label passes through.
        key: the request field, for the message.

    Returns:
        ``image``.

    Raises:
        FileNotFoundError: for an empty path (an unknown study id) or a path that does not exist.
    """
    if not isinstance(image, (str, os.PathLike)):
        return image
    if str(image) == "":
        raise FileNotFoundError(
            f"the request's {key} names no study of the datastore, got an empty path (MONAI Label's datastore "
            "returns '' for a study id it does not hold); use an id listed by GET /datastore/?output=all, or upload "
            "the image with the request (POST /infer/<model> with file=...)."
        )
    if not os.path.exists(image):
        raise FileNotFoundError(
            f"the request's {key} does not exist, got {str(image)!r}; pass a study id of the datastore (GET "
            "/datastore/?output=all) or an existing file."
        )
    return image
