from __future__ import annotations

import unittest
from unittest import mock

import torch
from monai.bundle import ConfigParser
from parameterized import parameterized
from torch import nn

from monai_dwp.networks.layers import BayesianConv
from monai_dwp.networks.nets import DWPUNet
from monai_dwp.networks.utils import stochastic_mode

# (constructor kwargs, input shape, expected output shape)
TEST_SHAPES = [
    ({}, (1, 1, 32, 32, 32), (1, 2, 32, 32, 32)),
    ({"in_channels": 4, "out_channels": 3}, (2, 4, 16, 32, 24), (2, 3, 16, 32, 24)),
    ({"dropout": 0.2}, (1, 1, 8, 16, 8), (1, 2, 8, 16, 8)),
    ({"channels": (16, 32, 32, 64)}, (1, 1, 16, 16, 16), (1, 2, 16, 16, 16)),
    ({"spatial_dims": 2, "in_channels": 3}, (2, 3, 32, 16), (2, 2, 32, 16)),
    ({"bias": True, "norm": ("group", {"num_groups": 4})}, (1, 1, 16, 16, 16), (1, 2, 16, 16, 16)),
]

TEST_BAD_ARGS = [
    ({"spatial_dims": 1}, ValueError, r"spatial_dims must be 3 .* got 1"),
    ({"in_channels": 0}, ValueError, r"in_channels must be ≥ 1, got 0"),
    ({"out_channels": 2.0}, TypeError, r"out_channels must be an integer, got 2.0 \(float\)"),
    ({"channels": (16, 32, 64)}, ValueError, r"channels must be four positive ints .*\(16, 32, 64\)"),
    ({"channels": (16, 32, 0, 128)}, ValueError, r"channels must be four positive ints"),
    ({"dropout": 1.0}, ValueError, r"dropout must lie in \[0.0, 1.0\), got 1.0; use None or 0 to disable it"),
    ({"dropout": "0.1"}, TypeError, r"dropout must be a number, got '0.1' \(str\)"),
]

TEST_BAD_INPUTS = [
    ((1, 32, 32, 32), r"must be 5D .* got shape \(1, 32, 32, 32\)"),
    ((1, 2, 16, 16, 16), r"has 2 channels .* in_channels=1"),
    ((1, 1, 16, 20, 16), r"spatial size \(16, 20, 16\) .* multiple of\s+8"),
]


