"""``monai_dwp.utils.machine``."""

from __future__ import annotations

import platform
import tempfile
import unittest
from pathlib import Path
from unittest import mock

import torch

from monai_dwp.utils.machine import cpu_capability, cpu_label, cpu_name, native_bfloat16


class TestCpuName(unittest.TestCase):
    def test_the_first_model_name_of_cpuinfo(self):
        with tempfile.TemporaryDirectory() as tmp:
            info = Path(tmp) / "cpuinfo"
            info.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t: fpu\n\n"
                            "processor\t: 1\nmodel name\t: another\n")
            self.assertEqual(cpu_name(info), "AMD EPYC 7B13")
            info.write_text("processor\t: 0\nCPU part\t: 0xd0c\n")  # no model name (some ARM kernels)
            self.assertEqual(cpu_name(info), platform.processor() or platform.machine())
            self.assertEqual(cpu_name(Path(tmp) / "missing"), platform.processor() or platform.machine())
        self.assertTrue(cpu_name())


class TestCpuCapability(unittest.TestCase):
    def test_pytorchs_vector_instruction_set(self):
        self.assertEqual(cpu_capability(), torch.backends.cpu.get_cpu_capability())
        self.assertTrue(cpu_capability())
        self.assertEqual(cpu_label(), f"{cpu_name()}, {cpu_capability()} kernels")


class TestNativeBfloat16(unittest.TestCase):
    def test_cpu_flags_and_vector_instruction_set(self):
        with tempfile.TemporaryDirectory() as tmp:
            info = Path(tmp) / "cpuinfo"
            with mock.patch("monai_dwp.utils.machine.cpu_capability", return_value="AVX512"):
                info.write_text("processor\t: 0\nflags\t: fpu avx512f avx512_bf16\n")
                self.assertTrue(native_bfloat16("cpu", info))
                info.write_text("processor\t: 0\nflags\t: fpu amx_bf16 amx_tile\n")
                self.assertTrue(native_bfloat16(torch.device("cpu"), info))
                info.write_text("processor\t: 0\nflags\t: fpu avx512f avx512bw\n")  # emulated bfloat16
                self.assertFalse(native_bfloat16("cpu", info))
                self.assertFalse(native_bfloat16("cpu", Path(tmp) / "missing"))
                self.assertFalse(native_bfloat16("meta", info))
            with mock.patch("monai_dwp.utils.machine.cpu_capability", return_value="AVX2"):
                info.write_text("processor\t: 0\nflags\t: fpu avx512_bf16\n")
                self.assertFalse(native_bfloat16("cpu", info))  # PyTorch's kernels would not use it
        self.assertEqual(native_bfloat16("cuda"), torch.cuda.is_available() and torch.cuda.is_bf16_supported())


if __name__ == "__main__":
    unittest.main()
