"""MONAI Label integration: serve the ``dwp_finetune`` bundle and rank unlabeled studies by Bayesian uncertainty.

- :func:`package_bundle` turns a trained run of a bundle into a self-contained *served* bundle folder
  (``configs/``, ``models/model.pt``, hand-off checkpoints), as MONAI Label's bundle tasks and its stock
  ``monaibundle`` sample app expect. It does not need MONAI Label.
- :func:`make_app` copies our MONAI Label app (``main.py`` + ``lib/``, see :data:`APP_TEMPLATE`) to a writable folder.
- :class:`DWPBundleInferTask`: MONAI Label's ``BundleInferTask`` with a per-request number of Monte Carlo samples
  and thread-safe weight sampling.
- :class:`MutualInformationScoring`: a MONAI Label ``ScoringMethod`` that stores, per unlabeled study, the mean
  voxel-wise mutual information of ONE Monte Carlo call of the bundle's :class:`~monai_dwp.inferers.MCInferer`;
  ``Epistemic(key=MI_SCORE_KEY)`` then picks the most uncertain study.

The classes that subclass MONAI Label's are imported on first use, so ``import monai_dwp.apps.monailabel`` works
without MONAI Label; using them needs it (``pip install "monai_dwp[monailabel]"``, see docs/monailabel.md).
"""

from __future__ import annotations

import importlib
from typing import Any

from .checks import check_request_image
from .packaging import APP_TEMPLATE, HANDOFF_DIR, make_app, package_bundle

__all__ = [
    "APP_TEMPLATE",
    "HANDOFF_DIR",
    "package_bundle",
    "make_app",
    "check_request_image",
    "require_monailabel",
    "DWPBundleInferTask",
    "MutualInformationScoring",
    "MI_SCORE_KEY",
    "MI_SCORE_TS_KEY",
]

_LAZY = {
    "DWPBundleInferTask": ".infer",
    "MutualInformationScoring": ".scoring",
    "MI_SCORE_KEY": ".scoring",
    "MI_SCORE_TS_KEY": ".scoring",
}


def require_monailabel() -> Any:
    """Import and return the ``monailabel`` package, or raise an ImportError that names the fix."""
    try:
        return importlib.import_module("monailabel")
    except ImportError as err:
        raise ImportError(
            f"monai_dwp.apps.monailabel needs MONAI Label (monailabel 0.8.5), which is not importable here ({err}); "
            "install the optional extra, `pip install \"monai_dwp[monailabel]\"`, or on a CPU-only machine follow "
            "docs/monailabel.md (a separate environment; `bash .ci/monailabel.sh` builds one)."
        ) from err


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        require_monailabel()
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    # the lazy names are left out until loaded: MONAI's ComponentLocator walks dir() of every imported ``monai*``
    # module (inspect.getmembers), and must not import MONAI Label on the way
    return sorted(globals())
