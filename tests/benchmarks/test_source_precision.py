"""``benchmarks/source_precision.py``: source nets in bfloat16 against float32, paired by seed."""

from __future__ import annotations

import sys
import unittest
from pathlib import Path

from .._quick_chain import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

from source_precision import _markdown  # noqa: E402


def _row(dtype: str, seed: int, val: float, test: float, seconds: float) -> dict:
    return {"compute_dtype": dtype, "seed": seed, "best_val_dice": val, "best_epoch": 80, "test_dice": test,
            "train_seconds": seconds, "seconds_per_epoch": seconds / 80}


class TestSourcePrecision(unittest.TestCase):
    def test_markdown_pairs_the_precisions_by_seed(self):
        rows = []
        for seed in range(3):
            rows += [_row("float32", seed, 0.70 + 0.01 * seed, 0.75, 480.0),
                     _row("bfloat16", seed, 0.66 + 0.01 * seed, 0.74 - 0.01 * seed, 320.0)]
        md = _markdown(rows, "a machine", 80, [0, 1, 2])
        self.assertIn("Machine: a machine.", md)
        self.assertIn("| 1 | 0.710 (80) / 0.670 (80) | 0.750 / 0.730 | 480.0 / 320.0 |", md)
        self.assertIn("| best validation Dice | 0.710 ± 0.008 (3) | 0.670 ± 0.008 (3) | -0.040 [-0.040, -0.040] |", md)
        self.assertIn("| test Dice | 0.750 ± 0.000 (3) | 0.730 ± 0.008 (3) | -0.020 [-0.045, +0.005] |", md)
        self.assertIn("| training seconds per epoch | 6.00 ± 0.00 (3) | 4.00 ± 0.00 (3) | -2.00 [-2.00, -2.00] |", md)


if __name__ == "__main__":
    unittest.main()