class TestDWPUNet(unittest.TestCase):
    @parameterized.expand(TEST_SHAPES)
    def test_shape(self, kwargs, input_shape, expected_shape):
        net = DWPUNet(**kwargs).eval()
        with torch.no_grad():
            self.assertEqual(tuple(net(torch.randn(input_shape)).shape), expected_shape)

    def test_parameter_count_is_appendix_b(self):
        net = DWPUNet(spatial_dims=3, in_channels=1, out_channels=2)
        self.assertEqual(sum(p.numel() for p in net.parameters()), 912_848)
        convs3 = [m for m in net.modules() if isinstance(m, nn.Conv3d) and m.kernel_size == (3, 3, 3)]
        self.assertEqual(len(convs3), 25)
        self.assertEqual(sum(m.weight.shape[0] * m.weight.shape[1] for m in convs3), 33_808)
        self.assertEqual(sum(m.weight.numel() for m in convs3), 912_816)
        self.assertEqual(sum(p.numel() for p in DWPUNet(bias=True).parameters()), 913_746)
        bnet = DWPUNet(bayesian=True)
        self.assertEqual(sum(p.numel() for p in bnet.parameters()), 912_848 + 912_816)
        self.assertEqual(sum(isinstance(m, BayesianConv) for m in bnet.modules()), 25)

    def test_other_layouts(self):
        wide = DWPUNet(channels=(16, 32, 64, 128), projection_kernel_size=1)
        self.assertEqual(sum(p.numel() for p in wide.parameters()), 2_344_400)
        convs3 = [m for m in wide.modules() if isinstance(m, nn.Conv3d) and m.kernel_size == (3, 3, 3)]
        self.assertEqual((len(convs3), sum(m.weight.shape[0] * m.weight.shape[1] for m in convs3)), (19, 86_032))
        with self.assertRaisesRegex(ValueError, r"projection_kernel_size must be 3 \(appendix B\) or 1 .* got 2"):
            DWPUNet(projection_kernel_size=2)

    def test_architecture(self):
        net = DWPUNet()
        self.assertEqual(DWPUNet.downsample_factor, 8)
        self.assertEqual((net.init_conv.in_channels, net.init_conv.out_channels), (1, 16))
        self.assertEqual((net.out.in_channels, net.out.out_channels, net.out.kernel_size), (16, 2, (1, 1, 1)))
        strides = {name: net.get_submodule(f"{name}.conv1.conv").stride[0] for name in ("down1", "down2", "down3")}
        self.assertEqual(strides, {"down1": 2, "down2": 1, "down3": 2})
        self.assertIsInstance(net.down1.projection.conv, nn.Conv3d)
        self.assertEqual(net.down1.projection.conv.kernel_size, (3, 3, 3))
        self.assertEqual(net.down1.projection.conv.stride, (2, 2, 2))
        self.assertEqual(net.up1.projection.conv.kernel_size, (3, 3, 3))
        self.assertIsInstance(net.down2.projection, nn.Identity)
        self.assertIsInstance(net.down4.projection, nn.Identity)
        self.assertIsInstance(net.down6.projection, nn.Identity)
        # appendix B's widths, block by block (in, out) of conv1 / conv2
        widths = {
            name: (net.get_submodule(f"{name}.conv1.conv").in_channels, net.get_submodule(f"{name}.conv2.conv").out_channels)
            for name in ("down1", "down2", "down3", "down4", "down5", "down6", "up1", "up2", "up3")
        }
        self.assertEqual(widths, {"down1": (16, 32), "down2": (32, 32), "down3": (32, 32), "down4": (32, 32),
                                  "down5": (32, 64), "down6": (64, 64), "up1": (32, 32), "up2": (32, 32),
                                  "up3": (16, 16)})
        self.assertEqual((net.up1.projection.conv.in_channels, net.up3.projection.conv.out_channels), (64, 16))
        self.assertIsInstance(net.down1.conv1.norm, nn.InstanceNorm3d)
        self.assertEqual(net.up1.upsample.mode, "trilinear")
        self.assertIsInstance(net.dropout, nn.Identity)
        self.assertIsInstance(DWPUNet(dropout=0.3).dropout, nn.Dropout3d)

    def test_gradients_reach_every_parameter(self):
        torch.manual_seed(0)
        net = DWPUNet(in_channels=2, out_channels=3)
        net(torch.randn(2, 2, 16, 16, 16)).square().mean().backward()
        for name, p in net.named_parameters():
            self.assertIsNotNone(p.grad, name)
            self.assertTrue(torch.isfinite(p.grad).all(), name)
            self.assertGreater(int(torch.count_nonzero(p.grad)), 0, name)

    @parameterized.expand(TEST_BAD_ARGS)
    def test_bad_args(self, kwargs, error, pattern):
        with self.assertRaisesRegex(error, pattern):
            DWPUNet(**kwargs)

    @parameterized.expand(TEST_BAD_INPUTS)
    def test_bad_input(self, input_shape, pattern):
        with self.assertRaisesRegex(ValueError, pattern):
            DWPUNet()(torch.randn(input_shape))

    def test_seeded_determinism(self):
        x = torch.randn(1, 1, 16, 16, 16)
        outputs = []
        for _ in range(2):
            torch.manual_seed(123)
            net = DWPUNet().eval()
            with torch.no_grad():
                outputs.append(net(x))
        torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)

    def test_dropout_is_stochastic_in_train_mode_only(self):
        net = DWPUNet(dropout=0.5)
        x = torch.randn(1, 1, 16, 16, 16)
        with torch.no_grad():
            net.eval()
            torch.testing.assert_close(net(x), net(x))
            net.train()
            self.assertFalse(torch.equal(net(x), net(x)))

    def test_config_parser_full_name(self):
        config = {
            "network_def": {
                "_target_": "monai_dwp.networks.nets.DWPUNet",
                "spatial_dims": 3,
                "in_channels": 1,
                "out_channels": 2,
                "dropout": 0.1,
            }
        }
        net = ConfigParser(config).get_parsed_content("network_def")
        self.assertIsInstance(net, DWPUNet)
        self.assertIsInstance(net.dropout, nn.Dropout3d)

    def test_config_parser_short_name(self):
        parser = ConfigParser(
            {"imports": ["$import monai_dwp.networks.nets"], "net": {"_target_": "DWPUNet", "out_channels": 3}}
        )
        net = parser.get_parsed_content("net")
        self.assertIsInstance(net, DWPUNet)
        self.assertEqual(net.out_channels, 3)


