"""Ignite handlers that MONAI lacks, for training Bayesian networks."""

from __future__ import annotations

from .kernel_elbo import KernelELBO, kernel_elbo_metrics
from .loss_terms import LossTermsHandler
from .resample import ResampleWeightsHandler
from .stochastic_mode import StochasticModeHandler

__all__ = ["KernelELBO", "kernel_elbo_metrics", "LossTermsHandler", "ResampleWeightsHandler", "StochasticModeHandler"]
