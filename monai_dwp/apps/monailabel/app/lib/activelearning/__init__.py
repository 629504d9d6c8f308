"""Active learning strategies of the app: MONAI Label's, with Epistemic ranking our mutual-information score too."""

from __future__ import annotations

from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.tasks.activelearning.epistemic import Epistemic
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random

from monai_dwp.apps.monailabel.scoring import MI_SCORE_KEY

__all__ = ["strategies"]


def strategies() -> dict[str, Strategy]:
    """``random``, ``first``, ``epistemic`` (highest stock epistemic entropy first) and ``mutual_information``
    (highest mean mutual information first)."""
    return {
        "random": Random(),
        "first": First(),
        "epistemic": Epistemic(desc="Highest epistemic entropy (MONAI Label's EpistemicScoring) first"),
        "mutual_information": Epistemic(key=MI_SCORE_KEY, desc="Highest mean mutual information first"),
    }
