"""A NIfTI writer whose files appear whole or not at all."""

from __future__ import annotations

from typing import Any

from monai.config import PathLike
from monai.data import NibabelWriter

from monai_dwp.utils.io import atomic_path

__all__ = ["AtomicNibabelWriter"]


class AtomicNibabelWriter(NibabelWriter):
    """:class:`monai.data.NibabelWriter` that writes to a hidden temporary file and renames it into place.

    ``nib.save`` writes in place: inference killed mid-volume leaves a truncated ``.nii.gz`` that a later stage (or
    MONAI Label) reads as a result. Pass it to ``SaveImage(d)`` as ``writer``:
    ``{"_target_": "SaveImaged", "writer": "$monai_dwp.data.AtomicNibabelWriter", ...}``.
    """

    def write(self, filename: PathLike, verbose: bool = False, **obj_kwargs: Any) -> None:
        with atomic_path(filename) as tmp:
            super().write(tmp, verbose=verbose, **obj_kwargs)
