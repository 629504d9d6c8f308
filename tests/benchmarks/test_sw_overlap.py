"""``benchmarks/sw_overlap.py``: sliding-window settings chosen on validation cases, paired over (method, case)."""

from __future__ import annotations

import sys
import tempfile
import unittest
from pathlib import Path

from .._quick_chain import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

from sw_overlap import _markdown, choose, label, parse_settings  # noqa: E402


def _rows(split: str, setting: tuple[float, str], dice: dict[tuple[str, str], float], seconds: float) -> list[dict]:
    return [{"split": split, "method": m, "bayesian": m == "dwp", "overlap": setting[0], "mode": setting[1],
             "case": c, "dice": v, "seconds_per_volume": seconds} for (m, c), v in dice.items()]


class TestChoose(unittest.TestCase):
    def test_one_factor_at_a_time_and_only_on_a_resolved_gain(self):
        keys = [(m, f"case{c}") for m in ("dwp", "finetune") for c in range(3)]
        before = {k: 0.60 + 0.01 * i for i, k in enumerate(keys)}
        worse = {k: v - 0.05 for k, v in before.items()}
        better = {k: v + 0.05 + 0.001 * (i % 2) for i, (k, v) in enumerate(before.items())}
        noisy = {k: v + (0.04 if i % 2 else -0.03) for i, (k, v) in enumerate(better.items())}  # mean +0.005, not resolved
        dice = {(0.0, "constant"): worse, (0.25, "constant"): before, (0.5, "constant"): better,
                (0.5, "gaussian"): noisy}
        self.assertEqual(choose(dice, (0.25, "constant")), (0.5, "constant"))
        # a resolved gain of the other blending at the chosen overlap is taken
        dice[(0.5, "gaussian")] = {k: v + 0.01 for k, v in better.items()}
        self.assertEqual(choose(dice, (0.25, "constant")), (0.5, "gaussian"))
        # nothing better than the incumbent: it stays
        self.assertEqual(choose({(0.0, "constant"): worse, (0.25, "constant"): before}, (0.25, "constant")),
                         (0.25, "constant"))
        with self.assertRaisesRegex(ValueError, r"incumbent setting \(0.75, 'constant'\) was not evaluated"):
            choose(dice, (0.75, "constant"))

    def test_parse_settings(self):
        self.assertEqual(parse_settings("0,0.25:gaussian,0.25:gaussian"), [(0.0, "constant"), (0.25, "gaussian")])
        self.assertEqual(parse_settings(("0.5:constant", "0.5:gaussian")), [(0.5, "constant"), (0.5, "gaussian")])
        self.assertEqual(label((0.25, "gaussian")), "overlap0.25_gaussian")
        for bad in ("1.0", "0.25:linear", "x"):
            with self.assertRaisesRegex(SystemExit, r"is not a sliding-window setting"):
                parse_settings(bad)
        with self.assertRaisesRegex(SystemExit, r"--settings must name at least two settings"):
            parse_settings("0.25")


class TestReport(unittest.TestCase):
    def test_markdown_pairs_settings_against_the_one_before_and_the_chosen_one(self):
        rows = []
        for split, shift in (("val", 0.0), ("test", 0.02)):
            for setting, gain, seconds in (((0.25, "constant"), 0.0, 10.0), ((0.5, "constant"), 0.06, 12.0),
                                           ((0.25, "gaussian"), 0.002, 10.0)):
                dice = {(m, f"c{c}"): 0.6 + shift + 0.01 * c + gain + 0.001 * c * (m == "dwp")
                        for m in ("dwp", "finetune") for c in range(3)}
                rows += _rows(split, setting, dice, seconds)
        md = _markdown(rows, (0.25, "constant"), "a machine")
        self.assertIn("Machine: a machine.", md)
        self.assertIn("the bundles' setting before this study (0.25 constant) and against the setting chosen on "
                      "validation (0.5 constant)", md)
        self.assertIn("| 0.25 constant | val | 0.611 | (reference) | (reference) | (reference) | "
                      "-0.060 [-0.060, -0.060] | 10.0 / 10.0 |", md)
        self.assertIn("| 0.5 constant | test | 0.690 | +0.060 [+0.060, +0.060] | +0.060 [+0.060, +0.060] | "
                      "+0.060 [+0.060, +0.060] | (reference) | 12.0 / 12.0 |", md)
        self.assertIn("| `dwp` | 0.611 / 0.631 | 0.613 / 0.633 | 0.671 / 0.691 |", md)
        self.assertIn("overlap **0.5** with **constant** blending", md)


if __name__ == "__main__":
    unittest.main()
