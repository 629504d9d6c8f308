"""``benchmarks/transfer_plateau.py``: validation curves from training logs and the step where they level off."""

from __future__ import annotations

import csv
import sys
import tempfile
import unittest
from pathlib import Path

from .._quick_chain import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

from transfer_plateau import best_so_far, main, plateau_step, validation_curve  # noqa: E402


def _log(path: Path, dices: list[float], every: int) -> None:
    lines = []
    for k, d in enumerate(dices, start=1):
        lines += [f"2026-01-01 00:00:00,000 - INFO - Epoch[{k * every}] Metrics -- val_mean_dice: {d:.4f} ",
                  f"2026-01-01 00:00:00,000 - INFO - Key metric: val_mean_dice best value: {d} at epoch: {k * every}"]
    path.write_text("\n".join(lines) + "\n")


class TestCurves(unittest.TestCase):
    def test_curve_from_log_in_steps(self):
        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp) / "run_train.log"
            _log(log, [0.2, 0.5, 0.4], every=10)
            self.assertEqual(validation_curve(log, steps_per_epoch=3), [(30, 0.2), (60, 0.5), (90, 0.4)])
            self.assertEqual(validation_curve(Path(tmp) / "missing.log", 3), [])

    def test_best_so_far_and_plateau(self):
        curve = [(100, 0.2), (200, 0.5), (300, 0.4), (400, 0.505)]
        self.assertEqual(best_so_far(curve), [(100, 0.2), (200, 0.5), (300, 0.5), (400, 0.505)])
        self.assertEqual(plateau_step(best_so_far(curve), 0.01), 200)
        self.assertEqual(plateau_step(best_so_far(curve), 0.0), 400)  # still rising at the end: the last step
        with self.assertRaisesRegex(ValueError, "mean_curve is empty"):
            plateau_step([], 0.01)
        with self.assertRaisesRegex(ValueError, "tolerance"):
            plateau_step(curve, -0.1)


class TestMain(unittest.TestCase):
    def test_writes_the_table_from_rows_and_logs(self):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "logs").mkdir()
            rows = []
            for n, seed, dices in ((5, 0, [0.2, 0.4, 0.41]), (5, 1, [0.3, 0.38, 0.39]), (20, 0, [0.3, 0.4, 0.6])):
                rows.append({"method": "random_init", "num_train_cases": n, "seed": seed, "steps": 300,
                             "val_pooled_dice": 0.5})
                _log(root / "logs" / f"random_init_n{n}_seed{seed}_train.log", dices, every=10)
            with (root / "transfer.csv").open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
            md = main(results=str(root), logs=str(root / "logs")).read_text()
            # N = 5: 3 steps per epoch; mean best so far 0.25, 0.39, 0.40 -> within 0.01 of 0.40 at 60 steps
            self.assertIn("| 5 | 2 | 60 | 0.390 | 0.400 | 0.500 ± 0.000 (2) |", md)
            # N = 20: 10 steps per epoch, still rising: the last validation
            self.assertIn("| 20 | 1 | 300 | 0.600 | 0.600 |", md)
            self.assertTrue((root / "transfer_plateau.png").is_file())
            # a budget's column: the last validation at or before it
            md = main(results=str(root), logs=str(root / "logs"), budget=70).read_text()
            self.assertIn("| 5 | 2 | 60 | 0.390 | 0.390 (step 60) | 0.400 | 0.500 ± 0.000 (2) |", md)
            self.assertIn("| 20 | 1 | 300 | 0.600 | – | 0.600 |", md)
            with self.assertRaisesRegex(SystemExit, "--method dwp: no row of it"):
                main(results=str(root), logs=str(root / "logs"), method="dwp")


if __name__ == "__main__":
    unittest.main()
