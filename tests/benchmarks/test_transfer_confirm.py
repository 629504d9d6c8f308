"""Tests of ``benchmarks/transfer_confirm.py``: what the chosen variant meets, and the paired summary."""

from __future__ import annotations

import sys
import tempfile
import unittest
from pathlib import Path

from .._quick_chain import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

from transfer_confirm import comparisons, main, summarise, write_figure  # noqa: E402


def _row(method: str, n: int, seed: int, val: float, test: float, ece: float = 0.01) -> dict[str, str]:
    return {"method": method, "num_train_cases": str(n), "seed": str(seed), "best_val_dice": str(val),
            "val_pooled_dice": str(test), "ece": str(ece)}


class TestComparisons(unittest.TestCase):
    def test_finetune_and_the_gaussian_control(self):
        self.assertEqual(comparisons("dwp_source_init"), ("finetune", "gaussian_prior_source_init"))
        self.assertEqual(comparisons("dwp_source_init_temperature_0.1"),
                         ("finetune", "gaussian_prior_source_init_temperature_0.1"))
        self.assertEqual(comparisons("dwp"), ("finetune", "gaussian_prior"))
        self.assertEqual(comparisons("dwp_refresh_4"), ("finetune",))  # the benchmark has no such control


class TestSummarise(unittest.TestCase):
    def test_fresh_seeds_paired_and_all_seeds_labelled(self):
        original = [_row(m, 5, s, 0.5, v) for s in range(3)
                    for m, v in (("dwp_source_init", 0.70), ("finetune", 0.60), ("gaussian_prior_source_init", 0.65))]
        fresh = []
        for s in (3, 4, 5):
            fresh += [_row("dwp_source_init", 5, s, 0.6 + 0.01 * s, 0.60 + 0.01 * s, ece=0.004),
                      _row("finetune", 5, s, 0.6, 0.62, ece=0.02),
                      _row("gaussian_prior_source_init", 5, s, 0.7, 0.60, ece=0.03)]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "transfer_confirm.md"
            summarise({5: "dwp_source_init"}, fresh, original, path, "a machine", "Seeds came in one go.")
            text = path.read_text()
            write_figure({5: "dwp_source_init"}, fresh, Path(tmp) / "transfer_confirm.png")
            self.assertEqual((Path(tmp) / "transfer_confirm.png").read_bytes()[:8], b"\x89PNG\r\n\x1a\n")
        self.assertIn("## N = 5: `dwp_source_init`", text)
        self.assertIn("seeds 3, 4, 5", text)
        self.assertIn("Seeds came in one go. Written by", text)
        rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
                for line in text.splitlines() if line.startswith("| `")}
        # fresh test: 0.63, 0.64, 0.65 − 0.62 -> +0.020; validation 0.63..0.65 − 0.6 -> +0.040
        self.assertTrue(rows["`finetune`"][0].startswith("+0.020 ["))
        self.assertTrue(rows["`finetune`"][1].startswith("+0.040 ["))
        # all six seeds: +0.10 three times and +0.01..+0.03 -> mean +0.060
        self.assertTrue(rows["`finetune`"][2].startswith("+0.060 ["))
        self.assertEqual(rows["`finetune`"][3], "0.0200")
        self.assertEqual(rows["`finetune`"][4], "-0.0160 [-0.0160, -0.0160]")  # ECE, chosen − finetune
        self.assertTrue(rows["`gaussian_prior_source_init`"][0].startswith("+0.040 ["))
        self.assertIn("test pooled Dice 0.640 over 3 seeds, ECE 0.0040.", text)
        self.assertIn("![transfer_confirm](transfer_confirm.png)", text)


class TestMain(unittest.TestCase):
    def test_no_choice_stops_before_any_run(self):
        with tempfile.TemporaryDirectory() as tmp:
            with self.assertRaisesRegex(SystemExit, r"--sizes 5: .* holds no choice among the `dwp` variants"):
                main(scale="cpu", work_dir=tmp, benchmark_results=tmp, sizes="5")
            with self.assertRaisesRegex(SystemExit, r"--sizes \[7\] are not sizes of --scale cpu"):
                main(scale="cpu", work_dir=tmp, benchmark_results=tmp, sizes="5,7")


if __name__ == "__main__":
    unittest.main()
