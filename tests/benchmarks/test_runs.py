"""``benchmarks/_runs.py``: run folders claimed by their settings, the best validation read from a training log."""

from __future__ import annotations

import math
import sys
import tempfile
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

from monai_dwp.pipeline import StageRunner  # noqa: E402

from _runs import (  # noqa: E402
    MARKER,
    best_validation,
    case_calibration,
    case_dice,
    claim_run_dir,
    demo_evaluation,
    describe_machine,
    evaluation_machine,
    evaluator_seconds,
    mean_test_dice,
    reuse_source_run,
    trained_seconds,
    write_rows,
)


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



class TestEvaluationOutputs(unittest.TestCase):
    """What the finetune bundle's evaluate.json writes, read back per case; a finished demo's networks located."""

    def test_per_case_dice_calibration_and_evaluator_seconds(self):
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "val_mean_dice_raw.csv").write_text(
                "filename,class0,mean\n/data/imagesTr/a.nii.gz,0.5,0.5\n/data/imagesTr/b.nii.gz,0.25,0.25\n")
            self.assertEqual(case_dice(Path(tmp)), {"a.nii.gz": 0.5, "b.nii.gz": 0.25})
            (Path(tmp) / "calibration.csv").write_text(
                "filename,ece,fg_ece,auc_entropy,auc_mutual_information,n_voxels\n"
                "/data/imagesTr/a.nii.gz,0.01,0.02,0.9,0.8,100\n")
            self.assertEqual(case_calibration(Path(tmp)), {"a.nii.gz": {"ece": 0.01, "fg_ece": 0.02, "auc_entropy": 0.9,
                                                                        "auc_mutual_information": 0.8}})
            log = Path(tmp) / "evaluate.log"
            log.write_text("x - ignite.engine.engine.SupervisedEvaluator - INFO - Epoch[1] Complete. "
                           "Time taken: 00:01:25.500\n")
            self.assertEqual(evaluator_seconds(log), 85.5)
            log.write_text("nothing\n")
            with self.assertRaisesRegex(ValueError, r"no evaluator time in .*evaluate.log"):
                evaluator_seconds(log)

    def test_rows_and_machine_of_a_study(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "study.csv"
            write_rows(path, [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}], ["a", "b"])
            self.assertEqual(path.read_text().splitlines(), ["a,b", "1,x", "2,y"])
            self.assertEqual([p.name for p in Path(tmp).iterdir()], ["study.csv"])  # no temporary file left
        text = evaluation_machine(2, (1.5, 1.0, 0.5))
        self.assertRegex(text, r"^[0-9]+-core CPU \(.+\), PyTorch [0-9.]+.*, 2 evaluation\(s\) side by side with "
                               r"[0-9]+ thread\(s\) each; load average 1.50 when this call started, [0-9.]+ when it ended$")

    def test_demo_evaluation(self):
        from monai_dwp.pipeline import PipelineSettings

        s = PipelineSettings.default()
        with tempfile.TemporaryDirectory() as tmp:
            demo = Path(tmp)
            with self.assertRaisesRegex(SystemExit, r"lacks .*dwp_finetune/models/model.pt.*run `make demo` there"):
                demo_evaluation(demo, ["dwp", "finetune"], s)
            for rel in ("bundles/dwp_finetune/models/model.pt", "outputs/pipeline/runs/finetune_n5_seed0/model.pt",
                        "bundles/dwp_pretrain/models/seed0/model.pt", "bundles/dwp_prior/models/dwp_prior.pt"):
                (demo / rel).parent.mkdir(parents=True, exist_ok=True)
                (demo / rel).write_text("")
            ckpts, common = demo_evaluation(demo, ["dwp", "finetune"], s)
            self.assertEqual(ckpts, {"dwp": demo / "bundles/dwp_finetune/models",
                                     "finetune": demo / "outputs/pipeline/runs/finetune_n5_seed0"})
            self.assertEqual(common["swag_ckpt"], demo / "bundles/dwp_pretrain/models/seed0/swag.pt")
            self.assertEqual(common["patch_size"], [s.patch_size] * 3)
            self.assertNotIn("mc_samples", common)


class TestSourceRuns(unittest.TestCase):
    """A test Dice read from an evaluation's metrics; a source net of the pipeline taken into a study."""

    def test_mean_test_dice_and_reuse_messages(self):
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "metrics.csv").write_text("val_mean_dice,0.75\n")
            self.assertEqual(mean_test_dice(Path(tmp)), 0.75)
            (Path(tmp) / "metrics.csv").write_text("other,1\n")
            with self.assertRaisesRegex(ValueError, r"no val_mean_dice in .*metrics.csv"):
                mean_test_dice(Path(tmp))
            runner = StageRunner(Path(tmp) / "work", "cpu", False, REPO / "bundles", preload=False)
            run = Path(tmp) / "models" / "seed0"
            with self.assertRaisesRegex(SystemExit, r"give seed<S>=<folder> with a finished 80-epoch run"):
                reuse_source_run(runner, f"seed0={run}", Path(tmp) / "logs", 80, "float32")
            run.mkdir(parents=True)
            (run / "checkpoint_epoch=80.pt").write_bytes(b"x")
            with self.assertRaisesRegex(SystemExit, r"no training log .*pretrain_seed0.log; pass --reuse_logs"):
                reuse_source_run(runner, f"seed0={run}", Path(tmp) / "logs", 80, "float32")
            (Path(tmp) / "logs").mkdir()
            (Path(tmp) / "logs" / "pretrain_seed0.log").write_text("log")
            reuse_source_run(runner, f"seed0={run}", Path(tmp) / "logs", 80, "float32")
            self.assertTrue((Path(tmp) / "work" / "runs" / "float32_seed0" / "checkpoint_epoch=80.pt").is_file())
            self.assertEqual((runner.log_dir / "train_float32_seed0.log").read_text(), "log")


if __name__ == "__main__":
    unittest.main()
