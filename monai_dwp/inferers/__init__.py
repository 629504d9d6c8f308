"""Inferers: Monte Carlo predictive mean and uncertainty maps of Bayesian networks.

The MapTransforms that post-process their output (:class:`~monai_dwp.transforms.FlattenMCOutputd`,
:class:`~monai_dwp.transforms.UncertaintySummaryd`) live in :mod:`monai_dwp.transforms`.
"""

from __future__ import annotations

from .mc import MC_ACTIVATIONS, MC_PROBS_KEY, UNCERTAINTY_KEYS, MCInferer
from .output import OutputDirError, check_output_dir

__all__ = [
    "MCInferer",
    "UNCERTAINTY_KEYS",
    "MC_PROBS_KEY",
    "MC_ACTIVATIONS",
    "OutputDirError",
    "check_output_dir",
]
