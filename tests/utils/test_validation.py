from __future__ import annotations

import math
import unittest

from parameterized import parameterized

from monai_dwp.utils.validation import as_bool, check_float, check_int, check_optional_float


class TestAsBool(unittest.TestCase):
    @parameterized.expand([(True, True), (False, False), (1, True), (0, False), ("true", True), ("false", False),
                           ("True", True), ("False", False), ("TRUE", True), (" false ", False), ("1", True), ("0", False)])
    def test_accepted(self, value, expected):
        self.assertIs(as_bool(value, "amp"), expected)

    @parameterized.expand([("flase",), ("yes",), ("",), (2,), (0.0,), (None,), ([],)])
    def test_rejected(self, value):
        with self.assertRaisesRegex(ValueError, r"^amp must be true or false \(true/false/True/False/1/0\), got "):
            as_bool(value, "amp")


class TestNumbers(unittest.TestCase):
    def test_int(self):
        self.assertEqual(check_int(3, "epochs", minimum=1), 3)
        with self.assertRaisesRegex(TypeError, r"epochs must be an integer, got 'five' \(str\)"):
            check_int("five", "epochs")
        with self.assertRaisesRegex(TypeError, r"epochs must be an integer, got 5.5 \(float\)"):
            check_int(5.5, "epochs")
        with self.assertRaisesRegex(TypeError, r"got True \(bool\)"):
            check_int(True, "epochs")
        with self.assertRaisesRegex(ValueError, r"epochs must be ≥ 1, got 0"):
            check_int(0, "epochs", minimum=1)
        with self.assertRaisesRegex(ValueError, r"n must be ≤ 3, got 4"):
            check_int(4, "n", maximum=3)

    def test_float(self):
        self.assertEqual(check_float(1, "lr", minimum=0.0, include_minimum=False), 1.0)
        self.assertEqual(check_float(0.0, "overlap", minimum=0.0, maximum=1.0, include_maximum=False), 0.0)
        with self.assertRaisesRegex(ValueError, r"overlap must lie in \[0.0, 1.0\), got 1.0"):
            check_float(1.0, "overlap", minimum=0.0, maximum=1.0, include_maximum=False)
        with self.assertRaisesRegex(ValueError, r"lr must lie in \(0.0, inf\], got 0.0"):
            check_float(0, "lr", minimum=0.0, include_minimum=False)
        with self.assertRaisesRegex(ValueError, r"lr must be finite, got nan"):
            check_float(math.nan, "lr")
        with self.assertRaisesRegex(TypeError, r"lr must be a number, got '1e-3x' \(str\)"):
            check_float("1e-3x", "lr")
        with self.assertRaisesRegex(TypeError, r"got False \(bool\)"):
            check_float(False, "lr")

    def test_hint_is_appended(self):
        with self.assertRaisesRegex(ValueError, r"^sw_batch_size must be ≥ 1, got 0; e\.g\. sw_batch_size=4\.$"):
            check_int(0, "sw_batch_size", minimum=1, hint="e.g. sw_batch_size=4")
        with self.assertRaisesRegex(TypeError, r"^seed must be an integer, got 1\.5 \(float\); pass an int\.$"):
            check_int(1.5, "seed", hint="pass an int")
        with self.assertRaisesRegex(ValueError, r"^lr must lie in \(0\.0, inf\], got -1\.0; e\.g\. 1e-3\.$"):
            check_float(-1, "lr", minimum=0.0, include_minimum=False, hint="e.g. 1e-3")
        with self.assertRaisesRegex(ValueError, r"^lr must be finite, got inf; e\.g\. 1e-3\.$"):
            check_optional_float(math.inf, "lr", hint="e.g. 1e-3")

    def test_optional_float(self):
        for value in (None, "none", "None", "null"):
            self.assertIsNone(check_optional_float(value, "log_scale_lr"))
        self.assertEqual(check_optional_float(0.01, "log_scale_lr"), 0.01)
        with self.assertRaises(TypeError):
            check_optional_float("nil", "log_scale_lr")


if __name__ == "__main__":
    unittest.main()
