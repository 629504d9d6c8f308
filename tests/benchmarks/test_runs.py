"""``benchmarks/_runs.py``: run folders claimed by their settings, the best validation read from a training log."""

from __future__ import annotations

import math
import sys
import tempfile
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

from _runs import MARKER, best_validation, claim_run_dir, describe_machine, trained_seconds  # noqa: E402


class TestClaimRunDir(unittest.TestCase):
    """A run folder is reused only by the run that made it; one made with other settings moves aside."""

    def test_claim(self):
        with tempfile.TemporaryDirectory() as tmp:
            run = Path(tmp) / "runs" / "dwp_n5_seed1"
            run.mkdir(parents=True)
            (run / "model.pt").write_text("made before the check")
            claim_run_dir(run, {"split_seed": 1})
            self.assertFalse((run / "model.pt").exists())  # unknown origin: not reused
            self.assertTrue((run / MARKER).is_file())
            moved = list((Path(tmp) / "replaced").glob("dwp_n5_seed1-*"))
            self.assertEqual(len(moved), 1)
            self.assertEqual((moved[0] / "model.pt").read_text(), "made before the check")  # kept, not deleted
            (run / "model.pt").write_text("this run")
            claim_run_dir(run, {"split_seed": 1})
            self.assertEqual((run / "model.pt").read_text(), "this run")  # the same settings: resumed
            claim_run_dir(run, {"split_seed": 0})
            self.assertFalse((run / "model.pt").exists())
            self.assertEqual(len(list((Path(tmp) / "replaced").iterdir())), 2)  # side by side, never nested


class TestBestValidation(unittest.TestCase):
    """The last ``Key metric`` line of Ignite's checkpoint logging wins; a log without one gives ``(nan, -1)``."""

    def test_last_line(self):
        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp) / "train.log"
            log.write_text("INFO - Key metric: val_mean_dice best value: 0.25 at epoch: 3\n"
                           "INFO - Epoch[6] Metrics -- loss_data: 0.3\n"
                           "INFO - Key metric: val_mean_dice best value: 0.5 at epoch: 6\n")
            self.assertEqual(best_validation(log), (0.5, 6))
            log.write_text("INFO - Epoch[1] Metrics -- loss_data: 0.3\n")
            dice, epoch = best_validation(log)
            self.assertTrue(math.isnan(dice))
            self.assertEqual(epoch, -1)
            dice, epoch = best_validation(Path(tmp) / "missing.log")
            self.assertTrue(math.isnan(dice))


class TestTrainedSeconds(unittest.TestCase):
    """A resumed run's training time is the trainer's last ``Engine run finished`` line, not the evaluator's."""

    def test_trainer_line(self):
        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp) / "train.log"
            log.write_text(
                "- ignite.engine.engine.SupervisedTrainer - INFO - Engine run finished. Time taken: 00:01:00.000\n"
                "- ignite.engine.engine.SupervisedEvaluator - INFO - Engine run finished. Time taken: 00:00:00.786\n"
                "- ignite.engine.engine.SupervisedTrainer - INFO - Engine run finished. Time taken: 01:22:43.575\n")
            self.assertAlmostEqual(trained_seconds(log), 3600 + 22 * 60 + 43.575)
            log.write_text("- SupervisedEvaluator - INFO - Engine run finished. Time taken: 00:00:00.786\n")
            self.assertIsNone(trained_seconds(log))
            self.assertIsNone(trained_seconds(Path(tmp) / "missing.log"))


class TestDescribeMachine(unittest.TestCase):
    def test_names_device_and_workers(self):
        text = describe_machine("cpu", 2)
        self.assertIn("device cpu, 2 run(s) side by side", text)
        self.assertRegex(text, r"load average [0-9.]+ at the start")


if __name__ == "__main__":
    unittest.main()
