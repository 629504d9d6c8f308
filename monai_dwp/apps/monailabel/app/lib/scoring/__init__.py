"""Scoring methods of the app: mean mutual information of one Monte Carlo call, and MONAI Label's epistemic one."""

from __future__ import annotations

from monailabel.tasks.scoring.epistemic_v2 import EpistemicScoring

from monai_dwp.apps.monailabel.scoring import MI_SCORE_KEY, MutualInformationScoring

__all__ = ["EpistemicScoring", "MutualInformationScoring", "MI_SCORE_KEY"]
