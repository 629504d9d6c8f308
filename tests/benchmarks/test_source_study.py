"""``benchmarks/_source_study.py``: the runs of a study of the source U-Nets, their rows and the report's tables."""

from __future__ import annotations

import sys
import tempfile
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

from monai_dwp.pipeline import StageRunner  # noqa: E402

from _source_study import PIPELINE, paired_tables, source_chain, source_row, study_seeds  # noqa: E402


class TestSourceStudy(unittest.TestCase):
    def test_seeds_need_the_dataset(self):
        with tempfile.TemporaryDirectory() as tmp:
            self.assertEqual(study_seeds(tmp, "0,1,2"), [0, 1, 2])
            self.assertEqual(study_seeds(tmp, (3, 4)), [3, 4])  # fire's tuple
            with self.assertRaisesRegex(ValueError, r"seeds must be ≥ 0, got -1"):
                study_seeds(tmp, "-1")
        with self.assertRaisesRegex(SystemExit, r"--data_dir '/no/such' is not a directory; make it with `python -m "
                                                r"monai_dwp make-data --disease ms"):
            study_seeds("/no/such", "0")

    def test_a_run_is_a_training_then_its_evaluation_and_a_row(self):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            runner = StageRunner(root, "cpu", False, REPO / "bundles", preload=False)
            common = {"dataset_dir": root / "ms", "num_val_cases": 4}
            (train, evaluate) = source_chain(runner, "cosine_seed1", 1, 40, 4, common, "eval_x",
                                             train={"lr_schedule": "cosine"}, evaluate={"compute_dtype": "float32"})
            run = root / "runs" / "cosine_seed1"
            self.assertEqual(train[0], "train_cosine_seed1")
            self.assertEqual(train[2], [run / "checkpoint_epoch=40.pt", run / "model.pt"])
            text = " ".join(map(str, train[1]))
            for part in ("--seed 1", "--epochs 40", "--val_interval 4", f"--swag_start_epoch {40 - PIPELINE.swag_epochs + 1}",
                         f"--ckpt_dir {run}", "--lr_schedule cosine", "--num_val_cases 4"):
                self.assertIn(part, text)
            self.assertNotIn("compute_dtype", text)
            self.assertEqual((evaluate[0], evaluate[2]), ("evaluate_cosine_seed1", [run / "eval_x" / "metrics.csv"]))
            self.assertIn("--compute_dtype float32", " ".join(map(str, evaluate[1])))
            self.assertNotIn("lr_schedule", " ".join(map(str, evaluate[1])))
            # what the finished run left: its training log and its evaluation's metrics
            (run / "eval_x").mkdir(parents=True)
            (run / "eval_x" / "metrics.csv").write_text("val_mean_dice,0.75\n")
            (runner.log_dir / "train_cosine_seed1.log").write_text(
                "INFO - Key metric: val_mean_dice best value: 0.625 at epoch: 36\n"
                "ignite.engine.engine.SupervisedTrainer - INFO - Engine run finished. Time taken: 00:04:00.000\n")
            self.assertEqual(source_row(runner, "cosine_seed1", 40, "eval_x"),
                             {"best_val_dice": 0.625, "best_epoch": 36, "test_dice": 0.75, "train_seconds": 240.0,
                              "seconds_per_epoch": 6.0})

    def test_paired_tables(self):
        first = {s: {"best_val_dice": 0.7, "best_epoch": 80, "test_dice": "0.75", "train_seconds": 480.0,
                     "seconds_per_epoch": 6.0} for s in (0, 1)}
        second = {s: {"best_val_dice": 0.6 + 0.02 * s, "best_epoch": 40, "test_dice": "0.70", "train_seconds": 240.0,
                      "seconds_per_epoch": 6.0} for s in (0, 1)}
        lines = paired_tables(first, second, [0, 1], ("a", "b"), (("best_val_dice", "best validation Dice"),
                                                                   ("train_seconds", "training seconds")))
        self.assertEqual(lines[0], "| seed | best validation Dice (epoch): a / b | test Dice: a / b | training s: a / b |")
        self.assertIn("| 1 | 0.700 (80) / 0.620 (40) | 0.750 / 0.700 | 480.0 / 240.0 |", lines)
        self.assertIn("| measure | a | b | b − a |", lines)
        self.assertIn("| training seconds | 480.0 ± 0.0 (2) | 240.0 ± 0.0 (2) | -240.0 [-240.0, -240.0] |", lines)
        self.assertTrue(any(line.startswith("| best validation Dice | 0.700 ± 0.000 (2) | 0.610 ± 0.010 (2) | -0.090 [")
                            for line in lines))


if __name__ == "__main__":
    unittest.main()
