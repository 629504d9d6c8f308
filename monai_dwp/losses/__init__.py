"""Priors over Bayesian networks, the ELBO, and the kernel VAE's loss."""

from __future__ import annotations

from .deep_weight_prior import DWP_CHECKPOINT_FORMAT, DeepWeightPrior, dwp_initialize
from .elbo import ELBOLoss
from .gaussian_prior import GaussianPrior
from .kernel_vae_loss import KernelVAELoss
from .kl import gaussian_entropy, gaussian_kl, gaussian_log_prob, standard_normal_kl

__all__ = [
    "DeepWeightPrior",
    "DWP_CHECKPOINT_FORMAT",
    "dwp_initialize",
    "ELBOLoss",
    "GaussianPrior",
    "KernelVAELoss",
    "gaussian_entropy",
    "gaussian_kl",
    "gaussian_log_prob",
    "standard_normal_kl",
]
