"""``benchmarks/transfer.py --scale tiny``: the whole protocol through the bundles, resumable, with its outputs."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import pytest
import torch

from .._quick_chain import REPO, copy_bundles, quick_chain

# the tests that share the cached quick chain run in one worker (``--dist loadgroup``, see the Makefile)
pytestmark = pytest.mark.xdist_group("quick_chain")


class TestTransferBenchmark(unittest.TestCase):
    def test_tiny_scale_runs_and_resumes(self):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            # the quick chain's bundles with its source nets and prior: the benchmark reuses hand-offs that exist
            chain = quick_chain()
            self.assertEqual(chain.first.returncode, 0, chain.first.stderr[-3000:])
            copy_bundles(root, with_models=chain.repo / "bundles")
            cmd = [sys.executable, str(REPO / "benchmarks" / "transfer.py"), "--scale", "tiny", "--device", "cpu",
                   "--work_dir", str(root / "work"), "--results", str(root / "results"),
                   "--bundles_dir", str(root / "bundles")]
            env = dict(os.environ, PYTHONWARNINGS="ignore")
            proc = subprocess.run(cmd + ["--workers", "2", "--ablations", "1"], cwd=root, env=env,
                                  capture_output=True, text=True, timeout=900)
            self.assertEqual(proc.returncode, 0, proc.stdout[-3000:] + proc.stderr[-3000:])
            rows = list(csv.DictReader((root / "results" / "transfer.csv").open()))
            self.assertEqual(sorted((r["method"], r["num_train_cases"], r["seed"]) for r in rows),
                             [("dwp", "2", "0"), ("dwp", "3", "0"), ("dwp_no_dwp_init", "2", "0"),
                              ("dwp_prior_one_source", "2", "0"), ("dwp_source_epochs_quarter", "2", "0"),
                              ("random_init", "2", "0"),
                              ("random_init", "3", "0")])
            for r in rows:
                self.assertEqual((r["scale"], r["steps"], r["lr_schedule"]), ("tiny", "2", "constant"))
                self.assertEqual(r["split_seed"], r["seed"])  # each seed its own cases
                self.assertTrue(0.0 <= float(r["val_mean_dice"]) <= 1.0, r)
                self.assertTrue(0.0 <= float(r["val_pooled_dice"]) <= 1.0, r)
                self.assertGreaterEqual(int(r["best_epoch"]), 1, r)
                self.assertGreater(float(r["total_seconds"]), 0.0)
                # the hand-offs a run read: the prior for dwp, nothing for random_init
                self.assertRegex(r["handoffs"], r"^[0-9a-f]{12}$" if r["method"].startswith("dwp") else r"^none$")
            # one prior for dwp and its finetune variant, another for the prior's variant
            fingerprints = {r["method"]: r["handoffs"] for r in rows}
            self.assertEqual(fingerprints["dwp"], fingerprints["dwp_no_dwp_init"])
            self.assertNotEqual(fingerprints["dwp"], fingerprints["dwp_source_epochs_quarter"])
            md = (root / "results" / "transfer.md").read_text()
            self.assertIn("Kuzina, Egorov & Burnaev (2019)", md)
            # the whole command's wall time, hand-offs included (they were found made: the quick chain's)
            self.assertRegex(md, r"\n- started [0-9-]+ [0-9:]+ UTC: 7 runs in [0-9]+ min, [0-9.]+ min of it for the "
                                 r"hand-offs \(the source nets and prior found made\), 2 run\(s\) side by side\.\n")
            self.assertIn("| method | N = 2 | N = 3 |", md)
            # one seed: a paired difference without an interval
            self.assertRegex(md, r"\| `random_init` \| [+-][0-9.]+ \(1 seed\) \| [+-][0-9.]+ \(1 seed\) \|")
            self.assertRegex(md, r"\| `dwp` \| (\*\*)?[0-9.]+ ± [0-9.]+ \(1\)(\*\*)? \|")
            # the ablation: its own table against dwp, chosen on validation
            self.assertIn("## Ablations of `dwp`, chosen on the validation split", md)
            self.assertRegex(md, r"\| `dwp_no_dwp_init` \| `dwp`, `dwp_init=False` \| [0-9.]+ ± [0-9.]+ \(1\) \| [+-][0-9.]+ "
                                 r"\(1 seed\) \|")
            self.assertRegex(md, r"Chosen on the validation split among the `dwp` variants: "
                                 r"\*\*`dwp(_no_dwp_init|_source_epochs_quarter)?`\*\*")
            log = (root / "work" / "logs" / "dwp_no_dwp_init_n2_seed0_train.log").read_text()
            self.assertIn("--dwp_init False", log)
            self.assertIn("--split_seed 0", log)
            # the source variant: its own source nets (2 epochs, a quarter of 2 but SWAG's minimum) in its own folder,
            # its prior fitted to them, read by its run only
            sources = root / "work" / "sources" / "dwp_source_epochs_quarter"
            self.assertTrue((sources / "seed0" / "checkpoint_epoch=2.pt").is_file())
            pretrain = (root / "work" / "logs" / "pretrain_seed0_dwp_source_epochs_quarter.log").read_text()
            self.assertIn(f"--ckpt_dir {sources / 'seed0'}", pretrain)
            self.assertIn(f"--dataset_dir {root / 'work' / 'data' / 'ms'}", pretrain)
            variant = root / "work" / "priors" / "dwp_source_epochs_quarter" / "dwp_prior.pt"
            self.assertTrue(variant.is_file())
            prior = (root / "work" / "logs" / "prior_dwp_source_epochs_quarter.log").read_text()
            self.assertIn(f"> source_ckpts: ['{sources / 'seed0' / 'model.pt'}']", prior)  # the bundle's input summary
            self.assertIn(f"--prior_ckpt {variant}",
                          (root / "work" / "logs" / "dwp_source_epochs_quarter_n2_seed0_train.log").read_text())
            self.assertNotIn(str(variant), (root / "work" / "logs" / "dwp_n2_seed0_train.log").read_text())
            self.assertRegex(md, r"\| `dwp_source_epochs_quarter` \| `dwp`, prior fitted to source nets trained for 2 "
                                 r"epochs \(main prior: 2\) \|")
            # the prior of one source net: seed 0's kernels only, in its own folder, read by its run (the tiny scale
            # has one source net, so its epochs stay the main prior's; their scaling: the unit test below)
            one = root / "work" / "priors" / "dwp_prior_one_source" / "dwp_prior.pt"
            prior = (root / "work" / "logs" / "prior_dwp_prior_one_source.log").read_text()
            self.assertRegex(prior, r"> source_ckpts: \['[^',]*/bundles/dwp_pretrain/models/seed0/model.pt'\]")
            self.assertIn("> epochs: 1\n", prior)
            self.assertTrue(one.is_file())
            self.assertIn(f"--prior_ckpt {one}",
                          (root / "work" / "logs" / "dwp_prior_one_source_n2_seed0_train.log").read_text())
            self.assertRegex(md, r"\| `dwp_prior_one_source` \| `dwp`, prior fitted to 1 source net\(s\) for 1 epochs "
                                 r"\(main prior: 1 nets, 1 epochs\) \|")
            self.assertGreater((root / "results" / "transfer.png").stat().st_size, 5_000)
            # the hand-offs in the bundles' models/ were reused, the target phantoms made
            log = proc.stdout + proc.stderr
            self.assertIn("[skip] pretrain_seed0", log)
            self.assertIn("[skip] prior", log)
            self.assertTrue((root / "work" / "data" / "tumour" / "dataset.json").is_file())
            # the source phantoms are not made for source nets that exist, but for the variant's
            self.assertIn("[skip] data_ms: the source networks it would train exist", log)
            self.assertIn("[done] data_ms", log)
            # a second call, for a subset of the methods and sizes, finds every row and runs nothing; the results
            # files still report every method and N of the budget
            again = subprocess.run(cmd + ["--workers", "2", "--methods", "random_init", "--sizes", "2", "--ablations",
                                          "0"], cwd=root, env=env, capture_output=True, text=True, timeout=300)
            self.assertEqual(again.returncode, 0, again.stderr[-3000:])
            self.assertNotIn("[run ]", again.stdout + again.stderr)
            self.assertEqual(len(list(csv.DictReader((root / "results" / "transfer.csv").open()))), 7)

            def unloaded(text: str) -> str:
                return re.sub(r"load average [0-9.]+", "load average", text)

            self.assertEqual(unloaded((root / "results" / "transfer.md").read_text()), unloaded(md))
            # the recipe study: a cosine learning rate on the same phantoms, beside the benchmark's own rows
            budget = subprocess.run(
                [sys.executable, str(REPO / "benchmarks" / "transfer_budget.py"), "--scale", "tiny", "--device", "cpu",
                 "--work_dir", str(root / "budget"), "--results", str(root / "results"),
                 "--bundles_dir", str(root / "bundles"), "--data_dir", str(root / "work" / "data"), "--workers", "2"],
                cwd=root, env=env, capture_output=True, text=True, timeout=900)
            self.assertEqual(budget.returncode, 0, budget.stdout[-3000:] + budget.stderr[-3000:])
            rows = list(csv.DictReader((root / "results" / "transfer_budget" / "cosine_2" / "transfer.csv").open()))
            self.assertEqual([(r["method"], r["num_train_cases"], r["lr_schedule"]) for r in rows],
                             [("random_init", "2", "cosine")])
            self.assertIn("--lr_schedule cosine",
                          (root / "budget" / "cosine_2" / "logs" / "random_init_n2_seed0_train.log").read_text())
            md = (root / "results" / "transfer_budget.md").read_text()
            self.assertRegex(md, r"\| `random_init` \| constant, 2 steps \| [0-9.]+ ± [0-9.]+ \(1\) \|")
            self.assertRegex(md, r"\| `random_init` \| cosine, 2 steps \| [+-][0-9.]+ \(1 seed\) \| [+-][0-9.]+ "
                                 r"\(1 seed\) \|")
            self.assertFalse((root / "budget" / "data").exists())  # the benchmark's phantoms reused (--data_dir)


class TestDescribeSwag(unittest.TestCase):
    def test_names_the_epochs_averaged(self):
        sys.path.insert(0, str(REPO / "benchmarks"))
        from transfer import describe_swag

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "seed0" / "swag.pt"
            self.assertEqual(describe_swag(path), "")
            path.parent.mkdir()
            torch.save({"format": "monai_dwp.swag/1", "count": 20, "start_epoch": 81, "mean": {}, "sq_mean": {}}, path)
            self.assertIn("over its epochs 81–100 (20 epochs, `seed0/swag.pt`)", describe_swag(path))
            self.assertNotIn("continue", describe_swag(path, pretrain_epochs=100))
            self.assertIn("Those epochs continue the 80-epoch source run", describe_swag(path, pretrain_epochs=80))


class TestMixedHandoffs(unittest.TestCase):
    def test_rows_from_two_priors_are_flagged(self):
        sys.path.insert(0, str(REPO / "benchmarks"))
        from transfer import SCALES, handoff_fingerprint, write_markdown

        with tempfile.TemporaryDirectory() as tmp:
            a, b = Path(tmp) / "a.pt", Path(tmp) / "b.pt"
            a.write_bytes(b"one prior")
            b.write_bytes(b"another prior")
            prints = [handoff_fingerprint({"prior_ckpt": p}) for p in (a, b, a)]
            self.assertEqual(prints[0], prints[2])
            self.assertNotEqual(prints[0], prints[1])
            rows = [{"method": m, "num_train_cases": "2", "seed": str(seed), "split_seed": str(seed), "epochs": "2",
                     "best_epoch": "1", "best_val_dice": "0.5", "val_pooled_dice": "0.5", "handoffs": h}
                    for m, seed, h in (("dwp", 0, prints[0]), ("dwp", 1, prints[1]), ("random_init", 0, "none"),
                                       ("random_init", 1, "none"))]
            write_markdown(rows, "tiny", SCALES["tiny"], Path(tmp) / "transfer.md")
            md = (Path(tmp) / "transfer.md").read_text()
            self.assertIn("**Mixed hand-offs:** the rows of `dwp` were trained from more than one set", md)
            rows[1]["handoffs"] = prints[0]
            write_markdown(rows, "tiny", SCALES["tiny"], Path(tmp) / "transfer.md")
            self.assertNotIn("Mixed hand-offs", (Path(tmp) / "transfer.md").read_text())


class TestAppendRow(unittest.TestCase):
    def test_old_header_is_migrated(self):
        sys.path.insert(0, str(REPO / "benchmarks"))
        from transfer import append_row

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "transfer.csv"
            path.write_text("method,seed,steps,val_pooled_dice\nrandom_init,1,300,0.5\n")  # before two new columns
            append_row(path, {"method": "dwp", "seed": 2, "split_seed": 2, "steps": 300, "lr_schedule": "cosine",
                              "val_pooled_dice": 0.6})
            rows = list(csv.DictReader(path.open()))
            self.assertEqual(rows[0], {"method": "random_init", "seed": "1", "split_seed": "0", "steps": "300",
                                       "lr_schedule": "constant", "val_pooled_dice": "0.5"})
            self.assertEqual(rows[1]["lr_schedule"], "cosine")
            self.assertEqual(rows[1]["split_seed"], "2")
            path.write_text("method,colour\nrandom_init,red\n")
            with self.assertRaisesRegex(ValueError, r"has columns this benchmark does not write \(\['colour'\]\)"):
                append_row(path, {"method": "dwp"})


class TestAblationTable(unittest.TestCase):
    """Each variant is paired with the method it varies; the choice uses validation Dice, never the test's."""

    def test_pairs_and_choice(self):
        sys.path.insert(0, str(REPO / "benchmarks"))
        from transfer import SCALES, _ablation_table

        def row(method, seed, val, test):
            return {"method": method, "num_train_cases": "5", "seed": str(seed), "best_val_dice": str(val),
                    "val_pooled_dice": str(test), "ece": "0.01"}

        rows = []
        for seed in range(3):
            rows += [row("dwp", seed, 0.30, 0.40), row("gaussian_prior", seed, 0.40, 0.50),
                     # better on validation, worse on test: still the choice
                     row("dwp_temperature_0.1", seed, 0.35, 0.30 + 0.01 * seed),
                     row("dwp_no_dwp_init", seed, 0.32, 0.60),
                     row("gaussian_prior_source_init", seed, 0.60, 0.70 + 0.01 * seed)]
        rows.append(row("dwp_source_init", 0, 0.90, 0.90))  # one seed of three: shown, not chosen
        lines = _ablation_table(rows, SCALES["cpu"], 5)
        text = "\n".join(lines)
        table = lines[:next(i for i, line in enumerate(lines) if line.startswith("Chosen"))]
        by_name = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in table
                   if line.startswith("| `")}
        # test Dice against its own method: 0.70–0.72 − gaussian_prior's 0.50, not − dwp's 0.40
        self.assertTrue(by_name["`gaussian_prior_source_init`"][4].startswith("+0.210 ["))
        self.assertTrue(by_name["`dwp_no_dwp_init`"][4].startswith("+0.200 ["))
        self.assertEqual(by_name["`dwp_no_dwp_init`"][2], "+0.020 [+0.020, +0.020]")  # validation, paired
        self.assertEqual(by_name["`dwp`"][2], "–")  # a reference is not paired with itself
        self.assertIn("among the `dwp` variants: **`dwp_temperature_0.1`**", text)
        self.assertEqual(by_name["`dwp_source_init`"][1], "0.900 ± 0.000 (1)")
        self.assertIn("among the `gaussian_prior` variants: **`gaussian_prior_source_init`**", text)
        # a chosen variant meets every method of the main table on the test set, paired by seed
        against = text.split("`dwp_temperature_0.1` − each method of the main table at N = 5")[1].split("Chosen")[0]
        self.assertIn("| `dwp` | -0.090 [-0.115, -0.065] |", against)
        self.assertIn("| `gaussian_prior` | -0.190 [-0.215, -0.165] |", against)
        self.assertNotIn("| `dwp_temperature_0.1` |", against)
        self.assertIn("`gaussian_prior_source_init` − each method of the main table at N = 5", text)

    def test_a_prior_variant_names_its_fit(self):
        sys.path.insert(0, str(REPO / "benchmarks"))
        from transfer import SCALES, _ablation_table

        rows = [{"method": m, "num_train_cases": "10", "seed": "0", "best_val_dice": "0.3", "val_pooled_dice": "0.4",
                 "ece": "0.01"} for m in ("dwp", "dwp_prior_latent_16")]
        text = "\n".join(_ablation_table(rows, SCALES["cpu"], 10))
        self.assertIn("### N = 10", text)
        self.assertIn("| `dwp_prior_latent_16` | `dwp`, prior fitted with `latent_size=16` |", text)

    def test_a_prior_of_fewer_source_nets_takes_as_many_steps(self):
        sys.path.insert(0, str(REPO / "benchmarks"))
        from transfer import SCALES, _ablation_table, source_count_settings

        h = SCALES["cpu"].handoffs
        one = source_count_settings(h, 1)
        self.assertEqual((one.seeds, one.prior_epochs), (h.seeds[:1], h.prior_epochs * len(h.seeds)))
        self.assertEqual(source_count_settings(h, len(h.seeds)), h)
        for bad in (0, len(h.seeds) + 1):
            with self.assertRaisesRegex(ValueError, r"count must lie in \[1, 2\] \(the scale's source nets\)"):
                source_count_settings(h, bad)
        rows = [{"method": m, "num_train_cases": "5", "seed": "0", "best_val_dice": "0.3", "val_pooled_dice": "0.4",
                 "ece": "0.01"} for m in ("dwp", "dwp_prior_one_source")]
        text = "\n".join(_ablation_table(rows, SCALES["cpu"], 5))
        self.assertIn("| `dwp_prior_one_source` | `dwp`, prior fitted to 1 source net(s) for 30 epochs (main prior: 2 "
                      "nets, 15 epochs) |", text)

    def test_another_source_net_is_a_check_never_a_choice(self):
        sys.path.insert(0, str(REPO / "benchmarks"))
        from transfer import ABLATIONS, SCALES, SOURCE_SEED_ABLATIONS, _ablation_table, choose_variant, source_seed_handoffs

        self.assertLessEqual(set(SOURCE_SEED_ABLATIONS), set(ABLATIONS))
        self.assertEqual(ABLATIONS["dwp_source_init_temperature_0.1_source_seed2"],
                         ABLATIONS["dwp_source_init_temperature_0.1"])  # the variant itself, from another net

        handoffs = {"source_ckpt": Path("/h/sources/seed0/model.pt"), "swag_ckpt": Path("/h/sources/seed0/swag.pt")}
        self.assertEqual(source_seed_handoffs(handoffs, (0, 1), 1),
                         {"source_ckpt": Path("/h/sources/seed1/model.pt"), "swag_ckpt": Path("/h/sources/seed1/swag.pt")})
        with self.assertRaisesRegex(ValueError, r"source seed 2 is not one of the scale's source nets \(seeds \(0, 1\)\)"):
            source_seed_handoffs(handoffs, (0, 1), 2)
        rows = [{"method": m, "num_train_cases": "5", "seed": str(seed), "best_val_dice": str(val),
                 "val_pooled_dice": "0.7", "ece": "0.01"}
                for m, val in (("finetune", 0.6), ("finetune_source_seed1", 0.7)) for seed in (0, 1)]
        text = "\n".join(_ablation_table(rows, SCALES["cpu"], 5))
        self.assertIn("| `finetune_source_seed1` | `finetune`, started from source net seed 1 (main table: seed 0) | "
                      "0.700 ± 0.000 (2) | +0.100 [+0.100, +0.100] |", text)
        # higher on validation, but another draw of the source net is not a setting to choose
        self.assertIsNone(choose_variant(rows, ["finetune", "finetune_source_seed1"], "finetune", 5))
        self.assertNotIn("Chosen on the validation split", text)

    def test_every_override_is_a_finetune_bundle_setting(self):
        """An ablation's overrides reach ``monai.bundle run`` as ``--key value``: a key the finetune bundle does not
        define would be a silent no-op there, so the variant would rerun its method under another name."""
        import json

        sys.path.insert(0, str(REPO / "benchmarks"))
        from transfer import ABLATIONS

        config = json.loads((REPO / "bundles" / "dwp_finetune" / "configs" / "train.json").read_text())
        for name, (method, overrides) in ABLATIONS.items():
            with self.subTest(ablation=name):
                self.assertIn(method, config["priors"] | {"random_init": 0, "finetune": 0, "finetune_frozen": 0})
                self.assertLessEqual(set(overrides), set(config), f"{name}: not a setting of train.json")
        self.assertEqual(ABLATIONS["dwp_refresh_4"], ("dwp", {"prior_refresh_interval": 4}))

    def test_ablation_sizes_must_be_sizes_run(self):
        sys.path.insert(0, str(REPO / "benchmarks"))
        from transfer import main

        with tempfile.TemporaryDirectory() as tmp:
            with self.assertRaisesRegex(SystemExit, r"--ablation_sizes \[10\] are not among the sizes run "
                                                    r"\(--sizes\): \(5,\)"):
                main(scale="cpu", work_dir=tmp, sizes="5", ablation_sizes="10")


