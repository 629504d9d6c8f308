"""Flatten the dict output of :class:`~monai_dwp.inferers.MCInferer` into top-level keys of a data dictionary."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from monai.config import KeysCollection
from monai.transforms import FlattenSubKeysd, MapTransform

from monai_dwp.inferers.mc import MC_PROBS_KEY

__all__ = ["FlattenMCOutputd"]


class FlattenMCOutputd(MapTransform):
    """Move the maps of a :class:`~monai_dwp.inferers.MCInferer` dict output to top-level keys of a data dictionary.

    In a :class:`monai.engines.SupervisedEvaluator` an inferer's output is stored under ``"pred"``; with
    ``MCInferer(return_uncertainty=True)`` that is a dict ``{"probs", "entropy", ...}`` (``"probs"``:
    :data:`~monai_dwp.inferers.MC_PROBS_KEY`, the mean probabilities), which the evaluator's decollation splits per
    item (it recurses into dicts), giving items
    ``{"image": ..., "pred": {"probs": (K, *spatial), "entropy": (1, *spatial), ...}}``. This transform turns such an
    item into ``{"image": ..., "pred": (K, *spatial), "entropy": (1, *spatial), ...}``, so that the usual
    post-processing (``AsDiscreted(keys="pred", ...)``, metrics, ``SaveImaged(keys="entropy")``) works. It works
    the same on a batch (before decollation). A value that already is a tensor (an inferer that returned only the
    probabilities) is left as it is.

    The maps are moved by MONAI's :class:`~monai.transforms.FlattenSubKeysd`; this transform adds only that the
    mean probabilities go back under the flattened key (MONAI's transform would delete the key, or keep the whole
    dict under it), the tensor pass-through and messages naming the fix. ``FlattenSubKeysd(keys="pred")`` alone
    gives ``{"probs", "entropy", ...}`` at the top level and no ``"pred"``.

    Args:
        keys: the keys holding a :class:`~monai_dwp.inferers.MCInferer` dict output; its ``"probs"`` entry
            replaces the dict and its other entries become top-level keys of the same name.
        allow_missing_keys: do not raise when a key is missing.

    Raises:
        KeyError: when a dict output has no ``"probs"`` entry.
        ValueError: when an entry would overwrite an existing, different key of the data.
    """

    def __init__(self, keys: KeysCollection = "pred", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            if not isinstance(value, Mapping):
                continue
            if MC_PROBS_KEY not in value:
                raise KeyError(
                    f"data[{key!r}] is a dict without a {MC_PROBS_KEY!r} entry (keys {sorted(map(str, value))}); "
                    "FlattenMCOutputd expects the output of MCInferer(return_uncertainty=True)."
                )
            maps = [name for name in value if name != MC_PROBS_KEY]
            for name in maps:
                if name in d:
                    raise ValueError(
                        f"FlattenMCOutputd would overwrite the existing key {name!r} with data[{key!r}][{name!r}]; "
                        "rename or delete that key first."
                    )
            d = FlattenSubKeysd(keys=key, sub_keys=maps, delete_keys=False)(d)
            d[key] = value[MC_PROBS_KEY]
        return d
