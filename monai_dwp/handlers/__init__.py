"""Ignite handlers that MONAI lacks, for training Bayesian networks."""

from __future__ import annotations


from .calibration import SegmentationCalibrationHandler
from .checkpoint import AtomicCheckpointSaver, AtomicDiskSaver
from .gradient_ratio import GradientRatioHandler
from .kernel_elbo import KernelELBO, kernel_elbo_metrics
from .loss_terms import LossTermsHandler
from .metrics_saver import AtomicMetricsSaver
from .non_finite import NonFiniteLossError, NonFiniteLossHandler
from .resample import ResampleWeightsHandler
from .resume import BestMetricState, RandomStates, random_generators, training_state
from .stochastic_mode import StochasticModeHandler
from .swag import SWAG_FORMAT, SWAGHandler, load_swag

__all__ = [
    "AtomicMetricsSaver",
    "AtomicCheckpointSaver",
    "AtomicDiskSaver",
    "BestMetricState",
    "RandomStates",
    "random_generators",
    "training_state",
    "GradientRatioHandler",
    "KernelELBO",
    "LossTermsHandler",
    "NonFiniteLossError",
    "NonFiniteLossHandler",
    "ResampleWeightsHandler",
    "SegmentationCalibrationHandler",
    "StochasticModeHandler",
    "SWAG_FORMAT",
    "SWAGHandler",
    "load_swag",
    "kernel_elbo_metrics",
]
