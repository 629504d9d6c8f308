"""``benchmarks/train_modes.py``: validation Dice against training seconds, parsed from finetune training logs."""

from __future__ import annotations

import math
import sys
import tempfile
import unittest
from pathlib import Path

from .._quick_chain import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

from train_modes import best_so_far, parse_log, write_results  # noqa: E402

LOG = """\
2026-12-01 10:19:52,219 - ignite.engine.engine.SupervisedEvaluator - INFO - Engine run resuming from iteration 0
2026-12-01 10:20:00,832 - INFO - Epoch[1] Metrics -- val_mean_dice: 0.2500
2026-12-01 10:20:00,858 - ignite.engine.engine.SupervisedEvaluator - INFO - Epoch[1] Complete. Time taken: 00:00:08.500
2026-12-01 10:20:00,858 - INFO - Epoch[1] Metrics -- loss_aux: 0.5772 loss_data: 1.1355
2026-12-01 10:20:00,938 - ignite.engine.engine.SupervisedTrainer - INFO - Epoch[1] Complete. Time taken: 00:00:30.000
2026-12-01 10:20:10,000 - ignite.engine.engine.SupervisedTrainer - INFO - Epoch[2] Complete. Time taken: 00:00:20.000
2026-12-01 10:20:36,129 - INFO - Epoch[3] Metrics -- val_mean_dice: 0.1000
2026-12-01 10:20:36,131 - ignite.engine.engine.SupervisedEvaluator - INFO - Epoch[3] Complete. Time taken: 00:00:10.000
2026-12-01 10:20:36,191 - ignite.engine.engine.SupervisedTrainer - INFO - Epoch[3] Complete. Time taken: 00:01:15.500
"""


class TestParseLog(unittest.TestCase):
    def test_validation_time_is_left_out(self):
        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp) / "run.log"
            log.write_text(LOG)
            rows = parse_log(log, steps_per_epoch=3)
            self.assertEqual(parse_log(Path(tmp) / "missing.log", 3), [])
        self.assertEqual([r["epoch"] for r in rows], [1, 3])
        self.assertEqual([r["step"] for r in rows], [3, 9])
        # epoch 1: 30 - 8.5; epoch 2: 20 (no validation); epoch 3: 75.5 - 10
        self.assertEqual([r["train_seconds"] for r in rows], [21.5, 107.0])
        self.assertTrue(math.isnan(best_so_far(rows, 21.0)))  # before the first validation
        self.assertEqual(best_so_far(rows, 200.0), 0.25)  # the best so far, not the last

    def test_results_pair_the_modes_by_seed(self):
        rows = []
        for seed in range(3):
            for variant, speed, dice in (("gaussian_prior/local", 2.0, 0.5), ("gaussian_prior/sampled", 1.0, 0.4)):
                for k in range(1, 5):
                    rows.append({"variant": variant, "seed": seed, "epoch": k, "step": 3 * k,
                                 "train_seconds": 3 * k * speed, "val_dice": dice + 0.01 * (k + seed)})
        with tempfile.TemporaryDirectory() as tmp:
            write_results(rows, Path(tmp), "a machine", "Some settings.")
            md = (Path(tmp) / "train_modes.md").read_text()
            self.assertGreater((Path(tmp) / "train_modes.png").stat().st_size, 5_000)
        self.assertIn("Some settings. Machine: a machine.", md)
        # the horizon is the shortest run (12 s): Dice at 3, 6 and 12 s; local validates first at 6 s
        self.assertIn("| `gaussian_prior/local` | 3 | 2.000 ± 0.000 | – | 0.520 ± 0.010 | 0.530 ± 0.010 | 0.550 ± 0.010 |",
                      md)
        self.assertIn("| `gaussian_prior/local` − `gaussian_prior/sampled` | +1.000 [+1.000, +1.000] | – | "
                      "+0.090 [+0.090, +0.090] | +0.080 [+0.080, +0.080] |", md)


if __name__ == "__main__":
    unittest.main()
