from __future__ import annotations

import inspect
import math
import unittest
from unittest import mock

import torch
from monai.bundle import ConfigParser
from monai.bundle.config_item import ComponentLocator
from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer
from monai.transforms import FlattenSubKeysd
from monai.utils import BlendMode
from parameterized import parameterized
from torch import nn

from monai_dwp.inferers import MC_PROBS_KEY, MCInferer
from monai_dwp.networks import BayesianConv, bayesian_modules, convert_to_bayesian, resample_weights, stochastic_mode


def _bayes_net(out_channels: int = 2) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, out_channels, 3, padding=1))
    return convert_to_bayesian(net, init_log_scale=-1.0).eval()


class _CountingNet(nn.Module):
    """A deterministic network that counts its forward calls."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv3d(1, 2, 3, padding=1)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.conv(x)


class _ScriptedNet(nn.Module):
    """Returns pre-set logits (one per channel, broadcast over space) in sequence, one entry per call.

    It holds one (unused) BayesianConv so that MCInferer treats it as a Bayesian network and samples it.
    """

    def __init__(self, logits: list[list[float]], fail_at: int | None = None) -> None:
        super().__init__()
        self.dummy = BayesianConv(3, 1, 1, kernel_size=1)
        self.logits = [torch.tensor(v) for v in logits]
        self.fail_at = fail_at
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fail_at is not None and self.calls == self.fail_at:
            raise RuntimeError("scripted failure")
        value = self.logits[self.calls % len(self.logits)]
        self.calls += 1
        return value.view(1, -1, 1, 1, 1).expand(x.shape[0], -1, *x.shape[2:]).clone()


class TestHandComputed(unittest.TestCase):
    # two samples, p1 = (0.9, 0.1), p2 = (0.5, 0.5):
    # p̄ = (0.7, 0.3); H[p̄] = -(0.7 ln 0.7 + 0.3 ln 0.3) = 0.2496725 + 0.3611918 = 0.6108643
    # H[p1] = -(0.9 ln 0.9 + 0.1 ln 0.1) = 0.0948245 + 0.2302585 = 0.3250830; H[p2] = ln 2 = 0.6931472
    # E[H] = (0.3250830 + 0.6931472) / 2 = 0.5091151; MI = 0.6108643 - 0.5091151 = 0.1017492
    expected = {"entropy": 0.6108643, "expected_entropy": 0.5091151, "mutual_information": 0.1017492}

    def _check(self, out: dict[str, torch.Tensor], pred: list[float]) -> None:
        self.assertEqual(tuple(out["probs"].shape), (1, len(pred), 4, 4, 4))
        torch.testing.assert_close(out["probs"][0, :, 0, 0, 0], torch.tensor(pred), atol=1e-6, rtol=0)
        for key, value in self.expected.items():
            self.assertEqual(tuple(out[key].shape), (1, 1, 4, 4, 4))
            torch.testing.assert_close(out[key], torch.full((1, 1, 4, 4, 4), value), atol=1e-6, rtol=0, msg=key)

    def test_softmax(self):
        net = _ScriptedNet([[math.log(0.9), math.log(0.1)], [0.0, 0.0]])
        out = MCInferer(num_samples=2, return_uncertainty=True)(torch.zeros(1, 1, 4, 4, 4), net)
        self._check(out, [0.7, 0.3])
        self.assertEqual(net.calls, 2)

    def test_sigmoid_bernoulli(self):
        # the same numbers: a Bernoulli(0.9) and a Bernoulli(0.5) sample, logits ln 9 and 0
        net = _ScriptedNet([[math.log(9.0)], [0.0]])
        out = MCInferer(num_samples=2, activation="sigmoid", return_uncertainty=True)(torch.zeros(1, 1, 4, 4, 4), net)
        self._check(out, [0.7])


class TestWeightSharing(unittest.TestCase):
    """One predictive sample = one draw of all weights, shared by every sliding window of the volume."""

    def _constant_net(self) -> nn.Module:
        torch.manual_seed(1)
        # on an input of ones, a 1x1x1 convolution's output is a pure function of its weights
        return nn.Sequential(BayesianConv(3, 1, 2, kernel_size=1, init_log_scale=0.0)).eval()

    @parameterized.expand(
        [
            ("batch1_constant", 1, "constant", 0.5),
            ("batch4_constant", 4, "constant", 0.5),
            ("batch4_gaussian", 4, "gaussian", 0.25),
            ("all_windows_gaussian", 27, "gaussian", 0.5),
        ]
    )
    def test_sample_is_spatially_constant(self, _, sw_batch_size, mode, overlap):
        # 16³ input, 8³ windows, overlap 0.25 or 0.5: 3 windows per dimension, 27 in all
        net = self._constant_net()
        x = torch.ones(1, 1, 16, 16, 16)
        inferer = MCInferer(num_samples=3, roi_size=8, overlap=overlap, mode=mode, sw_batch_size=sw_batch_size)
        with torch.no_grad():
            pred = inferer(x, net)
        torch.testing.assert_close(pred, pred[..., :1, :1, :1].expand_as(pred), atol=1e-6, rtol=0)
        self.assertGreater(float((pred[0, 0, 0, 0, 0] - 0.5).abs()), 1e-3)  # not a trivial constant

        # the test has power: resampling per window makes the stitched sample vary over space
        def per_window(window: torch.Tensor) -> torch.Tensor:
            resample_weights(net)
            return net(window)

        with stochastic_mode(net, "sampled"), torch.no_grad():
            logits = SlidingWindowInferer(roi_size=8, overlap=0.5)(x, per_window)
        self.assertGreater(float(logits.std(dim=(2, 3, 4)).max()), 1e-2)

    def test_every_window_of_a_sample_sees_the_same_epsilon(self):
        net = _bayes_net()
        records: dict[str, list[torch.Tensor]] = {}
        for name, layer in bayesian_modules(net).items():
            records[name] = []
            layer.register_forward_hook(lambda m, i, o, n=name: records[n].append(m._epsilon.clone()))
        num_samples = 3
        with torch.no_grad():
            MCInferer(num_samples=num_samples, roi_size=8, sw_batch_size=2)(torch.randn(1, 1, 16, 16, 16), net)
        for name, eps in records.items():
            self.assertEqual(len(eps) % num_samples, 0, name)
            per_sample = len(eps) // num_samples
            self.assertGreater(per_sample, 1, name)  # 27 windows, 2 per call: 14 calls per sample
            samples = [eps[t * per_sample : (t + 1) * per_sample] for t in range(num_samples)]
            for t, calls in enumerate(samples):
                for e in calls[1:]:
                    self.assertTrue(torch.equal(e, calls[0]), f"{name}: sample {t} changed weights between windows")
            for t in range(1, num_samples):
                self.assertFalse(torch.equal(samples[t][0], samples[t - 1][0]), f"{name}: samples {t - 1}, {t} equal")

    def test_weight_formed_once_per_sample(self):
        net = _bayes_net()
        layers = bayesian_modules(net)
        held: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
        for name, layer in layers.items():
            layer.register_forward_hook(lambda m, i, o, n=name: held[n].append(m.held_weight))
        formed = [0]
        original = BayesianConv._form_weight

        def counting(layer: BayesianConv, eps: torch.Tensor) -> torch.Tensor:
            formed[0] += 1
            return original(layer, eps)

        num_samples, calls_per_sample = 3, 7  # 27 windows in batches of 4
        with torch.no_grad(), mock.patch.object(BayesianConv, "_form_weight", counting):
            MCInferer(num_samples=num_samples, roi_size=8, sw_batch_size=4, seed=0)(torch.randn(1, 1, 16, 16, 16), net)
        self.assertEqual(formed[0], num_samples * len(layers))  # once per layer and sample, not per window
        for name, weights in held.items():
            self.assertEqual(len(weights), num_samples * calls_per_sample, name)
            for t in range(num_samples):
                calls = weights[t * calls_per_sample : (t + 1) * calls_per_sample]
                self.assertIsNotNone(calls[0], name)
                for w in calls[1:]:
                    self.assertIs(w, calls[0], f"{name}: sample {t} formed its weight again")
            self.assertIsNot(weights[0], weights[calls_per_sample], name)
        self.assertTrue(all(layer.held_weight is None for layer in layers.values()))  # released afterwards

    def test_released_after_a_failing_window(self):
        net = _bayes_net()
        calls = [0]

        def fail_on_third(module: nn.Module, args: tuple) -> None:
            calls[0] += 1
            if calls[0] == 3:
                raise RuntimeError("window failure")

        net.register_forward_pre_hook(fail_on_third)
        with self.assertRaisesRegex(RuntimeError, "window failure"), torch.no_grad():
            MCInferer(num_samples=2, roi_size=8, sw_batch_size=1)(torch.randn(1, 1, 16, 16, 16), net)
        for layer in bayesian_modules(net).values():
            self.assertIsNone(layer.held_weight)
            self.assertEqual(layer._hold_depth, 0)


class _InstanceNormNet(nn.Module):
    """Bayesian conv - InstanceNorm - ReLU - Bayesian conv: per-window statistics, as in the paper's U-Net."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        net = nn.Sequential(
            nn.Conv3d(1, 4, 3, padding=1), nn.InstanceNorm3d(4), nn.ReLU(), nn.Conv3d(4, 3, 3, padding=1)
        )
        self.net = convert_to_bayesian(net, init_log_scale=-1.5).eval()
        self.batch_sizes: list[int] = []
        self.window_shapes: set[tuple[int, ...]] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batch_sizes.append(x.shape[0])
        self.window_shapes.add(tuple(x.shape[1:]))
        return self.net(x)


