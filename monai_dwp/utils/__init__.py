"""Small helpers shared across monai_dwp."""

from __future__ import annotations

from .io import atomic_write

__all__ = ["atomic_write"]
