"""Inference inputs: a folder of NIfTI images, a glob pattern, or the ``test`` list of a Decathlon folder."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from monai_dwp.utils.validation import InputValueError

__all__ = ["image_datalist"]

_NIFTI = ("*.nii.gz", "*.nii")


def image_datalist(source: str | os.PathLike, key: str = "image") -> list[dict[str, str | list[str]]]:
    """``[{"image": path}, ...]`` of the images to segment.

    Args:
        source: a folder of NIfTI files (``*.nii.gz``, ``*.nii``); a Decathlon folder (its ``dataset.json``'s
            ``test`` list, MSD plain strings or ``{"image": ...}`` dicts, relative to the folder, read by MONAI's
            :func:`~monai.data.load_decathlon_datalist`; an image may be a list of files, one per modality); a glob
            pattern; or one NIfTI file.
        key: the key of each item.

    Raises:
        FileNotFoundError: when ``source`` matches no image, naming it and what was looked for.
        ValueError: when a NIfTI image is not 3D (or 4D with channels last), naming the file and its shape, or when
            a ``test`` list mixes plain paths and dicts.
    """
    path = Path(source)
    files: list[str | list[str]]
    if path.is_file():
        files = [str(path)]
    elif (path / "dataset.json").is_file():
        files = _decathlon_test_images(path)
    elif path.is_dir():
        files = sorted({f for pattern in _NIFTI for f in glob.glob(str(path / pattern))})
    else:
        files = sorted(glob.glob(str(source)))
    if not files:
        raise FileNotFoundError(
            f"no image to segment in {str(source)!r}: expected a NIfTI file, a folder of *.nii/*.nii.gz, a Decathlon "
            "folder with a 'test' list in dataset.json, or a glob pattern; pass another one with --input_dir."
        )
    for f in (f for image in files for f in (image if isinstance(image, list) else [image])):
        if f.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            shape = nib.load(f).shape
            if len(shape) not in (3, 4):
                raise ValueError(
                    f"{f} has shape {shape}: the networks segment 3D volumes (X, Y, Z) or 4D ones with the modalities "
                    "last (X, Y, Z, C); convert 2D slices to a volume first."
                )
    return [{key: f} for f in files]


def _decathlon_test_images(root: Path) -> list[str | list[str]]:
    """The absolute image paths of the ``test`` list of ``root/dataset.json`` (checked first by
    :func:`~monai_dwp.data.decathlon.read_dataset_json`), read by MONAI's ``load_decathlon_datalist``."""
    from monai.data import load_decathlon_datalist

    from monai_dwp.data.decathlon import read_dataset_json

    entries = read_dataset_json(root).get("test") or []
    if not entries:  # MONAI's loader needs a non-empty list
        return []
    if len({isinstance(e, str) for e in entries}) > 1:
        raise InputValueError(
            f"{root / 'dataset.json'}: the 'test' list mixes plain image paths and {{\"image\": ...}} entries; write "
            "every entry the same way (MONAI reads either form, not both in one list)."
        )
    items = load_decathlon_datalist(root / "dataset.json", data_list_key="test", base_dir=root.resolve())
    return [item["image"] for item in items]
