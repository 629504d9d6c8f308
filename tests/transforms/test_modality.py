"""SelectModalityd: keeps the requested channels, in order, and names a bad index."""

from __future__ import annotations

import unittest

import torch

from monai_dwp.transforms import SelectModalityd


class TestSelectModalityd(unittest.TestCase):
    def test_select_modality(self):
        data = {"image": torch.arange(3 * 8, dtype=torch.float32).reshape(3, 2, 2, 2)}
        out = SelectModalityd("image", indices=[2, 0])(data)
        torch.testing.assert_close(out["image"], data["image"][[2, 0]])
        torch.testing.assert_close(SelectModalityd("image", indices=1)(data)["image"], data["image"][[1]])
        with self.assertRaisesRegex(
            ValueError, r"'image': modality index 3 is out of range for an image with 3 channel"
        ):
            SelectModalityd("image", indices=3)(data)
        with self.assertRaisesRegex(ValueError, r"indices must be a non-negative int or a non-empty list"):
            SelectModalityd("image", indices=[])


if __name__ == "__main__":
    unittest.main()