class TestTargetPatch(unittest.TestCase):
    """The target runs' patch may differ from the source nets'; every scale's patch fits the U-Net's encoder."""

    def test_patch_of_each_scale(self):
        sys.path.insert(0, str(REPO / "benchmarks"))
        import dataclasses

        from transfer import SCALES

        from monai_dwp.networks.nets import DWPUNet

        tiny = SCALES["tiny"]
        self.assertEqual(tiny.target_patch, tiny.handoffs.patch_size)  # None: the source nets' patch
        self.assertEqual(dataclasses.replace(tiny, patch_size=8).target_patch, 8)
        self.assertEqual(SCALES["cpu"].target_patch, 16)
        self.assertEqual(SCALES["cpu"].handoffs.patch_size, 24)  # the source nets keep theirs
        for name, scale in SCALES.items():
            for patch in (scale.target_patch, scale.handoffs.patch_size):
                self.assertEqual(patch % DWPUNet.downsample_factor, 0, f"--scale {name}: patch {patch}")


class TestHandoffPlaces(unittest.TestCase):
    """A scale at another spacing than the bundles' default makes hand-offs of its own, from phantoms of its own."""

    def test_scales_off_the_default_spacing_keep_their_own_handoffs(self):
        sys.path.insert(0, str(REPO / "benchmarks"))
        from transfer import SCALES

        from monai_dwp.pipeline import PipelineSettings

        # ``tiny`` reads the quick chain's hand-offs (``--bundles_dir``), made at its own spacing
        self.assertFalse(SCALES["tiny"].own_handoffs)
        self.assertEqual(SCALES["tiny"].handoffs.spacing, PipelineSettings.quick().spacing)
        for name in ("cpu", "paper"):
            self.assertNotEqual(SCALES[name].handoffs.spacing, PipelineSettings.default().spacing)
            self.assertTrue(SCALES[name].own_handoffs, f"--scale {name}")

    def test_phantoms_of_another_spacing_stop_the_benchmark(self):
        sys.path.insert(0, str(REPO / "benchmarks"))
        import json

        from transfer import check_phantom_spacing

        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp)
            check_phantom_spacing(data, 4.0, "cpu")  # nothing made yet: nothing to say
            (data / "tumour").mkdir()
            (data / "tumour" / "dataset.json").write_text(json.dumps({"phantom": {"spacing_mm": 4.0}}))
            check_phantom_spacing(data, 4.0, "cpu")  # the scale's own
            (data / "ms").mkdir()
            (data / "ms" / "dataset.json").write_text(json.dumps({"phantom": {"spacing_mm": 3.0}}))
            with self.assertRaisesRegex(SystemExit, r"ms holds phantoms made at 3.0 mm, but --scale cpu needs 4.0 mm: "
                                                    r"pass another --work_dir"):
                check_phantom_spacing(data, 4.0, "cpu")


