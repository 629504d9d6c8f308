"""Checks of where inference writes, run before anything is loaded or written."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from monai_dwp.utils.validation import InputValueError

__all__ = ["OutputDirError", "check_output_dir"]


class OutputDirError(InputValueError):
    """An output folder that inference cannot or must not write to (a ``ValueError``; a bundle run from the command
    line prints it as one line, see :class:`~monai_dwp.utils.BundleInputError`)."""


def _input_folder(source: str | os.PathLike) -> Path:
    """The folder the inputs of ``source`` (a folder, a file or a glob pattern) are read from."""
    path = Path(source)
    if path.is_dir():
        return path
    if path.is_file():
        return path.parent
    text = str(source)
    if glob.has_magic(text):
        parts = Path(text).parts
        fixed = list(parts[: next(i for i, p in enumerate(parts) if glob.has_magic(p))])
        return Path(*fixed) if fixed else Path(".")
    return path


def check_output_dir(
    output_dir: str | os.PathLike, input_dir: str | os.PathLike | None = None, key: str = "output_dir"
) -> str:
    """Return ``output_dir`` if inference can write there; raise before anything is written otherwise.

    Checks, without creating anything: ``output_dir`` is not an existing file; its nearest existing parent is a
    writable folder (the folder itself is created later, by the writer); and it is neither the folder the inputs
    are read from (``input_dir``: a folder, a file or a glob pattern) nor inside it, so predictions never land
    among the images (where the next run would read ``*_seg.nii.gz`` as an input).

    Used by the ``inference.json`` configs: ``"pred_dir": "$monai_dwp.inferers.check_output_dir(@ckpt_dir +
    '/predictions', @input_dir, 'pred_dir')"``.

    Args:
        output_dir: the folder predictions are written to.
        input_dir: where the images come from, or ``None`` to skip that check.
        key: the setting's name, for the messages (e.g. ``"pred_dir"``).

    Returns:
        ``str(output_dir)``.

    Raises:
        OutputDirError: (a ``ValueError``) ``output_dir`` is an existing file, the input folder or inside it, or not
            writable (nor the parent it would be created in).
    """
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"{key} must be a folder, got the existing file {str(out)!r}; pass another --{key}.")
    if input_dir is not None:
        folder = _input_folder(input_dir).resolve()
        resolved = out.resolve()
        if resolved == folder or folder in resolved.parents:
            raise OutputDirError(
                f"{key} {str(out)!r} is inside the input folder, got input_dir={str(input_dir)!r}; predictions "
                f"would be written among the images and read as inputs by the next run: pass a --{key} outside it."
            )
    parent = out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputDirError(
            f"{key} {str(out)!r} cannot be created, got the file {str(parent)!r} where a folder is needed; pass "
            f"another --{key}."
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputDirError(
            f"{key} {str(out)!r} is not writable, got no write permission on {str(parent)!r}; pass a writable "
            f"--{key} or fix the folder's permissions."
        )
    return str(output_dir)