class TestBayesianDWPUNet(unittest.TestCase):
    def test_conversion(self):
        net = DWPUNet(bayesian=True, init_log_scale=-4.0)
        bayesian = [m for m in net.modules() if isinstance(m, BayesianConv)]
        self.assertEqual(len(bayesian), 25)
        plain = [m for m in net.modules() if isinstance(m, nn.Conv3d)]
        self.assertEqual([m.kernel_size for m in plain], [(1, 1, 1)])  # only the output stays deterministic
        self.assertIsInstance(net.init_conv, BayesianConv)
        self.assertIsInstance(net.down1.conv1.conv, BayesianConv)
        self.assertIsInstance(net.down1.projection.conv, BayesianConv)
        log_scale = net.down1.conv1.conv.log_scale
        torch.testing.assert_close(log_scale, torch.full_like(log_scale, -4.0))

    def test_default_scale_is_relative_to_each_layers_weights(self):
        torch.manual_seed(0)
        net = DWPUNet(bayesian=True, init_scale_ratio=0.2)
        for layer in (net.init_conv, net.down6.conv2.conv):
            rms = float(layer.loc.detach().square().mean().sqrt())
            torch.testing.assert_close(layer.scale.detach(), torch.full_like(layer.loc, 0.2 * rms))
        # layers of very different fan-in: the scales differ, the signal-to-noise ratio does not
        self.assertGreater(float(net.init_conv.scale.detach()[0, 0, 0, 0, 0]), 5 * float(net.down6.conv2.conv.scale.detach()[0, 0, 0, 0, 0]))

    def test_shape_and_gradients(self):
        torch.manual_seed(0)
        net = DWPUNet(bayesian=True)
        y = net(torch.randn(1, 1, 16, 16, 16))
        self.assertEqual(tuple(y.shape), (1, 2, 16, 16, 16))
        y.square().mean().backward()
        for name, p in net.named_parameters():
            self.assertIsNotNone(p.grad, name)
            self.assertTrue(torch.isfinite(p.grad).all(), name)

    def test_mean_mode_matches_deterministic(self):
        torch.manual_seed(7)
        det = DWPUNet().eval()
        torch.manual_seed(7)
        bay = DWPUNet(bayesian=True).eval()
        x = torch.randn(1, 1, 16, 16, 16)
        with torch.no_grad(), stochastic_mode(bay, "mean"):
            torch.testing.assert_close(bay(x), det(x))

    def test_config_parser(self):
        parser = ConfigParser(
            {"imports": ["$import monai_dwp"], "net": {"_target_": "monai_dwp.networks.nets.DWPUNet", "bayesian": True}}
        )
        net = parser.get_parsed_content("net")
        self.assertIsInstance(net.init_conv, BayesianConv)


