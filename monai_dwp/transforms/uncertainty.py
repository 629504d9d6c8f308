"""Scalar summaries of voxel-wise uncertainty maps, for result JSON (MONAI Label) and reports, as a MapTransform."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform

from monai_dwp.utils.validation import check_float
__all__ = ["UncertaintySummaryd", "UNCERTAINTY_SUMMARY_KEYS"]

UNCERTAINTY_SUMMARY_KEYS: tuple[str, ...] = ("mean_entropy", "mean_mutual_information", "uncertain_fraction")
"""The entries :class:`UncertaintySummaryd` writes into the result dict."""


def _as_tensor(value: Any, key: Hashable) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().as_tensor() if hasattr(value, "as_tensor") else value.detach()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    raise TypeError(
        f"data[{key!r}] must be an uncertainty map (torch.Tensor or numpy.ndarray), got {type(value).__name__}; "
        "produce it with monai_dwp.inferers.MCInferer(return_uncertainty=True) and "
        "monai_dwp.transforms.FlattenMCOutputd."
    )


class UncertaintySummaryd(MapTransform):
    """Put the mean predictive entropy, the mean mutual information and the fraction of uncertain voxels into
    ``data[result_key]``.

    Reads the voxel-wise maps of :class:`~monai_dwp.inferers.MCInferer` (after
    :class:`~monai_dwp.transforms.FlattenMCOutputd` moved them to top-level keys) and writes three Python floats,
    JSON-ready::

        data["result"] = {..., "mean_entropy": 0.031, "mean_mutual_information": 0.004, "uncertain_fraction": 0.012}

    - ``mean_entropy``: mean over all voxels of the predictive entropy ``H[p̄]`` (nats);
    - ``mean_mutual_information``: mean over all voxels of the mutual information (nats), the epistemic part,
      which ranks unlabeled studies for active learning;
    - ``uncertain_fraction``: fraction of voxels whose map named by ``threshold_key`` (by default the entropy)
      is above ``threshold``.

    The means run over every element of a map (all voxels of the volume the map covers, padding included); a map
    with a channel axis ``(1, *spatial)`` and one without give the same numbers. An existing dict under
    ``result_key`` is updated, not replaced (MONAI Label returns its entries in the response JSON, next to those of
    other transforms). A NaN in a map propagates to the summary, so a broken prediction is visible.

    Args:
        entropy_key: key of the predictive-entropy map.
        mutual_information_key: key of the mutual-information map.
        threshold: a voxel is uncertain when its ``threshold_key`` map exceeds this value (nats, >= 0). The binary
            entropy of a two-class prediction is at most ``log 2 ≈ 0.693``; the default ``0.5`` marks voxels whose
            mean probability of the more likely class is below about 0.8.
        threshold_key: the map thresholded for ``uncertain_fraction``: ``entropy_key`` (default) or
            ``mutual_information_key``.
        result_key: key of the result dict.
        prefix: prepended to the three entry names (e.g. ``"dwp_"``), to keep several summaries apart.
        allow_missing_keys: skip the summary (leave the data unchanged) when a map is missing, instead of raising.

    Raises:
        ValueError: for a negative or non-finite ``threshold``, equal map keys, a ``threshold_key`` that is not one
            of the two map keys, or (when called) an empty map.
        TypeError: for a non-numeric ``threshold``, (when called) a map that is neither a tensor nor an array, or a
            ``data[result_key]`` that is not a dict.
        KeyError: (when called) a missing map, unless ``allow_missing_keys``.
    """

    def __init__(
        self,
        entropy_key: str = "entropy",
        mutual_information_key: str = "mutual_information",
        threshold: float = 0.5,
        threshold_key: str | None = None,
        result_key: str = "result",
        prefix: str = "",
        allow_missing_keys: bool = False,
    ) -> None:
        if entropy_key == mutual_information_key:
            raise ValueError(
                f"entropy_key and mutual_information_key must differ, both are {entropy_key!r}; MCInferer names the "
                "maps 'entropy' and 'mutual_information'."
            )
        super().__init__([entropy_key, mutual_information_key], allow_missing_keys)
        threshold = check_float(
            threshold,
            "threshold",
            minimum=0.0,
            hint="nats, e.g. 0.5 for a two-class entropy map (maximum log 2 = 0.693)",
        )
        threshold_key = entropy_key if threshold_key is None else threshold_key
        if threshold_key not in (entropy_key, mutual_information_key):
            raise ValueError(
                f"threshold_key must be the entropy key {entropy_key!r} or the mutual information key "
                f"{mutual_information_key!r}, got {threshold_key!r}."
            )
        self.entropy_key = entropy_key
        self.mutual_information_key = mutual_information_key
        self.threshold = float(threshold)
        self.threshold_key = threshold_key
        self.result_key = result_key
        self.prefix = str(prefix)

    def summarize(self, entropy: Any, mutual_information: Any) -> dict[str, float]:
        """The three summary numbers of an entropy and a mutual-information map (arrays or tensors)."""
        maps = {
            self.entropy_key: _as_tensor(entropy, self.entropy_key),
            self.mutual_information_key: _as_tensor(mutual_information, self.mutual_information_key),
        }
        for key, value in maps.items():
            if value.numel() == 0:
                raise ValueError(f"data[{key!r}] is empty (shape {tuple(value.shape)}); nothing to summarize.")
        uncertain = (maps[self.threshold_key] > self.threshold).float().mean()
        if torch.isnan(maps[self.threshold_key]).any():
            uncertain = torch.tensor(float("nan"))
        return {
            f"{self.prefix}mean_entropy": float(maps[self.entropy_key].double().mean()),
            f"{self.prefix}mean_mutual_information": float(maps[self.mutual_information_key].double().mean()),
            f"{self.prefix}uncertain_fraction": float(uncertain),
        }

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        present = list(self.key_iterator(d))  # raises KeyError for a missing map unless allow_missing_keys
        if len(present) < 2:
            return d
        result = d.get(self.result_key)
        if result is None:
            result = {}
        elif not isinstance(result, Mapping):
            raise TypeError(
                f"data[{self.result_key!r}] must be a dict to merge the uncertainty summary into, got "
                f"{type(result).__name__}; use another result_key."
            )
        merged = dict(result)
        merged.update(self.summarize(d[self.entropy_key], d[self.mutual_information_key]))
        d[self.result_key] = merged
        return d