class TestSlidingWindow(unittest.TestCase):
    """Windows of the training patch size, batched, with MONAI's SlidingWindowInferer doing the windowing."""

    x = torch.randn(1, 1, 16, 12, 16, generator=torch.Generator().manual_seed(5))

    @parameterized.expand([("mean", True), ("sampled", False)])
    def test_sw_batch_size_does_not_change_the_result(self, _, mean_only):
        net = _InstanceNormNet()
        outs = []
        for sw_batch_size in (1, 4, 100):
            inferer = MCInferer(
                num_samples=3, roi_size=8, overlap=0.5, sw_batch_size=sw_batch_size, mean_only=mean_only,
                return_uncertainty=True, seed=0,
            )
            with torch.no_grad():
                outs.append(inferer(self.x, net))
        for out in outs[1:]:
            for key in outs[0]:
                torch.testing.assert_close(out[key], outs[0][key], rtol=1e-5, atol=1e-5, msg=key)
        if not mean_only:
            self.assertGreater(float(outs[0]["mutual_information"].max()), 1e-3)  # really sampled

    @parameterized.expand([("overlap0", 0.0, 8), ("overlap025", 0.25, 18), ("overlap05", 0.5, 18)])
    def test_windows_have_the_roi_size_and_are_batched(self, _, overlap, windows):
        # 16 x 12 x 16 in 8³ windows: 2 x 2 x 2 without overlap; 3 x 2 x 3 at 0.25 (step 6) and 0.5 (step 4)
        net = _InstanceNormNet()
        with torch.no_grad():
            MCInferer(num_samples=2, roi_size=(8, 8, 8), overlap=overlap, sw_batch_size=4, seed=0)(self.x, net)
        self.assertEqual(net.window_shapes, {(1, 8, 8, 8)})
        self.assertEqual(sum(net.batch_sizes), 2 * windows)
        self.assertEqual(max(net.batch_sizes), 4)
        self.assertEqual(len(net.batch_sizes), 2 * math.ceil(windows / 4))

    def test_default_sw_batch_size_is_4(self):
        self.assertEqual(inspect.signature(MCInferer).parameters["sw_batch_size"].default, 4)
        self.assertEqual(MCInferer(roi_size=32).sliding_window.sw_batch_size, 4)
        net = _InstanceNormNet()
        with torch.no_grad():
            MCInferer(num_samples=1, roi_size=8, overlap=0.25, seed=0)(self.x, net)
        self.assertEqual(net.batch_sizes, [4] * 4 + [2])  # 3 x 2 x 3 = 18 windows

    @parameterized.expand([("constant", "constant", 0.25), ("gaussian", "gaussian", 0.5)])
    def test_overlap_and_mode_reach_monai(self, _, mode, overlap):
        inferer = MCInferer(num_samples=2, roi_size=8, overlap=overlap, mode=mode, mean_only=True)
        self.assertIsInstance(inferer.sliding_window, SlidingWindowInferer)
        self.assertEqual(inferer.sliding_window.overlap, overlap)
        self.assertEqual(inferer.sliding_window.mode, BlendMode(mode))
        net = _InstanceNormNet()
        with torch.no_grad():
            pred = inferer(self.x, net)
            with stochastic_mode(net, "mean"):
                logits = SlidingWindowInferer(roi_size=8, overlap=overlap, mode=mode, sw_batch_size=4)(self.x, net)
        torch.testing.assert_close(pred, torch.softmax(logits, dim=1))

    def test_gaussian_differs_from_constant(self):
        net = _InstanceNormNet()
        with torch.no_grad():
            a, b = (MCInferer(num_samples=2, roi_size=8, overlap=0.5, mode=m, seed=0)(self.x, net) for m in BlendMode)
        self.assertGreater(float((a - b).abs().max()), 1e-4)

    def test_whole_volume_without_roi_size(self):
        net = _InstanceNormNet()
        inferer = MCInferer(num_samples=3, roi_size=None, sw_batch_size=4, return_uncertainty=True, seed=0)
        self.assertIsNone(inferer.sliding_window)
        with torch.no_grad():
            out = inferer(self.x, net)
        self.assertEqual(net.batch_sizes, [1, 1, 1])  # one call per sample
        self.assertEqual(net.window_shapes, {(1, 16, 12, 16)})  # the whole volume
        self.assertEqual(tuple(out["probs"].shape), (1, 3, 16, 12, 16))
        # whole-volume instance norm differs from windowed
        with torch.no_grad():
            windowed = MCInferer(num_samples=3, roi_size=8, seed=0)(self.x, net)
        self.assertGreater(float((windowed - out["probs"]).abs().max()), 1e-3)

    def test_inference_mode(self):
        net = _InstanceNormNet()
        inferer = MCInferer(num_samples=2, roi_size=8, seed=0)
        with torch.no_grad():
            ref = inferer(self.x, net)
        with torch.inference_mode():
            out = inferer(self.x, net)
        torch.testing.assert_close(out, ref, rtol=0, atol=0)


