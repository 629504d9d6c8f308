"""The README's main job in --quick mode, end to end, and its skip / failure behaviour."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import pytest

from monai_dwp.pipeline import PipelineSettings, PipelineStageError, StageRunner, fit_prior, is_stale, run_pipeline
from monai_dwp.transfer import METHODS

from ._quick_chain import copy_bundles, quick_chain, quiet_env

# the tests that share the cached quick chain run in one worker (``--dist loadgroup``, see the Makefile)
pytestmark = pytest.mark.xdist_group("quick_chain")


class TestPipeline(unittest.TestCase):
    def test_quick_pipeline_writes_the_report_then_skips(self):
        chain = quick_chain()
        repo, out, elsewhere, cmd, env = chain.repo, chain.out, chain.elsewhere, list(chain.cmd), quiet_env()
        # from a working directory that is not the repository's
        self.assertEqual(chain.first.returncode, 0, chain.first.stdout[-3000:] + chain.first.stderr[-3000:])
        report = (out / "report.md").read_text()
        for method in METHODS:
            self.assertRegex(report, rf"\| `{method}` \| [0-9.]+ \| [0-9.]+ \|")
        self.assertIn("![montage](montage.png)", report)
        self.assertGreater((out / "montage.png").stat().st_size, 10_000)
        for stage in ("data_ms", "pretrain_seed1", "prior", "finetune_dwp", "evaluate_dwp"):
            self.assertTrue((out / "logs" / f"{stage}.log").is_file(), stage)
        # the bundles' own layout: data beside bundles/, hand-offs and the dwp model in the bundles' models/
        for path in ("data/tumour/dataset.json", "bundles/dwp_pretrain/models/seed0/model.pt",
                     "bundles/dwp_pretrain/models/seed0/swag.pt",
                     "bundles/dwp_pretrain/models/seed1/model.pt", "bundles/dwp_prior/models/dwp_prior.pt",
                     "bundles/dwp_finetune/models/model.pt", "bundles/dwp_finetune/models/eval/metrics.csv"):
            self.assertTrue((repo / path).is_file(), path)
        self.assertTrue((out / "runs" / "gaussian_prior_n3_seed0" / "model.pt").is_file())
        self.assertEqual(list(elsewhere.iterdir()), [])
        # a second run finds every output and skips every stage
        again = subprocess.run(cmd, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
        self.assertEqual(again.returncode, 0, again.stderr[-3000:])
        self.assertNotIn("[run ]", again.stdout + again.stderr)
        self.assertIn("[skip] finetune_dwp_init", again.stdout + again.stderr)
        # a training killed part-way leaves model.pt (best so far) but not its last checkpoint: it runs again,
        # and so does its evaluation; the finished stages stay skipped
        (out / "runs" / "random_init_n3_seed0" / "checkpoint_epoch=1.pt").unlink()
        third = subprocess.run(cmd, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
        self.assertEqual(third.returncode, 0, third.stderr[-3000:])
        ran = re.findall(r"\[run \] (\w+):", third.stdout + third.stderr)
        self.assertEqual(ran, ["finetune_random_init", "evaluate_random_init"])
        # afterwards the README's bundle command runs with no path override (only the quick sizes)
        used_by = [sys.executable, "-m", "monai.bundle", "run", "--config_file",
                   "bundles/dwp_finetune/configs/train.json", "--device", "cpu", "--epochs", "1",
                   "--num_train_cases", "3", "--num_val_cases", "1", "--spacing", "[6,6,6]",
                   "--patch_size", "[16,16,16]", "--batch_size", "1", "--max_kernels", "256",
                   "--prior_refresh_interval", "1"]
        before = (repo / "bundles/dwp_finetune/models/model.pt").stat().st_mtime_ns
        proc = subprocess.run(used_by, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
        self.assertEqual(proc.returncode, 0, proc.stdout[-3000:] + proc.stderr[-3000:])
        self.assertGreater((repo / "bundles/dwp_finetune/models/model.pt").stat().st_mtime_ns, before)

    def test_used_by_command_on_a_fresh_clone(self):
        """The README's bundle command on a checkout with no data and no hand-offs: one line naming what is
        missing, the key to override and the command that makes it; never a traceback."""
        with tempfile.TemporaryDirectory() as tmp:
            repo = Path(tmp)
            copy_bundles(repo)
            env = dict(os.environ, PYTHONWARNINGS="ignore")
            cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "bundles/dwp_finetune/configs/train.json"]
            proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
            self.assertNotEqual(proc.returncode, 0)
            self.assertNotIn("Traceback", proc.stderr)
            last = proc.stderr.strip().splitlines()[-1]
            self.assertRegex(last, r"^monai_dwp: dataset_dir 'data/tumour' is not a directory; make it with "
                                   r"`python -m monai_dwp make-data --disease tumour .* --output-dir data/tumour`")
            make = [sys.executable, "-m", "monai_dwp", "make-data", "--disease", "tumour", "--num-cases", "9",
                    "--num-test", "1", "--spacing", "6", "--output-dir", "data/tumour"]
            subprocess.run(make, cwd=repo, env=env, capture_output=True, check=True, timeout=300)
            proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
            self.assertNotEqual(proc.returncode, 0)
            self.assertNotIn("Traceback", proc.stderr)
            last = proc.stderr.strip().splitlines()[-1]
            self.assertRegex(last, r"^monai_dwp: prior_ckpt file 'bundles/dwp_prior/models/dwp_prior.pt' does not "
                                   r"exist; make it first with `python -m monai.bundle run --config_file "
                                   r"bundles/dwp_prior/configs/train.json`, which needs the source net of .*--seed 0"
                                   r".*--seed 1.*--prior_ckpt PATH.*make demo")

    def test_failing_stage_names_the_command(self):
        settings = dataclasses.replace(PipelineSettings.quick(), patch_size=12, num_source_cases=2, seeds=(0,))
        with tempfile.TemporaryDirectory() as tmp:
            bundles = copy_bundles(Path(tmp))
            with self.assertRaises(PipelineStageError) as ctx:
                run_pipeline(tmp, settings=settings, methods=["random_init"], device="cpu", bundles_dir=bundles)
            message = str(ctx.exception)
            self.assertIn("stage 'pretrain_seed0' failed", message)
            self.assertIn("reproduce it with:", message)
            self.assertIn(f"-m monai.bundle run --config_file {bundles}/dwp_pretrain/configs/train.json --bundle_root "
                          f"{bundles}/dwp_pretrain", message)
            self.assertTrue((Path(tmp) / "data" / "ms" / "dataset.json").is_file())
            self.assertTrue((Path(tmp) / "logs" / "pretrain_seed0.log").is_file())

    def test_source_nets_without_swag_are_not_retrained_silently(self):
        from monai_dwp.pipeline import make_handoffs

        settings = dataclasses.replace(PipelineSettings.quick(), seeds=(0,))
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            source = root / "bundles" / "dwp_pretrain" / "models" / "seed0"
            source.mkdir(parents=True)
            for name in ("model.pt", "checkpoint_epoch=2.pt"):  # a finished source run of before SWAG
                (source / name).touch()
            runner = StageRunner(root / "out", "cpu", False, root / "bundles")
            with self.assertRaisesRegex(ValueError, r"method swag_prior needs the SWAG moments \(swag.pt\) of the "
                                                    r"source networks, but \['.*seed0'\] were trained without them"):
                make_handoffs(runner, settings, root / "data", swag=True)
            self.assertFalse((root / "data").exists())  # refused before any stage ran
            with self.assertRaisesRegex(ValueError, r"swag_epochs must lie in \[2, pretrain_epochs=2\]"):
                make_handoffs(runner, dataclasses.replace(settings, swag_epochs=1), root / "data", swag=False)

    def test_source_stages_of_another_seed(self):
        # what make_handoffs trains, for any seeds: a benchmark trains a net of another seed beside the scale's
        from monai_dwp.pipeline import source_stages

        settings = dataclasses.replace(PipelineSettings.quick(), seeds=(2,))
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            runner = StageRunner(root / "out", "cpu", False, root / "bundles", preload=False)
            [(name, cmd, outputs)] = source_stages(runner, settings, root / "data", source_dir=root / "sources",
                                                   tag="extra")
            self.assertEqual(name, "pretrain_seed2_extra")
            self.assertEqual(outputs, [root / "sources" / "seed2" / n for n in ("checkpoint_epoch=2.pt", "model.pt",
                                                                                 "swag.pt")])
            text = " ".join(map(str, cmd))
            for part in ("--seed 2", f"--dataset_dir {root / 'data' / 'ms'}", f"--ckpt_dir {root / 'sources' / 'seed2'}",
                         "--epochs 2", "--swag_start_epoch 1"):
                self.assertIn(part, text)
            [(_, _, outputs)] = source_stages(runner, settings, root / "data", swag=False)
            self.assertEqual(outputs[-1], root / "bundles" / "dwp_pretrain" / "models" / "seed2" / "model.pt")

    def test_chains_run_in_order_side_by_side_and_stop_on_a_failure(self):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            runner = StageRunner(root, None, False, root)

            def touch(name: str, ok: bool = True) -> tuple[str, list[str], list[Path]]:
                code = f"open({str(root / name)!r}, 'w').close()" if ok else "raise SystemExit(3)"
                return name, [sys.executable, "-c", code], [root / name]

            done: list[tuple[int, int]] = []
            chains = [[touch("a1"), touch("a2")], [touch("b1"), touch("b2")], [touch("c1")]]
            runner.run_chains(chains, workers=2, on_done=lambda i, seconds: done.append((i, len(seconds))))
            self.assertEqual(sorted(done), [(0, 2), (1, 2), (2, 1)])
            self.assertTrue(all((root / n).is_file() for n in ("a1", "a2", "b1", "b2", "c1")))
            # a failing stage stops its chain and raises; no chain starts after it
            chains = [[touch("x1", ok=False), touch("x2")], [touch("z1")], [touch("z2")]]
            with self.assertRaisesRegex(PipelineStageError, r"stage 'x1' failed"):
                runner.run_chains(chains, workers=1)
            self.assertFalse(any((root / n).exists() for n in ("x2", "z1", "z2")))
            # a stage that runs again makes the rest of its chain run again, even where outputs exist
            (root / "a1").unlink()
            stamp = (root / "a2").stat().st_mtime_ns
            ran: list[tuple[int, list[float]]] = []
            runner.run_chains([[touch("a1"), touch("a2")], [touch("b1"), touch("b2")]],
                              on_done=lambda i, seconds: ran.append((i, seconds)))
            seconds = dict(ran)
            self.assertTrue(all(t > 0 for t in seconds[0]))  # a1 and a2 ran
            self.assertEqual(seconds[1], [0.0, 0.0])  # b1 and b2 skipped
            self.assertGreaterEqual((root / "a2").stat().st_mtime_ns, stamp)

    def test_a_prior_older_than_its_source_nets_is_stale(self):
        with tempfile.TemporaryDirectory() as tmp:
            prior, source = Path(tmp) / "dwp_prior.pt", Path(tmp) / "model.pt"
            self.assertFalse(is_stale(prior, [source]))  # nothing made yet: the stage runs anyway
            source.write_text("net")
            prior.write_text("prior")
            os.utime(source, (1_000, 1_000))
            os.utime(prior, (2_000, 2_000))
            self.assertFalse(is_stale(prior, [source, Path(tmp) / "missing.pt"]))
            os.utime(source, (3_000, 3_000))  # the source net was trained again
            self.assertTrue(is_stale(prior, [source]))

    def test_fit_prior_variant_goes_to_its_own_folder_and_is_refitted_when_stale(self):
        class Recording(StageRunner):
            def run(self, name, cmd, outputs, bar=None, threads=None, force=False):
                self.calls.append((name, list(cmd), list(outputs), force))
                return True

        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            runner = Recording(root / "work", None, False, root / "bundles")
            runner.calls = []
            s = dataclasses.replace(PipelineSettings.quick(), seeds=(0, 1))
            source = root / "bundles" / "dwp_pretrain" / "models" / "seed0" / "model.pt"
            # the bundles' own prior: no output_dir override
            self.assertEqual(fit_prior(runner, s), root / "bundles" / "dwp_prior" / "models" / "dwp_prior.pt")
            name, cmd, outputs, force = runner.calls[-1]
            self.assertEqual(name, "prior")
            self.assertNotIn("--output_dir", cmd)
            self.assertIn(f"['{source}','{source.parent.parent / 'seed1' / 'model.pt'}']", cmd)
            self.assertEqual(cmd[cmd.index("--epochs") + 1], str(s.prior_epochs))
            # a variant: its override and its own folder; stale (refitted) once a source net is newer
            variant = root / "work" / "priors" / "v"
            ckpt = fit_prior(runner, s, output_dir=variant, name="prior_v", latent_size=16)
            self.assertEqual(ckpt, variant / "dwp_prior.pt")
            name, cmd, outputs, force = runner.calls[-1]
            self.assertEqual((name, outputs, force), ("prior_v", [ckpt], False))
            self.assertEqual(cmd[cmd.index("--output_dir") + 1], str(variant))
            self.assertEqual(cmd[cmd.index("--latent_size") + 1], "16")
            ckpt.parent.mkdir(parents=True)
            ckpt.write_text("prior")
            source.parent.mkdir(parents=True)
            source.write_text("net")
            os.utime(ckpt, (1_000, 1_000))
            fit_prior(runner, s, output_dir=variant, name="prior_v", latent_size=16)
            self.assertTrue(runner.calls[-1][3])

    def test_default_settings_match_the_bundles_defaults(self):
        # the main job passes these to the bundles explicitly; a bundle default changed alone would leave make demo
        # on the old setting
        import json

        repo = Path(__file__).resolve().parents[1]
        finetune = json.loads((repo / "bundles" / "dwp_finetune" / "configs" / "train.json").read_text())
        s = PipelineSettings.default()
        self.assertEqual(s.prior_refresh_interval, finetune["prior_refresh_interval"])
        self.assertEqual(s.prior_control_variate, finetune["prior_control_variate"])
        self.assertEqual(s.max_kernels, finetune["max_kernels"])

    def test_default_job_is_the_papers_protocol_in_small(self):
        # make demo: one source net, its prior, the paper's six methods; the quick chain (tests) every method on two
        from monai_dwp.transfer import PAPER_METHODS

        default, quick = PipelineSettings.default(), PipelineSettings.quick()
        self.assertEqual(default.seeds, (0,))
        self.assertEqual(default.methods, PAPER_METHODS)
        self.assertEqual(set(METHODS) - set(PAPER_METHODS), {"source_gaussian", "swag_prior"})
        self.assertEqual((quick.seeds, quick.methods), ((0, 1), METHODS))

    def test_unknown_method(self):
        with self.assertRaisesRegex(ValueError, r"methods \['bayes'\] are not fine-tuning methods"):
            run_pipeline("unused", quick=True, methods=["bayes"])

    def test_methods_all_and_default(self):
        from monai_dwp.pipeline import _resolve_methods

        self.assertEqual(_resolve_methods(["all"], ("dwp",)), list(METHODS))
        self.assertEqual(_resolve_methods(None, ("dwp", "finetune")), ["dwp", "finetune"])
        self.assertEqual(_resolve_methods(["swag_prior"], ("dwp",)), ["swag_prior"])
        with self.assertRaisesRegex(ValueError, r"methods \['all'\] are not fine-tuning methods.*or pass 'all'"):
            _resolve_methods(["all", "dwp"], ("dwp",))


if __name__ == "__main__":
    unittest.main()
