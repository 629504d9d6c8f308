"""MONAI's bundle tooling on the shipped bundles: verify_metadata (offline schema), verify_net_in_out, ckpt_export."""

from __future__ import annotations

import json
import tempfile
import unittest
from pathlib import Path

import torch
from parameterized import parameterized

from monai_dwp.networks import DWPUNet

from ._utils import BUNDLES, SCHEMA, check, config_files, run_script

BUNDLE_NAMES = ["dwp_pretrain", "dwp_prior", "dwp_finetune"]
CONFIGS = ["metadata", "train", "evaluate", "inference", "multi_gpu_train"]


class TestBundleLayout(unittest.TestCase):
    @parameterized.expand([(b,) for b in BUNDLE_NAMES])
    def test_files_and_schema(self, bundle):
        for name in CONFIGS:
            json.loads((BUNDLES / bundle / "configs" / f"{name}.json").read_text())
        self.assertTrue((BUNDLES / bundle / "configs" / "logging.conf").is_file())
        self.assertTrue((BUNDLES / bundle / "docs" / "README.md").is_file())
        meta = json.loads((BUNDLES / bundle / "configs" / "metadata.json").read_text())
        self.assertTrue(meta["schema"].endswith(SCHEMA.name))  # the shipped copy is the schema the bundle names
        # evaluation figures come from a committed benchmark file, never a placeholder
        self.assertTrue(meta["eval_metrics"])
        self.assertTrue(all(isinstance(v, float) and v != 0.0 for v in meta["eval_metrics"].values()))
        source = meta["eval_metrics_source"].split(":")[0]
        self.assertTrue((BUNDLES.parent / source).is_file(), source)

    @parameterized.expand([(b,) for b in BUNDLE_NAMES])
    def test_verify_metadata_offline(self, bundle):
        out = check(run_script("verify_metadata", "--meta_file", str(BUNDLES / bundle / "configs" / "metadata.json"),
                               "--filepath", str(SCHEMA)))
        self.assertIn("skipped downloading", out)
        self.assertIn("metadata is verified with no error", out)

    def test_verify_metadata_rejects_broken_metadata(self):
        meta = json.loads((BUNDLES / "dwp_finetune" / "configs" / "metadata.json").read_text())
        del meta["version"]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "metadata.json"
            path.write_text(json.dumps(meta))
            proc = run_script("verify_metadata", "--meta_file", str(path), "--filepath", str(SCHEMA))
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("'version' is a required property", proc.stdout + proc.stderr)

    @parameterized.expand([("dwp_pretrain", "train", None), ("dwp_finetune", "inference", "dwp"),
                           ("dwp_finetune", "inference", "random_init")])
    def test_verify_net_in_out(self, bundle, config, method):
        args = ["verify_net_in_out", "network_def", "--meta_file", str(BUNDLES / bundle / "configs" / "metadata.json"),
                "--config_file", config_files(bundle, config), "--device", "cpu", "--n", "2"]
        if method:
            args += ["--method", method]
        self.assertIn("data shape of network is verified with no error", check(run_script(*args)))


class TestCheckpointExport(unittest.TestCase):
    @parameterized.expand([("dwp_pretrain", None, False), ("dwp_finetune", "dwp", True)])
    def test_torchscript_export(self, bundle, method, bayesian):
        torch.manual_seed(0)
        net = DWPUNet(bayesian=bayesian, bayesian_mode="mean").eval()
        with tempfile.TemporaryDirectory() as tmp:
            ckpt, ts = Path(tmp) / "model.pt", Path(tmp) / "model.ts"
            torch.save(net.state_dict(), ckpt)
            args = ["ckpt_export", "network_def", "--filepath", str(ts), "--ckpt_file", str(ckpt),
                    "--meta_file", str(BUNDLES / bundle / "configs" / "metadata.json"),
                    "--config_file", config_files(bundle, "inference"), "--use_trace", "true",
                    "--input_shape", "[1,1,32,32,32]"]
            if method:
                args += ["--method", method, "--network_def#bayesian_mode", "mean"]
            check(run_script(*args))
            exported = torch.jit.load(str(ts))
            x = torch.randn(1, 1, 48, 32, 40)  # another size than the trace's
            with torch.no_grad():
                torch.testing.assert_close(exported(x), net(x), rtol=1e-4, atol=1e-4)


if __name__ == "__main__":
    unittest.main()
