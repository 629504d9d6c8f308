"""Pictures: kernels and their prior."""

from __future__ import annotations

from .kernels import save_kernel_figure

__all__ = ["save_kernel_figure"]
