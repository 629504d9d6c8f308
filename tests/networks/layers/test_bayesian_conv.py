from __future__ import annotations

import unittest

import torch
from monai.bundle import ConfigParser
from parameterized import parameterized
from torch import nn

from monai_dwp.networks.layers import BayesianConv

SHAPE_CASES = [
    # spatial_dims, kwargs, input shape, expected output shape
    (1, {"kernel_size": 3, "padding": 1}, (2, 4, 9), (2, 6, 9)),
    (2, {"kernel_size": 3, "stride": 2, "padding": 1}, (2, 4, 8, 8), (2, 6, 4, 4)),
    (3, {"kernel_size": 3, "padding": 1}, (2, 4, 6, 6, 6), (2, 6, 6, 6, 6)),
    (3, {"kernel_size": 1}, (1, 4, 5, 6, 7), (1, 6, 5, 6, 7)),
    (3, {"kernel_size": 3, "dilation": 2, "padding": 2, "groups": 2}, (1, 4, 6, 6, 6), (1, 6, 6, 6, 6)),
    (2, {"kernel_size": 2, "stride": 2, "is_transposed": True}, (2, 4, 5, 5), (2, 6, 10, 10)),
    (
        3,
        {"kernel_size": 3, "stride": 2, "padding": 1, "output_padding": 1, "is_transposed": True},
        (1, 4, 4, 4, 4),
        (1, 6, 8, 8, 8),
    ),
]


class TestBayesianConvShapes(unittest.TestCase):
    @parameterized.expand(SHAPE_CASES)
    def test_shapes_every_mode(self, spatial_dims, kwargs, in_shape, out_shape):
        conv = BayesianConv(spatial_dims, in_shape[1], out_shape[1], **kwargs)
        x = torch.randn(in_shape)
        for mode in ("mean", "local", "sampled"):
            conv.mode = mode
            self.assertEqual(tuple(conv(x).shape), out_shape, mode)

    @parameterized.expand(SHAPE_CASES)
    def test_mean_mode_equals_torch_conv(self, spatial_dims, kwargs, in_shape, out_shape):
        kwargs = dict(kwargs)
        transposed = kwargs.pop("is_transposed", False)
        cls = {
            (1, False): nn.Conv1d, (2, False): nn.Conv2d, (3, False): nn.Conv3d,
            (1, True): nn.ConvTranspose1d, (2, True): nn.ConvTranspose2d, (3, True): nn.ConvTranspose3d,
        }[(spatial_dims, transposed)]
        ref = cls(in_shape[1], out_shape[1], **kwargs)
        conv = BayesianConv.from_conv(ref, mode="mean")
        x = torch.randn(in_shape)
        torch.testing.assert_close(conv(x), ref(x))
        self.assertEqual(conv.is_transposed, transposed)

    @parameterized.expand(SHAPE_CASES)
    def test_fused_local_equals_two_convolutions(self, spatial_dims, kwargs, in_shape, out_shape):
        conv = BayesianConv(spatial_dims, in_shape[1], out_shape[1], init_log_scale=-1.0, **kwargs)
        x = torch.randn(in_shape)
        outs = []
        for fuse in (True, False):
            conv.fuse_local = fuse
            torch.manual_seed(3)
            outs.append(conv(x))
        torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-5)

    def test_gradients_reach_loc_and_log_scale(self):
        for mode in ("local", "sampled"):
            conv = BayesianConv(3, 2, 3, 3, padding=1, mode=mode)
            conv(torch.randn(2, 2, 5, 5, 5)).square().sum().backward()
            for p in (conv.loc, conv.log_scale, conv.bias):
                self.assertIsNotNone(p.grad, mode)
                self.assertGreater(p.grad.abs().sum().item(), 0.0, mode)

    def test_mean_mode_gives_no_log_scale_gradient(self):
        conv = BayesianConv(2, 2, 3, 3, mode="mean")
        conv(torch.randn(1, 2, 5, 5)).sum().backward()
        self.assertIsNone(conv.log_scale.grad)

    def test_mode_independent_of_train_eval(self):
        conv = BayesianConv(2, 2, 3, 3, mode="local")
        x = torch.randn(1, 2, 6, 6)
        conv.eval()
        self.assertEqual(conv.mode, "local")
        self.assertFalse(torch.equal(conv(x), conv(x)))  # still stochastic in eval()
        conv.train()
        conv.mode = "mean"
        torch.testing.assert_close(conv(x), conv(x))  # deterministic in train()

    def test_sampled_mode_holds_draw_until_resampled(self):
        conv = BayesianConv(2, 2, 3, 3, init_log_scale=-1.0, mode="sampled")
        x = torch.randn(1, 2, 6, 6)
        first = conv(x)
        torch.testing.assert_close(conv(x), first)
        conv.resample()
        self.assertFalse(torch.allclose(conv(x), first))

    def test_inference_reuses_the_sampled_weight_until_resampled(self):
        conv = BayesianConv(2, 2, 2, 3, init_log_scale=-1.0, mode="sampled")
        with torch.no_grad():
            w1, w2 = conv.sample_weight(), conv.sample_weight()
            self.assertIs(w1, w2)  # computed once per draw
            conv.resample()
            self.assertFalse(torch.equal(conv.sample_weight(), w1))
            conv.loc.add_(1.0)  # a changed posterior invalidates the cache
            torch.testing.assert_close(conv.sample_weight(), conv.loc + conv.scale * conv.epsilon)
        self.assertTrue(conv.sample_weight().requires_grad)  # with gradients: a fresh differentiable weight
        with self.assertRaisesRegex(ValueError, r"epsilon must have the weight's shape \(2, 2, 3, 3\)"):
            conv.epsilon = torch.zeros(3)

    def test_seeded_determinism(self):
        outs = []
        for _ in range(2):
            torch.manual_seed(7)
            conv = BayesianConv(3, 2, 2, 3, padding=1, init_log_scale=-2.0)
            outs.append(conv(torch.randn(1, 2, 4, 4, 4)))
        torch.testing.assert_close(outs[0], outs[1])

    def test_init_log_scale(self):
        conv = BayesianConv(3, 2, 2, 3, init_log_scale=-3.5)
        self.assertTrue(torch.all(conv.log_scale == -3.5))
        torch.testing.assert_close(conv.scale, torch.full_like(conv.loc, torch.tensor(-3.5).exp().item()))
        self.assertEqual(tuple(conv.kernels[0].shape), (4, 3, 3, 3))

    def test_state_dict_has_no_sample(self):
        conv = BayesianConv(2, 2, 2, 3, mode="sampled")
        conv(torch.randn(1, 2, 5, 5))
        self.assertEqual(set(conv.state_dict()), {"loc", "log_scale", "bias"})

    def test_from_config(self):
        parser = ConfigParser(
            {
                "conv": {
                    "_target_": "monai_dwp.networks.layers.BayesianConv",
                    "spatial_dims": 3,
                    "in_channels": 1,
                    "out_channels": 2,
                    "kernel_size": 3,
                    "padding": 1,
                }
            }
        )
        conv = parser.get_parsed_content("conv")
        self.assertIsInstance(conv, BayesianConv)
        self.assertEqual(tuple(conv(torch.randn(1, 1, 4, 4, 4)).shape), (1, 2, 4, 4, 4))


