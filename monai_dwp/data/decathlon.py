"""Decathlon-style datasets: ``dataset.json`` parsing, fixed train/val/test splits, validation, transform chains.

Works on any Medical Segmentation Decathlon style folder (``dataset.json`` + NIfTI): MSD Task01_BrainTumour
and BraTS (4D images, modalities on the last axis, ``"./imagesTr/..."`` paths, a ``test`` list of plain
strings), single-modality sets with 3D files, and the phantoms of :mod:`monai_dwp.data.phantoms` (whose
``test`` entries are ``{"image", "label"}`` dicts, so that evaluation can use them). Loading and
preprocessing use MONAI transforms only.

Typical use, before any training starts (nothing is written)::

    split = validate_decathlon("data/tumour", modality="FLAIR", num_train_cases=10)
    train_ds = monai.data.CacheDataset(split["train"], train_transforms(modality="FLAIR", dataset_dir="data/tumour"))
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
from monai.config import KeysCollection
from monai.data import load_decathlon_datalist
from monai.transforms import (
    AsDiscreted,
    Compose,
    CropForegroundd,
    DivisiblePadd,
    EnsureChannelFirstd,
    LabelFilterd,
    LoadImaged,
    Orientationd,
    RandCropByPosNegLabeld,
    ScaleIntensityd,
    Spacingd,
    SpatialPadd,
    Transform,
)

from monai_dwp.transforms.modality import SelectModalityd
from monai_dwp.transforms.validation import CheckFinited, CheckNonEmptyd, CheckPatchFitsd
from monai_dwp.utils.validation import InputFileError, InputValueError, as_bool, check_int

__all__ = [
    "ModalitySpec",
    "LabelRule",
    "read_dataset_json",
    "resolve_modality",
    "modality_indices",
    "decathlon_split",
    "validate_decathlon",
    "label_rule_transforms",
    "train_transforms",
    "eval_transforms",
]

ModalitySpec = Union[int, str, Sequence[Union[int, str]], None]
"""A modality: channel index, name from ``dataset.json``'s ``modality`` (case-insensitive), a list of them, or
``None`` for every channel."""

LabelRule = Union[str, Sequence[int], None]
"""``"foreground"`` (every label > 0 is foreground), a list of label values that become foreground, or ``None``
to keep the label values."""

_DIVISOR = 16  # 4 levels of 2x downsampling in the U-Net
_MAKE_DATA_HINT = (
    "make one with `python -m monai_dwp make-data --disease tumour --output-dir DIR` (`--disease ms` for the "
    "source task) or pass --dataset_dir with a Decathlon folder"
)


def _make_data_hint(root: Path) -> str:
    """The exact command that writes the built-in phantoms into ``root`` (the disease guessed from its name)."""
    disease = "ms" if "ms" in root.name.lower().replace("-", "_").split("_") or root.name.lower() == "ms" else "tumour"
    size = "--num-cases 30 --num-test 4" if disease == "ms" else "--num-cases 16 --num-test 8"
    return (
        f"make it with `python -m monai_dwp make-data --disease {disease} {size} --spacing 3 --output-dir {root}` "
        "(built-in phantoms), or pass --dataset_dir with a Decathlon folder"
    )


# ----------------------------------------------------------------------------------------------------
# dataset.json


def _json_path(dataset_dir: str | Path) -> Path:
    root = Path(dataset_dir)
    if not root.is_dir():
        raise InputFileError(f"dataset_dir {str(root)!r} is not a directory; {_make_data_hint(root)}.")
    path = root / "dataset.json"
    if not path.is_file():
        import shlex

        from monai_dwp.data.brats import is_brats_folder

        if is_brats_folder(root):
            raise InputFileError(
                f"{path} not found: {str(root)!r} is a BraTS folder as downloaded (case folders of _flair/_t1/_t1ce/"
                f"_t2/_seg files), which has no dataset.json; write one with "
                f"`python -m monai_dwp make-datalist --dataset-dir {shlex.quote(str(root))}` and run again."
            )
        raise InputFileError(
            f"{path} not found: dataset_dir must contain a Decathlon dataset.json; {_MAKE_DATA_HINT}."
        )
    return path


def _check_entries(path: Path, section: str, entries: Any, need_label: bool) -> None:
    if not isinstance(entries, list):
        raise InputValueError(
            f"{path}: field {section!r} must be a list of cases, got {type(entries).__name__}; "
            f'write it as "{section}": [{{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}}, ...].'
        )
    for i, entry in enumerate(entries):
        if isinstance(entry, str) and not need_label:
            continue  # MSD style test list: plain image paths
        if not isinstance(entry, dict) or "image" not in entry or (need_label and "label" not in entry):
            wanted = '{"image": ..., "label": ...}' if need_label else 'an image path or {"image": ...}'
            raise InputValueError(f"{path}: entry {i} of {section!r} is {entry!r}; each entry must be {wanted}.")
        for key in ("image", "label"):
            value = entry.get(key)
            files = value if isinstance(value, list) else [value]
            if key in entry and not all(isinstance(f, str) and f for f in files):
                raise InputValueError(
                    f"{path}: entry {i} of {section!r} has {key}={value!r}; it must be a file path (or a list of "
                    f"paths, one per modality) relative to dataset_dir."
                )


def _case_key(entry: Any) -> tuple[str, ...]:
    """The normalised image path(s) of an entry, ``./`` prefixes and ``a/../`` removed."""
    image = entry if isinstance(entry, str) else entry["image"]
    files = image if isinstance(image, list) else [image]
    return tuple(os.path.normpath(f) for f in files)


def _check_duplicates(path: Path, content: Mapping[str, Any]) -> None:
    """Raise when two ``training`` entries, or a ``training`` and a ``test`` entry, list the same image."""
    seen: dict[tuple[str, ...], str] = {}
    for section in ("training", "test"):
        for i, entry in enumerate(content.get(section) or []):
            key = _case_key(entry)
            where = f"entry {i} of {section!r}"
            if key in seen:
                image = entry if isinstance(entry, str) else entry["image"]
                raise InputValueError(
                    f"{path}: {where} duplicates {seen[key]}, got the image {image!r} twice; a repeated case is "
                    "counted twice and can land in both the training and the test split: remove the duplicate entry."
                )
            seen[key] = where


def read_dataset_json(dataset_dir: str | Path) -> dict[str, Any]:
    """Reads ``dataset_dir/dataset.json`` and checks its structure (no image is opened).

    Required fields: ``training`` (non-empty list of ``{"image", "label"}``), ``modality`` (or nnU-Net v2's
    ``channel_names``) and ``labels``; ``test`` is optional and may hold plain strings (MSD) or dicts with
    an optional ``label`` (phantoms).

    Args:
        dataset_dir: folder holding ``dataset.json``.

    Returns:
        the parsed JSON object.

    Raises:
        FileNotFoundError: when the folder or its ``dataset.json`` does not exist.
        ValueError: when ``dataset.json`` is not valid JSON, lacks a required field, has malformed entries, an
            empty ``training`` list, or lists one image twice (in ``training``, or in ``training`` and ``test``).
    """
    path = _json_path(dataset_dir)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputValueError(
            f"{path} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); "
            "fix the file or regenerate it with `python -m monai_dwp make-data`."
        ) from err
    except UnicodeDecodeError as err:
        raise InputValueError(f"{path} is not UTF-8 text ({err}); it must be a Decathlon dataset.json.") from err
    if not isinstance(content, dict):
        raise InputValueError(
            f"{path} must hold a JSON object with 'training', 'modality' and 'labels', got {type(content).__name__}."
        )
    if "training" not in content:
        raise InputValueError(
            f"{path}: field 'training' is missing; a Decathlon dataset.json lists its cases as "
            '"training": [{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}, ...].'
        )
    _check_entries(path, "training", content["training"], need_label=True)
    if not content["training"]:
        raise InputValueError(
            f"{path}: field 'training' is empty, the dataset has no case; add cases or {_MAKE_DATA_HINT}."
        )
    if "test" in content:
        _check_entries(path, "test", content["test"], need_label=False)
    _check_duplicates(path, content)
    _modality_names(content, path)
    _declared_labels(content, path)
    return content


def _modality_names(content: Mapping[str, Any], path: Path | str = "dataset.json") -> list[str]:
    """Channel names ordered by channel index from ``modality`` (MSD) or ``channel_names`` (nnU-Net v2)."""
    field = "modality" if "modality" in content else "channel_names" if "channel_names" in content else None
    if field is None:
        raise InputValueError(f'{path}: field \'modality\' is missing; add e.g. "modality": {{"0": "T1", "1": "FLAIR"}}.')
    value = content[field]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    if isinstance(value, dict) and value and all(str(k).isdigit() for k in value):
        indices = sorted(int(k) for k in value)
        if indices == list(range(len(indices))):
            return [str(value[str(i)] if str(i) in value else value[i]) for i in indices]
    raise InputValueError(
        f"{path}: field {field!r} is {value!r}; it must map channel indices 0..C-1 to names, "
        'e.g. {"0": "T1", "1": "FLAIR"}.'
    )


def _declared_labels(content: Mapping[str, Any], path: Path | str = "dataset.json") -> dict[int, str]:
    """Label values and names from ``labels`` (MSD ``{"0": "background"}`` or nnU-Net v2 ``{"background": 0}``)."""
    value = content.get("labels")
    if isinstance(value, dict) and value:
        if all(str(k).lstrip("-").isdigit() for k in value):
            return {int(k): str(v) for k, v in value.items()}
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value.values()):
            return {int(v): str(k) for k, v in value.items()}
    if "labels" not in content:
        raise InputValueError(
            f'{path}: field \'labels\' is missing; add e.g. "labels": {{"0": "background", "1": "lesion"}}.'
        )
    raise InputValueError(
        f"{path}: field 'labels' is {value!r}; it must map label values to names, "
        'e.g. {"0": "background", "1": "lesion"}.'
    )


def resolve_modality(
    modality: ModalitySpec, modality_names: Mapping[str, str] | Sequence[str] | None = None
) -> list[int] | None:
    """Channel indices of ``modality``.

    Args:
        modality: an index (``1``), a name (``"FLAIR"``, case-insensitive), a list of them, or ``None``.
        modality_names: ``dataset.json``'s ``modality`` mapping (``{"0": "T1", ...}``) or the names in channel
            order; needed for names and for the range check.

    Returns:
        the list of channel indices, or ``None`` when ``modality`` is ``None`` (every channel).

    Raises:
        ValueError: for an unknown name, an index out of range, a name without ``modality_names``, an empty list.
        TypeError: for a modality that is neither int, str nor a list of them.
    """
    if modality is None:
        return None
    if isinstance(modality_names, Mapping):
        names: list[str] | None = _modality_names({"modality": dict(modality_names)})
    else:
        names = None if modality_names is None else [str(n) for n in modality_names]
    items = [modality] if isinstance(modality, (int, str, np.integer)) else modality
    if not isinstance(items, Sequence) or not items:
        raise (TypeError if not isinstance(items, Sequence) else ValueError)(
            f"modality must be an int, a name or a non-empty list of them, got {modality!r}; "
            "e.g. modality=1 or 'FLAIR'."
        )
    return [_resolve_one(item, names) for item in items]


def modality_indices(
    modality: ModalitySpec,
    dataset_dir: str | Path | None = None,
    modality_names: Mapping[str, str] | Sequence[str] | None = None,
) -> list[int] | None:
    """Channel indices of ``modality``, with the channel names read from ``dataset_dir``'s ``dataset.json``.

    The ``indices`` of the bundles' :class:`~monai_dwp.transforms.SelectModalityd`: a name such as ``"FLAIR"``
    becomes the channel that ``dataset.json``'s ``modality`` gives it.

    Args:
        modality: see :func:`resolve_modality`.
        dataset_dir: a Decathlon folder; its ``dataset.json`` names the channels (ignored when it has none).
        modality_names: the names in channel order, instead of ``dataset_dir``.

    Returns:
        the list of channel indices, or ``None`` when ``modality`` is ``None`` (every channel).
    """
    if modality_names is None and dataset_dir is not None and modality is not None:
        if (Path(dataset_dir) / "dataset.json").is_file():
            modality_names = _modality_names(read_dataset_json(dataset_dir), Path(dataset_dir) / "dataset.json")
    return resolve_modality(modality, modality_names)


def _resolve_one(item: Any, names: list[str] | None) -> int:
    if isinstance(item, bool) or not isinstance(item, (int, str, np.integer)):
        raise TypeError(f"modality entries must be int or str, got {type(item).__name__} {item!r}.")
    if isinstance(item, str):
        if names is None:
            raise InputValueError(
                f"modality {item!r} is a name: pass dataset_dir (or modality_names) so that it can be resolved "
                "through dataset.json's 'modality', or give the channel index."
            )
        lowered = [n.lower() for n in names]
        if item.lower() not in lowered:
            raise InputValueError(
                f"modality {item!r} is not in dataset.json's 'modality' {names}; use one of these names or an index."
            )
        return lowered.index(item.lower())
    index = int(item)
    if index < 0 or (names is not None and index >= len(names)):
        valid = f"[0, {len(names) - 1}] ({names})" if names else "[0, C-1]"
        raise InputValueError(f"modality index {index} is out of range; dataset.json's 'modality' allows {valid}.")
    return index


# ----------------------------------------------------------------------------------------------------
# splits


def _check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"{name} must be an int{' or None' if allow_none else ''}, got {type(value).__name__} {value!r}."
        )
    if value < minimum:
        raise InputValueError(f"{name} must be >= {minimum}, got {value}.")
    return int(value)


def decathlon_split(
    dataset_dir: str | Path,
    num_train_cases: int | None = None,
    num_val_cases: int = 2,
    num_test_cases: int | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
) -> dict[str, list[dict[str, Any]]]:
    """Train / validation / test lists of a Decathlon folder, with a fixed held-out test split.

    * ``test``: the dataset's ``test`` entries that have a ``label`` (file order; the first ``num_test_cases``
      if given). If there are none (e.g. MSD, whose test list is plain image paths), the first
      ``num_test_cases`` (default ``round(test_fraction * N)``, at least 1) cases of a permutation of ``training``
      seeded by ``seed``. It never depends on ``num_train_cases`` or ``num_val_cases``.
    * ``val``: the next ``num_val_cases`` cases of that permutation (independent of ``num_train_cases``).
    * ``train``: the following ``num_train_cases`` cases (all remaining when ``None``); smaller subsets are
      nested in larger ones, as in the paper's 5 / 10 / 15 / 20 case experiments.

    Paths are absolute (resolved against ``dataset_dir``, ``./`` prefixes removed) via
    :func:`monai.data.load_decathlon_datalist`.

    Args:
        dataset_dir: folder holding ``dataset.json``.
        num_train_cases: number of training cases, ``None`` for all that remain.
        num_val_cases: number of validation cases.
        num_test_cases: number of test cases, ``None`` for the default above.
        seed: seed of the permutation of ``training``.
        test_fraction: test share of ``training`` when the dataset has no labelled test entries, in (0, 1).

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, lists of ``{"image": path, "label": path}``.

    Raises:
        ValueError: when the counts do not fit in the dataset (the message gives the numbers available).
        FileNotFoundError: when ``dataset.json`` does not exist.
    """
    num_train_cases = _check_int("num_train_cases", num_train_cases, 1, allow_none=True)
    num_val_cases = _check_int("num_val_cases", num_val_cases, 0)
    num_test_cases = _check_int("num_test_cases", num_test_cases, 1, allow_none=True)
    seed = _check_int("seed", seed, 0)
    if not 0.0 < float(test_fraction) < 1.0:
        raise InputValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}.")
    content = read_dataset_json(dataset_dir)
    json_path = Path(dataset_dir) / "dataset.json"
    training = load_decathlon_datalist(json_path, is_segmentation=True, data_list_key="training", base_dir=dataset_dir)
    labelled_test: list[dict[str, Any]] = []
    if content.get("test"):
        tests = load_decathlon_datalist(json_path, is_segmentation=True, data_list_key="test", base_dir=dataset_dir)
        labelled_test = [t for t in tests if isinstance(t, dict) and "label" in t]

    order = np.random.default_rng(seed).permutation(len(training)).tolist()
    if labelled_test:
        if num_test_cases is not None and num_test_cases > len(labelled_test):
            raise InputValueError(
                f"num_test_cases={num_test_cases} but {json_path} has only {len(labelled_test)} labelled test cases; "
                f"use num_test_cases <= {len(labelled_test)} or None."
            )
        test = labelled_test[:num_test_cases]
        pool = order
    else:
        n_test = num_test_cases if num_test_cases is not None else max(1, round(test_fraction * len(training)))
        if n_test >= len(training):
            raise InputValueError(
                f"{json_path} has {len(training)} training cases and no labelled test cases, so the test split "
                f"({n_test} cases) would leave nothing to train on; lower num_test_cases or add cases."
            )
        test, pool = [training[i] for i in order[:n_test]], order[n_test:]
    if num_val_cases > len(pool) - 1:
        raise InputValueError(
            f"num_val_cases={num_val_cases} leaves no training case: {len(pool)} cases remain after the test split "
            f"of {json_path}; use num_val_cases <= {max(len(pool) - 1, 0)}."
        )
    val, rest = [training[i] for i in pool[:num_val_cases]], pool[num_val_cases:]
    if num_train_cases is not None and num_train_cases > len(rest):
        raise InputValueError(
            f"num_train_cases={num_train_cases} is larger than the {len(rest)} cases available in {json_path} "
            f"({len(training)} training, {len(test)} test, {len(val)} validation); use num_train_cases <= {len(rest)} "
            "or generate more cases (make-data --num-cases)."
        )
    train = [training[i] for i in rest[:num_train_cases]]
    return {"train": train, "val": val, "test": test}


# ----------------------------------------------------------------------------------------------------
# validation


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def _load_header(path: str, key: str, where: str) -> Any:
    import nibabel as nib

    if not Path(path).is_file():
        raise InputFileError(
            f"{key} file {path} listed in {where} does not exist; fix the path in dataset.json or restore the file."
        )
    try:
        return nib.load(path)
    except Exception as err:  # nibabel raises many types for corrupt files
        raise InputValueError(
            f"cannot read {key} file {path} listed in {where} as NIfTI ({type(err).__name__}: {_one_line(err)}); "
            "the file is corrupt or not NIfTI: re-export it or regenerate the dataset."
        ) from err


def _read_data(img: Any, path: str, key: str, where: str) -> np.ndarray:
    try:
        return np.asanyarray(img.dataobj)
    except Exception as err:
        raise InputValueError(
            f"cannot read the voxels of {key} file {path} listed in {where} ({type(err).__name__}: {_one_line(err)}); "
            "the file is truncated or corrupt: re-export it or regenerate the dataset."
        ) from err


def _voxel_size(img: Any) -> tuple[float, ...]:
    """Voxel size (mm) along the three spatial axes, from the affine's columns."""
    affine = np.asarray(img.affine, dtype=np.float64)
    return tuple(float(v) for v in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))