class TestChannelsLast(unittest.TestCase):
    """The layout of the pre-activated convolutions changes the speed, never the function or its gradient."""

    def _run(self, net, layout, x, seed=0):
        net.channels_last = layout
        net.zero_grad()
        torch.manual_seed(seed)
        for m in net.modules():
            if isinstance(m, BayesianConv) and m.mode == "sampled":
                m.resample()
        y = net(x)
        y.square().mean().backward()
        return y.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}

    def _assert_same(self, net, x):
        y0, g0 = self._run(net, False, x)
        y1, g1 = self._run(net, True, x)
        self.assertTrue(y1.is_contiguous())
        torch.testing.assert_close(y1, y0, rtol=1e-4, atol=1e-5)
        self.assertEqual(g0.keys(), g1.keys())
        for name in g0:
            torch.testing.assert_close(g1[name], g0[name], rtol=1e-3, atol=1e-6, msg=name)

    @parameterized.expand([("deterministic",), ("mean",), ("sampled",)])
    def test_same_function_and_gradients(self, mode):
        torch.manual_seed(0)
        net = DWPUNet(bayesian=mode != "deterministic", channels=(4, 8, 8, 8))
        if mode != "deterministic":
            stochastic_mode(net, mode)
        self._assert_same(net, torch.randn(2, 1, 16, 16, 16))

    def test_local_mode_with_the_same_noise(self):
        """``local`` draws its noise in the output's layout; with noise that depends on the element only, not on
        the memory order, both layouts give the same values and gradients."""

        def noise(t):
            g = torch.Generator().manual_seed(t.numel() + t.shape[1])
            return torch.randn(t.shape, generator=g).contiguous(memory_format=torch.channels_last_3d
                                                                if not t.is_contiguous() else torch.contiguous_format)

        torch.manual_seed(0)
        net = DWPUNet(bayesian=True, channels=(4, 8, 8, 8))
        with mock.patch("monai_dwp.networks.layers.bayesian_conv.randn_like", side_effect=noise) as spy:
            self._assert_same(net, torch.randn(2, 1, 16, 16, 16))
        self.assertTrue(any(not c.args[0].is_contiguous() for c in spy.call_args_list))  # channels-last ran

    @staticmethod
    def _layouts(net):
        """Whether ``down1.conv1.conv`` saw a contiguous input in a training pass, then in an inference pass."""
        seen = []
        net.down1.conv1.conv.register_forward_pre_hook(lambda m, a: seen.append(a[0].is_contiguous()))
        net(torch.randn(2, 1, 16, 16, 16)).sum().backward()  # training pass, batch 2
        with torch.no_grad():
            net(torch.randn(2, 1, 16, 16, 16))
        return seen

    @mock.patch("monai_dwp.networks.layers.memory_format._avx512_kernels", return_value=False)
    def test_default_follows_the_rule(self, _):
        net = DWPUNet(channels=(4, 8, 8, 8))
        self.assertIsNone(net.channels_last)
        self.assertEqual(self._layouts(net), [False, True])  # training: channels-last; inference: contiguous

    @mock.patch("monai_dwp.networks.layers.memory_format._avx512_kernels", return_value=True)
    def test_avx512_kernels_channels_last_for_local_only(self, _):
        self.assertEqual(self._layouts(DWPUNet(channels=(4, 8, 8, 8))), [True, True])
        for mode, layouts in (("sampled", [True, True]), ("local", [False, True])):
            net = DWPUNet(bayesian=True, channels=(4, 8, 8, 8))
            stochastic_mode(net, mode)
            self.assertEqual(self._layouts(net), layouts, mode)

    @parameterized.expand([("deterministic",), ("local",)])
    def test_channels_last_keeps_one_copy_of_the_activation(self, mode):
        """The layout changes before the activation: what the activation and the convolution save for the
        backward is one tensor, not a contiguous one and a channels-last copy of it."""
        from monai_dwp.networks.nets.dwp_unet import _PreActConv

        torch.manual_seed(0)
        net = DWPUNet(bayesian=mode == "local", channels=(4, 8, 8, 8))
        unit = next(m for m in net.modules() if isinstance(m, _PreActConv))
        x = torch.randn(2, 4, 16, 16, 16, requires_grad=True)
        for layout in (False, True):
            unit.channels_last = layout
            saved = []
            with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
                unit(x)
            # the input-sized tensors kept for the backward: the normalisation's input and the activation's output
            big = {t.untyped_storage().data_ptr() for t in saved if t.numel() == x.numel()}
            self.assertEqual(len(big), 2, (mode, layout))

    def test_bad_value(self):
        with self.assertRaisesRegex(TypeError, r"channels_last must be None .* got 'yes'"):
            DWPUNet(channels_last="yes")


