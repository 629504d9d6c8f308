"""MapTransforms of monai_dwp: checks of the loaded data that fail early with a message naming the file, and the
post-processing of :class:`~monai_dwp.inferers.MCInferer`'s output (flattening, uncertainty summary)."""

from __future__ import annotations

from .mc_output import FlattenMCOutputd
from .modality import SelectModalityd
from .uncertainty import UNCERTAINTY_SUMMARY_KEYS, UncertaintySummaryd
from .validation import CheckFinited, CheckNonEmptyd, CheckPatchFitsd

__all__ = [
    "CheckFinited",
    "CheckNonEmptyd",
    "CheckPatchFitsd",
    "FlattenMCOutputd",
    "SelectModalityd",
    "UncertaintySummaryd",
    "UNCERTAINTY_SUMMARY_KEYS",
]