def _has_foreground(data: np.ndarray, label_rule: LabelRule) -> bool:
    """Whether ``data`` has a voxel that ``label_rule`` turns into foreground (any non-zero value for ``None``)."""
    if label_rule is None:
        return bool(np.any(data != 0))
    if label_rule == "foreground":
        return bool(np.any(data > 0))
    return bool(np.any(np.isin(data, [int(v) for v in label_rule])))


def _check_image_data(data: np.ndarray, path: str, where: str) -> None:
    """Raise for NaN/infinite voxels or a blank (all-zero) channel, naming the file (same checks as the transforms
    :class:`~monai_dwp.transforms.CheckFinited` and :class:`~monai_dwp.transforms.CheckNonEmptyd`)."""
    if np.issubdtype(data.dtype, np.floating) and not np.all(np.isfinite(data)):
        num_nan = int(np.isnan(data).sum())
        num_inf = int(np.isinf(data).sum())
        raise InputValueError(
            f"image file {path} listed in {where} has non-finite voxels, got {num_nan} NaN and {num_inf} infinite of "
            f"{data.size}; replace them (e.g. numpy.nan_to_num) and save the file again, or remove the case."
        )
    channels = data.reshape(*data.shape[:3], -1)
    for c in range(channels.shape[-1]):
        if not np.any(channels[..., c]):
            which = f"channel {c} of {channels.shape[-1]}" if channels.shape[-1] > 1 else "every voxel"
            raise InputValueError(
                f"image file {path} listed in {where} is blank ({which} is 0), got 0 non-zero voxels of "
                f"{int(np.prod(data.shape[:3]))}; the file holds no image (a failed export?): export it again or "
                "remove the case."
            )


