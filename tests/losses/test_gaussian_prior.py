from __future__ import annotations

import math
import tempfile
import unittest
from pathlib import Path

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

    def test_per_layer_prior_against_torch_distributions(self):
        net = _net()
        layers = bayesian_modules(net)
        torch.manual_seed(1)
        locs = {n: torch.randn_like(m.loc) * 0.1 for n, m in layers.items()}
        scales = {"0": torch.rand_like(layers["0"].loc) + 0.05, "2": 0.3}  # a tensor, a number
        prior = GaussianPrior(scale=0.5, layer_locs=locs, layer_scales=scales)
        expected = (kl_divergence(Normal(layers["0"].loc, layers["0"].scale), Normal(locs["0"], scales["0"])).sum()
                    + kl_divergence(Normal(layers["2"].loc, layers["2"].scale), Normal(locs["2"], 0.3)).sum())
        torch.testing.assert_close(prior(net), expected)
        # a buffer of the module: moves with .to() and round-trips through its state dict
        again = GaussianPrior(scale=0.5, layer_locs={n: torch.zeros_like(v) for n, v in locs.items()},
                              layer_scales={"0": torch.ones_like(scales["0"]), "2": 1.0})
        again.load_state_dict(prior.state_dict())
        torch.testing.assert_close(again(net), expected)

    def test_from_source_is_l2_sp_in_the_small_posterior_limit(self):
        net = _net()
        source = {f"{n}.weight": torch.randn_like(m.loc) for n, m in bayesian_modules(net).items()}
        source["3.weight"] = torch.randn(1, 3, 1, 1, 1)  # the deterministic layer: taken, never used
        source["3.bias"] = torch.zeros(1)
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(source, Path(tmp) / "model.pt")
            prior = GaussianPrior.from_source(Path(tmp) / "model.pt", scale=0.2)
        self.assertEqual(sorted(prior.layer_names), ["0", "2", "3"])
        # at the source weights with a tiny posterior scale, only the entropy part is left: no pull on the means
        for n, m in bayesian_modules(net).items():
            with torch.no_grad():
                m.loc.copy_(source[f"{n}.weight"])
                m.log_scale.fill_(math.log(1e-4))
        at_source = prior(net)
        # moving the means by d changes the KL by sum(d²) / (2 s²): the L2-SP penalty towards the source weights
        shift = {n: 0.05 * torch.randn_like(m.loc) for n, m in bayesian_modules(net).items()}
        for n, m in bayesian_modules(net).items():
            with torch.no_grad():
                m.loc.add_(shift[n])
        penalty = sum(d.square().sum() for d in shift.values()) / (2 * 0.2**2)
        torch.testing.assert_close(prior(net) - at_source, penalty, rtol=1e-4, atol=1e-4)

    def test_per_layer_errors(self):
        net = _net()
        with self.assertRaisesRegex(ValueError, r"none for the Bayesian layer '2'"):
            GaussianPrior(layer_locs={"0": torch.zeros_like(bayesian_modules(net)["0"].loc)})(net)
        with self.assertRaisesRegex(ValueError, r"prior location of '0' has shape \(4,\), the layer's weight "
                                                r"\(2, 1, 3, 3, 3\)"):
            GaussianPrior(layer_locs={"0": torch.zeros(4), "2": torch.zeros(3, 2, 3, 3, 3)})(net)
        with self.assertRaisesRegex(ValueError, r"layer_scales\['0'\] must be finite and > 0 everywhere"):
            GaussianPrior(layer_scales={"0": torch.zeros(2)})
        with self.assertRaisesRegex(TypeError, r"layer_locs\['0'\] must be a floating-point tensor, got list"):
            GaussianPrior(layer_locs={"0": [0.0]})
        with self.assertRaisesRegex(ValueError, "holds no convolution weight"):
            GaussianPrior.from_source({"bias": torch.zeros(3)}, scale=0.1)

    def test_from_config(self):
        prior = ConfigParser({"p": {"_target_": "monai_dwp.losses.GaussianPrior", "scale": 0.2}}).get_parsed_content("p")
        self.assertEqual(prior.scale, 0.2)


if __name__ == "__main__":
    unittest.main()
