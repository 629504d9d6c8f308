"""``benchmarks/transfer_budget.py``: the recipe comparison from transfer-benchmark rows (paired by seed)."""

from __future__ import annotations

import sys
import tempfile
import unittest
from pathlib import Path

from .._quick_chain import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

from transfer_budget import Recipe, summarise, write_figure  # noqa: E402


def _row(method: str, n: int, seed: int, schedule: str | None, steps: int, test: float, val: float) -> dict[str, str]:
    row = {"method": method, "num_train_cases": str(n), "seed": str(seed), "steps": str(steps),
           "val_pooled_dice": str(test), "best_val_dice": str(val), "best_epoch": "3", "epochs": "10"}
    if schedule is not None:  # rows written before the schedule was a column have none: constant
        row["lr_schedule"] = schedule
    return row


class TestSummarise(unittest.TestCase):
    def test_tables_pair_by_seed(self):
        rows = []
        for seed, bump in enumerate((0.00, 0.02, 0.04)):
            rows += [_row("random_init", 5, seed, None, 300, 0.60 + bump, 0.40),
                     _row("random_init", 20, seed, "constant", 300, 0.58 + bump, 0.45),
                     _row("random_init", 5, seed, "cosine", 300, 0.65 + bump, 0.50),
                     _row("random_init", 20, seed, "cosine", 300, 0.75 + bump, 0.60)]
        recipes = (Recipe("cosine", 300, (5, 20), ("random_init",)),)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "budget.md"
            summarise(rows, recipes, ("constant", 300), path, "a machine")
            md = path.read_text()
            write_figure(rows, recipes, ("constant", 300), Path(tmp) / "budget.png")
            self.assertGreater((Path(tmp) / "budget.png").stat().st_size, 5_000)
        self.assertIn("`benchmarks/transfer_budget.py`; a machine.", md)
        self.assertIn("| `random_init` | constant, 300 steps | 0.620 ± 0.016 (3) | 0.600 ± 0.016 (3) |", md)
        self.assertIn("| `random_init` | cosine, 300 steps | 0.670 ± 0.016 (3) | 0.770 ± 0.016 (3) |", md)
        # the same shift for every seed: a zero-width interval
        self.assertIn("| `random_init` | constant, 300 steps | -0.020 [-0.020, -0.020] | +0.050 [+0.050, +0.050] |", md)
        self.assertIn("| `random_init` | cosine, 300 steps | +0.100 [+0.100, +0.100] | +0.100 [+0.100, +0.100] |", md)
        self.assertIn("| `random_init` | cosine, 300 steps | +0.050 [+0.050, +0.050] \\| +0.100 [+0.100, +0.100] | "
                      "+0.170 [+0.170, +0.170] \\| +0.150 [+0.150, +0.150] |", md)
        self.assertIn("| `random_init` | cosine, 300 steps | 3 / 10 | 3 / 10 |", md)


if __name__ == "__main__":
    unittest.main()