def _validate_case(
    case: Mapping[str, Any],
    where: str,
    num_modalities: int,
    declared: Mapping[int, str],
    check_labels: bool,
    check_image_data: bool,
    require_foreground: bool = False,
    label_rule: LabelRule = "foreground",
) -> None:
    images = case["image"] if isinstance(case["image"], list) else [case["image"]]
    headers = [_load_header(p, "image", where) for p in images]
    label = _load_header(case["label"], "label", where)
    first = headers[0]
    spatial = tuple(int(s) for s in first.shape[:3])
    channels = sum(1 if len(h.shape) == 3 else int(np.prod(h.shape[3:])) for h in headers)
    for path, h in zip(images, headers):
        if len(h.shape) < 3:
            raise InputValueError(
                f"image file {path} listed in {where} is not a volume, got shape {h.shape}; the networks segment 3D "
                "volumes (X, Y, Z) or 4D ones with the modalities last (X, Y, Z, C): stack the 2D slices into a "
                "volume first."
            )
        if len(h.shape) not in (3, 4) or tuple(h.shape[:3]) != spatial:
            raise InputValueError(
                f"image file {path} listed in {where} has shape {h.shape}; expected 3D or 4D (X, Y, Z, C) on the "
                f"grid {spatial} of the case's first image: fix or re-export the file."
            )
    for path, h, key in [*zip(images, headers, ["image"] * len(images)), (case["label"], label, "label")]:
        size = _voxel_size(h)
        if not all(np.isfinite(v) and v > 0 for v in size):
            raise InputValueError(
                f"{key} file {path} listed in {where} has a zero or non-finite voxel size, got "
                f"{tuple(round(v, 4) for v in size)} mm from its affine; fix the header (pixdim / sform, e.g. "
                "nibabel's img.header.set_zooms) or re-export the file."
            )
    if channels != num_modalities:
        raise InputValueError(
            f"image {images[0]} listed in {where} has {channels} channel(s) but dataset.json's 'modality' declares "
            f"{num_modalities}; fix 'modality' or the image (4D files keep modalities on the last axis)."
        )
    lshape = tuple(int(s) for s in label.shape)
    if lshape[:3] != spatial or any(s != 1 for s in lshape[3:]):
        raise InputValueError(
            f"image {images[0]} has spatial shape {spatial} but label {case['label']} has shape {lshape} "
            f"({where}); image and label must be on the same grid: resample the label onto the image."
        )
    difference = float(np.abs(np.asarray(first.affine) - np.asarray(label.affine)).max())
    if difference > 1e-3 * max(1.0, float(np.abs(first.affine[:3, :3]).max())) + 1e-3:
        raise InputValueError(
            f"image {images[0]} and label {case['label']} ({where}) have different affines (largest difference "
            f"{difference:.4g} mm), got {np.round(first.affine, 4).tolist()} vs {np.round(label.affine, 4).tolist()}; "
            "they must be on the same grid: resample the label onto the image or fix its header."
        )
    if check_image_data:
        for path, h in zip(images, headers):
            _check_image_data(_read_data(h, path, "image", where), path, where)
    if check_labels:
        data = _read_data(label, case["label"], "label", where)
        values = np.unique(data)
        if not np.all(np.equal(np.round(values), values)):
            raise InputValueError(
                f"label {case['label']} ({where}) has non-integer values {values[:5]}; labels must be integers."
            )
        extra = sorted(set(int(v) for v in values) - set(declared))
        if extra:
            raise InputValueError(
                f"label {case['label']} ({where}) contains values {extra} that dataset.json's 'labels' does not "
                f"declare ({sorted(declared)}); fix the label file or declare the values in 'labels'."
            )
        if require_foreground and not _has_foreground(data, label_rule):
            raise InputValueError(
                f"label {case['label']} ({where}) has no foreground voxel under label_rule={label_rule!r}, got only "
                f"the values {[int(v) for v in values]}; a training case without foreground gives background patches "
                "only: fix the label, remove the case from 'training', or pass allow_empty_labels=True if lesion-free "
                "cases are intended."
            )