class TestOutputs(unittest.TestCase):
    @parameterized.expand(
        [
            ("softmax_k2_whole", "softmax", 2, None),
            ("softmax_k3_window", "softmax", 3, (8, 16, 8)),
            ("sigmoid_k1_whole", "sigmoid", 1, None),
            ("sigmoid_k1_window", "sigmoid", 1, 8),
        ]
    )
    def test_ranges_and_shapes(self, _, activation, k, roi_size):
        net = _bayes_net(k)
        x = torch.randn(2, 1, 16, 16, 16)
        inferer = MCInferer(num_samples=4, roi_size=roi_size, activation=activation, return_uncertainty=True, seed=0)
        with torch.no_grad():
            out = inferer(x, net)
        self.assertEqual(set(out), {"probs", "entropy", "expected_entropy", "mutual_information"})
        pred = out["probs"]
        self.assertEqual(tuple(pred.shape), (2, k, 16, 16, 16))
        for key in ("entropy", "expected_entropy", "mutual_information"):
            self.assertEqual(tuple(out[key].shape), (2, 1, 16, 16, 16), key)
            self.assertGreaterEqual(float(out[key].min()), 0.0, key)
        self.assertTrue(bool(((pred >= 0) & (pred <= 1)).all()))
        if activation == "softmax":
            torch.testing.assert_close(pred.sum(1), torch.ones(2, 16, 16, 16))
        max_entropy = math.log(k) if activation == "softmax" else k * math.log(2)
        tol = 1e-5
        self.assertLessEqual(float(out["entropy"].max()), max_entropy + tol)
        self.assertLessEqual(float(out["expected_entropy"].max()), max_entropy + tol)
        self.assertTrue(bool((out["mutual_information"] <= out["entropy"] + tol).all()))
        torch.testing.assert_close(out["mutual_information"], (out["entropy"] - out["expected_entropy"]).clamp_min(0))
        self.assertGreater(float(out["mutual_information"].max()), 1e-3)  # the samples do disagree

    def test_tensor_output_by_default_and_key_selection(self):
        net = _bayes_net()
        x = torch.randn(1, 1, 16, 16, 16)
        with torch.no_grad():
            pred = MCInferer(num_samples=2, seed=0)(x, net)
            out = MCInferer(num_samples=2, seed=0, return_uncertainty=True, uncertainty_keys=["entropy"])(x, net)
        self.assertIsInstance(pred, torch.Tensor)
        self.assertEqual(set(out), {"probs", "entropy"})
        torch.testing.assert_close(out["probs"], pred, rtol=0, atol=0)

    def test_mean_only_is_the_posterior_mean(self):
        net = _bayes_net()
        x = torch.randn(1, 1, 16, 16, 16)
        with torch.no_grad():
            out = MCInferer(num_samples=1, mean_only=True, return_uncertainty=True)(x, net)
            with stochastic_mode(net, "mean"):
                expected = torch.softmax(net(x), dim=1)
        torch.testing.assert_close(out["probs"], expected)
        self.assertTrue(torch.equal(out["mutual_information"], torch.zeros_like(out["entropy"])))
        torch.testing.assert_close(out["expected_entropy"], out["entropy"], rtol=0, atol=0)

    def test_metatensor_keeps_its_meta(self):
        affine = torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0]))
        x = MetaTensor(torch.randn(1, 1, 16, 16, 16), affine=affine)
        with torch.no_grad():
            out = MCInferer(num_samples=2, roi_size=8, return_uncertainty=True, seed=0)(x, _bayes_net())
        for key, value in out.items():
            self.assertIsInstance(value, MetaTensor, key)
            torch.testing.assert_close(value.affine.float(), affine, msg=key)


