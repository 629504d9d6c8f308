"""Packaging a bundle for MONAI Label and copying our app: no MONAI Label needed (runs in the main test run too)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import torch
from monai.bundle import ConfigParser

from monai_dwp.apps.monailabel import APP_TEMPLATE, make_app, package_bundle
from monai_dwp.networks.nets import DWPUNet

from ..bundles._utils import BUNDLES, REPO

BUNDLE = BUNDLES / "dwp_finetune"
NAMES = ["T1", "FLAIR"]


class TestPackageBundle(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.root = Path(self._tmp.name)
        self.model = self.root / "model.pt"
        torch.save(DWPUNet(in_channels=1, out_channels=2, bayesian=True).state_dict(), self.model)
        self.prior = self.root / "prior.pt"
        torch.save({"anything": torch.zeros(1)}, self.prior)

    def tearDown(self):
        self._tmp.cleanup()

    def _package(self, dest="served", **kwargs):
        args = dict(model=self.model, overrides={"method": "gaussian_prior", "modality_names": NAMES})
        args.update(kwargs)
        return package_bundle(BUNDLE, self.root / dest, **args)

    def test_layout_and_served_values(self):
        served = self._package(handoffs={"prior_ckpt": self.prior},
                               overrides={"method": "dwp", "spacing": [6.0, 6.0, 6.0], "modality_names": NAMES})
        self.assertTrue((served / "models" / "model.pt").is_file())
        self.assertTrue((served / "models" / "handoffs" / "prior_ckpt.pt").is_file())
        self.assertEqual(sorted(p.name for p in (served / "models").glob("*.pt")), ["model.pt"])  # hand-offs apart
        for name in ("metadata.json", "inference.json", "train.json", "logging.conf"):
            self.assertTrue((served / "configs" / name).is_file(), name)
        inference = json.loads((served / "configs" / "inference.json").read_text())
        train = json.loads((served / "configs" / "train.json").read_text())
        for config in (inference, train):
            self.assertEqual(config["ckpt_dir"], "$@bundle_root + '/models'")  # the bundle's own, unchanged
            self.assertIsNone(config["dataset_dir"])
            self.assertEqual(config["modality"], 1)  # "FLAIR" resolved with the channel names
            self.assertEqual(config["method"], "dwp")
            self.assertEqual(config["spacing"], [6.0, 6.0, 6.0])
        self.assertEqual(inference["modality_names"], NAMES)
        self.assertEqual(train["prior_ckpt"], "$@bundle_root + '/models/handoffs/prior_ckpt.pt'")
        self.assertIn("@train#dataset#data", train["split"])
        # the served configs resolve without the repository layout
        parser = ConfigParser()
        parser.read_config(str(served / "configs" / "train.json"))
        parser["bundle_root"] = str(served)
        self.assertEqual(parser.get_parsed_content("ckpt_dir"), f"{served}/models")
        self.assertEqual(parser.get_parsed_content("prior_ckpt"), f"{served}/models/handoffs/prior_ckpt.pt")

    def test_image_path_stash_for_monailabel(self):
        """The shipped inference.json sets MONAI Label's image_path aside (so the bundle is served in place) and a
        packaged copy keeps that as it is."""
        served = self._package()
        parser = ConfigParser()
        parser.read_config(str(served / "configs" / "inference.json"))
        parser["bundle_root"] = str(served)
        pre = parser.get_parsed_content("preprocessing")
        names = [type(t).__name__ for t in pre.transforms]
        self.assertEqual(names[:3], ["CopyItemsd", "DeleteItemsd", "LoadImaged"])  # flat, so MONAI Label sees LoadImaged
        post = parser.get_parsed_content("postprocessing")
        self.assertEqual(type(post.transforms[-1]).__name__, "CopyItemsd")
        # outside MONAI Label (no image_path) both steps do nothing
        self.assertEqual(pre.transforms[0]({"image": 1}), {"image": 1})
        self.assertEqual(pre.transforms[1]({"image": 1}), {"image": 1})
        # MONAI Label's image_path goes aside and comes back
        moved = pre.transforms[1](pre.transforms[0]({"image_path": "a.nii.gz"}))
        self.assertEqual(moved, {"monailabel_image_path": "a.nii.gz"})
        self.assertEqual(post.transforms[-1](moved)["image_path"], "a.nii.gz")
        # packaging a served bundle again does not stack the fix
        again = package_bundle(served, self.root / "again", model=self.model,
                               overrides={"method": "gaussian_prior", "modality_names": NAMES})
        self.assertEqual((again / "configs" / "inference.json").read_text().count("DeleteItemsd"), 1)

    def test_modality_from_the_dataset(self):
        dataset = self.root / "data"
        dataset.mkdir()
        (dataset / "dataset.json").write_text(json.dumps({
            "modality": {"0": "T1", "1": "FLAIR"}, "labels": {"0": "background", "1": "tumour"},
            "training": [{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"}]}))
        served = self._package(overrides={"method": "gaussian_prior", "modality": "t1"}, dataset_dir=dataset)
        inference = json.loads((served / "configs" / "inference.json").read_text())
        self.assertEqual((inference["modality"], inference["modality_names"]), (0, NAMES))

    def test_model_checks(self):
        with self.assertRaisesRegex(ValueError, r"the model does not fit the served network_def \(missing: "
                                                r"\['init_conv.weight'.*pass the overrides it was trained with"):
            self._package(overrides={"method": "random_init", "modality_names": NAMES})
        self.assertFalse((self.root / "served").exists())  # nothing half-written left behind
        bad = self.root / "bad.pt"
        bad.write_text("not a checkpoint")
        with self.assertRaisesRegex(ValueError, r"model '.*bad.pt' is not a readable PyTorch checkpoint"):
            self._package(model=bad)
        with self.assertRaisesRegex(FileNotFoundError, r"model '.*missing.pt' does not exist; train the bundle first"):
            self._package(model=self.root / "missing.pt")
        served = self._package(model=None)  # training-only bundle
        self.assertFalse((served / "models" / "model.pt").exists())

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, r"overrides \['spacingg'\] match no id of the configs"):
            self._package(overrides={"method": "gaussian_prior", "spacingg": 1.0, "modality_names": NAMES})
        with self.assertRaisesRegex(ValueError, r"hand-off key 'prior_file' is in none of the configs"):
            self._package(handoffs={"prior_file": self.prior})
        with self.assertRaisesRegex(FileNotFoundError, r"hand-off prior_ckpt='.*nope.pt' does not exist"):
            self._package(handoffs={"prior_ckpt": self.root / "nope.pt"})
        # a bundle whose default dataset_dir (data/tumour beside bundles/) does not exist
        lone = self.root / "repo" / "bundles" / "dwp_finetune"
        shutil.copytree(BUNDLE, lone, ignore=shutil.ignore_patterns("models", "eval"))
        with self.assertRaisesRegex(ValueError, r"modality 'FLAIR' is a channel name, but a served bundle has no "
                                                r"dataset.json to resolve it: pass dataset_dir="):
            package_bundle(lone, self.root / "x", model=self.model, overrides={"method": "gaussian_prior"})
        with self.assertRaisesRegex(FileNotFoundError, r"bundle_dir '.*' has no configs/inference.json"):
            package_bundle(self.root, self.root / "y", model=self.model)
        self._package()
        with self.assertRaisesRegex(FileExistsError, r"dest '.*served' exists and is not empty; pass overwrite=True"):
            self._package()
        self._package(overwrite=True)
        (self.root / "other").mkdir()
        (self.root / "other" / "keep.txt").write_text("x")
        with self.assertRaisesRegex(FileExistsError, r"holds no served bundle \(no configs/\); refusing to delete it"):
            self._package(dest="other", overwrite=True)

    def test_nested_override(self):
        served = self._package(overrides={"method": "gaussian_prior", "modality_names": NAMES, "inferer#overlap": 0.5})
        inference = json.loads((served / "configs" / "inference.json").read_text())
        self.assertEqual(inference["inferer"]["overlap"], 0.5)


class TestMakeApp(unittest.TestCase):
    def test_copy(self):
        with tempfile.TemporaryDirectory() as tmp:
            app = make_app(Path(tmp) / "app")
            for name in ("main.py", "lib/__init__.py", "lib/infers/__init__.py", "lib/scoring/__init__.py",
                         "lib/trainers/__init__.py", "lib/activelearning/__init__.py"):
                self.assertTrue((app / name).is_file(), name)
            self.assertTrue((app / "model").is_dir())
            with self.assertRaisesRegex(FileExistsError, "already holds an app"):
                make_app(app)
            (app / "model" / "x").mkdir()
            make_app(app, overwrite=True)
            self.assertTrue((app / "model" / "x").is_dir())  # served bundles are kept
        self.assertTrue((APP_TEMPLATE / "main.py").is_file())

    def test_no_monailabel_import(self):
        code = ("import sys, monai_dwp, monai_dwp.apps, monai_dwp.apps.monailabel as m; "
                "from monai.bundle import ConfigParser; "
                "ConfigParser({'x': {'_target_': 'monai_dwp.networks.nets.DWPUNet'}}).get_parsed_content('x'); "
                "assert 'monailabel' not in sys.modules, 'monailabel imported'; print('ok')")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
        self.assertEqual(out.returncode, 0, out.stderr[-2000:])
        if importlib.util.find_spec("monailabel") is None:
            with self.assertRaisesRegex(ImportError, r"monai_dwp.apps.monailabel needs MONAI Label"):
                from monai_dwp.apps.monailabel import DWPBundleInferTask  # noqa: F401

    def test_cli(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run([sys.executable, "-m", "monai_dwp.apps.monailabel", "app", "--dest", f"{tmp}/app"],
                                 capture_output=True, text=True, cwd=REPO)
            self.assertEqual(out.returncode, 0, out.stderr[-2000:])
            self.assertTrue((Path(tmp) / "app" / "main.py").is_file())


if __name__ == "__main__":
    unittest.main()
