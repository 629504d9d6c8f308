"""Train tasks of the app: MONAI Label's stock BundleTrainTask runs the served bundle's train.json."""

from __future__ import annotations

from monailabel.tasks.train.bundle import BundleTrainTask

__all__ = ["BundleTrainTask"]