class TestDeterministicNetwork(unittest.TestCase):
    def test_one_forward_and_zero_mutual_information(self):
        net = _CountingNet().eval()
        x = torch.randn(1, 1, 16, 16, 16)
        with torch.no_grad():
            out = MCInferer(num_samples=10, return_uncertainty=True)(x, net)
            expected = torch.softmax(net.conv(x), dim=1)
        self.assertEqual(net.calls, 1)
        self.assertTrue(torch.equal(out["mutual_information"], torch.zeros(1, 1, 16, 16, 16)))
        torch.testing.assert_close(out["expected_entropy"], out["entropy"], rtol=0, atol=0)
        torch.testing.assert_close(out["probs"], expected)


class TestStateRestored(unittest.TestCase):
    def _mixed_modes(self, net: nn.Module) -> dict[str, tuple[str, torch.Tensor]]:
        for i, layer in enumerate(bayesian_modules(net).values()):
            layer.mode = ("local", "mean")[i % 2]
            layer.resample()
        return {name: (layer.mode, layer._epsilon.clone()) for name, layer in bayesian_modules(net).items()}

    def _assert_restored(self, net: nn.Module, before: dict[str, tuple[str, torch.Tensor]]) -> None:
        for name, layer in bayesian_modules(net).items():
            self.assertEqual(layer.mode, before[name][0], name)
            self.assertTrue(torch.equal(layer._epsilon, before[name][1]), name)

    def test_modes_and_draws_restored(self):
        net = _bayes_net()
        before = self._mixed_modes(net)
        with torch.no_grad():
            MCInferer(num_samples=2, roi_size=8)(torch.randn(1, 1, 16, 16, 16), net)
        self._assert_restored(net, before)

    def test_restored_after_an_exception(self):
        net = _ScriptedNet([[0.0, 1.0]], fail_at=1)
        net.dummy.mode = "local"
        net.dummy.resample()
        before = {"dummy": ("local", net.dummy._epsilon.clone())}
        with self.assertRaisesRegex(RuntimeError, "scripted failure"):
            MCInferer(num_samples=3)(torch.zeros(1, 1, 4, 4, 4), net)
        self.assertEqual(net.calls, 1)
        self._assert_restored(net, before)


