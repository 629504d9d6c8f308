"""Modality (channel) selection of channel-first images."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform

from monai_dwp.utils.validation import InputValueError

__all__ = ["SelectModalityd"]


class SelectModalityd(MapTransform):
    """Keeps the channels ``indices`` of channel-first images (modality selection).

    Args:
        keys: keys of the channel-first images, shape ``(C, *spatial)``.
        indices: channel index or indices to keep, in this order; the result has ``len(indices)`` channels.
        allow_missing_keys: do not raise for missing keys.

    Raises:
        ValueError: (when called) for an index out of range of the image's channels.
    """

    def __init__(self, keys: KeysCollection, indices: int | Sequence[int], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        items = [indices] if isinstance(indices, (int, np.integer)) else list(indices)
        if not items or any(isinstance(i, bool) or not isinstance(i, (int, np.integer)) or i < 0 for i in items):
            raise InputValueError(f"indices must be a non-negative int or a non-empty list of them, got {indices!r}.")
        self.indices = [int(i) for i in items]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            num = d[key].shape[0]
            if max(self.indices) >= num:
                raise InputValueError(
                    f"{key!r}: modality index {max(self.indices)} is out of range for an image with {num} channel(s) "
                    f"(shape {tuple(d[key].shape)}); choose indices in [0, {num - 1}]."
                )
            d[key] = d[key][self.indices]
        return d
