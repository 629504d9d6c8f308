"""BraTS training and validation folders as downloaded (2018–2021), turned into a Decathlon ``dataset.json``.

A BraTS release has no ``dataset.json``: it has one folder per case, either under ``HGG/`` and ``LGG/``
(2018, 2019) or directly in the release folder (2020, 2021), each holding ``<id>_flair.nii.gz``, ``<id>_t1.nii.gz``,
``<id>_t1ce.nii.gz``, ``<id>_t2.nii.gz`` and, for training cases, ``<id>_seg.nii.gz`` (labels 0, 1, 2, 4);
uncompressed ``.nii`` files are accepted too. :func:`write_brats_datalist` lists these files in a Decathlon
``dataset.json`` (``image`` is the list of the four modality files, which MONAI's ``LoadImaged`` +
``EnsureChannelFirstd`` stack into four channels), so that every loader of :mod:`monai_dwp.data.decathlon` and the
bundles read the folder as they read MSD Task01 or the phantoms. BraTS 2023 names (``-t1n``, ``-t1c``, ``-t2w``,
``-t2f``, ``-seg``) are not supported.

Typical use (or ``python -m monai_dwp make-datalist --dataset-dir DIR``)::

    write_brats_datalist("/data/MICCAI_BraTS_2018_Data_Training", num_test=20)
    split = validate_decathlon("/data/MICCAI_BraTS_2018_Data_Training", modality="FLAIR", num_train_cases=10)
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from monai_dwp.utils.io import atomic_write
from monai_dwp.utils.validation import InputFileError, InputValueError, as_bool

__all__ = [
    "BRATS_MODALITIES",
    "BRATS_LABELS",
    "find_brats_cases",
    "is_brats_folder",
    "write_brats_datalist",
]

BRATS_MODALITIES: dict[str, str] = {"0": "FLAIR", "1": "T1", "2": "T1ce", "3": "T2"}
"""``dataset.json`` ``modality`` field of a BraTS folder (channel index -> name), in the order of ``image``."""

BRATS_LABELS: dict[str, str] = {
    "0": "background",
    "1": "necrotic/non-enhancing core",
    "2": "oedema",
    "4": "enhancing tumour",
}
"""``dataset.json`` ``labels`` field of a BraTS folder; ``label_rule="foreground"`` gives the whole tumour."""

_SUFFIXES = ("flair", "t1", "t1ce", "t2")  # file suffixes of the modalities, in the order of BRATS_MODALITIES
_LABEL_SUFFIX = "seg"
_EXTENSIONS = (".nii.gz", ".nii")
_GRADES = ("HGG", "LGG")
_EXPECTED = (
    "expected BraTS 2018–2021 case folders (e.g. BraTS20_Training_001/) holding <id>_flair.nii.gz, <id>_t1.nii.gz, "
    "<id>_t1ce.nii.gz, <id>_t2.nii.gz and, for training, <id>_seg.nii.gz (.nii accepted), either directly in the "
    "folder (2020/2021) or under HGG/ and LGG/ (2018/2019)"
)


def _kind(name: str) -> str | None:
    """The BraTS suffix (``"flair"``, ``"t1"``, ``"t1ce"``, ``"t2"``, ``"seg"``) of a file name, or ``None``."""
    lowered = name.lower()
    for ext in _EXTENSIONS:
        if lowered.endswith(ext):
            stem = lowered[: -len(ext)]
            for suffix in (*_SUFFIXES, _LABEL_SUFFIX):
                if stem.endswith(f"_{suffix}"):
                    return suffix
    return None


def _subdirs(folder: Path) -> list[Path]:
    """Visible sub-folders of ``folder`` (macOS ``__MACOSX`` and hidden folders skipped), sorted by name."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    return sorted(
        (Path(e.path) for e in entries if e.is_dir() and not e.name.startswith((".", "__"))), key=lambda p: p.name
    )


def _brats_files(case_dir: Path) -> dict[str, list[Path]]:
    """The files of ``case_dir`` grouped by BraTS suffix (hidden files such as macOS ``._x.nii.gz`` skipped)."""
    found: dict[str, list[Path]] = {}
    try:
        entries = list(os.scandir(case_dir))
    except OSError:
        return found
    for entry in entries:
        kind = _kind(entry.name)
        if kind is not None and not entry.name.startswith(".") and entry.is_file():
            found.setdefault(kind, []).append(Path(entry.path))
    return found


def _layout(root: Path) -> tuple[str, list[Path]]:
    """``("HGG/LGG", [grade folders])`` when ``root`` has ``HGG/`` or ``LGG/``, else ``("flat", [root])``."""
    grades = [d for d in _subdirs(root) if d.name.upper() in _GRADES]
    return ("HGG/LGG", grades) if grades else ("flat", [root])


def _case_dirs(root: Path) -> list[Path]:
    """Folders under the layout's parents that hold at least one BraTS-named file, sorted by case id."""
    _, parents = _layout(root)
    cases = [d for parent in parents for d in _subdirs(parent) if _brats_files(d)]
    return sorted(cases, key=lambda d: (d.name, d.parent.name))