class TestSeed(unittest.TestCase):
    def test_same_seed_same_output(self):
        net = _bayes_net()
        x = torch.randn(1, 1, 16, 16, 16)

        def run(seed: int) -> dict[str, torch.Tensor]:
            with torch.no_grad():
                return MCInferer(num_samples=3, roi_size=8, return_uncertainty=True, seed=seed)(x, net)

        a, b, c = run(0), run(0), run(1)
        for key in a:
            self.assertTrue(torch.equal(a[key], b[key]), key)
        self.assertFalse(torch.equal(a["probs"], c["probs"]))


class TestBundleConfig(unittest.TestCase):
    def test_short_name_in_a_bundle_config(self):
        parser = ConfigParser(
            {
                "imports": ["$import monai_dwp.inferers"],
                "inferer": {"_target_": "MCInferer", "num_samples": 2, "roi_size": [8, 8, 8]},
            }
        )
        self.assertIsInstance(parser.get_parsed_content("inferer"), MCInferer)
        # unambiguous: MONAI has no component of that name
        self.assertEqual(ComponentLocator().get_component_module_name("MCInferer"), "monai_dwp.inferers.mc")

    def test_probs_key_does_not_clash_with_monai_flatten(self):
        """MONAI's FlattenSubKeysd flattens the evaluator's "pred" entry: the mean probabilities have another name."""
        with torch.no_grad():
            out = MCInferer(num_samples=2, return_uncertainty=True, seed=0)(torch.randn(1, 1, 8, 8, 8), _bayes_net())
        self.assertEqual(MC_PROBS_KEY, "probs")
        flat = FlattenSubKeysd(keys="pred")({"pred": out})
        self.assertEqual(set(flat), {"probs", "entropy", "expected_entropy", "mutual_information"})


