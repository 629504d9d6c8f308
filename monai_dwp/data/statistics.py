"""Statistics of a training set that the loss needs: the mean number of voxels of a preprocessed volume."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from monai.transforms import Compose, Randomizable

__all__ = ["mean_voxels"]

logger = logging.getLogger(__name__)


def mean_voxels(data: Sequence[Mapping[str, Any]], transform: Compose, key: str = "image") -> float:
    r"""Mean number of voxels :math:`\bar V = \frac{1}{N}\sum_i V_i` of the training volumes after preprocessing.

    Runs the deterministic head of ``transform`` (every transform before the first random one, e.g. before
    ``RandCropByPosNegLabeld`` of :func:`~monai_dwp.data.train_transforms`) on each item of ``data`` and counts
    the spatial voxels of ``key``. This is the :math:`\bar V` of the per-voxel ELBO
    (:class:`~monai_dwp.losses.ELBOLoss`): the data term of a training volume sums over its :math:`V_i` voxels,
    whatever patch size training samples. The value is logged.

    Args:
        data: the training items (dicts of file names), e.g. ``split["train"]``.
        transform: the training chain; only its deterministic head is applied.
        key: the image key; its shape is ``(C, *spatial)`` after the head.

    Returns:
        :math:`\bar V` as a float.

    Raises:
        ValueError: when ``data`` is empty or the head does not produce ``key``.
        TypeError: when ``transform`` is not a :class:`monai.transforms.Compose`.
    """
    if not isinstance(transform, Compose):
        raise TypeError(f"transform must be a monai.transforms.Compose, got {type(transform).__name__}.")
    items = list(data)
    if not items:
        raise ValueError("data is empty: mean_voxels needs at least one training item.")
    head = []
    for t in transform.flatten().transforms:
        if isinstance(t, Randomizable):
            break
        head.append(t)
    chain = Compose(head)
    counts = []
    for item in items:
        out = chain(dict(item))
        if not isinstance(out, Mapping) or key not in out:
            raise ValueError(f"the deterministic head of the transform did not produce key {key!r} for {item!r}.")
        counts.append(math.prod(int(s) for s in out[key].shape[1:]))
    value = sum(counts) / len(counts)
    logger.info("mean voxels per preprocessed training volume: %.0f over %d volumes (min %d, max %d)",
                value, len(counts), min(counts), max(counts))
    return float(value)