class TestInvocationTime(unittest.TestCase):
    def test_only_the_invocations_of_the_budget(self):
        sys.path.insert(0, str(REPO / "benchmarks"))
        import json

        from transfer import TIMING_FILE, invocation_time

        entry = {"runs": 4, "workers": 2, "handoffs_s": 60.0, "handoffs_made": True, "elapsed_s": 600.0}
        with tempfile.TemporaryDirectory() as tmp:
            self.assertEqual(invocation_time(Path(tmp)), "")
            (Path(tmp) / TIMING_FILE).write_text(json.dumps([
                {"started": "2026-01-01 10:00", **entry},  # written before entries recorded their budget
                {"started": "2026-01-02 10:00:00", "budget": {"scale": "cpu", "steps": "200"}, **entry},
                {"started": "2026-01-03 10:00:00", "budget": {"scale": "cpu", "steps": "1000"}, **entry}]))
            text = invocation_time(Path(tmp), {"scale": "cpu", "steps": 1000})
            self.assertIn("- started 2026-01-03 10:00 UTC: 4 runs in 10 min, 1.0 min of it for the hand-offs (made by "
                          "it), 2 run(s) side by side.", text)
            self.assertNotIn("2026-01-02", text)
            self.assertNotIn("2026-01-01", text)
            self.assertEqual(invocation_time(Path(tmp)).count("- started"), 3)  # no budget given: all of them


