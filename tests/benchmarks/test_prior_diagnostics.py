"""``benchmarks/prior_diagnostics.py``: gradient ratios and loss terms read back from the runs' TensorBoard logs."""

from __future__ import annotations

import csv
import sys
import tempfile
import unittest
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import prior_diagnostics  # noqa: E402


def _log(run_dir: Path, scalars: dict[str, list[float]]) -> None:
    """A run folder with ``tensorboard/`` holding ``scalars`` (tag -> values at steps 1, 2, ...)."""
    writer = SummaryWriter(str(run_dir / "tensorboard"))
    for tag, values in scalars.items():
        for step, value in enumerate(values, start=1):
            writer.add_scalar(tag, value, step)
    writer.close()


class TestPriorDiagnostics(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.root = Path(self._tmp.name)
        runs = self.root / "runs"
        # layer "deep" is logged first: the tables keep the log's (the network's) order, not the alphabet
        _log(runs / "dwp_n5_seed0", {"grad_ratio/loc/deep": [0.5, 1.0, 4.0], "grad_ratio/loc/shallow": [100.0],
                                     "grad_ratio/log_scale/deep": [0.01, 0.03],
                                     "loss_data": [0.9, 0.5, 0.3], "loss_kl_scaled": [2.7, 2.5]})
        _log(runs / "dwp_n5_seed1", {"grad_ratio/loc/deep": [2.0, 3.0], "grad_ratio/loc/shallow": [300.0],
                                     "grad_ratio/log_scale/deep": [0.05],
                                     "loss_data": [1.1, 0.1], "loss_kl_scaled": [2.9, 2.1]})
        _log(runs / "gaussian_prior_n5_seed0", {"grad_ratio/loc/deep": [8.0], "loss_data": [1.0]})
        _log(runs / "dwp_n10_seed0", {"grad_ratio/loc/deep": [7.0]})
        _log(runs / "random_init_n5_seed0", {"loss_data": [1.0]})  # no ratios: not a Bayesian run
        _log(runs / "seed0", {"grad_ratio/loc/deep": [9.0]})  # not a finetune run folder
        self.runs = runs

    def tearDown(self):
        self._tmp.cleanup()

    def test_reads_medians_and_skips_other_folders(self):
        runs = prior_diagnostics.find_runs(self.runs)
        self.assertEqual([(r.method, r.num_train_cases, r.seed) for r in runs],
                         [("dwp", 5, 0), ("dwp", 5, 1), ("dwp", 10, 0), ("gaussian_prior", 5, 0)])
        first = runs[0]
        self.assertEqual(list(first.ratios), [("loc", "deep"), ("loc", "shallow"), ("log_scale", "deep")])
        self.assertAlmostEqual(first.ratios[("loc", "deep")][0], 1.0)  # median over the logged steps
        self.assertEqual(first.ratios[("loc", "deep")][1], 3)
        self.assertAlmostEqual(first.ratios[("log_scale", "deep")][0], 0.02, places=6)
        self.assertEqual([step for step, _ in first.losses["loss_data"]], [1, 2, 3])
        for (_, value), expected in zip(first.losses["loss_data"], [0.9, 0.5, 0.3]):
            self.assertAlmostEqual(value, expected, places=6)  # TensorBoard stores float32
        chosen = prior_diagnostics.find_runs(self.runs, methods=["gaussian_prior", "dwp"], sizes=[5])
        self.assertEqual([(r.method, r.seed) for r in chosen], [("gaussian_prior", 0), ("dwp", 0), ("dwp", 1)])

    def test_outputs(self):
        out = self.root / "results"
        md = prior_diagnostics.main(runs_dir=str(self.runs), methods="dwp,gaussian_prior", sizes=5,
                                    results=str(out), note="a test")
        text = md.read_text()
        self.assertIn("3 run(s) of `runs/` (a test)", text)
        self.assertIn("Seeds: `dwp` 0, 1; `gaussian_prior` 0.", text)
        # seed medians 1.0 and 2.5: median over seeds 1.75, range 1–2.5; one seed: the value alone
        self.assertIn("| `deep` | 1.75 [1–2.5] | 8 |", text)
        self.assertIn("| `shallow` | 200 [100–300] | – |", text)
        self.assertIn("| `deep` | 0.035 [0.02–0.05] | – |", text)
        self.assertLess(text.index("| `deep` | 1.75"), text.index("| `shallow`"))
        # loss terms: first and last logged epoch, mean over seeds
        self.assertIn("| `dwp` | 1 | 0.2 | 2.8 | 2.3 |", text)
        self.assertIn("| `gaussian_prior` | 1 | 1 | – | – |", text)
        rows = list(csv.DictReader((out / "prior_diagnostics.csv").open()))
        self.assertEqual(len(rows), 7)
        self.assertIn({"method": "dwp", "num_train_cases": "5", "seed": "1", "parameter": "loc", "layer": "deep",
                       "median_ratio": "2.5", "logged_steps": "2"}, rows)
        self.assertGreater((out / "prior_diagnostics.png").stat().st_size, 5_000)

    def test_errors(self):
        with self.assertRaisesRegex(SystemExit, "--runs_dir .* is not a folder"):
            prior_diagnostics.main(runs_dir=str(self.root / "missing"))
        with self.assertRaisesRegex(SystemExit, "--sizes must be comma-separated ints, got 'x'"):
            prior_diagnostics.main(runs_dir=str(self.runs), sizes="x")
        with self.assertRaisesRegex(SystemExit, "no run folder .* has gradient ratios"):
            prior_diagnostics.main(runs_dir=str(self.runs), methods="random_init")


if __name__ == "__main__":
    unittest.main()
