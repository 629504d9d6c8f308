"""MapTransforms of monai_dwp: checks of the loaded data that fail early with a message naming the file."""

from __future__ import annotations

from .validation import CheckFinited, CheckNonEmptyd, CheckPatchFitsd

__all__ = ["CheckFinited", "CheckNonEmptyd", "CheckPatchFitsd"]