def _pick(case_dir: Path, kind: str, files: list[Path]) -> Path:
    """The one file of ``kind`` in ``case_dir`` (``<id>_<kind>`` preferred when several match)."""
    if len(files) > 1:
        named = [f for f in files if f.name.lower().startswith(f"{case_dir.name.lower()}_{kind}.")]
        if len(named) == 1:
            return named[0]
        raise InputValueError(
            f"BraTS case {case_dir.name} ({case_dir}) has {len(files)} '_{kind}' files, got "
            f"{sorted(f.name for f in files)}; keep one {case_dir.name}_{kind}.nii.gz per case."
        )
    return files[0]


def _no_case_message(root: Path) -> str:
    """What :func:`find_brats_cases` says for a folder without BraTS case: what was expected, and a likely cause."""
    hint = ""
    nested = [d for d in _subdirs(root) if _case_dirs(d)]
    if nested:
        hint = f" The sub-folder {str(nested[0])!r} holds BraTS cases: pass it instead."
    elif any(
        name.lower().endswith(f"-{s}{ext}") for d in [root, *_subdirs(root)[:20]] for name in _names(d)
        for s in ("t2f", "t1n", "t1c", "t2w") for ext in _EXTENSIONS
    ):
        hint = (
            " Its files use the BraTS 2023 names (-t1n, -t1c, -t2w, -t2f), which are not supported: write a "
            "Decathlon dataset.json for it yourself (docs/data.md)."
        )
    return f"no BraTS case found in {str(root)!r}: {_EXPECTED}.{hint}"


def _names(folder: Path) -> list[str]:
    """The entry names of ``folder`` (none when it cannot be read)."""
    try:
        return os.listdir(folder)
    except OSError:
        return []


