"""``benchmarks/_stats.py`` and the spread ``benchmarks/mc_inference.py`` repeats to: 95 % t-intervals of a mean."""

from __future__ import annotations

import math
import statistics
import sys
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

from _stats import paired_diffs, paired_interval, t_975  # noqa: E402
from mc_inference import interval_width  # noqa: E402


class TestTQuantile(unittest.TestCase):
    def test_known_values(self):
        # Student's t, 97.5 % quantile (standard tables)
        for df, value in ((1, 12.706), (2, 4.303), (9, 2.262), (10, 2.228), (20, 2.086), (30, 2.042)):
            self.assertAlmostEqual(t_975(df), value, places=3)

    def test_beyond_the_table_is_conservative(self):
        # beyond 30 the value at 30: wider than the exact quantile (2.021 at 40), never narrower than the normal's
        self.assertEqual(t_975(100), t_975(30))
        self.assertGreater(t_975(100), 1.96)

    def test_decreasing(self):
        values = [t_975(df) for df in range(1, 31)]
        self.assertEqual(values, sorted(values, reverse=True))


class TestIntervals(unittest.TestCase):
    def test_paired_interval(self):
        diffs = [0.1, 0.3, 0.2, 0.4]
        mean, low, high = paired_interval(diffs)
        half = t_975(3) * statistics.stdev(diffs) / math.sqrt(4)
        self.assertAlmostEqual(mean, 0.25)
        self.assertAlmostEqual(low, 0.25 - half)
        self.assertAlmostEqual(high, 0.25 + half)

    def test_one_pair_has_no_interval(self):
        mean, low, high = paired_interval([0.2])
        self.assertEqual(mean, 0.2)
        self.assertTrue(math.isnan(low) and math.isnan(high))

    def test_interval_width_shrinks_with_repeats_while_the_range_does_not(self):
        # the same scatter repeated: the interval of the mean narrows, the range of the ratios stays
        few = [1.00, 1.04, 0.98, 1.02]
        many = few * 4
        self.assertLess(interval_width(many), interval_width(few) / 2)
        self.assertEqual(max(many) - min(many), max(few) - min(few))
        self.assertAlmostEqual(interval_width(few), (paired_interval(few)[2] - paired_interval(few)[1]) / 1.01)
        self.assertEqual(interval_width([1.0]), math.inf)



class TestPairedDiffs(unittest.TestCase):
    def test_over_the_shared_keys_in_key_order(self):
        a = {("dwp", "c2"): 0.5, ("dwp", "c1"): 0.75, ("dwp", "c3"): 0.1}
        b = {("dwp", "c1"): 0.5, ("dwp", "c2"): 0.25, ("finetune", "c1"): 0.9}
        self.assertEqual(paired_diffs(a, b), [0.25, 0.25])
        self.assertEqual(paired_diffs(a, {}), [])


if __name__ == "__main__":
    unittest.main()
