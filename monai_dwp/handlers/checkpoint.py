"""MONAI's ``CheckpointSaver`` whose files appear whole or not at all."""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from typing import Any

import torch
from ignite.handlers.checkpoint import BaseSaveHandler
from monai.handlers import CheckpointSaver

from monai_dwp.utils.io import atomic_write

__all__ = ["AtomicDiskSaver", "AtomicCheckpointSaver"]


class AtomicDiskSaver(BaseSaveHandler):
    """Ignite save handler that writes each checkpoint to a temporary file and renames it into place.

    MONAI's own disk saver writes in place (``atomic=False``) and, for a fixed file name such as ``model.pt``,
    deletes the old file before writing the new one: a job killed in between leaves no best model, or a truncated
    one that a later stage loads as valid. Here a kill leaves the previous file intact.

    Args:
        dirname: the folder of the checkpoints (created if missing).
        filename: a fixed file name (``"model.pt"``) that every save replaces; ``None`` keeps Ignite's names
            (``checkpoint_epoch=N.pt``).
    """

    def __init__(self, dirname: str | os.PathLike, filename: str | None = None) -> None:
        self.dirname = os.fspath(dirname)
        self.filename = filename

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        os.makedirs(self.dirname, exist_ok=True)
        path = os.path.join(self.dirname, self.filename or filename)
        atomic_write(path, "wb", lambda f: torch.save(checkpoint, f))

    def remove(self, filename: str) -> None:
        if self.filename is not None:
            return  # the next save replaces the fixed file atomically; deleting it first would open a window
        path = os.path.join(self.dirname, filename)
        if os.path.exists(path):
            os.remove(path)


class AtomicCheckpointSaver(CheckpointSaver):
    """:class:`monai.handlers.CheckpointSaver` with :class:`AtomicDiskSaver` for every file it writes.

    Same arguments and file names as MONAI's saver. Interval checkpoints: Ignite deletes the oldest file before it
    writes the next one, so keep ``n_saved >= 2`` for a run that must survive a kill at any moment (the bundles do).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        arguments = inspect.signature(CheckpointSaver.__init__).bind(self, *args, **kwargs).arguments
        fixed = {
            "_final_checkpoint": self._final_filename,
            "_key_metric_checkpoint": arguments.get("key_metric_filename"),
            "_interval_checkpoint": None,
        }
        for attribute, filename in fixed.items():
            checkpoint = getattr(self, attribute)
            if checkpoint is not None:
                checkpoint.save_handler = AtomicDiskSaver(self.save_dir, filename)
