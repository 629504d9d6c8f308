"""Bayesian layers, the paper's networks and utilities over them."""

from __future__ import annotations

from .layers import STOCHASTIC_MODES, BayesianConv, StochasticMode, hold_weights
from .utils import (
    DEFAULT_SCALE_RATIO,
    bayesian_modules,
    convert_to_bayesian,
    init_relative_scale,
    resample_weights,
    stochastic_mode,
)
from .nets import DWPUNet, KernelVAE, KernelVAEGroup, KernelVAEOutput  # noqa: E402 (nets use utils)

__all__ = [
    "BayesianConv",
    "StochasticMode",
    "STOCHASTIC_MODES",
    "DWPUNet",
    "KernelVAE",
    "KernelVAEGroup",
    "KernelVAEOutput",
    "bayesian_modules",
    "convert_to_bayesian",
    "resample_weights",
    "stochastic_mode",
    "hold_weights",
    "init_relative_scale",
    "DEFAULT_SCALE_RATIO",
]