class TestLocalVersusSampled(unittest.TestCase):
    """Local reparameterization and weight sampling have the same pre-activation distribution."""

    def test_mean_and_variance_agree(self):
        torch.manual_seed(0)
        conv = BayesianConv(2, 3, 2, 3, init_log_scale=-1.0)
        with torch.no_grad():
            conv.log_scale.add_(0.3 * torch.randn_like(conv.log_scale))
        x = torch.randn(1, 3, 5, 5)
        n = 4000
        with torch.no_grad():
            conv.mode = "local"
            local = torch.cat([conv(x.expand(200, -1, -1, -1)) for _ in range(n // 200)])
            conv.mode = "sampled"
            sampled = []
            for _ in range(n):
                conv.resample()
                sampled.append(conv(x))
            sampled = torch.cat(sampled)
            conv.mode = "mean"
            exact_mean = conv(x)[0]
            exact_var = torch.nn.functional.conv2d(x * x, conv.scale.square())[0]
        for samples in (local, sampled):
            mean, var = samples.mean(0), samples.var(0)
            # mean within 5 standard errors, variance within 5 standard errors of a Gaussian variance
            self.assertTrue(torch.all((mean - exact_mean).abs() < 5 * (exact_var / n).sqrt()))
            self.assertTrue(torch.all((var - exact_var).abs() < 5 * exact_var * (2.0 / (n - 1)) ** 0.5))
        self.assertTrue(torch.all((local.mean(0) - sampled.mean(0)).abs() < 5 * (2 * exact_var / n).sqrt()))


class TestBayesianConvBadInput(unittest.TestCase):
    @parameterized.expand(
        [
            ({"spatial_dims": 4}, ValueError, "spatial_dims must be 1, 2 or 3"),
            ({"in_channels": 0}, ValueError, "in_channels must be a positive int"),
            ({"groups": 3}, ValueError, "divisible by groups=3"),
            ({"kernel_size": (3, 3)}, ValueError, "kernel_size must have spatial_dims=3 entries"),
            ({"kernel_size": "3"}, TypeError, "kernel_size must be an int or a sequence"),
            ({"output_padding": 1}, ValueError, "output_padding=1 is only valid with is_transposed=True"),
            ({"mode": "random"}, ValueError, r"mode must be one of \('mean', 'local', 'sampled'\)"),
            ({"init_log_scale": float("nan")}, ValueError, "init_log_scale must be a finite float"),
        ]
    )
    def test_constructor(self, override, error, pattern):
        kwargs = {"spatial_dims": 3, "in_channels": 2, "out_channels": 4, "kernel_size": 3}
        kwargs.update(override)
        with self.assertRaisesRegex(error, pattern):
            BayesianConv(**kwargs)

    def test_forward_wrong_shape(self):
        conv = BayesianConv(3, 2, 4, 3)
        with self.assertRaisesRegex(ValueError, r"expects input of shape \(N, 2, \*3 spatial dims\), got \(1, 3, 5, 5, 5\)"):
            conv(torch.randn(1, 3, 5, 5, 5))
        with self.assertRaisesRegex(ValueError, r"got \(2, 5, 5\)"):
            conv(torch.randn(2, 5, 5))

    def test_set_bad_mode(self):
        conv = BayesianConv(3, 2, 4, 3)
        with self.assertRaisesRegex(ValueError, "got 'stochastic'"):
            conv.mode = "stochastic"

    def test_from_conv_rejects_other_modules(self):
        with self.assertRaisesRegex(TypeError, "conv must be a torch.nn convolution, got Linear"):
            BayesianConv.from_conv(nn.Linear(2, 2))
        with self.assertRaisesRegex(ValueError, "only explicit zero padding"):
            BayesianConv.from_conv(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"))


if __name__ == "__main__":
    unittest.main()
