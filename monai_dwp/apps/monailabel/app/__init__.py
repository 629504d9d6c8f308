"""monai_dwp's MONAI Label app (``main.py`` + ``lib/``); copy it with ``monai_dwp.apps.monailabel.make_app``."""
