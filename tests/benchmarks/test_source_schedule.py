"""``benchmarks/source_schedule.py``: source nets at a constant rate against a shorter cosine schedule, paired by
seed."""

from __future__ import annotations

import sys
import tempfile
import unittest
from pathlib import Path

from .._quick_chain import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

from source_schedule import arm_tag, describe_arm, markdown, plot, read_curves, write_curves  # noqa: E402


def _row(arm: str, seed: int, epochs: int, val: float, test: float, seconds: float) -> dict:
    return {"arm": arm, "seed": seed, "epochs": epochs, "best_val_dice": val, "best_epoch": epochs,
            "test_dice": test, "train_seconds": seconds, "seconds_per_epoch": seconds / epochs}


class TestSourceSchedule(unittest.TestCase):
    def test_markdown_pairs_the_schedules_by_seed(self):
        tags = {"baseline": arm_tag("constant", 80, 1e-3), "candidate": arm_tag("cosine", 40, 1e-3, 0.1)}
        self.assertEqual(tags, {"baseline": "constant80_lr0.001", "candidate": "cosine40_lr0.001_f0.1"})
        self.assertEqual(arm_tag("constant", 40, 3e-3), "constant40_lr0.003")
        descriptions = {tags["baseline"]: describe_arm("constant", 80, 1e-3),
                        tags["candidate"]: describe_arm("cosine", 40, 1e-3, 0.1)}
        rows = []
        for seed in range(3):
            rows += [_row(tags["baseline"], seed, 80, 0.70 + 0.01 * seed, 0.75, 480.0),
                     _row(tags["candidate"], seed, 40, 0.69 + 0.01 * seed, 0.74 - 0.01 * seed, 240.0)]
        md = markdown(rows, descriptions, tags, "a machine", [0, 1, 2])
        self.assertIn("# Source U-Nets: `cosine40_lr0.001_f0.1` against `constant80_lr0.001`", md)
        self.assertIn("Machine: a machine.", md)
        self.assertIn("the baseline `constant80_lr0.001`, 80 epochs at the constant rate 0.001; the candidate "
                      "`cosine40_lr0.001_f0.1`, 40 epochs with `lr_schedule cosine`: the rate falls by a cosine from "
                      "0.001 to 0.1 of it over the first 20 epochs and stays there while SWAG records", md)
        self.assertIn("| 1 | 0.710 (80) / 0.700 (40) | 0.750 / 0.730 | 480.0 / 240.0 |", md)
        self.assertIn("| best validation Dice | 0.710 ± 0.008 (3) | 0.700 ± 0.008 (3) | -0.010 [-0.010, -0.010] |", md)
        self.assertIn("| test Dice | 0.750 ± 0.000 (3) | 0.730 ± 0.008 (3) | -0.020 [-0.045, +0.005] |", md)
        self.assertIn("| training seconds | 480.0 ± 0.0 (3) | 240.0 ± 0.0 (3) | -240.0 [-240.0, -240.0] |", md)

    def test_curves_round_trip_and_figure(self):
        curves = {("constant80_lr0.001", 0): [{"epoch": 4, "train_seconds": 20.0, "val_dice": 0.3},
                                    {"epoch": 8, "train_seconds": 41.5, "val_dice": 0.5}],
                  ("cosine40_lr0.001_f0.1", 0): [{"epoch": 4, "train_seconds": 19.0, "val_dice": 0.35}]}
        with tempfile.TemporaryDirectory() as tmp:
            write_curves(Path(tmp) / "curves.csv", curves)
            self.assertEqual(read_curves(Path(tmp) / "curves.csv"), curves)
            plot(curves, {"baseline": "constant80_lr0.001", "candidate": "cosine40_lr0.001_f0.1"}, [0],
                 Path(tmp) / "curves.png")
            self.assertGreater((Path(tmp) / "curves.png").stat().st_size, 1000)


if __name__ == "__main__":
    unittest.main()
