"""Files that appear whole or not at all."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable

__all__ = ["atomic_write", "atomic_path", "atomic_directory", "load_checkpoint"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, mode: str, write: Callable[[IO[Any]], None]) -> None:
    """Call ``write(f)`` on a temporary file next to ``path``, then ``os.replace`` it over ``path``.

    A reader never sees a half-written ``path``: an interruption leaves the previous file (or none) and no
    temporary file behind (it is removed on any exception).

    Args:
        path: the file to write.
        mode: ``"w"`` (text, UTF-8, ``newline=""`` for the csv module) or ``"wb"``.
        write: writes the content to the open file it is given.
    """
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"newline": "", "encoding": "utf-8"})) as f:
            write(f)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path with the same file name as ``path`` (so libraries that pick the format from the
    extension, such as nibabel's ``.nii.gz``, write the same file); move it over ``path`` when the block succeeds.

    The temporary file lives in a hidden folder next to ``path`` (``.<name>.tmp-XXXX/<name>``), so a kill leaves
    no file that a glob such as ``*_seg.nii.gz`` would pick up; on an exception the folder is removed.

    Example::

        with atomic_path("out/case_seg.nii.gz") as tmp:
            nib.save(image, tmp)
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        tmp = folder / target.name
        yield tmp
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, target)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def atomic_directory(save_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden temporary folder inside ``save_dir``; when the block succeeds, move every file written there
    into ``save_dir`` (each file whole, by ``os.replace``). For writers that take a folder, e.g. MONAI's
    ``write_metrics_reports``."""
    target = Path(save_dir)
    target.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=target, prefix=".tmp-"))
    try:
        yield folder
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                dest = target / file.relative_to(folder)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(file, 0o666 & ~_umask())
                os.replace(file, dest)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def load_checkpoint(path: str | os.PathLike, what: str, missing: str, expected: str, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name the file and the fix.

    Args:
        path: the checkpoint file.
        what: how the messages call it, e.g. ``"prior checkpoint"``.
        missing: the fix when the file does not exist, e.g. ``"fit it with `python -m monai.bundle run ...`"``.
        expected: what to pass instead of an unreadable file, e.g. ``"the dwp_prior.pt of the dwp_prior bundle"``.
        map_location: passed to ``torch.load``.

    Raises:
        FileNotFoundError: ``"<what> '<path>' does not exist; <missing>."``
        ValueError: the file is not a readable PyTorch checkpoint (not written by ``torch.save``, or truncated).
    """
    import torch

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{what} {str(file)!r} does not exist; {missing}.")
    try:
        return torch.load(file, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a file that is not a checkpoint
        reason = " ".join(str(err).split()).split(". ")[0][:160]
        raise ValueError(
            f"{what} {str(file)!r} is not a readable PyTorch checkpoint, got {type(err).__name__}: {reason} (not a "
            f"file written by torch.save, or truncated); pass {expected}."
        ) from err
