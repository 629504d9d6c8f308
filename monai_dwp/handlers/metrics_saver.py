"""MONAI's ``MetricsSaver`` whose CSV files appear whole or not at all."""

from __future__ import annotations

from typing import Any

from monai.handlers import MetricsSaver

from monai_dwp.utils.io import atomic_directory

__all__ = ["AtomicMetricsSaver"]


class AtomicMetricsSaver(MetricsSaver):
    """:class:`monai.handlers.MetricsSaver` that writes its reports into a hidden temporary folder and moves each
    finished file into ``save_dir``, so a killed evaluation leaves the previous reports (or none), never a
    truncated CSV. Same arguments and files as MONAI's handler."""

    def __call__(self, engine: Any) -> None:
        save_dir = self.save_dir
        with atomic_directory(save_dir) as tmp:
            self.save_dir = str(tmp)
            try:
                super().__call__(engine)
            finally:
                self.save_dir = save_dir
