"""End to end: pretrain -> prior -> finetune with every method, evaluate, inference, resume, DDP, hand-off errors."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import pytest
import torch
from parameterized import parameterized

from monai_dwp.data.phantoms import make_phantom_dataset
from monai_dwp.losses import DeepWeightPrior
from monai_dwp.handlers import load_swag
from monai_dwp.transfer import METHODS

from ._utils import REPO, TINY, _args, check, config_files, run_bundle

# one worker builds the module's source nets and prior (``pytest -n 2 --dist loadgroup``, see the Makefile)
pytestmark = pytest.mark.xdist_group("bundles")

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
    # a source run with SWAG moments over its last two epochs (method swag_prior), its rate annealed by a cosine over
    # the first epoch to a tenth, where it stays while SWAG records
    check(run_bundle("dwp_pretrain", "train", dataset_dir=ROOT / "ms", output_dir=ROOT / "swag",
                     **dict(TINY, epochs=3, swag_start_epoch=2, lr_schedule="cosine", lr_final_fraction=0.1)))
    check(run_bundle("dwp_prior", "train", source_ckpts=f"{ROOT}/pretrain/seed*/model.pt", output_dir=ROOT / "prior",
                     epochs=1, device="cpu", hidden_channels="[4,8,16]", batch_size=4096))


def tearDownModule() -> None:  # noqa: N802
    if _TMP is not None:
        _TMP.cleanup()


def _finetune(method: str, output: str = "finetune", configs: tuple[str, ...] = ("train",), **extra):
    kwargs = dict(TINY, dataset_dir=ROOT / "tumour", ckpt_dir=ROOT / output / f"{method}_n3_seed0", method=method,
                  num_train_cases=3,
                  source_ckpt=ROOT / "pretrain" / "seed0" / "model.pt", prior_ckpt=ROOT / "prior" / "dwp_prior.pt",
                  swag_ckpt=ROOT / "swag" / "seed0" / "swag.pt", max_kernels=256,
                  prior_refresh_interval=1)
    kwargs.update(extra)
    return run_bundle("dwp_finetune", *configs, **kwargs)


class TestPretrainAndPrior(unittest.TestCase):
    def test_pretrain_writes_a_checkpoint_per_seed(self):
        for seed in (0, 1):
            folder = ROOT / "pretrain" / f"seed{seed}"
            self.assertTrue((folder / "model.pt").is_file())
            self.assertTrue((folder / "checkpoint_epoch=1.pt").is_file())
            self.assertTrue(any((folder / "tensorboard").iterdir()))

    def test_pretrain_collects_swag_moments(self):
        out_dir = ROOT / "swag"  # trained in setUpModule
        mean, variance = load_swag(out_dir / "seed0" / "swag.pt")
        last = torch.load(out_dir / "seed0" / "checkpoint_epoch=3.pt", weights_only=True)
        self.assertEqual(last["swag"]["count"], 2)  # epochs 2 and 3, saved with the training state (resume)
        # the cosine ended where SWAG began (epoch 1's steps) and the rate stayed at a tenth of 1e-3 since
        steps = last["trainer"]["epoch_length"]
        self.assertEqual(last["lr_scheduler"]["anneal_epochs"], steps)
        self.assertEqual(last["lr_scheduler"]["last_epoch"], 3 * steps)
        for epoch in (2, 3):
            state = torch.load(out_dir / "seed0" / f"checkpoint_epoch={epoch}.pt", weights_only=True)
            self.assertAlmostEqual(state["optimizer"]["param_groups"][0]["lr"], 1e-4, places=12)
        self.assertEqual(set(mean), {k for k, v in last["model"].items() if v.is_floating_point()})
        self.assertTrue(all(bool((v >= 0).all()) for v in variance.values()))
        self.assertGreater(max(float(v.max()) for v in variance.values()), 0.0)  # the weights moved

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

    def test_prior_evaluate_writes_the_report_again(self):
        """evaluate.json scores the saved prior without refitting it: the held-out ELBO and the prior report (with
        the spread of its draws) in ``eval/``, the hand-off ``dwp_prior.pt`` untouched."""
        before = (ROOT / "prior" / "dwp_prior.pt").stat().st_mtime_ns
        check(run_bundle("dwp_prior", "train", "evaluate", source_ckpts=f"{ROOT}/pretrain/seed*/model.pt",
                         output_dir=ROOT / "prior", device="cpu", hidden_channels="[4,8,16]", batch_size=4096))
        report = (ROOT / "prior" / "eval" / "prior_report.md").read_text()
        self.assertIn("effective dims: kernels / decoder means / prior samples", report)
        self.assertEqual(report.count("\n| "), 7 + 1)
        self.assertTrue((ROOT / "prior" / "eval" / "metrics.csv").is_file())
        self.assertEqual((ROOT / "prior" / "dwp_prior.pt").stat().st_mtime_ns, before)

    def test_prior_inference_samples_kernels(self):
        check(run_bundle("dwp_prior", "inference", output_dir=ROOT / "prior", num_kernels=5))
        samples = torch.load(ROOT / "prior" / "prior_samples.pt", weights_only=True)
        self.assertEqual(sorted(samples), [f"group{g}" for g in range(7)])
        self.assertEqual(tuple(samples["group0"].shape), (5, 3, 3, 3))

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
        if method in ("dwp", "gaussian_prior", "source_gaussian", "swag_prior"):
            kl = float(re.search(r"loss_kl: ([0-9.e+]+)", out).group(1))
            self.assertGreater(kl, 0.0)
        if method in ("source_gaussian", "swag_prior"):  # centred on (the SWAG mean of) the source weights
            self.assertIn("posterior locations start at the source network", out)
        self.assertEqual("DWP initialisation:" in out, method in ("dwp", "dwp_init"))

    def test_dwp_init_false_from_the_command_line(self):
        out = check(_finetune("dwp", output="no_init", dwp_init="false", amp="False", train_encoder="0"))
        self.assertNotIn("DWP initialisation:", out)  # the string 'false' is not truthy here

    def test_dwp_init_noise_from_the_command_line(self):
        out = check(_finetune("dwp_init", output="noise_init", dwp_init_noise="true"))
        self.assertIn("DWP initialisation: decoder mean + decoder noise;", out)

    def test_source_init_from_the_command_line(self):
        out = check(_finetune("dwp", output="source_init", source_init="true"))
        self.assertIn("posterior locations start at the source network", out)
        self.assertNotIn("DWP initialisation:", out)  # the source start takes the place of the VAE draws
        proc = _finetune("gaussian_prior", output="source_init", source_init="true", source_ckpt=ROOT / "nope.pt")
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("source_ckpt file", proc.stdout + proc.stderr)

    def test_local_training_mode(self):  # the default is "sampled"
        check(_finetune("gaussian_prior", output="local", train_mode="local"))

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
            ("swag_prior", "swag_ckpt", r"swag_ckpt file '.*missing.pt' does not exist; make it first with `python -m "
                                        r"monai.bundle run --config_file bundles/dwp_pretrain/configs/train.json --seed 0 "
                                        r"--swag_start_epoch 61`"),
        ]
    )
    def test_missing_handoff(self, method, key, pattern):
        proc = _finetune(method, output="missing", **{key: ROOT / "missing.pt"})
        self.assertNotEqual(proc.returncode, 0)
        self.assertRegex(proc.stdout + proc.stderr, pattern)
        self.assertFalse((ROOT / "missing").exists())  # stopped before training wrote anything

    def test_non_finite_source_checkpoint(self):
        state = torch.load(ROOT / "pretrain" / "seed0" / "model.pt", weights_only=True)
        name = next(k for k in state if k.endswith("weight") and state[k].ndim == 5 and k.startswith("up"))
        state[name][0, 0, 0, 0, 0] = float("nan")
        torch.save(state, ROOT / "nan_source.pt")
        proc = _finetune("finetune", output="nan", source_ckpt=ROOT / "nan_source.pt")
        self.assertNotEqual(proc.returncode, 0)
        layer = name.rsplit(".", 1)[0]
        self.assertIn(f"before the first training step (iteration 1): non-finite parameters in 1 layer(s): {layer}.",
                      proc.stdout + proc.stderr)
        self.assertFalse(list((ROOT / "nan").rglob("*.pt")))  # nothing saved

    def test_mismatching_source_checkpoint(self):
        bad = ROOT / "bad_source.pt"
        torch.save({"init_conv.weight": torch.zeros(16, 2, 3, 3, 3)}, bad)
        proc = _finetune("finetune", output="bad", source_ckpt=bad)
        self.assertNotEqual(proc.returncode, 0)
        self.assertRegex(proc.stdout + proc.stderr, r"source_ckpt '.*bad_source.pt' does not fit the network: "
                                                    r"'init_conv.weight' has shape \(16, 2, 3, 3, 3\)")


def _kill_at(pattern: str, bundle: str, **overrides) -> str:
    """Start ``bundle``'s train.json and SIGKILL it as soon as a log line matches ``pattern`` (e.g. the first
    iteration of epoch 2: mid-epoch). Returns the output read until then."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_files(bundle, "train"), *_args(overrides)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if re.search(pattern, line):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    proc.stdout.close()
    out = "".join(lines)
    if proc.returncode != -signal.SIGKILL:
        raise AssertionError(f"the run ended before a line matched {pattern!r}:\n{out[-3000:]}")
    return out