class TestMachineTime(unittest.TestCase):
    def test_sums_wall_time_over_workers(self):
        sys.path.insert(0, str(REPO / "benchmarks"))
        from transfer import machine_time

        rows = [{"total_seconds": "3600", "workers": "2"}, {"total_seconds": "1800", "workers": "2"},
                {"total_seconds": "", "workers": "2"}]
        self.assertIn("2 runs, 0.75 h of wall-clock time", machine_time(rows))
        self.assertEqual(machine_time([]), "No finished run yet.")


if __name__ == "__main__":
    unittest.main()


class TestChooseVariant(unittest.TestCase):
    """The validation split alone chooses, among the variants that ran every seed of their method."""

    def test_highest_validation_among_complete_variants(self):
        sys.path.insert(0, str(REPO / "benchmarks"))
        from transfer import choose_variant

        def row(method, seed, val, test=0.5):
            return {"method": method, "num_train_cases": "5", "seed": str(seed), "best_val_dice": str(val),
                    "val_pooled_dice": str(test)}

        rows = [row("dwp", s, 0.3, 0.9) for s in range(3)] + [row("dwp_source_init", s, 0.5, 0.1) for s in range(3)]
        rows += [row("dwp_refresh_4", 0, 0.99), row("gaussian_prior_source_init", 0, 0.95)]
        names = ("dwp", "dwp_source_init", "dwp_refresh_4", "gaussian_prior_source_init")
        self.assertEqual(choose_variant(rows, names, "dwp", 5), ("dwp_source_init", 0.5))
        self.assertIsNone(choose_variant(rows, names, "dwp", 10))  # nothing ran at N = 10
        self.assertIsNone(choose_variant(rows, ("dwp",), "dwp", 5))  # a method alone is no choice


