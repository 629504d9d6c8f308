from __future__ import annotations

import unittest
from unittest import mock

import torch
from parameterized import parameterized

from monai_dwp.utils.precision import COMPUTE_DTYPES, check_compute_dtype, resolve_compute_dtype


class TestCheckComputeDtype(unittest.TestCase):
    @parameterized.expand([(None, None), ("float32", None), (torch.float32, None), ("bfloat16", torch.bfloat16),
                           (torch.bfloat16, torch.bfloat16), ("auto", "auto")])
    def test_meanings(self, value, meaning):
        self.assertEqual(check_compute_dtype(value), meaning)
        self.assertEqual(COMPUTE_DTYPES[value], meaning)

    def test_messages_name_the_argument_and_the_fix(self):
        with self.assertRaisesRegex(ValueError, r"^dtype must be None, 'float32', 'bfloat16' or 'auto', got 'float16'; "
                                                r"no float16 here; use bfloat16\.$"):
            check_compute_dtype("float16", "dtype", float16_hint="no float16 here;", advice="use bfloat16.")
        with self.assertRaisesRegex(ValueError, r"got torch.float16; use 'bfloat16' for fast matrix products"):
            check_compute_dtype(torch.float16)  # no hint given: the advice only
        with self.assertRaisesRegex(TypeError, r"compute_dtype must be a str, a torch.dtype or None, got float: 1.0"):
            check_compute_dtype(1.0)


class TestResolveComputeDtype(unittest.TestCase):
    def test_fixed_dtypes_pass_through(self):
        cache: dict = {}
        self.assertIsNone(resolve_compute_dtype(None, "cpu", cache))
        self.assertIs(resolve_compute_dtype(torch.bfloat16, "cpu", cache), torch.bfloat16)
        self.assertEqual(cache, {})

    def test_auto_is_decided_once_per_device_type(self):
        cache: dict = {}
        with mock.patch("monai_dwp.utils.precision.native_bfloat16", return_value=True) as native:
            self.assertIs(resolve_compute_dtype("auto", "cpu", cache), torch.bfloat16)
            self.assertIs(resolve_compute_dtype("auto", torch.device("cpu"), cache), torch.bfloat16)
        self.assertEqual(native.call_count, 1)
        self.assertEqual(cache, {"cpu": torch.bfloat16})
        with mock.patch("monai_dwp.utils.precision.native_bfloat16", return_value=False):
            self.assertIsNone(resolve_compute_dtype("auto", "cpu", {}))


if __name__ == "__main__":
    unittest.main()
