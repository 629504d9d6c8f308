"""Pictures of a Decathlon-style dataset: axial / coronal / sagittal slices through the lesion with label overlays.

matplotlib is used through its object-oriented API with an explicit Agg canvas inside the function, so importing
this module (or calling it) changes no global matplotlib state (no ``pyplot``, no ``matplotlib.use``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from monai_dwp.utils.io import atomic_path
from monai_dwp.utils.validation import check_int

from .decathlon import _declared_labels, _modality_names, read_dataset_json

__all__ = ["save_data_montage"]

_VIEWS = ("axial", "coronal", "sagittal")
_LABEL_COLOURS = ["#ffd000", "#ff3030", "#30c8ff", "#40ff60", "#ff60ff", "#ff9020", "#a070ff"]  # label 1, 2, 3...


def _load_case(dataset_dir: Path, entry: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Image ``(X, Y, Z, C)``, label ``(X, Y, Z)`` reoriented to RAS, and the voxel size in mm."""
    import nibabel as nib

    images = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
    for rel in [*images, entry["label"]]:
        if not (dataset_dir / rel).is_file():
            raise FileNotFoundError(f"{dataset_dir / rel} listed in {dataset_dir / 'dataset.json'} does not exist.")
    channels, zooms = [], (1.0, 1.0, 1.0)
    for rel in images:
        img = nib.as_closest_canonical(nib.load(str(dataset_dir / rel)))
        data = np.asarray(img.dataobj, dtype=np.float32)
        channels.append(data[..., None] if data.ndim == 3 else data.reshape(*data.shape[:3], -1))
        zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    label_img = nib.as_closest_canonical(nib.load(str(dataset_dir / entry["label"])))
    label = np.rint(np.asarray(label_img.dataobj, dtype=np.float32)).astype(np.int32).reshape(label_img.shape[:3])
    return np.concatenate(channels, axis=-1), label, zooms  # type: ignore[return-value]


def _lesion_centre(image: np.ndarray, label: np.ndarray) -> tuple[int, int, int]:
    """Centre of mass of the label > 0, or the centre of the non-zero image when there is no lesion."""
    points = np.argwhere(label > 0)
    if points.size == 0:
        points = np.argwhere(image.max(axis=-1) > 0)
    if points.size == 0:
        return tuple(int(s) // 2 for s in label.shape)  # type: ignore[return-value]
    centre = points.mean(axis=0)
    nearest = points[np.argmin(((points - centre) ** 2).sum(axis=1))]  # a voxel that is inside the lesion
    return int(nearest[0]), int(nearest[1]), int(nearest[2])


def _slice(volume: np.ndarray, view: str, centre: tuple[int, int, int]) -> np.ndarray:
    """2D slice for ``imshow(origin="lower")``: rows are the second displayed axis."""
    if view == "axial":
        return volume[:, :, centre[2]].T
    if view == "coronal":
        return volume[:, centre[1], :].T
    return volume[centre[0], :, :].T


def _aspect(view: str, zooms: tuple[float, float, float]) -> float:
    rows, cols = {"axial": (1, 0), "coronal": (2, 0), "sagittal": (2, 1)}[view]
    return zooms[rows] / zooms[cols]


def _overlay(label2d: np.ndarray, values: list[int]) -> np.ndarray:
    from matplotlib.colors import to_rgba

    rgba = np.zeros((*label2d.shape, 4), dtype=np.float32)
    for i, value in enumerate(values):
        rgba[label2d == value] = to_rgba(_LABEL_COLOURS[i % len(_LABEL_COLOURS)], alpha=0.2)
    return rgba


def save_data_montage(
    dataset_dir: str | Path, output_file: str | Path, num_subjects: int = 3, seed: int = 0, dpi: int = 100
) -> Path:
    """Writes a PNG montage of a few training subjects of a Decathlon-style dataset.

    One row per subject; for every modality, the axial, coronal and sagittal slices through the lesion centre
    (RAS, neurological convention: subject's right on the right), with the label map overlaid (one colour per
    label value, legend from ``dataset.json``'s ``labels``).

    Args:
        dataset_dir: folder holding ``dataset.json``.
        output_file: PNG file to write (parent folders are created).
        num_subjects: number of subjects (rows), at most the number of training cases.
        seed: seed of the subject choice.
        dpi: resolution of the PNG; the figure is about 2.2 inches per panel.

    Returns:
        the path of the PNG.

    Raises:
        ValueError: for ``num_subjects < 1`` or a malformed ``dataset.json``.
        TypeError: for a non-int ``num_subjects``.
        FileNotFoundError: when ``dataset.json`` or a listed file does not exist.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    check_int(num_subjects, "num_subjects", minimum=1)
    root = Path(dataset_dir)
    content = read_dataset_json(root)
    names = _modality_names(content, root / "dataset.json")
    declared = _declared_labels(content, root / "dataset.json")
    values = sorted(v for v in declared if v > 0)
    training = content["training"]
    picks = sorted(
        np.random.default_rng(seed).choice(len(training), size=min(num_subjects, len(training)), replace=False)
    )

    rows, cols = len(picks), len(names) * len(_VIEWS)
    fig = Figure(figsize=(2.2 * cols, 2.3 * rows + 0.6), facecolor="black")
    FigureCanvasAgg(fig)
    for row, index in enumerate(picks):
        entry = training[int(index)]
        image, label, zooms = _load_case(root, entry)
        centre = _lesion_centre(image, label)
        subject = Path(entry["image"] if isinstance(entry["image"], str) else entry["image"][0]).name.split(".")[0]
        for m, name in enumerate(names[: image.shape[-1]]):
            channel = image[..., m]
            inside = channel[channel > 0]
            low, high = np.percentile(inside, (0.5, 99.5)) if inside.size else (0.0, 1.0)
            for v, view in enumerate(_VIEWS):
                ax = fig.add_subplot(rows, cols, row * cols + m * len(_VIEWS) + v + 1)
                ax.imshow(
                    _slice(channel, view, centre),
                    cmap="gray",
                    vmin=low,
                    vmax=high,
                    origin="lower",
                    aspect=_aspect(view, zooms),
                    interpolation="nearest",
                )
                label2d = _slice(label, view, centre)
                ax.imshow(
                    _overlay(label2d, values), origin="lower", aspect=_aspect(view, zooms), interpolation="nearest"
                )
                for i, value in enumerate(values):
                    if np.any(label2d == value):
                        ax.contour(
                            (label2d == value).astype(np.float32),
                            levels=[0.5],
                            origin="lower",
                            colors=[_LABEL_COLOURS[i % len(_LABEL_COLOURS)]],
                            linewidths=0.7,
                        )
                ax.set_axis_off()
                ax.set_title(f"{subject} {name} {view}", color="white", fontsize=7)
    handles = [
        Patch(color=_LABEL_COLOURS[i % len(_LABEL_COLOURS)], label=f"{v}: {declared[v]}") for i, v in enumerate(values)
    ]
    if handles:
        fig.legend(
            handles=handles, loc="lower center", ncol=len(handles), frameon=False, labelcolor="white", fontsize=9
        )
    height = 2.3 * rows + 0.9
    fig.set_size_inches(2.2 * cols, height)
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - 0.45 / height, bottom=0.45 / height, wspace=0.03, hspace=0.12)
    title = content.get("name", root.name)
    fig.suptitle(
        f"{title}: {rows} subject(s), label outlines and overlay", color="white", fontsize=11, y=1 - 0.1 / height
    )

    out = Path(output_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:  # written whole, then renamed
        fig.savefig(tmp, format="png", dpi=dpi, facecolor=fig.get_facecolor())
    return out
