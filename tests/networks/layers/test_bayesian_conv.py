from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap
import unittest
from unittest import mock

import torch
from monai.bundle import ConfigParser
from parameterized import parameterized
from torch import nn

from monai_dwp.networks.layers import BayesianConv
from monai_dwp.networks.layers.bayesian_conv import hold_weights

BACKWARD_PEAK_PROBE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import torch
    from monai_dwp.networks.layers import BayesianConv

    def resident(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

    def backward_peak(conv):  # peak resident growth during one backward, in activations of 2 x 16 x 32^3 floats
        x = torch.randn(2, 16, 32, 32, 32).contiguous(memory_format=torch.channels_last_3d).requires_grad_()
        y = conv(x)
        grad = torch.randn_like(y)
        before = resident("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
        except OSError:
            sys.exit(3)
        y.backward(grad)
        return (resident("VmHWM") - before) / (x.numel() * 4)

    torch.manual_seed(0)
    local = BayesianConv(3, 16, 16, 3, padding=1, mode="local")
    deterministic = torch.nn.Conv3d(16, 16, 3, padding=1, bias=False)
    for conv in (local, deterministic):  # the first backward of a kind also builds oneDNN's kernels (~2-3 varying
        backward_peak(conv)              # activations): measured after it
    print(backward_peak(local), backward_peak(deterministic))
    """
)

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

    @parameterized.expand([
        ("one small sample", (1, 16, 8, 8, 8), {}, True),
        ("two samples: oneDNN anyway", (2, 16, 8, 8, 8), {}, False),
        ("one large sample", (1, 16, 64, 64, 64), {}, False),
        ("transposed", (1, 16, 8, 8, 8), {"is_transposed": True}, False),
        ("forced off", (1, 16, 8, 8, 8), {"fuse_local": False}, False),
        ("forced on", (2, 16, 8, 8, 8), {"fuse_local": True}, True),
    ])
    def test_default_fuses_only_where_pytorch_leaves_onednn(self, _, in_shape, kwargs, fused):
        """``fuse_local=None`` takes the grouped convolution only for one small sample on CPU (PyTorch routes two or
        more samples to oneDNN itself, and the unfused path has the lean backward)."""
        conv = BayesianConv(3, in_shape[1], 4, kernel_size=3, padding=1, **kwargs)
        with mock.patch.object(BayesianConv, "_conv_grouped", autospec=True,
                               side_effect=BayesianConv._conv_grouped) as grouped:
            conv(torch.randn(in_shape))
        self.assertEqual(grouped.called, fused)

    @parameterized.expand([(*case, redraw) for case in SHAPE_CASES for redraw in (False, True)])
    def test_lean_local_backward_equals_autograd_of_the_expression(self, spatial_dims, kwargs, in_shape, out_shape,
                                                                   redraw):
        """The unfused ``local`` path (a custom autograd function that keeps x and ξ / 2σ only, or with ``redraw``
        the generator's state only) gives the values and the gradients of autograd through
        ``conv(x, W) + b + sqrt(conv(x², W_var) + eps) ξ`` for the same ξ."""
        conv = BayesianConv(spatial_dims, in_shape[1], out_shape[1], init_log_scale=-1.0, fuse_local=False,
                            redraw_local_noise=redraw, **kwargs).double()
        x = torch.randn(in_shape, dtype=torch.float64, requires_grad=True)
        params = [x, conv.loc, conv.log_scale, conv.bias]
        torch.manual_seed(3)
        y = conv(x)
        weights = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)
        lean = torch.autograd.grad((y * weights).sum(), params)
        torch.manual_seed(3)
        mean = conv._apply_conv(x, conv.loc, conv.bias)
        var = conv._apply_conv(x * x, (2 * conv.log_scale).exp(), None)
        expected = mean + (var + conv.eps).sqrt() * torch.randn_like(mean)
        torch.testing.assert_close(y, expected)
        for name, a, b in zip(("x", "loc", "log_scale", "bias"), lean,
                              torch.autograd.grad((expected * weights).sum(), params)):
            torch.testing.assert_close(a, b, msg=name)

    def test_lean_local_without_bias_or_input_gradient(self):
        conv = BayesianConv(3, 2, 3, 3, padding=1, bias=False, fuse_local=False, init_log_scale=-1.0).double()
        x = torch.randn(1, 2, 5, 5, 5, dtype=torch.float64)  # the input needs no gradient
        torch.manual_seed(4)
        lean = torch.autograd.grad(conv(x).square().sum(), [conv.loc, conv.log_scale])
        torch.manual_seed(4)
        mean = conv._apply_conv(x, conv.loc, None)
        plain = mean + (conv._apply_conv(x * x, (2 * conv.log_scale).exp(), None) + conv.eps).sqrt() * torch.randn_like(mean)
        for a, b in zip(lean, torch.autograd.grad(plain.square().sum(), [conv.loc, conv.log_scale])):
            torch.testing.assert_close(a, b)

    @staticmethod
    def _saved_bytes(conv: BayesianConv, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """The output of ``conv(x)`` and the bytes of the tensors its graph saved that are not ``x`` or a weight."""
        saved: list[torch.Tensor] = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            y = conv(x)
        own = {x.data_ptr(), conv.loc.data_ptr(), conv.log_scale.data_ptr()}
        return y, sum(t.numel() * t.element_size() for t in saved
                      if t.data_ptr() not in own and t.numel() > conv.loc.numel())

    def test_redraw_keeps_no_output_sized_tensor_and_the_same_gradients(self):
        """With ``redraw_local_noise`` the forward keeps no ``ξ / 2σ``; the backward draws the same ξ again (also in
        a channels-last layout) and gives the gradients of the kept-noise path to rounding; the caller's random
        stream after the step is the same as without the redraw."""
        for memory_format in (torch.contiguous_format, torch.channels_last_3d):
            x = torch.randn(2, 3, 6, 7, 5).contiguous(memory_format=memory_format).requires_grad_()
            grads, saved, after = {}, {}, {}
            conv = BayesianConv(3, 3, 5, 3, padding=1, init_log_scale=-1.0, fuse_local=False)
            for redraw in (False, True):
                conv.redraw_local_noise = redraw
                torch.manual_seed(11)
                y, saved[redraw] = self._saved_bytes(conv, x)
                torch.randn(3)  # the caller draws between the forward and the backward
                grads[redraw] = (y, *torch.autograd.grad(y.square().sum(), [x, conv.loc, conv.log_scale]))
                after[redraw] = torch.randn(4)
            self.assertEqual(saved[True], 0)
            self.assertEqual(saved[False], 2 * 5 * 6 * 7 * 5 * 4)  # ξ / 2σ, one float per output element
            for name, a, b in zip(("y", "x", "loc", "log_scale"), grads[True], grads[False]):
                torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6, msg=name)
            torch.testing.assert_close(after[True], after[False], rtol=0, atol=0)

    def test_redraw_by_default_where_the_input_has_few_channels(self):
        from monai_dwp.networks.layers import REDRAW_MAX_IN_CHANNELS

        x_few, x_many = torch.randn(2, 1, 6, 6, 6), torch.randn(2, REDRAW_MAX_IN_CHANNELS + 1, 6, 6, 6)
        self.assertEqual(self._saved_bytes(BayesianConv(3, 1, 4, 3, padding=1), x_few)[1], 0)
        self.assertGreater(self._saved_bytes(BayesianConv(3, REDRAW_MAX_IN_CHANNELS + 1, 4, 3, padding=1),
                                             x_many)[1], 0)
        self.assertGreater(self._saved_bytes(BayesianConv(3, 1, 4, 3, padding=1, redraw_local_noise=False),
                                             x_few)[1], 0)
        with self.assertRaisesRegex(TypeError, "redraw_local_noise must be True, False or None, got 'yes'"):
            BayesianConv(3, 1, 4, 3, redraw_local_noise="yes")

    @unittest.skipUnless(torch.cuda.is_available(), "CUDA: the redraw replays the CUDA generator's state")
    def test_redraw_on_cuda(self):
        x = torch.randn(2, 2, 8, 8, 8, device="cuda", requires_grad=True)
        grads = {}
        for redraw in (False, True):
            torch.manual_seed(5)
            conv = BayesianConv(3, 2, 4, 3, padding=1, init_log_scale=-1.0, redraw_local_noise=redraw).cuda()
            torch.cuda.manual_seed(6)
            grads[redraw] = torch.autograd.grad(conv(x).square().sum(), [x, conv.loc, conv.log_scale])
        for a, b in zip(grads[True], grads[False]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)

    @unittest.skipUnless(sys.platform.startswith("linux"), "reads the peak resident set of /proc/self")
    def test_lean_local_backward_holds_two_temporaries_at_a_time(self):
        """The backward of a ``local`` layer peaks about one activation above a deterministic layer's (measured
        with every large block mapped on its own, so that the resident peak is the live tensors', after a first
        backward of each kind has built its kernels); computing both gradients of the variance convolution in one
        call, after the mean branch, peaked two activations higher."""
        out = subprocess.run([sys.executable, "-c", BACKWARD_PEAK_PROBE], capture_output=True, text=True,
                             env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
        if out.returncode == 3:
            self.skipTest("/proc/self/clear_refs is not writable here: the peak cannot be reset")
        self.assertEqual(out.returncode, 0, out.stderr)
        local, deterministic = (float(v) for v in out.stdout.split())
        self.assertGreater(deterministic, 0.9)  # the input gradient at least: the probe measures
        self.assertLess(local - deterministic, 2.0)  # ~1.0 measured; ~3.0 with the earlier order

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

    def test_epsilon_setter_checks_shape(self):
        conv = BayesianConv(2, 2, 2, 3, mode="sampled")
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


def _sampled_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        BayesianConv(3, 1, 3, 3, padding=1, init_log_scale=-1.0, mode="sampled"),
        nn.ReLU(),
        BayesianConv(3, 3, 2, 3, padding=1, init_log_scale=-1.0, mode="sampled"),
    )


class _CountForms:
    """Counts ``BayesianConv._form_weight`` calls (one per weight formed) while active."""

    def __init__(self) -> None:
        self.calls = 0
        self._original = BayesianConv._form_weight

    def __enter__(self) -> _CountForms:
        def counting(layer: BayesianConv, eps: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return self._original(layer, eps)

        self._patch = mock.patch.object(BayesianConv, "_form_weight", counting)
        self._patch.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._patch.stop()


class TestSampledWeight(unittest.TestCase):
    """``sample_weight`` is never stale; ``hold_weights`` forms it once per context and releases it."""

    def test_inference_mode_equals_no_grad(self):
        net = _sampled_net()
        conv = net[0]
        x = torch.randn(2, 1, 6, 6, 6)
        with torch.no_grad():
            w_ref, y_ref = conv.sample_weight(), net(x)
        with torch.inference_mode():
            w, y = conv.sample_weight(), net(x)
            with hold_weights(net):
                y_held = net(x)
                self.assertTrue(conv.held_weight.is_inference())
        torch.testing.assert_close(w, w_ref, rtol=0, atol=0)
        torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
        torch.testing.assert_close(y_held, y_ref, rtol=0, atol=0)
        torch.testing.assert_close(conv.sample_weight(), w_ref, rtol=0, atol=0)  # outside: same draw

    def test_draw_made_under_inference_mode_trains_afterwards(self):
        conv = BayesianConv(3, 1, 2, 3, padding=1, mode="sampled")
        with torch.inference_mode():
            conv.resample()  # epsilon is an inference tensor
            y_inf = conv(torch.ones(1, 1, 4, 4, 4))
        x = torch.ones(1, 1, 4, 4, 4)
        y = conv(x)
        y.sum().backward()  # autograd may save (a normal copy of) epsilon
        self.assertGreater(float(conv.log_scale.grad.abs().sum()), 0.0)
        torch.testing.assert_close(y.detach(), y_inf, rtol=0, atol=0)  # the same draw
        self.assertFalse(conv.epsilon.is_inference())

    def test_edit_through_data_is_seen(self):
        net = _sampled_net()
        conv = net[0]
        x = torch.randn(1, 1, 5, 5, 5)
        with torch.no_grad():
            before = net(x)
            conv.loc.data.add_(1.0)  # bumps no version counter
            w = conv.sample_weight()
            after = net(x)
        torch.testing.assert_close(w, conv.loc + conv.scale * conv.epsilon, rtol=0, atol=0)
        self.assertFalse(torch.allclose(after, before))
        conv.log_scale.data.fill_(-30.0)  # scale ~ 0: the weight is the new loc
        with torch.no_grad():
            torch.testing.assert_close(conv.sample_weight(), conv.loc, rtol=0, atol=1e-12)

    def test_formed_once_inside_the_context_and_equal_to_uncached(self):
        net = _sampled_net()
        layers = [net[0], net[2]]
        x = torch.randn(2, 1, 5, 5, 5)
        with torch.no_grad():
            expected = net(x)
            with _CountForms() as count, hold_weights(net):
                outs = [net(x[i : i + 1]) for i in range(2)] + [net(x)]
                weights = [[layer.sample_weight() for layer in layers] for _ in range(3)]
                held = [layer.held_weight for layer in layers]
            self.assertEqual(count.calls, len(layers))  # once per layer, not once per call
            for call in weights:
                for w, h in zip(call, held):
                    self.assertIs(w, h)
            # batch 1 and batch 2 may take different float32 convolution kernels (oneDNN's or PyTorch's own)
            torch.testing.assert_close(torch.cat(outs[:2]), expected, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(outs[2], expected, rtol=0, atol=0)
            with _CountForms() as count:  # outside: formed on every call
                net(x)
                net(x)
            self.assertEqual(count.calls, 2 * len(layers))

    def test_resample_and_mode_change_inside_the_context(self):
        conv = BayesianConv(3, 1, 2, 3, init_log_scale=-1.0, mode="sampled")
        with hold_weights(conv):
            with torch.no_grad():
                w1 = conv.sample_weight()
                conv.resample()
                w2 = conv.sample_weight()
                self.assertIsNot(w2, w1)
                self.assertFalse(torch.equal(w2, w1))
                torch.testing.assert_close(w2, conv.loc + conv.scale * conv.epsilon, rtol=0, atol=0)
                conv.epsilon = torch.zeros_like(conv.loc)
                torch.testing.assert_close(conv.sample_weight(), conv.loc.detach(), rtol=0, atol=0)
            w_grad = conv.sample_weight()  # grad mode changed: formed anew, differentiable
            self.assertTrue(w_grad.requires_grad)
            self.assertIs(conv.sample_weight(), w_grad)

    def test_released_on_exit_and_on_exception(self):
        net = _sampled_net()
        layers = [net[0], net[2]]
        x = torch.randn(1, 1, 4, 4, 4)
        with torch.no_grad(), hold_weights(net):
            net(x)
            self.assertTrue(all(layer.held_weight is not None for layer in layers))
        self.assertTrue(all(layer.held_weight is None and layer._hold_depth == 0 for layer in layers))
        with self.assertRaisesRegex(RuntimeError, "boom"), torch.no_grad(), hold_weights(net):
            net(x)
            raise RuntimeError("boom")
        self.assertTrue(all(layer.held_weight is None and layer._hold_depth == 0 for layer in layers))
        # after release, an edit through .data is seen again
        with torch.no_grad():
            net[0].loc.data.zero_()
            net[0].log_scale.data.fill_(-30.0)
            torch.testing.assert_close(net[0].sample_weight(), torch.zeros_like(net[0].loc), rtol=0, atol=1e-12)

    def test_nested_contexts_release_at_the_outermost(self):
        conv = BayesianConv(3, 1, 2, 3, mode="sampled")
        with torch.no_grad(), hold_weights(conv):
            w = conv.sample_weight()
            with hold_weights([conv]):
                self.assertIs(conv.sample_weight(), w)
            self.assertIs(conv.held_weight, w)  # the inner exit keeps the outer hold
        self.assertIsNone(conv.held_weight)

    def test_moving_the_layer_drops_the_held_weight(self):
        conv = BayesianConv(3, 1, 2, 3, mode="sampled")
        with torch.no_grad(), hold_weights(conv):
            w = conv.sample_weight()
            conv.double()
            w64 = conv.sample_weight()
            self.assertEqual(w64.dtype, torch.float64)
            self.assertIsNot(w64, w)

    def test_a_copy_made_inside_the_context_holds_nothing(self):
        conv = BayesianConv(3, 1, 2, 3, mode="sampled")
        with torch.no_grad(), hold_weights(conv):
            conv.sample_weight()
            twin = copy.deepcopy(conv)
        self.assertIsNone(twin.held_weight)
        self.assertEqual(twin._hold_depth, 0)
        with torch.no_grad():
            twin.loc.data.add_(1.0)
            torch.testing.assert_close(twin.sample_weight(), twin.loc + twin.scale * twin.epsilon, rtol=0, atol=0)

    def test_bad_argument(self):
        with self.assertRaisesRegex(TypeError, r"net must be a torch.nn.Module or an iterable .* got int"):
            hold_weights(3)
        with self.assertRaisesRegex(TypeError, r"iterable holding \['Linear'\]"):
            hold_weights([BayesianConv(3, 1, 1, 1), nn.Linear(2, 2)])
        self.assertEqual(hold_weights(nn.Linear(2, 2)).layers, [])  # no Bayesian layer: a no-op


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
            ({"in_channels": 0}, ValueError, "in_channels must be ≥ 1, got 0"),
            ({"groups": 3}, ValueError, "divisible by groups=3"),
            ({"kernel_size": (3, 3)}, ValueError, "kernel_size must have spatial_dims=3 entries"),
            ({"kernel_size": "3"}, TypeError, "kernel_size must be an int or a sequence"),
            ({"output_padding": 1}, ValueError, "output_padding=1 is only valid with is_transposed=True"),
            ({"mode": "random"}, ValueError, r"mode must be one of \('mean', 'local', 'sampled'\)"),
            ({"init_log_scale": float("nan")}, ValueError, "init_log_scale must be finite, got nan"),
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
