from __future__ import annotations

import unittest

import torch
from monai.bundle import ConfigParser
from monai.networks.nets import BasicUNet, UNet
from parameterized import parameterized
from torch import nn

from monai_dwp.networks import BayesianConv, bayesian_modules, convert_to_bayesian, resample_weights, stochastic_mode


def _unet() -> nn.Module:
    return UNet(3, 1, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)


def _basic_unet() -> nn.Module:
    return BasicUNet(3, 1, 2, features=(4, 4, 8, 8, 16, 4))


class TestConvertToBayesian(unittest.TestCase):
    @parameterized.expand([("UNet", _unet), ("BasicUNet", _basic_unet)])
    def test_mean_mode_keeps_output(self, _, factory):
        torch.manual_seed(0)
        net = factory().eval()
        bayes = convert_to_bayesian(net, mode="mean").eval()
        self.assertGreater(len(bayesian_modules(bayes)), 0)
        self.assertEqual(len(bayesian_modules(net)), 0)  # not in place: the original is untouched
        x = torch.randn(1, 1, 32, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(bayes(x), net(x), rtol=0, atol=0)

    def test_kernel_size_filter_and_inplace(self):
        net = _unet()
        all_convs = [n for n, m in net.named_modules() if isinstance(m, nn.modules.conv._ConvNd)]
        three = [n for n, m in net.named_modules() if isinstance(m, nn.modules.conv._ConvNd) and m.kernel_size == (3, 3, 3)]
        self.assertLess(len(three), len(all_convs))  # the residual units have 1x1x1 projections
        out = convert_to_bayesian(net, kernel_size=3, inplace=True)
        self.assertIs(out, net)
        self.assertEqual(sorted(bayesian_modules(net)), sorted(three))
        for name, m in net.named_modules():
            if isinstance(m, nn.modules.conv._ConvNd):
                self.assertNotEqual(m.kernel_size, (3, 3, 3), name)

    def test_layer_filter(self):
        net = convert_to_bayesian(_basic_unet(), layer_filter=lambda name, m: name.startswith("down_1"))
        self.assertTrue(all(n.startswith("down_1") for n in bayesian_modules(net)))
        self.assertEqual(len(bayesian_modules(net)), 2)

    def test_copy_weights_false_reinitialises(self):
        net = _basic_unet()
        bayes = convert_to_bayesian(net, copy_weights=False, init_log_scale=-4.0)
        first = bayes.conv_0.conv_0.conv
        self.assertFalse(torch.equal(first.loc, net.conv_0.conv_0.conv.weight))
        self.assertTrue(torch.all(first.log_scale == -4.0))

    def test_no_match_is_an_error(self):
        with self.assertRaisesRegex(ValueError, r"found no convolution with kernel_size=7"):
            convert_to_bayesian(_unet(), kernel_size=7)
        with self.assertRaisesRegex(TypeError, "net must be a torch.nn.Module, got str"):
            convert_to_bayesian("unet")
        with self.assertRaisesRegex(TypeError, "layer_filter must be callable"):
            convert_to_bayesian(_unet(), layer_filter="down")
        with self.assertRaisesRegex(TypeError, "kernel_size must be None, an int or a sequence"):
            convert_to_bayesian(_unet(), kernel_size=3.0)

    def test_from_config(self):
        parser = ConfigParser(
            {
                "imports": ["$import monai_dwp"],
                "base": {"_target_": "monai.networks.nets.BasicUNet", "spatial_dims": 3, "in_channels": 1,
                         "out_channels": 2, "features": [4, 4, 8, 8, 16, 4]},
                "net": {"_target_": "monai_dwp.networks.utils.convert_to_bayesian", "net": "@base", "kernel_size": 3},
            }
        )
        net = parser.get_parsed_content("net")
        self.assertGreater(len(bayesian_modules(net)), 0)


class TestStochasticMode(unittest.TestCase):
    def test_setter_and_context(self):
        net = convert_to_bayesian(_basic_unet(), mode="local")
        stochastic_mode(net, "mean")
        self.assertTrue(all(m.mode == "mean" for m in bayesian_modules(net).values()))
        with stochastic_mode(net, "sampled"):
            self.assertTrue(all(m.mode == "sampled" for m in bayesian_modules(net).values()))
        self.assertTrue(all(m.mode == "mean" for m in bayesian_modules(net).values()))
        with self.assertRaisesRegex(ValueError, "mode must be one of .* got 'noisy'"):
            stochastic_mode(net, "noisy")

    def test_sampled_mode_is_one_coherent_draw(self):
        net = convert_to_bayesian(_basic_unet(), init_log_scale=-1.0).eval()
        x = torch.randn(1, 1, 32, 32, 32)
        with torch.no_grad(), stochastic_mode(net, "sampled"):
            a, b = net(x), net(x)
            torch.testing.assert_close(a, b)
            self.assertEqual(resample_weights(net), len(bayesian_modules(net)))
            self.assertFalse(torch.allclose(net(x), a))

    def test_bayesian_modules_type_error(self):
        with self.assertRaisesRegex(TypeError, "net must be a torch.nn.Module, got int"):
            bayesian_modules(3)
        self.assertIsInstance(next(iter(bayesian_modules(convert_to_bayesian(_unet())).values())), BayesianConv)


if __name__ == "__main__":
    unittest.main()
