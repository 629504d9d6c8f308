"""End to end: pretrain -> prior -> finetune with every method, evaluate, inference, resume, DDP, hand-off errors."""

from __future__ import annotations

import re
import shutil
import tempfile
import unittest
from pathlib import Path

import torch
from parameterized import parameterized

from monai_dwp.data.phantoms import make_phantom_dataset
from monai_dwp.losses import DeepWeightPrior
from monai_dwp.transfer import METHODS

from ._utils import TINY, check, run_bundle

_TMP: tempfile.TemporaryDirectory | None = None
ROOT: Path


def setUpModule() -> None:  # noqa: N802
    """Tiny source and target phantoms, two source networks and a prior, shared by every test here."""
    global _TMP, ROOT
    _TMP = tempfile.TemporaryDirectory()
    ROOT = Path(_TMP.name)
    make_phantom_dataset(ROOT / "ms", disease="ms", num_cases=4, num_test=1, spacing=6.0, progress=False)
    make_phantom_dataset(ROOT / "tumour", disease="tumour", num_cases=5, num_test=1, spacing=6.0, progress=False)
    for seed in (0, 1):
        check(run_bundle("dwp_pretrain", "train", dataset_dir=ROOT / "ms", output_dir=ROOT / "pretrain", seed=seed, **TINY))
    check(run_bundle("dwp_prior", "train", source_ckpts=f"{ROOT}/pretrain/seed*/model.pt", output_dir=ROOT / "prior",
                     epochs=1, device="cpu", hidden_channels="[4,8,16]", batch_size=4096))


def tearDownModule() -> None:  # noqa: N802
    if _TMP is not None:
        _TMP.cleanup()


def _finetune(method: str, output: str = "finetune", configs: tuple[str, ...] = ("train",), **extra):
    kwargs = dict(TINY, dataset_dir=ROOT / "tumour", output_dir=ROOT / output, method=method, num_train_cases=3,
                  source_ckpt=ROOT / "pretrain" / "seed0" / "model.pt", prior_ckpt=ROOT / "prior" / "dwp_prior.pt",
                  max_kernels=256)
    kwargs.update(extra)
    return run_bundle("dwp_finetune", *configs, **kwargs)


