"""``benchmarks/_tables.py``: cells and tables of results over seeds."""

from __future__ import annotations

import sys
import tempfile
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

from _tables import interval_text, mean_sd, mean_table, paired_cell, save_figure  # noqa: E402


class TestCells(unittest.TestCase):
    def test_mean_sd(self):
        self.assertEqual(mean_sd([0.5, 0.7]), "0.600 ± 0.100 (2)")
        self.assertEqual(mean_sd([0.5]), "0.500 ± 0.000 (1)")
        self.assertEqual(mean_sd([1.25, 1.75], digits=1), "1.5 ± 0.2 (2)")
        self.assertEqual(mean_sd([]), "–")

    def test_interval(self):
        # three differences 0.1, 0.2, 0.3: mean 0.2, sd 0.1, half width t(2) · 0.1 / √3 = 4.303 · 0.0577 = 0.248
        self.assertEqual(interval_text([0.1, 0.2, 0.3]), "+0.200 [-0.048, +0.448]")
        self.assertEqual(interval_text([-0.1]), "-0.100 (1 seed)")
        self.assertEqual(interval_text([0.001, 0.002, 0.003], digits=4), "+0.0020 [-0.0005, +0.0045]")
        self.assertEqual(interval_text([]), "–")

    def test_paired_over_common_seeds(self):
        a = {0: 0.5, 1: 0.6, 2: 0.9}
        b = {1: 0.5, 2: 0.7, 3: 0.0}
        # seeds 1 and 2 only: differences 0.1 and 0.2
        self.assertEqual(paired_cell(a, b), interval_text([0.1, 0.2]))
        self.assertEqual(paired_cell(a, {7: 1.0}), "–")


class TestMeanTable(unittest.TestCase):
    def setUp(self):
        self.data = {("dwp", 5): {0: 0.3, 1: 0.5}, ("random_init", 5): {0: 0.6, 1: 0.6},
                     ("dwp", 10): {0: 0.7}, ("random_init", 10): {}}

    def table(self, **kwargs):
        return mean_table(lambda m, n: self.data.get((m, n), {}), ["dwp", "random_init"], [5, 10], **kwargs)

    def test_layout_and_best_in_bold(self):
        lines = self.table()
        self.assertEqual(lines[0], "| method | N = 5 | N = 10 |")
        self.assertEqual(lines[1], "|---|---|---|")
        self.assertEqual(lines[2], "| `dwp` | 0.400 ± 0.100 (2) | 0.700 ± 0.000 (1) |")  # a lone mean: not bold
        self.assertEqual(lines[3], "| `random_init` | **0.600 ± 0.000 (2)** | – |")
        self.assertEqual(lines[-1], "")

    def test_lower_is_better_and_labels(self):
        lines = self.table(higher_is_better=False, first="strategy", column_label=str)
        self.assertEqual(lines[0], "| strategy | 5 | 10 |")
        self.assertIn("**0.400 ± 0.100 (2)**", lines[2])
        self.assertNotIn("**", lines[3])

    def test_ties_not_bold(self):
        self.data[("dwp", 5)] = {0: 0.6}
        self.assertNotIn("**", "".join(self.table()))


class TestSaveFigure(unittest.TestCase):
    def test_png_written(self):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, 1])
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "f.png"
            save_figure(fig, path)
            self.assertEqual(path.read_bytes()[:8], b"\x89PNG\r\n\x1a\n")
            self.assertEqual(list(Path(tmp).iterdir()), [path])  # no temporary file left


if __name__ == "__main__":
    unittest.main()
