"""Pictures: kernels and their prior, segmentations with their uncertainty."""

from __future__ import annotations

from .kernels import save_kernel_figure
from .uncertainty import save_uncertainty_montage

__all__ = ["save_kernel_figure", "save_uncertainty_montage"]
