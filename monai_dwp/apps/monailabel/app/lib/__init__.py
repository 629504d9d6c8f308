"""Task factories of monai_dwp's MONAI Label app; the classes live in :mod:`monai_dwp.apps.monailabel`."""
