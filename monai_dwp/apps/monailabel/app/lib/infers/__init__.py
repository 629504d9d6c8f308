"""Infer tasks of the app: segmentation with uncertainty, and the scoring variants."""

from __future__ import annotations

from monai.transforms import Invertd, SaveImaged

from monai_dwp.apps.monailabel.infer import DWPBundleInferTask

__all__ = ["DWPBundleInferTask", "segmentation_task", "scoring_task"]


def segmentation_task(path: str, conf: dict[str, str], num_samples: int | None = None) -> DWPBundleInferTask:
    """The served segmentation: label file on the input image's grid, uncertainty summary in the response JSON."""
    return DWPBundleInferTask(path, conf, num_samples=num_samples)


def scoring_task(
    path: str, conf: dict[str, str], num_samples: int | None = None, train_mode: bool = False, dropout: float = 0.0
) -> DWPBundleInferTask:
    """An infer task for scoring: returns its data (no label file) and skips the inversion to the input grid.

    ``train_mode`` and ``dropout`` are those of MONAI Label's stock epistemic scoring (``network.train()`` and
    ``network_def["dropout"] = dropout``; DWPUNet applies it as Dropout3d before its output convolution).
    """
    return DWPBundleInferTask(
        path, conf, num_samples=num_samples, train_mode=train_mode, dropout=dropout, skip_writer=True,
        post_filter=[SaveImaged, Invertd],
    )
