"""Metrics: did the kernel VAE learn something the Gaussian baselines do not know; how calibrated is a segmentation?"""

from __future__ import annotations

from .calibration import (
    CalibrationHistograms,
    VoxelCalibration,
    binned_calibration_error,
    histogram_roc_auc,
    reliability_histogram,
    score_histogram,
)
from .kernel_prior import (
    kernel_prior_report,
    kernels_by_group,
    participation_ratio,
    prior_report,
    write_kernel_prior_report,
)

__all__ = [
    "CalibrationHistograms",
    "VoxelCalibration",
    "binned_calibration_error",
    "histogram_roc_auc",
    "kernel_prior_report",
    "kernels_by_group",
    "participation_ratio",
    "prior_report",
    "reliability_histogram",
    "score_histogram",
    "write_kernel_prior_report",
]
