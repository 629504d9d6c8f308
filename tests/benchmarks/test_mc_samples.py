"""``benchmarks/mc_samples.py``: the Monte Carlo sample count of the evaluation, chosen on validation cases by an
equivalence test against the largest count."""

from __future__ import annotations

import sys
import unittest

from .._quick_chain import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

from mc_samples import METRICS, _markdown, choose, equivalent, parse_margins, parse_samples, runs  # noqa: E402

MARGINS = {"dice": 0.01, "ece": 0.002, "auc_mutual_information": 0.01}


def _values(shift: dict[str, float], jitter: float = 0.001) -> dict[str, dict[tuple[str, str], float]]:
    """Per-metric values over 2 methods × 3 cases: a base value plus ``shift[metric]`` plus an alternating jitter."""
    keys = [(m, f"case{c}") for m in ("dwp", "gaussian_prior") for c in range(3)]
    return {metric: {k: 0.5 + 0.01 * i + shift.get(metric, 0.0) + (jitter if i % 2 else -jitter)
                     for i, k in enumerate(keys)} for metric in METRICS}


class TestParse(unittest.TestCase):
    def test_samples(self):
        self.assertEqual(parse_samples("10,3,5,3"), [3, 5, 10])
        self.assertEqual(parse_samples((5, 10)), [5, 10])
        for bad in ("10", "0,5", "a,b", ""):
            with self.assertRaisesRegex(SystemExit, r"--samples must name at least two Monte Carlo sample counts"):
                parse_samples(bad)

    def test_margins(self):
        self.assertEqual(parse_margins("dice:0.01,ece:0.002,auc_mutual_information:0.01"), MARGINS)
        for bad in ("dice:0.01", "dice:0.01,ece:x,auc_mutual_information:0.01",
                    "dice:0,ece:0.002,auc_mutual_information:0.01"):
            with self.assertRaisesRegex(SystemExit, r"--margins must give one positive margin for each of"):
                parse_margins(bad)

    def test_runs(self):
        # the reference at seeds 0 and 1 (its own Monte Carlo noise), every smaller count at seed 1 only
        self.assertEqual(runs([3, 5, 10]), [(10, 0), (3, 1), (5, 1), (10, 1)])


class TestChoose(unittest.TestCase):
    def test_equivalent(self):
        a = {("m", f"c{i}"): 0.5 + 0.001 * (i % 2) for i in range(6)}
        self.assertTrue(equivalent(a, {k: v - 0.002 for k, v in a.items()}, 0.01))
        self.assertFalse(equivalent(a, {k: v - 0.02 for k, v in a.items()}, 0.01))  # a shift beyond the margin
        noisy = {k: v + (0.03 if i % 2 else -0.03) for i, (k, v) in enumerate(a.items())}
        self.assertFalse(equivalent(noisy, a, 0.01))  # mean ≈ 0, but the interval is wider than the margin
        self.assertFalse(equivalent({("m", "c0"): 0.5}, {("m", "c0"): 0.5}, 0.01))  # one pair: no interval

    def test_smallest_equivalent_count_on_every_metric(self):
        values = {(10, 0): _values({}), (10, 1): _values({}, jitter=0.0015), (3, 1): _values({"dice": -0.03}),
                  (5, 1): _values({"auc_mutual_information": -0.002})}
        self.assertEqual(choose(values, MARGINS), 5)  # 3 loses Dice beyond its margin
        values[(3, 1)] = _values({"ece": 0.003})  # now only its ECE is off
        self.assertEqual(choose(values, MARGINS), 5)
        values[(3, 1)] = _values({"ece": 0.0005})
        self.assertEqual(choose(values, MARGINS), 3)
        values = {(10, 0): _values({}), (10, 1): _values({}), (5, 1): _values({"auc_mutual_information": -0.05})}
        self.assertEqual(choose(values, MARGINS), 10)  # none equivalent: the reference stays
        with self.assertRaisesRegex(ValueError, r"the reference \(T = 10, seed 0\) was not evaluated"):
            choose({(10, 1): _values({}), (5, 1): _values({})}, MARGINS)


class TestMarkdown(unittest.TestCase):
    def test_table(self):
        rows = []
        for split, n in (("val", 2), ("test", 3)):
            for t, seed, shift in ((10, 0, 0.0), (10, 1, 0.001), (3, 1, -0.05), (5, 1, 0.002)):
                for c in range(n):
                    rows.append({"split": split, "method": "dwp", "samples": t, "seed": seed, "case": f"c{c}",
                                 "dice": 0.6 + 0.01 * c + shift + (0.002 if t == 3 and c % 2 else 0.0), "ece": 0.01,
                                 "auc_mutual_information": 0.9 + shift, "seconds_per_volume": float(t)})
        md = _markdown(rows, MARGINS, "test machine")
        self.assertIn("the 2 validation cases (the choice) and the 3 test cases", md)
        self.assertIn("| 3 | val | -0.0490 [-0.0617, -0.0363] | +0.0000 [+0.0000, +0.0000] | "
                      "-0.0500 [-0.0500, -0.0500] | 3.0 |", md)
        self.assertIn("| `dwp` | 0.556 / 0.561 \\| 0.0100 / 0.0100 \\| 0.850 / 0.850 |", md)
        self.assertIn("| 10 | test | +0.0010 [+0.0010, +0.0010] |", md)  # the reference's own noise
        self.assertIn("**T = 5**", md)


if __name__ == "__main__":
    unittest.main()
