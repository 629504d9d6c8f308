"""Metrics of the Deep Weight Prior: did the kernel VAE learn something the Gaussian baselines do not know?"""

from __future__ import annotations

from .kernel_prior import kernel_prior_report, kernels_by_group, prior_report, write_kernel_prior_report

__all__ = ["kernel_prior_report", "kernels_by_group", "prior_report", "write_kernel_prior_report"]