def _weights(path: Path, key: str | None = "model") -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state[key] if key else state


class TestKillAndResume(unittest.TestCase):
    """A run killed with SIGKILL mid-epoch and resumed with ``--resume true`` ends as the uninterrupted run."""

    def _compare(self, a: Path, b: Path, epochs: int) -> None:
        last = f"checkpoint_epoch={epochs}.pt"
        self.assertEqual(sorted(p.name for p in b.glob("checkpoint_epoch=*.pt")),
                         [f"checkpoint_epoch={epochs - 1}.pt", last])  # two kept: a kill never leaves none
        wa, wb = _weights(a / last), _weights(b / last)
        self.assertEqual(wa.keys(), wb.keys())
        for name in wa:
            self.assertTrue(torch.equal(wa[name], wb[name]), f"{name} differs after the resume")
        # best-metric bookkeeping restored: same best value and epoch, same model.pt
        self.assertEqual(_weights(a / last, "evaluator"), _weights(b / last, "evaluator"))
        ma, mb = _weights(a / "model.pt", None), _weights(b / "model.pt", None)
        self.assertTrue(all(torch.equal(ma[k], mb[k]) for k in ma))
        self.assertFalse(list(b.glob(".*.tmp")))  # no temporary file left by the kill

    def _tensorboard_steps(self, folder: Path) -> list[list[int]]:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        steps = []
        for events in sorted(folder.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime):
            acc = EventAccumulator(str(events))
            acc.Reload()
            if "train_loss" in acc.Tags()["scalars"]:
                steps.append([e.step for e in acc.Scalars("train_loss")])
        return steps

    def test_finetune(self):
        # a cosine learning rate: the resumed run must also continue the schedule where it stopped
        common = dict(TINY, dataset_dir=ROOT / "tumour", method="gaussian_prior", num_train_cases=3, epochs=3,
                      lr_schedule="cosine")
        check(run_bundle("dwp_finetune", "train", ckpt_dir=ROOT / "uninterrupted" / "gaussian_prior_n3_seed0", **common))
        killed = ROOT / "killed" / "gaussian_prior_n3_seed0"
        # killed right after the first of the 3 iterations of epoch 2
        _kill_at(r"Epoch: 2/3, Iter: 1/3", "dwp_finetune", ckpt_dir=killed, **common)
        out = check(run_bundle("dwp_finetune", "train", ckpt_dir=killed, resume="true", **common))
        self.assertNotIn("Epoch: 1/3", out)
        self._compare(ROOT / "uninterrupted" / "gaussian_prior_n3_seed0", killed, epochs=3)
        # the schedule was stepped per iteration (3 epochs x 3) and annealed to 0, in both runs
        for run in (ROOT / "uninterrupted" / "gaussian_prior_n3_seed0", killed):
            state = torch.load(run / "checkpoint_epoch=3.pt", weights_only=True)
            self.assertEqual(state["lr_scheduler"]["last_epoch"], 9)
            self.assertAlmostEqual(state["optimizer"]["param_groups"][0]["lr"], 0.0, places=12)
        # TensorBoard: the resumed run's curve continues at the step it resumed from instead of restarting at 1
        runs = self._tensorboard_steps(killed / "tensorboard")
        self.assertGreaterEqual(len(runs), 2)
        self.assertEqual(runs[0][0], 1)
        self.assertGreater(runs[-1][0], 1)
        self.assertEqual(runs[-1][-1], 9)  # 3 epochs x 3 iterations

    def test_prior(self):
        common = dict(source_ckpts=f"{ROOT}/pretrain/seed*/model.pt", epochs=3, device="cpu",
                      hidden_channels="[4,8,16]", batch_size=4096)
        check(run_bundle("dwp_prior", "train", output_dir=ROOT / "prior_a", **common))
        # the prior's epochs are a few iterations without an iteration log: killed as epoch 2 starts
        _kill_at(r"SupervisedTrainer - INFO - Epoch\[1\] Complete", "dwp_prior", output_dir=ROOT / "prior_b", **common)
        check(run_bundle("dwp_prior", "train", output_dir=ROOT / "prior_b", resume="true", **common))
        self._compare(ROOT / "prior_a", ROOT / "prior_b", epochs=3)


