"""Applications built on monai_dwp's bundles.

``monai_dwp.apps.monailabel``: serve the target bundle with MONAI Label and rank unlabeled studies by Bayesian
uncertainty. MONAI Label is an optional extra (``pip install "monai_dwp[monailabel]"``, see docs/monailabel.md):
importing :mod:`monai_dwp` or :mod:`monai_dwp.apps` never imports it.
"""

from __future__ import annotations

__all__: list[str] = []
