from __future__ import annotations

import unittest
from unittest import mock

import torch

from monai_dwp.networks.layers import channels_last_format, randn_like, to_memory_format, use_channels_last

CL = torch.channels_last_3d


class TestToMemoryFormat(unittest.TestCase):
    def test_values_layout_and_gradient_layout(self):
        x = torch.randn(2, 3, 4, 5, 6, requires_grad=True)
        y = to_memory_format(x, CL)
        self.assertTrue(y.is_contiguous(memory_format=CL))
        self.assertFalse(y.is_contiguous())
        torch.testing.assert_close(y, x, rtol=0, atol=0)
        # the gradient arrives channels-last (as a channels-last layer's backward gives it) and must leave contiguous
        grad = torch.randn(2, 3, 4, 5, 6).contiguous(memory_format=CL)
        y.backward(grad)
        self.assertTrue(x.grad.is_contiguous())
        torch.testing.assert_close(x.grad, grad, rtol=0, atol=0)

    def test_back_to_contiguous_returns_a_channels_last_gradient(self):
        x = torch.randn(2, 3, 4, 5, 6).contiguous(memory_format=CL).requires_grad_()
        y = to_memory_format(x, torch.contiguous_format)
        self.assertTrue(y.is_contiguous())
        captured = {}
        x.register_hook(lambda g: captured.setdefault("grad", g))
        y.sum().backward()
        self.assertTrue(captured["grad"].is_contiguous(memory_format=CL))
        self.assertFalse(captured["grad"].is_contiguous())

    def test_no_copy_when_already_in_the_format(self):
        x = torch.randn(2, 3, 4, 5, 6)
        self.assertIs(to_memory_format(x, torch.contiguous_format), x)

    def test_channels_last_format(self):
        self.assertEqual(channels_last_format(5), torch.channels_last_3d)
        self.assertEqual(channels_last_format(4), torch.channels_last)
        with self.assertRaisesRegex(ValueError, "ndim=3"):
            channels_last_format(3)


class TestRandnLike(unittest.TestCase):
    def test_channels_last_is_filled_in_memory_order(self):
        x = torch.empty(2, 4, 3, 5, 6).contiguous(memory_format=CL)
        torch.manual_seed(7)
        out = randn_like(x)
        torch.manual_seed(7)
        expected = torch.randn(2, 3, 5, 6, 4)  # the same numbers in the order of channels-last memory
        self.assertTrue(out.is_contiguous(memory_format=CL))
        torch.testing.assert_close(out.permute(0, 2, 3, 4, 1), expected, rtol=0, atol=0)

    def test_contiguous_matches_torch(self):
        x = torch.empty(2, 4, 3, 5, 6)
        torch.manual_seed(3)
        out = randn_like(x)
        torch.manual_seed(3)
        torch.testing.assert_close(out, torch.randn_like(x), rtol=0, atol=0)

    def test_standard_normal(self):
        torch.manual_seed(0)
        out = randn_like(torch.empty(4, 8, 16, 16, 16).contiguous(memory_format=CL))
        self.assertLess(abs(out.mean().item()), 0.01)  # 131k draws: standard error 0.0028
        self.assertLess(abs(out.std().item() - 1.0), 0.01)


class TestUseChannelsLast(unittest.TestCase):
    @mock.patch("monai_dwp.networks.layers.memory_format._avx512_kernels", return_value=False)
    def test_rule(self, _):
        big = torch.empty(2, 16, 8, 8, 8)
        self.assertTrue(use_channels_last(big, (3, 3, 3)))
        self.assertTrue(use_channels_last(big, 3))
        self.assertFalse(use_channels_last(big, 1))  # 1×1×1 kernel
        self.assertFalse(use_channels_last(torch.empty(2, 1, 8, 8, 8), 3))  # one channel: same layout
        self.assertFalse(use_channels_last(torch.empty(2, 16, 8, 8), 3))  # 2-D: not measured
        self.assertFalse(use_channels_last(torch.empty(1, 16, 8, 8, 8), 3))  # PyTorch's native batch-1 path
        self.assertTrue(use_channels_last(torch.empty(1, 16, 64, 64, 64), 3))  # 16·64·64 > 20480: oneDNN
        with torch.no_grad():
            self.assertFalse(use_channels_last(big, 3))  # inference: nothing to gain
            self.assertFalse(use_channels_last(big, 3, two_convolutions=True))

    @mock.patch("monai_dwp.networks.layers.memory_format._avx512_kernels", return_value=True)
    def test_avx512_kernels_only_for_two_convolutions(self, _):
        big = torch.empty(2, 16, 8, 8, 8)
        self.assertFalse(use_channels_last(big, 3))  # one convolution (deterministic, sampled): slower there
        self.assertTrue(use_channels_last(big, 3, two_convolutions=True))  # local: faster there
        self.assertFalse(use_channels_last(torch.empty(1, 16, 8, 8, 8), 3, two_convolutions=True))  # native path
        with torch.no_grad():
            self.assertFalse(use_channels_last(big, 3, two_convolutions=True))

    def test_asks_pytorch_for_the_kernels(self):
        from monai_dwp.networks.layers import memory_format
        from monai_dwp.utils import cpu_capability

        self.assertEqual(memory_format._avx512_kernels(), cpu_capability().startswith("AVX512"))


if __name__ == "__main__":
    unittest.main()
