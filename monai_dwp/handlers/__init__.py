"""Ignite handlers that MONAI lacks, for training Bayesian networks."""

from __future__ import annotations

from .loss_terms import LossTermsHandler
from .resample import ResampleWeightsHandler

__all__ = ["LossTermsHandler", "ResampleWeightsHandler"]