class TestDeterminism(unittest.TestCase):
    """Two runs of each bundle with the same seed on CPU write bit-identical ``model.pt``."""

    def _same(self, a: Path, b: Path) -> None:
        wa, wb = _weights(a, None), _weights(b, None)
        self.assertEqual(wa.keys(), wb.keys())
        for name in wa:
            self.assertTrue(torch.equal(wa[name], wb[name]), f"{name} differs between two runs with the same seed")

    def test_pretrain(self):
        for out in ("det_pretrain_a", "det_pretrain_b"):
            check(run_bundle("dwp_pretrain", "train", dataset_dir=ROOT / "ms", output_dir=ROOT / out, **TINY))
        self._same(ROOT / "det_pretrain_a" / "seed0" / "model.pt", ROOT / "det_pretrain_b" / "seed0" / "model.pt")

    def test_prior(self):
        for out in ("det_prior_a", "det_prior_b"):
            check(run_bundle("dwp_prior", "train", source_ckpts=f"{ROOT}/pretrain/seed*/model.pt", output_dir=ROOT / out,
                             epochs=1, device="cpu", hidden_channels="[4,8,16]", batch_size=4096))
        self._same(ROOT / "det_prior_a" / "model.pt", ROOT / "det_prior_b" / "model.pt")

    def test_finetune_dwp(self):
        for out in ("det_dwp_a", "det_dwp_b"):
            check(_finetune("dwp", output=out))
        self._same(ROOT / "det_dwp_a" / "dwp_n3_seed0" / "model.pt", ROOT / "det_dwp_b" / "dwp_n3_seed0" / "model.pt")


