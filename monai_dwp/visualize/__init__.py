"""Pictures: kernels and their prior, segmentations with their uncertainty, reliability diagrams."""

from __future__ import annotations

from .calibration import save_reliability_diagram
from .kernels import save_kernel_figure
from .uncertainty import save_uncertainty_montage

__all__ = ["save_kernel_figure", "save_reliability_diagram", "save_uncertainty_montage"]
