"""Montages of segmentations with their uncertainty maps: image, ground truth, prediction, entropy, mutual information."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from monai_dwp.utils.io import atomic_path

__all__ = ["save_uncertainty_montage"]

_PANELS = (("image", "image", "gray"), ("label", "ground truth", None), ("pred", "prediction", None),
           ("entropy", "predictive entropy", "magma"), ("mutual_information", "mutual information", "viridis"))


def _load(path: str | os.PathLike, channel: int) -> np.ndarray:
    import nibabel as nib

    data = np.asanyarray(nib.load(str(path)).dataobj).astype(np.float32)
    if data.ndim == 4:
        data = data[..., min(channel, data.shape[-1] - 1)]
    return data


def save_uncertainty_montage(
    cases: Sequence[Mapping[str, str | os.PathLike]],
    output_file: str | os.PathLike,
    modality: int = 1,
    title: str | None = None,
) -> Path:
    """One row per case: the image, the ground truth, the prediction, predictive entropy and mutual information.

    The axial slice through the largest ground-truth (or predicted) area is shown; the uncertainty maps share one
    colour scale per row, in nats.

    Args:
        cases: dicts of NIfTI paths with keys ``image`` (3D or 4D, channel last), ``label``, ``pred`` and optionally
            ``entropy``, ``mutual_information`` (all on the image's grid).
        output_file: the PNG to write (atomically).
        modality: channel of a 4D image to show.
        title: the figure title.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not cases:
        raise ValueError("cases is empty; pass at least one dict with image, label and pred paths.")
    fig = Figure(figsize=(3.0 * len(_PANELS), 3.0 * len(cases) + 0.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(cases), len(_PANELS), squeeze=False)
    for row, case in enumerate(cases):
        missing = [k for k in ("image", "label", "pred") if k not in case]
        if missing:
            raise ValueError(f"case {row} lacks {missing}; each case needs image, label and pred NIfTI paths.")
        volumes = {k: _load(case[k], modality) for k, _, _ in _PANELS if k in case}
        mask = volumes["label"] > 0
        if not mask.any():
            mask = volumes["pred"] > 0
        z = int(np.argmax(mask.sum(axis=(0, 1)))) if mask.any() else volumes["image"].shape[2] // 2
        # each uncertainty map on its own scale (its colour bar gives the values): mutual information is often a
        # small part of the entropy, and on the entropy's scale its structure would not show
        vmax = {k: float(volumes[k][..., z].max()) or 1.0 for k in ("entropy", "mutual_information") if k in volumes}
        for col, (key, label, cmap) in enumerate(_PANELS):
            ax = axes[row, col]
            ax.axis("off")
            if row == 0:
                ax.set_title(label, fontsize=10)
            if key not in volumes:
                continue
            image = np.rot90(volumes["image"][..., z])
            if key in ("label", "pred"):
                ax.imshow(image, cmap="gray")
                ax.imshow(np.ma.masked_equal(np.rot90(volumes[key][..., z] > 0).astype(float), 0), cmap="autumn",
                          alpha=0.6, vmin=0, vmax=1)
            elif key == "image":
                ax.imshow(image, cmap=cmap)
                ax.text(2, 6, Path(str(case["image"])).name.split(".")[0], color="w", fontsize=7)
            else:
                im = ax.imshow(np.rot90(volumes[key][..., z]), cmap=cmap, vmin=0, vmax=vmax[key])
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(output_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
    return path
