"""Ignite handlers that MONAI lacks, for training Bayesian networks."""

from __future__ import annotations

from .calibration import SegmentationCalibrationHandler, binned_calibration_error, histogram_roc_auc
from .gradient_ratio import GradientRatioHandler
from .kernel_elbo import KernelELBO, kernel_elbo_metrics
from .loss_terms import LossTermsHandler
from .resample import ResampleWeightsHandler
from .stochastic_mode import StochasticModeHandler

__all__ = [
    "GradientRatioHandler",
    "KernelELBO",
    "LossTermsHandler",
    "ResampleWeightsHandler",
    "SegmentationCalibrationHandler",
    "StochasticModeHandler",
    "binned_calibration_error",
    "histogram_roc_auc",
    "kernel_elbo_metrics",
]