class TestPretrainAndPrior(unittest.TestCase):
    def test_pretrain_writes_a_checkpoint_per_seed(self):
        for seed in (0, 1):
            folder = ROOT / "pretrain" / f"seed{seed}"
            self.assertTrue((folder / "model.pt").is_file())
            self.assertTrue((folder / "checkpoint_epoch=1.pt").is_file())
            self.assertTrue(any((folder / "tensorboard").iterdir()))

    def test_pretrain_evaluate_and_inference(self):
        out = check(run_bundle("dwp_pretrain", "train", "evaluate", dataset_dir=ROOT / "ms", output_dir=ROOT / "pretrain",
                               **TINY))
        self.assertIn("val_mean_dice", out)
        summary = ROOT / "pretrain" / "seed0" / "eval" / "val_mean_dice_summary.csv"
        self.assertTrue(summary.is_file())
        check(run_bundle("dwp_pretrain", "inference", dataset_dir=ROOT / "ms", output_dir=ROOT / "pretrain",
                         spacing="[6.0,6.0,6.0]", patch_size="[16,16,16]", device="cpu"))
        preds = list((ROOT / "pretrain" / "seed0" / "predictions").glob("*_seg.nii.gz"))
        self.assertEqual(len(preds), 1)

    def test_prior_checkpoint_and_picture(self):
        prior = DeepWeightPrior.load(ROOT / "prior" / "dwp_prior.pt")
        self.assertEqual(len(prior.vaes), 7)
        self.assertEqual(len(prior.layer_groups), 25)  # every 3x3x3 layer of the appendix-B DWPUNet
        self.assertEqual(set(prior.layer_scales), set(prior.layer_groups))  # one scale per layer
        self.assertEqual(len(prior.extra["source_ckpts"]), 2)
        self.assertIn("val_elbo_group6", prior.extra["val_elbo_per_group"])
        self.assertEqual([row["group"] for row in prior.extra["prior_report"]], list(range(7)))
        self.assertGreater((ROOT / "prior" / "kernels.png").stat().st_size, 10_000)
        # the held-out report against the Gaussian baselines
        report = (ROOT / "prior" / "prior_report.md").read_text()
        self.assertIn("full-cov Gaussian", report)
        self.assertEqual(report.count("\n| "), 7 + 1)  # header and one row per group (the separator starts "|-")
        self.assertGreater((ROOT / "prior" / "prior_report.png").stat().st_size, 10_000)

    def test_resume_continues_at_the_next_epoch(self):
        out_dir = ROOT / "resume"
        check(run_bundle("dwp_pretrain", "train", dataset_dir=ROOT / "ms", output_dir=out_dir, **TINY))
        args = dict(TINY, epochs=2)
        out = check(run_bundle("dwp_pretrain", "train", dataset_dir=ROOT / "ms", output_dir=out_dir, resume="true", **args))
        self.assertIn("Epoch: 2/2", out)
        self.assertNotIn("Epoch: 1/2", out)
        self.assertTrue((out_dir / "seed0" / "checkpoint_epoch=2.pt").is_file())
        # `--resume false` arrives from the command line as the string 'false' and must not resume
        out = check(run_bundle("dwp_pretrain", "train", dataset_dir=ROOT / "ms", output_dir=out_dir, resume="false",
                               **args))
        self.assertIn("Epoch: 1/2", out)
        shutil.rmtree(out_dir / "seed0")
        proc = run_bundle("dwp_pretrain", "train", dataset_dir=ROOT / "ms", output_dir=out_dir, resume="true", **TINY)
        self.assertNotEqual(proc.returncode, 0)
        self.assertRegex(proc.stdout + proc.stderr, r"--resume true but '.*seed0' holds no checkpoint_epoch=N.pt")

    def test_missing_source_checkpoints(self):
        proc = run_bundle("dwp_prior", "train", source_ckpts=f"{ROOT}/nowhere/*.pt", output_dir=ROOT / "prior_x",
                          device="cpu")
        self.assertNotEqual(proc.returncode, 0)
        self.assertRegex(proc.stdout + proc.stderr, r"source_ckpts \[.*nowhere/\*\.pt'\] matches no file; make them first "
                                                    r"with `python -m monai.bundle run --config_file "
                                                    r"bundles/dwp_pretrain/configs/train.json")


class TestFinetune(unittest.TestCase):
    @parameterized.expand([(m,) for m in METHODS])
    def test_every_method_trains(self, method):
        out = check(_finetune(method))
        folder = ROOT / "finetune" / f"{method}_n3_seed0"
        self.assertTrue((folder / "model.pt").is_file())
        self.assertIn("val_mean_dice", out)
        self.assertIn("loss_data", out)
        if method in ("dwp", "gaussian_prior"):
            kl = float(re.search(r"loss_kl: ([0-9.e+]+)", out).group(1))
            self.assertGreater(kl, 0.0)
        self.assertEqual("DWP initialisation:" in out, method in ("dwp", "dwp_init"))

    def test_dwp_init_false_from_the_command_line(self):
        out = check(_finetune("dwp", output="no_init", dwp_init="false", amp="False", train_encoder="0"))
        self.assertNotIn("DWP initialisation:", out)  # the string 'false' is not truthy here

    def test_sampled_training_mode(self):
        check(_finetune("gaussian_prior", output="sampled", train_mode="sampled"))

    def test_evaluate(self):
        check(_finetune("dwp_init", output="eval"))
        out = check(_finetune("dwp_init", output="eval", configs=("train", "evaluate")))
        self.assertIn("val_mean_dice", out)
        eval_dir = ROOT / "eval" / "dwp_init_n3_seed0" / "eval"
        self.assertTrue((eval_dir / "val_mean_dice_raw.csv").is_file())
        for name in ("calibration.csv", "calibration_summary.csv", "reliability.png", "metrics.csv"):
            self.assertTrue((eval_dir / name).is_file(), name)
        self.assertRegex((eval_dir / "summary.md").read_text(), r"\| Dice ↑ \| [0-9.]+ \|")
        self.assertTrue(list((eval_dir / "predictions").glob("*_mutual_information.nii.gz")))

    @parameterized.expand(
        [
            ("dwp", "prior_ckpt", r"prior_ckpt file '.*missing.pt' does not exist; make it first with `python -m "
                                  r"monai.bundle run --config_file bundles/dwp_prior/configs/train.json`"),
            ("finetune", "source_ckpt", r"source_ckpt file '.*missing.pt' does not exist; make it first with `python -m "
                                        r"monai.bundle run --config_file bundles/dwp_pretrain/configs/train.json"),
        ]
    )
    def test_missing_handoff(self, method, key, pattern):
        proc = _finetune(method, output="missing", **{key: ROOT / "missing.pt"})
        self.assertNotEqual(proc.returncode, 0)
        self.assertRegex(proc.stdout + proc.stderr, pattern)
        self.assertFalse((ROOT / "missing").exists())  # stopped before training wrote anything

    def test_mismatching_source_checkpoint(self):
        bad = ROOT / "bad_source.pt"
        torch.save({"init_conv.weight": torch.zeros(16, 2, 3, 3, 3)}, bad)
        proc = _finetune("finetune", output="bad", source_ckpt=bad)
        self.assertNotEqual(proc.returncode, 0)
        self.assertRegex(proc.stdout + proc.stderr, r"source_ckpt '.*bad_source.pt' does not fit the network: "
                                                    r"'init_conv.weight' has shape \(16, 2, 3, 3, 3\)")