def is_brats_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` looks like a BraTS 2018–2021 training or validation folder as downloaded.

    True when it has at least one case folder holding BraTS-named NIfTI files (``<id>_flair.nii.gz`` ...), directly
    or under ``HGG/`` / ``LGG/``; the cases are not checked for completeness (:func:`find_brats_cases` does). Never
    raises: a missing or unreadable folder is not a BraTS folder.

    Args:
        folder: the folder to inspect.

    Returns:
        whether a BraTS case folder was found.
    """
    root = Path(folder)
    if not root.is_dir():
        return False
    _, parents = _layout(root)
    return any(_brats_files(d) for parent in parents for d in _subdirs(parent))


def find_brats_cases(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """The cases of a BraTS 2018–2021 training or validation folder, in sorted case-id order.

    The layout is detected: case folders under ``HGG/`` and ``LGG/`` (2018, 2019) or directly in ``folder``
    (2020, 2021). A case folder is one that holds at least one BraTS-named file; it must hold all four modalities
    (``_flair``, ``_t1``, ``_t1ce``, ``_t2``, ``.nii.gz`` or ``.nii``); ``_seg`` is optional (validation cases
    have none). Folders without any BraTS-named file (``__MACOSX``, hidden folders) are ignored.

    Args:
        folder: the BraTS training or validation folder (the one holding ``HGG/`` / ``LGG/`` or the case folders).

    Returns:
        one dict per case: ``{"image": [flair, t1, t1ce, t2], "label": seg}`` with absolute paths (strings, symlinks
        kept as they are); cases without a ``_seg`` file have no ``"label"`` key.

    Raises:
        FileNotFoundError: (:class:`~monai_dwp.utils.validation.InputFileError`) when ``folder`` is not a directory,
            or a case lacks a modality file (the message names the case and the file).
        ValueError: (:class:`~monai_dwp.utils.validation.InputValueError`) when ``folder`` holds no BraTS case
            (the message says what was expected), or a case has two files of one modality.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputFileError(f"BraTS folder {str(root)!r} is not a directory; {_EXPECTED}.")
    cases = []
    for case_dir in _case_dirs(root):
        files = _brats_files(case_dir)
        missing = [s for s in _SUFFIXES if s not in files]
        if missing:
            names = ", ".join(f"{case_dir.name}_{s}.nii.gz" for s in missing)
            raise InputFileError(
                f"BraTS case {case_dir.name} ({case_dir}) lacks {names}, got only "
                f"{sorted(f.name for fs in files.values() for f in fs)}; every case needs the four modalities "
                "_flair, _t1, _t1ce and _t2: restore the file(s) or remove the case folder."
            )
        case: dict[str, Any] = {"image": [os.path.abspath(_pick(case_dir, s, files[s])) for s in _SUFFIXES]}
        if _LABEL_SUFFIX in files:
            case["label"] = os.path.abspath(_pick(case_dir, _LABEL_SUFFIX, files[_LABEL_SUFFIX]))
        cases.append(case)
    if not cases:
        raise InputValueError(_no_case_message(root))
    return cases


def _relative(path: str, base: Path) -> str:
    """``path`` relative to ``base``, written ``./x`` as in the Decathlon ``dataset.json`` files."""
    rel = Path(os.path.relpath(path, base)).as_posix()
    return rel if rel.startswith("../") else f"./{rel}"


def write_brats_datalist(
    folder: str | os.PathLike,
    output_file: str | os.PathLike | None = None,
    num_test: int = 0,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Writes a Decathlon ``dataset.json`` listing the cases of a BraTS 2018–2021 training folder.

    The file has ``modality`` :data:`BRATS_MODALITIES` (``image`` lists ``[flair, t1, t1ce, t2]``; select FLAIR with
    ``modality="FLAIR"``), ``labels`` :data:`BRATS_LABELS`, ``training`` (the labelled cases), ``test`` (the cases
    without ``_seg``, as ``{"image": [...]}``, plus ``num_test`` labelled cases moved there) and
    ``numTraining`` / ``numTest``; paths are relative to the folder of ``output_file``, written ``./...``.

    With ``num_test=0`` the labelled cases all stay in ``training`` and :func:`~monai_dwp.data.decathlon_split`
    takes its fixed test split as a seeded slice of them (as for MSD). With ``num_test=K`` the test split is
    fixed in the file: ``K`` labelled cases, chosen by a permutation seeded by ``seed`` and listed in case-id
    order, are moved to ``test`` with their labels, and :func:`~monai_dwp.data.decathlon_split` uses exactly them.

    The file is written atomically. An existing file with the same content is left as it is; a different one is
    replaced only with ``overwrite=True``.

    Args:
        folder: the BraTS training folder (see :func:`find_brats_cases`).
        output_file: where to write; default ``<folder>/dataset.json``. The bundles read ``dataset.json`` from
            ``dataset_dir``, so keep that name (write it into another folder when ``folder`` is read-only).
        num_test: labelled cases moved to ``test`` as the fixed held-out split, ``0 <= num_test <`` labelled cases.
        seed: seed of the choice of the ``num_test`` cases.
        overwrite: replace an existing, different ``output_file``.

    Returns:
        the path of the written (or unchanged) file.

    Raises:
        FileNotFoundError: for a missing folder or a case without a modality file (see :func:`find_brats_cases`).
        ValueError: for a folder without BraTS case or without labelled case (a validation folder), or a bad
            ``num_test`` / ``seed``.
        FileExistsError: when ``output_file`` exists with other content and ``overwrite`` is false.
    """
    for name, value in (("num_test", num_test), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise InputValueError(f"{name} must be an int >= 0, got {value!r}; e.g. --{name.replace('_', '-')} 0.")
    try:
        overwrite = as_bool(overwrite, "overwrite")
    except ValueError as err:
        raise InputValueError(str(err)) from None
    root = Path(folder)
    cases = find_brats_cases(root)
    path = Path(output_file) if output_file is not None else root / "dataset.json"
    base = Path(os.path.abspath(path.parent))  # not resolve(): keep symlinked files (git-annex, DVC) by name
    labelled = [c for c in cases if "label" in c]
    unlabelled = [c for c in cases if "label" not in c]
    if not labelled:
        raise InputValueError(
            f"{str(root)!r} holds {len(cases)} BraTS case(s) but none has a _seg label file (a validation folder?); "
            "a training dataset.json needs labelled cases: pass the BraTS training folder."
        )
    if num_test >= len(labelled):
        raise InputValueError(
            f"num_test={num_test} would leave no training case: {str(root)!r} has {len(labelled)} labelled case(s); "
            f"use num_test <= {len(labelled) - 1}."
        )
    if unlabelled:
        names = [Path(c["image"][0]).parent.name for c in unlabelled]
        warnings.warn(
            f"{len(unlabelled)} of the {len(cases)} cases of {str(root)!r} have no _seg file and are listed in 'test' "
            f"without a label (not used for training or scoring): {names[:5]}{' ...' if len(names) > 5 else ''}",
            stacklevel=2,
        )
    chosen = set(np.random.default_rng(int(seed)).permutation(len(labelled))[: int(num_test)].tolist())

    def entry(case: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"image": [_relative(p, base) for p in case["image"]]}
        if "label" in case:
            out["label"] = _relative(case["label"], base)
        return out

    training = [entry(c) for i, c in enumerate(labelled) if i not in chosen]
    test = [entry(c) for i, c in enumerate(labelled) if i in chosen] + [entry(c) for c in unlabelled]
    layout, _ = _layout(root)
    content = {
        "name": "BraTS",
        "description": f"BraTS training folder ({layout} layout), listed by monai_dwp make-datalist",
        "tensorImageSize": "4D",
        "modality": dict(BRATS_MODALITIES),
        "labels": dict(BRATS_LABELS),
        "numTraining": len(training),
        "numTest": len(test),
        "training": training,
        "test": test,
        "brats": {"layout": layout, "num_test": int(num_test), "seed": int(seed)},
    }
    if path.exists():
        try:
            same = json.loads(path.read_text(encoding="utf-8")) == content
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            same = False
        if same:
            return path
        if not overwrite:
            raise FileExistsError(
                f"{path} already exists with other content; pass overwrite=True (--overwrite on the command line) to "
                "replace it, or write elsewhere with output_file (--output-file)."
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(content, indent=2) + "\n"
    atomic_write(path, "w", lambda f: f.write(text))
    return path
