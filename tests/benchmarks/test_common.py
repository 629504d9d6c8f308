"""``benchmarks/_common.py``: the estimator names the DWP benchmarks take on their command line, and a bundle's
config defaults."""

from __future__ import annotations

import json
import re
import sys
import tempfile
import unittest
from pathlib import Path

from parameterized import parameterized

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

from _common import bundle_default, estimator_kwargs  # noqa: E402

from monai_dwp.losses import DeepWeightPrior  # noqa: E402
from monai_dwp.networks import KernelVAE  # noqa: E402


class TestEstimatorKwargs(unittest.TestCase):
    @parameterized.expand([
        ("all", {}),
        ("all+bf16", {"compute_dtype": "bfloat16"}),
        ("all+cv+bf16", {"control_variate": True, "compute_dtype": "bfloat16"}),
        ("max_kernels=2048", {"max_kernels": 2048}),
        ("max_kernels=64+cv", {"max_kernels": 64, "control_variate": True}),
        ("refresh=16", {"refresh_interval": 16}),
        ("refresh=4+cv+bf16", {"refresh_interval": 4, "control_variate": True, "compute_dtype": "bfloat16"}),
        ("refresh=4+bf16+cv", {"refresh_interval": 4, "control_variate": True, "compute_dtype": "bfloat16"}),
    ])
    def test_names_to_prior_arguments(self, name, expected):
        self.assertEqual(estimator_kwargs(name), expected)
        DeepWeightPrior([KernelVAE(hidden_channels=(2, 2, 2))], [0.1], {"0": 0}, **expected)  # arguments it takes

    @parameterized.expand(["all+fp16", "refresh=4+cv+cv", "refresh=4+fp16", "refresh=x", "every", "max_kernels=-1"])
    def test_bad_names_stop_with_the_usage(self, name):
        with self.assertRaisesRegex(SystemExit, rf"--estimators: '{re.escape(name)}' is not 'all'.*e\.g\. refresh=4"):
            estimator_kwargs(name)


class TestBundleDefault(unittest.TestCase):
    def test_reads_the_key_of_the_bundles_train_config(self):
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "dwp_finetune" / "configs" / "train.json"
            config.parent.mkdir(parents=True)
            config.write_text(json.dumps({"sw_overlap": 0.75, "prior_control_variate": False}))
            self.assertEqual(bundle_default("dwp_finetune", "sw_overlap", Path(tmp)), 0.75)
            self.assertIs(bundle_default("dwp_finetune", "prior_control_variate", Path(tmp)), False)
        self.assertIn(bundle_default("dwp_finetune", "prior_refresh_interval"), range(1, 1025))  # the repository's


if __name__ == "__main__":
    unittest.main()