class TestBadArguments(unittest.TestCase):
    @parameterized.expand(
        [
            ({"num_samples": 0}, ValueError, r"num_samples must be ≥ 1, got 0; e.g. num_samples=10, or "
                                             r"num_samples=1 with mean_only=True"),
            ({"num_samples": 2.5}, TypeError, r"num_samples must be an integer, got 2.5 \(float\)"),
            ({"activation": "relu"}, ValueError, r"activation must be one of \('softmax', 'sigmoid'\), got 'relu'"),
            ({"uncertainty_keys": ["variance"]}, ValueError, r"subset of .* got unknown \['variance'\]"),
            ({"seed": "a"}, TypeError, r"seed must be an integer, got 'a' \(str\); or None"),
            ({"roi_size": 8, "sw_batch_size": 0}, ValueError, r"sw_batch_size must be ≥ 1, got 0; e.g. sw_batch_s"),
            ({"roi_size": 8, "sw_batch_size": 2.0}, TypeError, r"sw_batch_size must be an integer, got 2.0 \(float\)"),
            ({"roi_size": 8, "overlap": 1.0}, ValueError, r"overlap must be >= 0 and < 1, got 1.0; e.g. overlap=0.25"),
            ({"roi_size": 8, "overlap": (0.5, -0.1, 0.0)}, ValueError, r"overlap must be >= 0 and < 1, got \(0.5"),
            ({"roi_size": 8, "overlap": "half"}, TypeError, r"overlap must be a float in \[0, 1\) .* got 'half'"),
            ({"roi_size": 8, "mode": "linear"}, ValueError, r"mode must be one of \('constant', 'gaussian'.*'linear'"),
            ({"roi_size": "32"}, TypeError, r"roi_size must be None, an int or a sequence of ints, got '32'; pass"),
            ({"roi_size": (32, 32.5, 32)}, TypeError, r"roi_size must be .* got \(32, 32.5, 32\)"),
            ({"roi_size": ()}, ValueError, r"roi_size must have one entry per spatial dimension, got \(\)"),
        ]
    )
    def test_constructor(self, kwargs, error, pattern):
        with self.assertRaisesRegex(error, pattern):
            MCInferer(**kwargs)

    def test_call(self):
        net = _bayes_net()
        inferer = MCInferer(num_samples=2)
        with self.assertRaisesRegex(TypeError, r"inputs must be a torch.Tensor .* got list"):
            inferer([1, 2, 3], net)
        with self.assertRaisesRegex(ValueError, r"at least one spatial dimension, got shape \(1, 16\)"):
            inferer(torch.zeros(1, 16), net)
        with self.assertRaisesRegex(ValueError, r"inputs must be 5D .* got shape \(1, 16, 16, 16\)"):
            inferer(torch.zeros(1, 16, 16, 16), net)
        with self.assertRaisesRegex(TypeError, r"network must be a torch.nn.Module, got function"):
            inferer(torch.zeros(1, 1, 8, 8, 8), lambda x: x)
        with self.assertRaisesRegex(ValueError, r"roi_size=\(8, 8\) has 2 entries .* 3 spatial dims"):
            MCInferer(roi_size=(8, 8))(torch.zeros(1, 1, 8, 8, 8), net)
        with self.assertRaisesRegex(ValueError, r"overlap=\(0.5, 0.5\) has 2 entries .* 3 spatial dims"):
            MCInferer(roi_size=8, overlap=(0.5, 0.5))(torch.zeros(1, 1, 8, 8, 8), net)
        with self.assertRaisesRegex(ValueError, r"single channel .* use activation='sigmoid'"):
            inferer(torch.zeros(1, 1, 8, 8, 8), _bayes_net(1))


if __name__ == "__main__":
    unittest.main()