def _check_label_rule(label_rule: LabelRule, declared: Mapping[int, str] | None) -> None:
    if label_rule is None or label_rule == "foreground":
        return
    if isinstance(label_rule, str) or not isinstance(label_rule, Sequence) or not label_rule:
        raise InputValueError(
            f"label_rule must be 'foreground', a non-empty list of label values or None, got {label_rule!r}."
        )
    for value in label_rule:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise InputValueError(
                f"label_rule values must be positive label ints (0 is background), got {value!r} in {list(label_rule)}."
            )
        if declared is not None and int(value) not in declared:
            raise InputValueError(
                f"label_rule value {value} is not declared in dataset.json's 'labels' {dict(declared)}; "
                "use declared values, e.g. [1, 2, 4] for the BraTS whole tumour."
            )


def validate_decathlon(
    dataset_dir: str | Path,
    modality: ModalitySpec = None,
    num_train_cases: int | None = None,
    num_val_cases: int = 2,
    num_test_cases: int | None = None,
    seed: int = 0,
    label_rule: LabelRule = "foreground",
    check_labels: bool = True,
    check_image_data: bool = False,
    allow_empty_labels: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """Checks a Decathlon folder before any training starts and returns its split; writes nothing.

    Checks, in order: ``dataset.json`` exists and is well formed (:func:`read_dataset_json`); the modality
    resolves and is in range; the label rule uses declared labels; the counts fit (:func:`decathlon_split`);
    then for every case of the split: every listed file exists and has a readable NIfTI header; the image is a
    volume with as many channels as ``modality`` declares; every file has a positive voxel size; image and label
    have the same spatial shape and affine (headers only); the label values are declared in ``labels`` and every
    training label has foreground under ``label_rule`` (reads the label voxels; ``check_labels=False`` skips it).
    ``check_image_data=True`` also reads every image's voxels (slow on real data) to catch truncated files, NaN or
    infinite voxels and blank (all-zero) channels.

    Args:
        dataset_dir: folder holding ``dataset.json``.
        modality: channel index, name or list of them (see :func:`resolve_modality`); ``None`` for all.
        num_train_cases: see :func:`decathlon_split`.
        num_val_cases: see :func:`decathlon_split`.
        num_test_cases: see :func:`decathlon_split`.
        seed: see :func:`decathlon_split`.
        label_rule: see :func:`label_rule_transforms`.
        check_labels: read every label file and check its values.
        check_image_data: read every image file's voxels.
        allow_empty_labels: accept training cases whose label has no foreground under ``label_rule`` (e.g.
            lesion-free scans); by default they are an error.

    Returns:
        the split ``{"train": [...], "val": [...], "test": [...]}`` of :func:`decathlon_split`.

    Raises:
        FileNotFoundError: for a missing folder, ``dataset.json`` or listed file.
        ValueError: for a malformed ``dataset.json`` (duplicate cases included), corrupt NIfTI, a 2D image, a zero
            voxel size, disagreeing shapes or affines, undeclared label values, a training label without
            foreground, a modality out of range, counts larger than the dataset, an empty dataset; with
            ``check_image_data``, NaN or blank images.
    """
    allow_empty_labels = as_bool(allow_empty_labels, "allow_empty_labels")
    content = read_dataset_json(dataset_dir)
    json_path = Path(dataset_dir) / "dataset.json"
    names = _modality_names(content, json_path)
    declared = _declared_labels(content, json_path)
    resolve_modality(modality, names)
    _check_label_rule(label_rule, declared)
    split = decathlon_split(dataset_dir, num_train_cases, num_val_cases, num_test_cases, seed)
    for part, cases in split.items():
        for i, case in enumerate(cases):
            first = case["image"] if isinstance(case["image"], str) else case["image"][0]
            where = f"{json_path} ({part} case {i}: {Path(first).name})"
            _validate_case(
                case,
                where,
                len(names),
                declared,
                check_labels,
                check_image_data,
                require_foreground=part == "train" and not allow_empty_labels,
                label_rule=label_rule,
            )
    return split


# ----------------------------------------------------------------------------------------------------
# transforms


def label_rule_transforms(label_rule: LabelRule = "foreground", keys: KeysCollection = "label") -> list[Transform]:
    """MONAI transforms turning a label map into the training target.

    Args:
        label_rule: ``"foreground"``: every label > 0 becomes 1 (BraTS whole tumour); a list of label values:
            those become 1, all others 0 (e.g. ``[2, 4]`` for the tumour core of the phantoms); ``None``: keep.
        keys: label keys.

    Returns:
        a list of transforms (``AsDiscreted`` with threshold 0.5, preceded by ``LabelFilterd`` for a list).

    Raises:
        ValueError: for any other rule, or a list with values <= 0.
    """
    _check_label_rule(label_rule, None)
    if label_rule is None:
        return []
    binarise = AsDiscreted(keys=keys, threshold=0.5)
    if label_rule == "foreground":
        return [binarise]
    return [LabelFilterd(keys=keys, applied_labels=[int(v) for v in label_rule]), binarise]


def _as_triple(name: str, value: float | Sequence[float], integer: bool) -> tuple:
    items = [value] * 3 if isinstance(value, (int, float, np.number)) else list(value)
    kind = int if integer else (int, float, np.number)
    if len(items) != 3 or any(isinstance(v, bool) or not isinstance(v, kind) or v <= 0 for v in items):
        what = "positive int" if integer else "positive number"
        example = "(64, 64, 64) voxels" if integer else "2.0 or (1.0, 1.0, 3.0) mm"
        raise InputValueError(f"{name} must be a {what} or 3 of them (X, Y, Z), got {value!r}; e.g. {name}={example}.")
    return tuple(int(v) if integer else float(v) for v in items)


def _common_transforms(
    keys: list[str],
    modality: ModalitySpec,
    dataset_dir: str | Path | None,
    modality_names: Mapping[str, str] | Sequence[str] | None,
    label_rule: LabelRule,
    spacing: float | Sequence[float] | None,
) -> list[Transform]:
    if modality_names is None and dataset_dir is not None and modality is not None:
        modality_names = _modality_names(read_dataset_json(dataset_dir), Path(dataset_dir) / "dataset.json")
    indices = resolve_modality(modality, modality_names)
    chain: list[Transform] = [LoadImaged(keys=keys, image_only=True), EnsureChannelFirstd(keys=keys)]
    if indices is not None:
        chain.append(SelectModalityd(keys="image", indices=indices))
    chain += [CheckFinited(keys=keys), CheckNonEmptyd(keys="image")]
    if "label" in keys:
        chain += label_rule_transforms(label_rule, keys="label")
    else:
        _check_label_rule(label_rule, None)
    chain.append(
        Orientationd(keys=keys, axcodes="RAS", labels=None)
    )  # labels=None: the image's own space (RAS for NIfTI)
    if spacing is not None:
        modes = ["bilinear" if k == "image" else "nearest" for k in keys]
        chain.append(Spacingd(keys=keys, pixdim=_as_triple("spacing", spacing, integer=False), mode=modes))
    chain += [
        ScaleIntensityd(keys="image", minv=0.0, maxv=1.0, channel_wise=True),
        CropForegroundd(keys=keys, source_key="image", allow_smaller=True),
    ]
    return chain


def train_transforms(
    modality: ModalitySpec = None,
    label_rule: LabelRule = "foreground",
    spacing: float | Sequence[float] | None = (2.0, 2.0, 2.0),
    patch_size: int | Sequence[int] = (64, 64, 64),
    num_samples: int = 2,
    pos: float = 1.0,
    neg: float = 1.0,
    dataset_dir: str | Path | None = None,
    modality_names: Mapping[str, str] | Sequence[str] | None = None,
) -> Compose:
    """Training chain of the paper: whole-volume preprocessing, then positive/negative patch sampling.

    ``LoadImaged -> EnsureChannelFirstd -> SelectModalityd -> CheckFinited -> CheckNonEmptyd -> label rule ->
    Orientationd(RAS) -> Spacingd -> ScaleIntensityd(0..1 per channel, whole volume) -> CropForegroundd ->
    CheckPatchFitsd -> SpatialPadd(patch_size) -> RandCropByPosNegLabeld`` on keys ``image`` and ``label``
    (the checks raise, naming the file, for NaN/infinite voxels, a blank image, or a volume smaller than the patch
    in every dimension; see :mod:`monai_dwp.transforms`). Each input dict gives ``num_samples`` patches of
    ``(C, *patch_size)``.

    Args:
        modality: channel(s) to keep (index, name or list, see :func:`resolve_modality`); ``None`` keeps all.
        label_rule: see :func:`label_rule_transforms`.
        spacing: output voxel size in mm (X, Y, Z), ``None`` to keep the native grid.
        patch_size: training patch size in voxels (X, Y, Z).
        num_samples: patches per volume.
        pos: weight of patches centred on foreground.
        neg: weight of patches centred on background.
        dataset_dir: folder whose ``dataset.json`` resolves modality names.
        modality_names: the ``modality`` mapping or names in channel order (instead of ``dataset_dir``).

    Returns:
        a :class:`monai.transforms.Compose`.

    Raises:
        ValueError: for a bad modality, label rule, spacing, patch size, sample count or weights.
    """
    patch = _as_triple("patch_size", patch_size, integer=True)
    check_int(num_samples, "num_samples", minimum=1, hint="patches per volume, e.g. num_samples=2")
    if pos < 0 or neg < 0 or pos + neg == 0:
        raise InputValueError(f"pos and neg must be >= 0 and not both 0, got pos={pos}, neg={neg}.")
    keys = ["image", "label"]
    chain = _common_transforms(keys, modality, dataset_dir, modality_names, label_rule, spacing)
    chain += [
        CheckPatchFitsd(keys="image", patch_size=patch),
        SpatialPadd(keys=keys, spatial_size=patch),
        RandCropByPosNegLabeld(
            keys=keys,
            label_key="label",
            spatial_size=patch,
            pos=pos,
            neg=neg,
            num_samples=num_samples,
            image_key="image",
            image_threshold=0.0,
        ),
    ]
    return Compose(chain)


def eval_transforms(
    modality: ModalitySpec = None,
    label_rule: LabelRule = "foreground",
    spacing: float | Sequence[float] | None = (2.0, 2.0, 2.0),
    dataset_dir: str | Path | None = None,
    modality_names: Mapping[str, str] | Sequence[str] | None = None,
    with_label: bool = True,
    k_divisible: int = _DIVISOR,
) -> Compose:
    """Evaluation / inference chain: the training preprocessing on whole volumes, padded for the U-Net.

    ``LoadImaged -> EnsureChannelFirstd -> SelectModalityd -> CheckFinited -> CheckNonEmptyd -> label rule ->
    Orientationd(RAS) -> Spacingd -> ScaleIntensityd -> CropForegroundd -> DivisiblePadd(k_divisible)``; every
    transform except the modality selection, the checks and the label rule is invertible, so predictions can be
    mapped back with ``Invertd``.

    Args:
        modality: see :func:`train_transforms`.
        label_rule: see :func:`label_rule_transforms`.
        spacing: output voxel size in mm, ``None`` for the native grid.
        dataset_dir: folder whose ``dataset.json`` resolves modality names.
        modality_names: the ``modality`` mapping or names in channel order.
        with_label: also load and transform ``label`` (``False`` for inference on images only).
        k_divisible: pad every spatial size to a multiple of this (16 for a U-Net with 4 downsamplings).

    Returns:
        a :class:`monai.transforms.Compose` producing ``image`` ``(C, X, Y, Z)`` with X, Y, Z multiples of
        ``k_divisible`` (and ``label`` ``(1, X, Y, Z)``).
    """
    check_int(k_divisible, "k_divisible", minimum=1, hint="use 16 for the 4-level U-Net")
    keys = ["image", "label"] if with_label else ["image"]
    chain = _common_transforms(keys, modality, dataset_dir, modality_names, label_rule, spacing)
    chain.append(DivisiblePadd(keys=keys, k=k_divisible))
    return Compose(chain)
