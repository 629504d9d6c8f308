"""Inferers: Monte Carlo predictive mean and uncertainty maps of Bayesian networks, and their summaries."""

from __future__ import annotations

from .mc import MC_ACTIVATIONS, UNCERTAINTY_KEYS, FlattenMCOutputd, MCInferer
from .output import OutputDirError, check_output_dir
from .uncertainty import UNCERTAINTY_SUMMARY_KEYS, UncertaintySummaryd

__all__ = [
    "MCInferer",
    "FlattenMCOutputd",
    "UncertaintySummaryd",
    "UNCERTAINTY_KEYS",
    "UNCERTAINTY_SUMMARY_KEYS",
    "MC_ACTIVATIONS",
    "OutputDirError",
    "check_output_dir",
]