class TestDistributed(unittest.TestCase):
    def test_two_process_gloo_training(self):
        out = check(_finetune("dwp", output="ddp", configs=("train", "multi_gpu_train"), torchrun=2, device=None,
                              num_val_cases=2, batch_size=2))  # every rank needs a validation case
        folder = ROOT / "ddp" / "dwp_n3_seed0"
        # only rank 0 writes files
        self.assertEqual(sorted(p.name for p in folder.glob("*.pt")), ["checkpoint_epoch=1.pt", "model.pt"])
        events = (folder / "tensorboard").glob("events.out.tfevents.*")
        writers = {re.search(r"\.(\d+)\.\d+$", p.name).group(1) for p in events}
        self.assertEqual(len(writers), 1)  # event files name their process id: one process wrote them
        self.assertEqual(out.count("Epoch[1] Metrics -- val_mean_dice"), 1)  # rank 0 logs the validation
        # ranks draw different weight noise and kernel subsets (the same seed on every rank would average nothing)
        seeds = re.findall(r"rank (\d): weight noise and DWP kernel subsets drawn with seed (\d+)", out)
        self.assertEqual(sorted(r for r, _ in seeds), ["0", "1"])
        self.assertEqual(len({s for _, s in seeds}), 2)

    def test_distributed_equals_single(self):
        """2 gloo ranks and one process: the same global batch and steps, the same ELBO weighting (N is the global
        number of training cases), and after an epoch the same KL up to the different updates."""
        kwargs = dict(num_val_cases=2, batch_size=2)
        single = check(_finetune("gaussian_prior", output="single", **kwargs))
        ddp = check(_finetune("gaussian_prior", output="ddp_gp", configs=("train", "multi_gpu_train"), torchrun=2,
                              device=None, **kwargs))
        weighting = re.compile(r"ELBO per voxel: N = (\d+) training volumes, V̄ = (\d+) voxels per volume, "
                               r"temperature [0-9.]+: KL weight ([0-9.e-]+)")
        self.assertEqual(weighting.findall(single), [("3", *weighting.search(single).groups()[1:])])
        self.assertEqual(set(weighting.findall(ddp)), set(weighting.findall(single)))  # N = 3 on both ranks, not 2
        # 3 cases, global batch 2: two steps per epoch in one process and on each of the two ranks (batch 1 each)
        self.assertIn("Epoch: 1/1, Iter: 2/2", single)
        self.assertIn("Epoch: 1/1, Iter: 2/2", ddp)
        self.assertNotIn("Iter: 3/", ddp)
        # step 1: the same initial weights (rank 0's seed is the single run's; DDP broadcasts rank 0's weights), so
        # the same KL on both ranks and in one process; the data terms differ (other patches and noise per rank)
        step1 = re.compile(r"loss terms at iteration 1: .*loss_kl: ([0-9.e+-]+)")
        kl_single, kl_ranks = step1.findall(single), step1.findall(ddp)
        self.assertEqual(len(kl_single), 1)
        self.assertEqual(kl_ranks, kl_single * 2)
        kl = [float(re.search(r"Metrics -- .*loss_kl: ([0-9.e+]+)", o).group(1)) for o in (single, ddp)]
        self.assertAlmostEqual(kl[1] / kl[0], 1.0, delta=0.01)  # after an epoch
        proc = _finetune("gaussian_prior", output="ddp_odd", configs=("train", "multi_gpu_train"), torchrun=2,
                         device=None, num_val_cases=2, batch_size=3)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("--batch_size 3 is the global batch of all 2 processes and must be divisible by 2", proc.stderr)


if __name__ == "__main__":
    unittest.main()


class TestInferenceErrors(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        check(_finetune("random_init", output="infer_errors"))

    def _infer(self, **extra):
        kwargs = dict(dataset_dir=ROOT / "tumour", ckpt_dir=ROOT / "infer_errors" / "random_init_n3_seed0",
                      method="random_init", spacing="[6.0,6.0,6.0]", patch_size="[16,16,16]", device="cpu", mc_samples=2)
        kwargs.update(extra)
        return run_bundle("dwp_finetune", "inference", **kwargs)

    def test_missing_model(self):
        proc = self._infer(ckpt_dir=ROOT / "infer_errors" / "random_init_n4_seed0")
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