class TestReadBudgetRows(unittest.TestCase):
    def test_only_the_budget_and_own_splits(self):
        sys.path.insert(0, str(REPO / "benchmarks"))
        from transfer import SCALES, append_row, budget_of, read_budget_rows

        budget = budget_of("cpu", SCALES["cpu"])
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "transfer.csv"
            self.assertEqual(read_budget_rows(path, budget), [])
            base = {"method": "dwp", "num_train_cases": 5, **budget}
            append_row(path, {**base, "seed": 1, "split_seed": 1})
            append_row(path, {**base, "seed": 2, "split_seed": 0})  # an earlier run on seed 0's cases
            append_row(path, {**base, "seed": 3, "split_seed": 3, "steps": 2000})  # another budget
            self.assertEqual([r["seed"] for r in read_budget_rows(path, budget)], ["1"])

    def test_rows_of_another_overlap_are_neither_reused_nor_tabled(self):
        """The evaluation's sliding-window overlap is part of the budget: a row written before the column existed
        counts as overlap 0.25 (every such run evaluated so), and by default the budget holds the bundle's own."""
        sys.path.insert(0, str(REPO / "benchmarks"))
        from transfer import SCALES, append_row, budget_of, bundle_sw_overlap, read_budget_rows

        self.assertEqual(budget_of("cpu", SCALES["cpu"])["sw_overlap"], bundle_sw_overlap())
        now, before = budget_of("cpu", SCALES["cpu"], 0.5), budget_of("cpu", SCALES["cpu"], 0.25)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "transfer.csv"
            base = {"method": "dwp", "num_train_cases": 5}
            append_row(path, {**base, **{k: v for k, v in now.items() if k != "sw_overlap"}, "seed": 1, "split_seed": 1})
            append_row(path, {**base, **now, "seed": 2, "split_seed": 2})
            self.assertEqual([r["seed"] for r in read_budget_rows(path, now)], ["2"])
            self.assertEqual([r["seed"] for r in read_budget_rows(path, before)], ["1"])

    def test_sw_overlap_must_be_a_fraction(self):
        sys.path.insert(0, str(REPO / "benchmarks"))
        from transfer import main

        with tempfile.TemporaryDirectory() as tmp:
            with self.assertRaisesRegex(SystemExit, r"--sw_overlap must be a number in \[0, 1\).*got 1.5"):
                main(scale="cpu", work_dir=tmp, results=tmp, sw_overlap=1.5)

    def test_seeds_must_be_integers(self):
        sys.path.insert(0, str(REPO / "benchmarks"))
        from transfer import main

        with tempfile.TemporaryDirectory() as tmp:
            with self.assertRaisesRegex(SystemExit, r"--seeds must be non-negative integers.*got '3,x'"):
                main(scale="cpu", work_dir=tmp, seeds="3,x")


class TestConfirmLink(unittest.TestCase):
    def test_links_the_confirmation_when_it_exists(self):
        sys.path.insert(0, str(REPO / "benchmarks"))
        from transfer import SCALES, write_markdown

        rows = [{"method": m, "num_train_cases": "2", "seed": str(seed), "split_seed": str(seed), "epochs": "2",
                 "best_epoch": "1", "best_val_dice": "0.5", "val_pooled_dice": "0.5", "handoffs": "none"}
                for m in ("dwp", "random_init", "dwp_no_dwp_init") for seed in (0, 1)]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "transfer.md"
            write_markdown(rows, "tiny", SCALES["tiny"], path)
            self.assertNotIn("transfer_confirm.md", path.read_text())
            (Path(tmp) / "transfer_confirm").mkdir()
            (Path(tmp) / "transfer_confirm" / "transfer_confirm.md").write_text("# confirmation\n")
            write_markdown(rows, "tiny", SCALES["tiny"], path)
            self.assertIn("[`transfer_confirm/transfer_confirm.md`](transfer_confirm/transfer_confirm.md)",
                          path.read_text())
