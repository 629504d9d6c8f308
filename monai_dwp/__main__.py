"""``python -m monai_dwp ...``: see :mod:`monai_dwp.cli`."""

from monai_dwp.cli import main

if __name__ == "__main__":
    main()
