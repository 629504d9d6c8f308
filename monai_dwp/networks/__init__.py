"""Bayesian layers, the paper's networks and utilities over them."""

from __future__ import annotations

from .layers import STOCHASTIC_MODES, BayesianConv, StochasticMode
from .utils import bayesian_modules, convert_to_bayesian, resample_weights, stochastic_mode
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
]
