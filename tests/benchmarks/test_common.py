"""``benchmarks/_common.py``: the estimator names the DWP benchmarks take on their command line."""

from __future__ import annotations

import re
import sys
import unittest
from pathlib import Path

from parameterized import parameterized

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

from _common import estimator_kwargs  # noqa: E402

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


if __name__ == "__main__":
    unittest.main()
