"""monai_dwp: Deep Weight Prior transfer learning for 3D MRI segmentation, as MONAI components.

Importing the package has no side effects. Because its name starts with ``monai``, MONAI's
``ComponentLocator`` finds every public class and function of an imported ``monai_dwp`` module by its
short name, so a bundle that lists ``"$import monai_dwp"`` may write ``"_target_": "DeepWeightPrior"``.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
