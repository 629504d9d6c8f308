"""Top-level keys given on the command line are checked before anything is built, through ``monai.bundle run``."""

from __future__ import annotations

import tempfile
import unittest
from pathlib import Path

from parameterized import parameterized

from ._utils import run_bundle


class TestBundleKeys(unittest.TestCase):
    @parameterized.expand(
        [
            ("dwp_pretrain", "train", {"amp": "maybe"}, r"--amp must be true or false \(true/false/True/False/1/0\), "
                                                        r"got 'maybe'\. Fix the override or the config value of 'amp'\."),
            ("dwp_prior", "train", {"resume": "flase"}, r"--resume must be true or false .*got 'flase'"),
            ("dwp_finetune", "train", {"dwp_init": "no"}, r"--dwp_init must be true or false .*got 'no'"),
            ("dwp_finetune", "train", {"epochs": "five"}, r"--epochs must be an integer, got 'five' \(str\)"),
            ("dwp_finetune", "train", {"sw_overlap": 1.0}, r"--sw_overlap must lie in \[0.0, 1.0\), got 1.0"),
            ("dwp_finetune", "train", {"prior_compute_dtype": "float16"},
             r"--prior_compute_dtype must be 'auto', 'float32' or 'bfloat16', got 'float16'; 'auto' uses bfloat16"),
            ("dwp_pretrain", "train", {"compute_dtype": "half"},
             r"--compute_dtype must be 'auto', 'float32' or 'bfloat16', got 'half'; 'auto' uses bfloat16"),
            ("dwp_pretrain", "inference", {"compute_dtype": "fp32"}, r"--compute_dtype must be 'auto', 'float32'"),
            ("dwp_finetune", "inference", {"mc_samples": 0}, r"--mc_samples must be ≥ 1, got 0"),
            ("dwp_pretrain", "inference", {"sw_batch_size": -2}, r"--sw_batch_size must be ≥ 1, got -2"),
            ("dwp_prior", "inference", {"num_kernels": 2.5}, r"--num_kernels must be an integer, got 2.5"),
        ]
    )
    def test_bad_value_is_one_line(self, bundle, config, overrides, pattern):
        with tempfile.TemporaryDirectory() as tmp:
            out_dir = Path(tmp) / "out"
            proc = run_bundle(bundle, config, ckpt_dir=out_dir, dataset_dir=Path(tmp) / "data", **overrides)
            self.assertEqual(proc.returncode, 1, proc.stderr[-3000:])
            last = proc.stderr.strip().splitlines()[-1]
            self.assertRegex(last, r"^monai_dwp: " + pattern)
            self.assertNotIn("Traceback", proc.stderr)
            self.assertFalse(out_dir.exists())  # stopped before anything was written


    def test_missing_dataset_is_one_line(self):
        """The used-by command on a fresh clone: no data yet, one line with the command that makes it."""
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "data" / "tumour"
            proc = run_bundle("dwp_finetune", "train", ckpt_dir=Path(tmp) / "out", dataset_dir=data)
            self.assertEqual(proc.returncode, 1)
            self.assertEqual(
                proc.stderr.strip().splitlines()[-1],
                f"monai_dwp: dataset_dir '{data}' is not a directory; make it with `python -m monai_dwp make-data "
                f"--disease tumour --num-cases 16 --num-test 8 --spacing 3 --output-dir {data}` (built-in phantoms), "
                "or pass --dataset_dir with a Decathlon folder.",
            )
            self.assertNotIn("Traceback", proc.stderr)


if __name__ == "__main__":
    unittest.main()
