"""Tests of ``benchmarks/step_profile.py``: operator groups and a real (tiny) profile rendered."""

from __future__ import annotations

import sys
import unittest

from .._quick_chain import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

from step_profile import group_of, profile_steps, render  # noqa: E402


class TestGroups(unittest.TestCase):
    def test_known_and_other(self):
        self.assertEqual(group_of("aten::normal_"), "weight draw")
        self.assertEqual(group_of("aten::lerp_"), "optimizer and gradient accumulation")
        self.assertEqual(group_of("aten::mkldnn_convolution"), "convolutions")
        self.assertEqual(group_of("aten::native_batch_norm"), "other")


class TestProfile(unittest.TestCase):
    def test_tiny_profile_names_the_weight_draw(self):
        self_ms, plain = profile_steps(size=16, batch=1, rounds=1, steps=1)
        self.assertEqual(set(self_ms), {"deterministic", "sampled"})
        # only the sampled step draws epsilon; both convolve
        self.assertNotIn("aten::normal_", self_ms["deterministic"])
        self.assertGreater(self_ms["sampled"]["aten::normal_"], 0.0)
        text = render(self_ms, plain, 16, 1, "a machine", threshold=0.0)
        self.assertIn("| weight draw | 0.00 |", text)
        self.assertIn("| `aten::normal_` | weight draw |", text)
        self.assertIn("batch 1 × 16³", text)


if __name__ == "__main__":
    unittest.main()