class TestDistributed(unittest.TestCase):
    def test_two_process_gloo_training(self):
        out = check(_finetune("dwp", output="ddp", configs=("train", "multi_gpu_train"), torchrun=2, device=None,
                              num_val_cases=2))  # every rank needs a validation case
        folder = ROOT / "ddp" / "dwp_n3_seed0"
        self.assertEqual(sorted(p.name for p in folder.glob("*.pt")), ["checkpoint_epoch=1.pt", "model.pt"])
        self.assertEqual(out.count("Epoch[1] Metrics -- val_mean_dice"), 1)  # rank 0 logs the validation
        # ranks draw different weight noise and kernel subsets (the same seed on every rank would average nothing)
        seeds = re.findall(r"rank (\d): weight noise and DWP kernel subsets drawn with seed (\d+)", out)
        self.assertEqual(sorted(r for r, _ in seeds), ["0", "1"])
        self.assertEqual(len({s for _, s in seeds}), 2)


if __name__ == "__main__":
    unittest.main()


class TestInferenceErrors(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        check(_finetune("random_init", output="infer_errors"))

    def _infer(self, **extra):
        kwargs = dict(dataset_dir=ROOT / "tumour", output_dir=ROOT / "infer_errors", method="random_init",
                      num_train_cases=3, spacing="[6.0,6.0,6.0]", patch_size="[16,16,16]", device="cpu", mc_samples=2)
        kwargs.update(extra)
        return run_bundle("dwp_finetune", "inference", **kwargs)

    def test_missing_model(self):
        proc = self._infer(num_train_cases=4)
        self.assertNotEqual(proc.returncode, 0)
        self.assertRegex(proc.stdout + proc.stderr, r"model file '.*random_init_n4_seed0/model.pt' does not exist; make "
                                                    r"it first with `python -m monai.bundle run --config_file "
                                                    r"bundles/dwp_finetune/configs/train.json --method random_init`")

    def test_wrong_channels(self):
        proc = self._infer(modality="[0,1]")
        self.assertNotEqual(proc.returncode, 0)
        self.assertRegex(proc.stdout + proc.stderr, r"DWPUNet input has 2 channel\(s\)|in_channels=1")

    def test_not_a_volume(self):
        import nibabel as nib
        import numpy as np

        folder = ROOT / "slices"
        folder.mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(np.zeros((32, 32), np.float32), np.eye(4)), folder / "slice.nii.gz")
        proc = self._infer(input_dir=folder)
        self.assertNotEqual(proc.returncode, 0)
        self.assertRegex(proc.stdout + proc.stderr, r"slice.nii.gz has shape \(32, 32\): the networks segment 3D volumes")
