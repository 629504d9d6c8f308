"""Checks of loaded images, as MONAI ``MapTransform`` s: non-finite voxels, blank images, patches larger than a volume.

They sit in the chains of :func:`monai_dwp.data.train_transforms` and :func:`monai_dwp.data.eval_transforms` right
after loading, so a broken file stops the run with one line naming the file (from the image's
``meta["filename_or_obj"]``), what is wrong with it and the fix, instead of a NaN loss many iterations later or an
empty crop deep inside another transform. They never change the data.

Example::

    chain = Compose([LoadImaged("image", image_only=True), EnsureChannelFirstd("image"),
                     CheckFinited("image"), CheckNonEmptyd("image")])
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from monai_dwp.utils.validation import InputValueError

__all__ = ["CheckFinited", "CheckNonEmptyd", "CheckPatchFitsd"]


def _source(value: Any, key: Hashable) -> str:
    """The file an image was loaded from (``meta["filename_or_obj"]``), or a description of the key."""
    meta = getattr(value, "meta", None)
    name = meta.get("filename_or_obj") if isinstance(meta, Mapping) else None
    if isinstance(name, (list, tuple)):
        name = ", ".join(str(n) for n in name)
    return f"{key!r} image {str(name)!r}" if name else f"{key!r} image (no file name in its meta data)"


def _as_tensor(value: Any, key: Hashable) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.as_tensor() if hasattr(value, "as_tensor") else value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    raise TypeError(
        f"data[{key!r}] must be a channel-first image (torch.Tensor or numpy.ndarray), got {type(value).__name__}; "
        "load it with LoadImaged and EnsureChannelFirstd first."
    )


class CheckFinited(MapTransform):
    """Raise when an image holds NaN or infinite voxels; pass the data through unchanged otherwise.

    A single NaN voxel makes ``ScaleIntensityd`` turn the whole volume into NaN, and the loss with it. Integer
    images are always finite and are not scanned.

    Args:
        keys: keys of the images to check.
        allow_missing_keys: do not raise for missing keys.

    Raises:
        ValueError: (when called) naming the file, the number of NaN and infinite voxels and the fix.
        TypeError: (when called) for a value that is not an array.
    """

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = _as_tensor(d[key], key)
            if not (image.is_floating_point() or image.is_complex()):
                continue
            finite = torch.isfinite(image)
            if bool(finite.all()):
                continue
            num_nan = int(torch.isnan(image).sum())
            num_inf = int(image.numel() - int(finite.sum()) - num_nan)
            raise InputValueError(
                f"{_source(d[key], key)} has non-finite voxels, got {num_nan} NaN and {num_inf} infinite of "
                f"{image.numel()}; replace them (e.g. numpy.nan_to_num) and save the file again, or remove the case "
                "from dataset.json."
            )
        return d


class CheckNonEmptyd(MapTransform):
    """Raise when a channel of an image is all zeros (a blank file); pass the data through unchanged otherwise.

    A blank image has no foreground for ``CropForegroundd`` and nothing to learn from; it usually comes from a
    failed export or conversion.

    Args:
        keys: keys of the channel-first images to check, shape ``(C, *spatial)``.
        allow_missing_keys: do not raise for missing keys.

    Raises:
        ValueError: (when called) naming the file, the blank channel and the fix.
        TypeError: (when called) for a value that is not an array.
    """

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = _as_tensor(d[key], key)
            channels = image.reshape(image.shape[0], -1) if image.ndim > 1 else image.reshape(1, -1)
            nonzero = torch.count_nonzero(channels, dim=1)
            blank = [int(c) for c in torch.nonzero(nonzero == 0).flatten()]
            if blank:
                where = f"channel {blank[0]} of {channels.shape[0]}" if channels.shape[0] > 1 else "every voxel"
                raise InputValueError(
                    f"{_source(d[key], key)} is blank ({where} is 0), got 0 non-zero voxels of {channels.shape[1]}; "
                    "the file holds no image (a failed export?): export it again or remove the case from dataset.json."
                )
        return d


class CheckPatchFitsd(MapTransform):
    """Raise when the preprocessed volume is smaller than the training patch in every spatial dimension.

    Then every patch is the whole volume surrounded by padding: usually the patch size was given in millimetres, or
    the ``spacing`` is much coarser than intended. A volume smaller than the patch along some dimensions only is
    normal (it is padded there, ``SpatialPadd``) and passes.

    Args:
        keys: keys of the channel-first images to check, shape ``(C, *spatial)`` (usually ``"image"``).
        patch_size: the training patch size, one int per spatial dimension.
        allow_missing_keys: do not raise for missing keys.

    Raises:
        ValueError: (at construction) for a patch size that is not positive ints; (when called) naming the file,
            the volume's and the patch's sizes and the fix.
    """

    def __init__(self, keys: KeysCollection, patch_size: Sequence[int], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        sizes = list(patch_size) if isinstance(patch_size, Sequence) and not isinstance(patch_size, str) else []
        if not sizes or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in sizes):
            raise InputValueError(f"patch_size must be positive ints (X, Y, Z), got {patch_size!r}; e.g. (32, 32, 32).")
        self.patch_size = tuple(int(s) for s in sizes)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            spatial = tuple(int(s) for s in d[key].shape[1:])
            if len(spatial) != len(self.patch_size):
                raise InputValueError(
                    f"{_source(d[key], key)} has spatial shape {spatial} but patch_size={self.patch_size} has "
                    f"{len(self.patch_size)} entries; give one patch size per spatial dimension."
                )
            if all(p > s for p, s in zip(self.patch_size, spatial)):
                raise InputValueError(
                    f"patch_size={self.patch_size} is larger than the whole preprocessed volume of "
                    f"{_source(d[key], key)}, got spatial shape {spatial}: every patch would be mostly padding; "
                    f"use a patch_size of at most {spatial} voxels or a finer spacing."
                )
        return d