class TestComputeDtype(unittest.TestCase):
    """``compute_dtype`` runs the convolutions in bfloat16 and hands back float32 logits close to float32's."""

    def _pass(self, net, x):
        seen = []
        hook = net.down3.conv1.conv.register_forward_hook(lambda m, a, y: seen.append(y.dtype))
        net.zero_grad()
        y = net(x)
        y.square().mean().backward()
        hook.remove()
        grad = torch.cat([p.grad.flatten() for p in net.parameters()])
        return y.detach(), grad, seen[0]

    def test_bfloat16_logits_and_gradients_match_float32(self):
        torch.manual_seed(0)
        net = DWPUNet(channels=(4, 8, 8, 8))
        x = torch.randn(2, 1, 16, 16, 16)
        y32, g32, conv32 = self._pass(net, x)
        net.compute_dtype = "bfloat16"
        y16, g16, conv16 = self._pass(net, x)
        self.assertEqual((conv32, conv16), (torch.float32, torch.bfloat16))  # the convolutions really ran in bf16
        self.assertEqual(y16.dtype, torch.float32)
        self.assertTrue(all(p.dtype == torch.float32 for p in net.parameters()))
        self.assertFalse(torch.equal(y16, y32))
        self.assertLess(((y16 - y32).norm() / y32.norm()).item(), 0.05)
        self.assertGreater(nn.functional.cosine_similarity(g16, g32, dim=0).item(), 0.99)
        self.assertEqual(DWPUNet(compute_dtype=torch.bfloat16).compute_dtype, torch.bfloat16)
        self.assertIsNone(DWPUNet(compute_dtype="float32").compute_dtype)

    def test_auto_follows_the_hardware(self):
        net = DWPUNet(channels=(4, 8, 8, 8), compute_dtype="auto")
        with mock.patch("monai_dwp.utils.precision.native_bfloat16", return_value=True) as native:
            self.assertIs(net.autocast_dtype("cpu"), torch.bfloat16)
            self.assertIs(net.autocast_dtype(torch.device("cpu")), torch.bfloat16)
            self.assertEqual(native.call_count, 1)  # decided once per device type
            self.assertEqual(self._pass(net, torch.randn(1, 1, 16, 16, 16))[2], torch.bfloat16)
        net.compute_dtype = "auto"  # setting it again forgets the decision
        with mock.patch("monai_dwp.utils.precision.native_bfloat16", return_value=False):
            self.assertIsNone(net.autocast_dtype("cpu"))
            self.assertEqual(self._pass(net, torch.randn(1, 1, 16, 16, 16))[2], torch.float32)

    def test_checkpoints_do_not_depend_on_it(self):
        torch.manual_seed(0)
        a = DWPUNet(channels=(4, 8, 8, 8), compute_dtype="bfloat16")
        b = DWPUNet(channels=(4, 8, 8, 8))
        b.load_state_dict(a.state_dict())
        self.assertEqual(list(a.state_dict()), list(b.state_dict()))

    def test_config_parser(self):
        parser = ConfigParser({"imports": ["$import monai_dwp"],
                               "net": {"_target_": "DWPUNet", "compute_dtype": "auto"}})
        self.assertEqual(parser.get_parsed_content("net").compute_dtype, "auto")

    @parameterized.expand([
        ("float16", ValueError, r"compute_dtype must be None, 'float32', 'bfloat16' or 'auto', got 'float16'; "
                                r"float16 training needs a gradient scaler"),
        ("half", ValueError, r"got 'half'; use 'bfloat16' for fast matrix products, 'auto'"),
        (16, TypeError, r"compute_dtype must be a str, a torch.dtype or None, got int: 16"),
    ])
    def test_bad_value(self, value, error, pattern):
        with self.assertRaisesRegex(error, pattern):
            DWPUNet(compute_dtype=value)


class TestBadInputMessages(unittest.TestCase):
    """The messages of the input checks name the value found and the fix."""

    def test_wrong_channel_count(self):
        pattern = (r"^DWPUNet input has 2 channels \(shape \(1, 2, 16, 16, 16\)\) but in_channels=1; select 1 "
                   r"modality \(e\.g\. --modality FLAIR\) or build the network with in_channels=2\.$")
        with self.assertRaisesRegex(ValueError, pattern):
            DWPUNet()(torch.zeros(1, 2, 16, 16, 16))

    def test_2d_image_to_the_3d_network(self):
        pattern = (r"^DWPUNet input must be 5D \(batch, channel, 3 spatial dims\), got shape \(1, 1, 32, 32\); add "
                   r"the missing batch/channel axis, or give 3D images \(a network for 2D slices is "
                   r"DWPUNet\(spatial_dims=2\)\)\.$")
        with self.assertRaisesRegex(ValueError, pattern):
            DWPUNet()(torch.zeros(1, 1, 32, 32))


if __name__ == "__main__":
    unittest.main()
