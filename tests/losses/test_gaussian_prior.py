from __future__ import annotations

import math
import unittest

import torch
from monai.bundle import ConfigParser
from parameterized import parameterized
from torch import nn
from torch.distributions import Normal, kl_divergence

from monai_dwp.losses import GaussianPrior
from monai_dwp.networks import bayesian_modules, convert_to_bayesian


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(1, 2, 3), nn.ReLU(), nn.Conv3d(2, 3, 3), nn.Conv3d(3, 1, 1))
    net = convert_to_bayesian(net, kernel_size=3, init_log_scale=-2.0)
    for layer in bayesian_modules(net).values():
        with torch.no_grad():
            layer.log_scale.add_(torch.rand_like(layer.log_scale))
    return net


class TestGaussianPrior(unittest.TestCase):
    def test_value_against_torch_distributions(self):
        net = _net()
        prior = GaussianPrior(loc=0.1, scale=0.5)
        expected = sum(
            kl_divergence(Normal(m.loc, m.scale), Normal(0.1, 0.5)).sum() for m in bayesian_modules(net).values()
        )
        torch.testing.assert_close(prior(net), expected)

    def test_gradient(self):
        net = _net()
        GaussianPrior(scale=0.1)(net).backward()
        for m in bayesian_modules(net).values():
            self.assertGreater(m.loc.grad.abs().sum().item(), 0)
            self.assertGreater(m.log_scale.grad.abs().sum().item(), 0)
        # the deterministic 1x1x1 convolution has no posterior and gets no gradient from the prior
        self.assertIsNone(net[3].weight.grad)

    def test_minimum_at_prior(self):
        net = _net()
        for m in bayesian_modules(net).values():
            with torch.no_grad():
                m.loc.fill_(0.0)
                m.log_scale.fill_(math.log(0.3))
        self.assertAlmostEqual(GaussianPrior(scale=0.3)(net).item(), 0.0, places=4)  # float32 rounding

    @parameterized.expand([({"scale": 0.0}, r"scale must lie in \(0.0, inf\], got 0.0"),
                           ({"scale": -1.0}, r"scale must lie in \(0.0, inf\], got -1.0"),
                           ({"loc": float("inf")}, "loc must be finite, got inf")])
    def test_bad_arguments(self, kwargs, pattern):
        with self.assertRaisesRegex(ValueError, pattern):
            GaussianPrior(**kwargs)

    def test_network_without_bayesian_layers(self):
        with self.assertRaisesRegex(ValueError, "Sequential has no BayesianConv layer"):
            GaussianPrior()(nn.Sequential(nn.Conv3d(1, 1, 3)))

    def test_from_config(self):
        prior = ConfigParser({"p": {"_target_": "monai_dwp.losses.GaussianPrior", "scale": 0.2}}).get_parsed_content("p")
        self.assertEqual(prior.scale, 0.2)


if __name__ == "__main__":
    unittest.main()
