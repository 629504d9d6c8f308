from __future__ import annotations

import math
import pickle
import tempfile
import unittest
from pathlib import Path
from unittest import mock

import torch
from monai.bundle import ConfigParser
from parameterized import parameterized
from torch import nn

from monai_dwp.losses import DeepWeightPrior, GaussianPrior, dwp_initialize
from monai_dwp.losses.kl import gaussian_entropy, gaussian_log_prob
from monai_dwp.networks import KernelVAE, bayesian_modules, convert_to_bayesian

HIDDEN = (4, 8, 16)


def _vae(seed: int = 0) -> KernelVAE:
    torch.manual_seed(seed)
    return KernelVAE(latent_size=2, hidden_channels=HIDDEN)


def _net(init_log_scale: float = -2.0, all_bayesian: bool = True) -> nn.Module:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv3d(2, 3, 3, padding=1), nn.Conv3d(3, 1, 1))
    return convert_to_bayesian(net, kernel_size=None if all_bayesian else 3, init_log_scale=init_log_scale)


def _prior(**kwargs) -> DeepWeightPrior:
    return DeepWeightPrior([_vae(0), _vae(1)], scales=[0.2, 0.3], layer_groups={"0": 0, "2": 1}, **kwargs)


def _importance_sampled_kl(prior: DeepWeightPrior, net: nn.Module, num_w: int, num_z: int) -> torch.Tensor:
    """-H(q) - E_q log p(w), with log p(w) by importance sampling with r(z|w) (IWAE, num_z samples)."""
    total = torch.zeros((), dtype=torch.float64)
    covered, _ = prior.check_network(net)
    for name, layer in covered.items():
        group = prior.layer_groups[name]
        vae, s = prior.vaes[group], prior.scales[group]
        loc, log_scale = layer.kernels
        d = loc[0].numel()
        w = loc + log_scale.exp() * torch.randn(num_w, *loc.shape)  # (num_w, K, 3, 3, 3)
        u = (w / s).reshape(-1, 1, *loc.shape[1:])
        z_loc, z_log_scale = vae.encode(u)
        z = z_loc + z_log_scale.exp() * torch.randn(num_z, *z_loc.shape)  # (num_z, num_w*K, L)
        r_loc, r_log_scale = vae.decode(z.reshape(-1, z.shape[-1]))
        log_lik = gaussian_log_prob(u.expand(num_z, *u.shape).reshape(r_loc.shape), r_loc, r_log_scale)
        log_lik = log_lik.flatten(1).sum(1).reshape(num_z, -1)
        log_pz = gaussian_log_prob(z, torch.zeros(()), torch.zeros(())).sum(-1)
        log_rz = gaussian_log_prob(z, z_loc, z_log_scale).sum(-1)
        log_pu = torch.logsumexp(log_lik + log_pz - log_rz, 0) - math.log(num_z)
        log_pw = log_pu - d * s.log()
        total += -gaussian_entropy(log_scale).sum().double() - log_pw.double().reshape(num_w, -1).sum(1).mean()
    return total


def _draws(prior: DeepWeightPrior, net: nn.Module, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` estimates of the term and of its gradient in the first layer's ``loc``, ``(n,)`` and ``(n, numel)``."""
    values, grads = [], []
    for _ in range(n):
        net.zero_grad()
        value = prior(net)
        value.backward()
        values.append(value.detach())
        grads.append(net[0].loc.grad.flatten().clone())
    return torch.stack(values), torch.stack(grads)


class TestDeepWeightPriorBound(unittest.TestCase):
    @torch.no_grad()
    def test_bound_above_importance_sampled_kl_and_tightens(self):
        net = _net(all_bayesian=False)
        prior = DeepWeightPrior([_vae(0)], [0.2], {"0": 0}, num_samples=512)  # one layer, 2 kernels
        layer = net[0]
        relative_gaps = []
        for log_scale in (-1.5, -3.0, -6.0):
            with torch.no_grad():
                layer.log_scale.fill_(log_scale)
            torch.manual_seed(3)
            loc, ls = layer.kernels
            bound = (-gaussian_entropy(ls).sum() + prior.cross_entropy_term(0, loc, ls)).double()
            torch.manual_seed(4)
            kl_is = _importance_sampled_kl(prior, net, num_w=64, num_z=256)
            self.assertGreaterEqual(bound.item(), kl_is.item(), f"log_scale={log_scale}")
            relative_gaps.append((bound - kl_is).item() / abs(kl_is.item()))
        self.assertLess(relative_gaps[2], relative_gaps[0])

    def test_forward_sums_groups_and_fallback(self):
        net = _net()
        prior = _prior(num_samples=4)
        torch.manual_seed(0)
        total = prior(net)
        torch.manual_seed(0)
        expected = torch.zeros(())
        layers = bayesian_modules(net)
        for name, group in (("0", 0), ("2", 1)):
            loc, ls = layers[name].kernels
            expected = expected - gaussian_entropy(ls).sum() + prior.cross_entropy_term(group, loc, ls)
        expected = expected + GaussianPrior().layer_kl(layers["3"])  # 1x1x1: explicit fallback
        torch.testing.assert_close(total, expected)

    def test_jacobian_of_scale(self):
        """KL is invariant under w -> w / s: scale s on raw kernels equals scale 1 on normalised kernels."""
        net = _net()
        normalised_net = _net()
        for (name, a), b in zip(bayesian_modules(net).items(), bayesian_modules(normalised_net).values()):
            if name in ("0", "2"):
                with torch.no_grad():
                    b.loc.copy_(a.loc / 0.25)
                    b.log_scale.copy_(a.log_scale - math.log(0.25))
        unit = DeepWeightPrior([_vae(0)], [1.0], {"0": 0, "2": 0}, fallback_prior=GaussianPrior(scale=1e6))
        zero_fallback = DeepWeightPrior([_vae(0)], [0.25], {"0": 0, "2": 0}, fallback_prior=GaussianPrior(scale=1e6))
        torch.manual_seed(5)
        a = zero_fallback(net) - GaussianPrior(scale=1e6).layer_kl(net[3])
        torch.manual_seed(5)
        b = unit(normalised_net) - GaussianPrior(scale=1e6).layer_kl(normalised_net[3])
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3)

    def test_per_layer_scales_and_their_jacobian(self):
        """With layer_scales, each layer is normalised by its own s_l: a layer scaled by c with s_l scaled by c
        changes the bound by exactly the entropy and Jacobian terms, which cancel: the KL is invariant."""
        net, scaled = _net(), _net()
        with torch.no_grad():
            scaled[2].loc.mul_(4.0)
            scaled[2].log_scale.add_(math.log(4.0))
        a_prior = DeepWeightPrior([_vae(0)], [0.25], {"0": 0, "2": 0}, layer_scales={"0": 0.25, "2": 0.5})
        b_prior = DeepWeightPrior([_vae(0)], [0.25], {"0": 0, "2": 0}, layer_scales={"0": 0.25, "2": 2.0})
        torch.manual_seed(3)
        a = a_prior(net)
        torch.manual_seed(3)
        b = b_prior(scaled)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-2)
        # the per-layer scale is what the cross-entropy term divides by: s_l = 0.5 for layer "2"
        loc, ls = net[2].kernels
        group_prior = DeepWeightPrior([_vae(0)], [0.5], {"2": 0})
        torch.manual_seed(4)
        direct = a_prior.cross_entropy_term(0, loc, ls, torch.full((loc.shape[0],), 0.5))
        torch.manual_seed(4)
        via_group = group_prior.cross_entropy_term(0, loc, ls)
        torch.testing.assert_close(direct, via_group)
        with self.assertRaisesRegex(ValueError, r"layer_scales must give a scale for every layer .* missing \['2'\]"):
            DeepWeightPrior([_vae(0)], [0.25], {"0": 0, "2": 0}, layer_scales={"0": 0.25})
        with self.assertRaisesRegex(ValueError, r"every layer scale must be a finite float > 0, got \{'0': 0.0\}"):
            DeepWeightPrior([_vae(0)], [0.25], {"0": 0}, layer_scales={"0": 0.0})

    def test_gradients_reach_posterior_not_decoder(self):
        net = _net()
        prior = _prior(train_encoder=True)
        prior(net).backward()
        for name in ("0", "2"):
            self.assertGreater(net[int(name)].loc.grad.abs().sum().item(), 0)
            self.assertGreater(net[int(name)].log_scale.grad.abs().sum().item(), 0)
        for vae in prior.vaes:
            self.assertTrue(all(p.grad is None and not p.requires_grad for p in vae.decoder.parameters()))
            self.assertTrue(any(p.grad is not None for p in vae.encoder.parameters()))
        frozen = _prior(train_encoder=False)
        self.assertFalse(any(p.requires_grad for p in frozen.parameters()))

    def test_subsampling_is_unbiased(self):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv3d(8, 8, 3))
        net = convert_to_bayesian(net, init_log_scale=-8.0)  # 64 kernels, near-deterministic posterior
        full = DeepWeightPrior([_vae(0)], [0.1], {"0": 0}, num_samples=1)
        sub = DeepWeightPrior([_vae(0)], [0.1], {"0": 0}, num_samples=1, max_kernels=16)
        with torch.no_grad():
            a = torch.stack([full(net) for _ in range(300)])
            b = torch.stack([sub(net) for _ in range(300)])
        stderr = (a.var() / 300 + b.var() / 300).sqrt()
        self.assertLess((a.mean() - b.mean()).abs().item(), 4 * stderr.item())
        self.assertGreater(b.var().item(), a.var().item())  # subsampling costs variance

    def test_refreshed_term_is_unbiased_at_a_fixed_posterior(self):
        """At a fixed posterior each cached kernel term is a one-draw estimate at the current parameters, so the
        rotating refresh has the all-kernel estimator's expectation, in value and in gradient."""
        torch.manual_seed(0)
        net = convert_to_bayesian(nn.Sequential(nn.Conv3d(4, 8, 3)), init_log_scale=-3.0)  # 32 kernels
        full = DeepWeightPrior([_vae(0)], [0.1], {"0": 0})
        cached = DeepWeightPrior([_vae(0)], [0.1], {"0": 0}, refresh_interval=4)

        a, ga = _draws(full, net, 400)
        b, gb = _draws(cached, net, 401)
        b, gb = b[1:], gb[1:]  # after the first (full) estimate, 100 refreshes of every kernel
        stderr = (a.var() / 400 + b.var() / 100).sqrt()
        self.assertLess((a.mean() - b.mean()).abs().item(), 4 * stderr.item())
        grad_stderr = (ga.var(0) / 400 + gb.var(0) / 100).sqrt()
        z = (ga.mean(0) - gb.mean(0)) / grad_stderr
        self.assertLess(z.abs().mean().item(), 1.2)  # |N(0, 1)| has mean 0.80
        self.assertLess(z.abs().max().item(), 5.0)

    def test_gaussian_cross_entropy_is_the_monte_carlo_value(self):
        """The control variate's closed form against E_q[-log N(w; s m, s² Σ)] by sampling, with its Jacobian."""
        torch.manual_seed(0)
        prior = DeepWeightPrior([_vae(0)], [0.1], {"0": 0}, control_samples=4096)
        mean, precision, log_det = prior.gaussian_moments(0)
        self.assertEqual(tuple(mean.shape), (27,))
        cov = torch.linalg.inv(precision.double())
        torch.testing.assert_close(torch.logdet(cov), log_det.double(), rtol=1e-3, atol=1e-3)
        loc, log_scale = 0.1 * torch.randn(5, 3, 3, 3), torch.full((5, 3, 3, 3), -3.0)
        scale = torch.tensor([0.1, 0.2, 0.1, 0.3, 0.05])
        exact = prior.gaussian_cross_entropy(0, loc, log_scale, scale, reduction="none")
        gauss = torch.distributions.MultivariateNormal(mean.double(), covariance_matrix=cov)
        w = (loc + log_scale.exp() * torch.randn(20000, *loc.shape)).flatten(2).double()  # (draws, K, 27)
        s = scale.double()[:, None]
        values = -(gauss.log_prob(w / s) - 27 * s.log().flatten())  # (draws, K)
        stderr = values.std(0) / values.shape[0] ** 0.5
        self.assertLess(((exact.double() - values.mean(0)).abs() / stderr).max().item(), 4.0)
        # a fixed seed: the same Gaussian in another instance, and the training's random stream untouched
        other = DeepWeightPrior([_vae(0)], [0.1], {"0": 0}, control_samples=4096)  # _vae seeds the generator
        torch.manual_seed(1)
        expected = torch.rand(())
        torch.manual_seed(1)
        again = other.gaussian_moments(0)
        self.assertEqual(torch.rand(()), expected)
        torch.testing.assert_close(again[1], precision)

    @parameterized.expand([("all", {}), ("refresh", {"refresh_interval": 4}), ("subsample", {"max_kernels": 8})])
    def test_control_variate_keeps_the_expectation(self, _, kwargs):
        """At a fixed posterior the Gaussian part is exact and the residual is estimated at the same draws: the
        same expectation as the all-kernel estimator, in value and in gradient."""
        torch.manual_seed(0)
        net = convert_to_bayesian(nn.Sequential(nn.Conv3d(4, 8, 3)), init_log_scale=-3.0)  # 32 kernels
        full = DeepWeightPrior([_vae(0)], [0.1], {"0": 0})
        controlled = DeepWeightPrior([_vae(0)], [0.1], {"0": 0}, control_variate=True, **kwargs)

        a, ga = _draws(full, net, 400)
        b, gb = _draws(controlled, net, 401)
        b, gb = b[1:], gb[1:]
        # draws of a refresh share their cached terms over 4 calls: 100 independent estimates
        independent = 100 if "refresh_interval" in kwargs else 400
        stderr = (a.var() / 400 + b.var() / independent).sqrt()
        self.assertLess((a.mean() - b.mean()).abs().item(), 4 * stderr.item())
        z = (ga.mean(0) - gb.mean(0)) / (ga.var(0) / 400 + gb.var(0) / independent).sqrt()
        self.assertLess(z.abs().mean().item(), 1.2)  # |N(0, 1)| has mean 0.80
        self.assertLess(z.abs().max().item(), 5.0)

    def test_control_variate_is_the_gaussian_at_the_same_draws(self):
        """The sampled control variate is -log N(w; s m_g, s^2 Sigma_g) at the very draws of w the VAE's estimate
        used (torch.distributions as the reference), and the residual is the plain estimate minus it."""
        torch.manual_seed(0)
        prior = DeepWeightPrior([_vae(0)], [0.1], {"0": 0}, control_variate=True, num_samples=3)
        loc, log_scale = 0.1 * torch.randn(5, 3, 3, 3), torch.full((5, 3, 3, 3), -3.0)
        scale = torch.tensor([0.1, 0.2, 0.1, 0.3, 0.05])
        torch.manual_seed(7)
        term, control = prior._sampled_terms(0, loc, log_scale, scale, gaussian=True)
        torch.manual_seed(7)
        eps = torch.randn(3, *loc.shape)  # the first draw of _sampled_terms
        torch.manual_seed(7)
        plain = prior.cross_entropy_term(0, loc, log_scale, scale, reduction="none")
        torch.testing.assert_close(term, plain)
        mean, precision, _ = prior.gaussian_moments(0)
        gauss = torch.distributions.MultivariateNormal(mean.double(), precision_matrix=precision.double())
        s = scale.double()[:, None]
        u = ((loc + log_scale.exp() * eps).flatten(2).double() / s)  # (3, K, 27)
        expected = (-(gauss.log_prob(u)) + 27 * s.log().flatten()).mean(0)
        torch.testing.assert_close(control.double(), expected, rtol=1e-5, atol=1e-4)
        torch.manual_seed(7)
        residual = prior._estimated_term(0, loc, log_scale, scale, reduction="none")
        torch.testing.assert_close(residual, term - control)

    def test_control_variate_cancels_the_noise_a_gaussian_prior_explains(self):
        """With a VAE whose p(w) is exactly Gaussian (decoder and encoder heads independent of their input), every
        kernel estimated at every call: the residual is nearly constant, so the gradient's variance over draws falls
        to a small fraction of the plain estimator's (what a residual at other draws than the VAE's could not do)."""
        vae = _vae(0)
        with torch.no_grad():
            for head in (vae.decoder.head, vae.encoder.loc, vae.encoder.log_scale):
                head.weight.zero_()
            vae.decoder.head.bias.copy_(torch.tensor([0.1, math.log(0.5)]))
        torch.manual_seed(0)
        net = convert_to_bayesian(nn.Sequential(nn.Conv3d(4, 8, 3)), init_log_scale=-2.0)  # 32 kernels
        _, plain = _draws(DeepWeightPrior([vae], [0.1], {"0": 0}), net, 60)
        controlled = DeepWeightPrior([vae], [0.1], {"0": 0}, control_variate=True)
        _, reduced = _draws(controlled, net, 60)
        self.assertLess(reduced.var(0).sum().item(), 0.05 * plain.var(0).sum().item())
        stderr = (plain.var(0).max() / 60).sqrt().item()
        torch.testing.assert_close(reduced.mean(0), plain.mean(0), rtol=0.0, atol=4 * stderr)

    def test_bfloat16_passes_keep_the_estimate(self):
        """compute_dtype='bfloat16': the same draws give the float32 estimate to bfloat16's rounding, value and
        gradient, and its mean over draws is the float32 estimator's (no bias beyond the Monte Carlo noise)."""
        torch.manual_seed(0)
        net = convert_to_bayesian(nn.Sequential(nn.Conv3d(8, 16, 3)), init_log_scale=-3.0)  # 128 kernels
        vae = KernelVAE(latent_size=6)  # the paper's widths: bfloat16 rounds its wide layers
        exact = DeepWeightPrior([vae], [0.1], {"0": 0})
        fast = DeepWeightPrior([vae], [0.1], {"0": 0}, compute_dtype="bfloat16")
        self.assertIs(fast.autocast_dtype("cpu"), torch.bfloat16)
        self.assertIsNone(exact.autocast_dtype("cpu"))
        values, grads = {}, {}
        for name, prior in (("exact", exact), ("fast", fast)):
            torch.manual_seed(5)
            values[name], grads[name] = _draws(prior, net, 1)
        self.assertEqual(values["fast"].dtype, torch.float32)
        self.assertLess(((values["fast"] - values["exact"]) / values["exact"]).abs().item(), 1e-3)
        self.assertNotEqual(values["fast"].item(), values["exact"].item())  # the bfloat16 path really ran
        self.assertGreater(nn.functional.cosine_similarity(grads["fast"], grads["exact"]).item(), 0.999)

        a, _ = _draws(exact, net, 200)
        b, _ = _draws(fast, net, 200)
        stderr = (a.var() / 200 + b.var() / 200).sqrt()
        self.assertLess((a.mean() - b.mean()).abs().item(), 4 * stderr.item())

    def test_auto_precision_follows_the_hardware(self):
        with mock.patch("monai_dwp.utils.precision.native_bfloat16", return_value=False):
            self.assertIsNone(_prior(compute_dtype="auto").autocast_dtype("cpu"))
        prior = _prior(compute_dtype="auto")
        with mock.patch("monai_dwp.utils.precision.native_bfloat16", return_value=True) as native:
            self.assertIs(prior.autocast_dtype("cpu"), torch.bfloat16)
            self.assertIs(prior.autocast_dtype(torch.device("cpu")), torch.bfloat16)
            self.assertEqual(native.call_count, 1)  # decided once per device type
            prior(_net()).backward()  # the VAEs run under autocast, the bound stays float32
        self.assertIn("compute_dtype=auto", repr(prior))

    def test_refresh_rotates_and_expands_around_the_estimate(self):
        net = _net()
        prior = _prior(refresh_interval=3)
        torch.manual_seed(0)
        prior(net).backward()  # the first call estimates every kernel
        first = {name: net[int(name)].loc.grad.clone() for name in ("0", "2")}
        with torch.no_grad():
            before = prior(net)  # no refresh without gradients: the cached value
            delta = 0.01 * torch.randn_like(net[2].loc)
            net[2].loc.add_(delta)
            after = prior(net)
        # a stale kernel's term is its first-order expansion around the posterior it was estimated at
        torch.testing.assert_close(after - before, (first["2"] * delta).sum(), rtol=1e-3, atol=1e-3)
        net.zero_grad()
        prior(net).backward()  # refreshes the kernels j = 0 (mod 3) of every group only
        kernels = net[2].loc.grad.flatten(0, 1)
        stale = torch.arange(kernels.shape[0]) % 3 != 0
        torch.testing.assert_close(kernels[stale], first["2"].flatten(0, 1)[stale])
        self.assertFalse(torch.allclose(kernels[~stale], first["2"].flatten(0, 1)[~stale]))
        for _ in range(2):  # slices 1 and 2: every kernel has now been estimated at the moved posterior
            prior(net).backward()
        with torch.no_grad():
            net[2].loc.sub_(delta)
        net.zero_grad()
        prior(net).backward()
        kernels = net[2].loc.grad.flatten(0, 1)
        self.assertFalse(torch.allclose(kernels[stale], first["2"].flatten(0, 1)[stale]))

    def test_cache_preserved_keeps_the_rotation(self):
        net = _net()
        prior, twin = _prior(refresh_interval=3), _prior(refresh_interval=3)
        for p in (prior, twin):  # both fill their caches with the same draws
            torch.manual_seed(2)
            p(net).backward()
        with prior.cache_preserved():
            prior(net).backward()  # an extra estimate (a logging handler's): refreshes a slice, then forgotten
            prior(net).backward()
        self.assertEqual([c.calls for c in prior._caches.values()], [c.calls for c in twin._caches.values()])
        for mine, theirs in zip(prior._caches.values(), twin._caches.values()):
            torch.testing.assert_close(mine.value, theirs.value)
            torch.testing.assert_close(mine.grad_loc, theirs.grad_loc)
        net.zero_grad()
        torch.manual_seed(3)
        prior(net).backward()  # the next training step refreshes the slice it would have refreshed
        grad = net[2].loc.grad.clone()
        net.zero_grad()
        torch.manual_seed(3)
        twin(net).backward()
        torch.testing.assert_close(grad, net[2].loc.grad)
        with self.assertRaises(RuntimeError), prior.cache_preserved():
            prior(net).backward()
            raise RuntimeError("restored on error too")
        self.assertEqual([c.calls for c in prior._caches.values()], [c.calls for c in twin._caches.values()])

    def test_refresh_trains_the_encoder_and_starts_over_for_another_network(self):
        prior = _prior(refresh_interval=2, train_encoder=True)
        net = _net()
        prior(net).backward()
        for vae in prior.vaes:
            self.assertTrue(all(p.grad is not None for p in vae.encoder.parameters()))
            self.assertTrue(all(p.grad is None for p in vae.decoder.parameters()))
        other = _net(init_log_scale=-4.0)
        with torch.no_grad():
            other[0].loc.mul_(3.0)
        plain = _prior()  # built first: _vae seeds the generator
        torch.manual_seed(1)
        value = prior(other)  # not the first network's cache: a fresh estimate of every kernel
        torch.manual_seed(1)
        expected = plain(other)
        torch.testing.assert_close(value, expected)

    def test_refresh_keeps_earlier_graphs_and_restarts_on_request(self):
        net = _net()
        prior = _prior(refresh_interval=3)
        first, second = prior(net), prior(net)  # two calls before one backward (micro-batches, several samples)
        (first + second).backward()
        self.assertGreater(net[0].loc.grad.abs().sum().item(), 0)
        copied = pickle.loads(pickle.dumps(prior))  # the cache refers weakly to the network: not pickled
        self.assertEqual(copied.refresh_interval, 3)
        with torch.no_grad():
            net[0].loc.mul_(5.0)  # an edit in place, as load_state_dict makes: the cache cannot see it
            prior.reset_cache()
            plain = _prior()
            torch.manual_seed(2)
            value = prior(net)  # nothing cached and no gradients: a plain estimate
            torch.manual_seed(2)
            expected = plain(net)
        torch.testing.assert_close(value, expected)

    def test_vaes_stay_in_eval_mode(self):
        prior = _prior()
        prior.train()
        self.assertFalse(any(v.training for v in prior.vaes))


class TestDeepWeightPriorChecks(unittest.TestCase):
    def test_strict_rejects_uncovered_layers(self):
        with self.assertRaisesRegex(ValueError, r"strict=True but Bayesian layers \['3'\] are not covered"):
            _prior(strict=True)(_net())

    def test_layer_missing_or_deterministic(self):
        prior = DeepWeightPrior([_vae()], [0.1], {"0": 0, "9": 0})
        with self.assertRaisesRegex(ValueError, r"covers layer '9' .* but the network has no such module"):
            prior(_net())
        prior = DeepWeightPrior([_vae()], [0.1], {"3": 0})
        with self.assertRaisesRegex(ValueError, r"layer '3': the prior's VAE \(group 0\) expects kernels of shape "
                                                r"\(3, 3, 3\), found \(1, 1, 1\)"):
            prior(_net())
        det = nn.Sequential(nn.Conv3d(1, 2, 3))
        with self.assertRaisesRegex(ValueError, "network has Conv3d there, not a BayesianConv"):
            DeepWeightPrior([_vae()], [0.1], {"0": 0})(det)

    @parameterized.expand(
        [
            ({"vaes": []}, TypeError, "vaes must be a non-empty sequence of KernelVAE"),
            ({"scales": [0.1, 0.2, 0.3]}, ValueError, r"scales must have one entry per VAE \(2\), got 3"),
            ({"scales": [0.1, -1.0]}, ValueError, r"every scale must be a finite float > 0, got \[0.1, -1.0\]"),
            ({"layer_groups": {"0": 2}}, ValueError, r"group indices outside \[0, 2\): \{'0': 2\}"),
            ({"layer_groups": {}}, ValueError, "layer_groups must be a non-empty mapping"),
            ({"num_samples": 0}, ValueError, "num_samples must be ≥ 1, got 0"),
            ({"max_kernels": 0}, ValueError, "max_kernels must be ≥ 1, got 0; or None for all kernels"),
            ({"refresh_interval": 0}, ValueError, "refresh_interval must be ≥ 1, got 0; 1 re-estimates every kernel"),
            ({"refresh_interval": 4, "max_kernels": 16}, ValueError,
             "max_kernels=16 and refresh_interval=4 are two ways to cut the cost of the term; choose one"),
            ({"control_variate": 1}, TypeError, "control_variate must be a bool, got int: 1"),
            ({"control_samples": 1}, ValueError, "control_samples must be ≥ 2, got 1"),
            ({"compute_dtype": "float16"}, ValueError,
             "compute_dtype must be None, 'float32', 'bfloat16' or 'auto', got 'float16'; float16's largest value"),
            ({"compute_dtype": "half"}, ValueError, "got 'half'; use 'bfloat16' for fast VAE passes or None"),
            ({"compute_dtype": 16}, TypeError, "compute_dtype must be a str, a torch.dtype or None, got int: 16"),
        ]
    )
    def test_bad_arguments(self, override, error, pattern):
        kwargs = {"vaes": [_vae(0), _vae(1)], "scales": [0.2, 0.3], "layer_groups": {"0": 0, "2": 1}}
        kwargs.update(override)
        with self.assertRaisesRegex(error, pattern):
            DeepWeightPrior(**kwargs)


class TestCheckpointAndInit(unittest.TestCase):
    def test_round_trip(self):
        prior = _prior(num_samples=2)
        net = _net()
        with tempfile.TemporaryDirectory() as tmp:
            path = prior.save(Path(tmp) / "prior" / "dwp.pt", extra={"source": "unit test"})
            loaded = DeepWeightPrior.load(path, num_samples=2)
            self.assertEqual(loaded.layer_groups, prior.layer_groups)
            self.assertEqual(loaded.extra, {"source": "unit test"})
            torch.manual_seed(0)
            a = prior(net)
            torch.manual_seed(0)
            b = loaded(net)
            torch.testing.assert_close(a, b)
            parser = ConfigParser({"p": {"_target_": "monai_dwp.losses.DeepWeightPrior.load", "path": str(path),
                                         "max_kernels": 8}})
            self.assertEqual(parser.get_parsed_content("p").max_kernels, 8)
            torch.save({"model": {}}, Path(tmp) / "other.pt")
            with self.assertRaisesRegex(ValueError, r"other.pt' is not a DeepWeightPrior checkpoint \(format None"):
                DeepWeightPrior.load(Path(tmp) / "other.pt")
        with self.assertRaisesRegex(FileNotFoundError, r"missing.pt' does not exist; fit it with .*dwp_prior"):
            DeepWeightPrior.load("missing.pt")

    def test_round_trip_keeps_layer_scales_and_init_uses_them(self):
        prior = _prior(layer_scales={"0": 0.05, "2": 0.7})
        with tempfile.TemporaryDirectory() as tmp:
            loaded = DeepWeightPrior.load(prior.save(Path(tmp) / "dwp.pt"))
        self.assertEqual(loaded.layer_scales, {"0": 0.05, "2": 0.7})
        net = _net()
        loaded.initialize(net, generator=torch.Generator().manual_seed(0))
        expected = prior.vaes[0].sample(2, generator=torch.Generator().manual_seed(0)) * 0.05
        torch.testing.assert_close(net[0].loc, expected.reshape(net[0].loc.shape))

    def test_dwp_initialize_bayesian_and_deterministic(self):
        prior = _prior()
        net = _net()
        before = net[3].loc.clone()
        dwp_initialize(net, prior, generator=torch.Generator().manual_seed(0))
        expected = prior.vaes[0].sample(2, generator=torch.Generator().manual_seed(0)) * 0.2
        torch.testing.assert_close(net[0].loc, expected.reshape(net[0].loc.shape))
        torch.testing.assert_close(net[3].loc, before)  # uncovered layer untouched
        det = nn.Sequential(nn.Conv3d(1, 2, 3), nn.ReLU(), nn.Conv3d(2, 3, 3))
        names = prior.initialize(det)
        self.assertEqual(names, ["0", "2"])
        with self.assertRaisesRegex(ValueError, "cannot DWP-initialise layer '2': expected a convolution, found ReLU"):
            dwp_initialize(nn.Sequential(nn.Conv3d(1, 1, 3), nn.Conv3d(1, 1, 3), nn.ReLU()),
                           DeepWeightPrior([_vae()], [0.1], {"2": 0}))
        kernels = prior.sample_kernels(5, 1, generator=torch.Generator().manual_seed(1))
        self.assertEqual(tuple(kernels.shape), (5, 3, 3, 3))
        # samples of the prior itself: the decoder noise included, drawn from the same generator
        noisy = _net()
        dwp_initialize(noisy, prior, generator=torch.Generator().manual_seed(0), decoder_noise=True)
        expected = prior.vaes[0].sample(2, generator=torch.Generator().manual_seed(0), decoder_noise=True) * 0.2
        torch.testing.assert_close(noisy[0].loc, expected.reshape(noisy[0].loc.shape))
        self.assertFalse(torch.equal(noisy[0].loc, net[0].loc))
        with self.assertRaisesRegex(ValueError, r"group must be in \[0, 2\), got 2"):
            prior.sample_kernels(5, 2)
        with self.assertRaisesRegex(TypeError, "prior must be a DeepWeightPrior, got GaussianPrior"):
            dwp_initialize(net, GaussianPrior())


class TestCheckpointMismatch(unittest.TestCase):
    """A prior checkpoint that does not fit: another group layout, another network, not a checkpoint at all."""

    def _saved(self, tmp: str, change=None) -> Path:
        path = _prior().save(Path(tmp) / "dwp.pt")
        if change is not None:
            payload = torch.load(path, weights_only=True)
            change(payload)
            torch.save(payload, path)
        return path

    @parameterized.expand(
        [
            ("fewer_groups_than_vaes", lambda p: p.update(layer_groups={"0": 0, "2": 0}),
             r"dwp\.pt' holds 2 VAE\(s\), one per group 0\.\.1, but its layer_groups do not use exactly these groups, "
             r"got groups \['0'\]: its VAEs and its layer -> group map come from different group layouts "
             r"\(num_groups\); refit the prior with `python -m monai\.bundle run --config_file "
             r"bundles/dwp_prior/configs/train\.json` \(one run writes both\)\.$"),
            ("group_without_vae", lambda p: p.update(layer_groups={"0": 0, "2": 7}),
             r"holds 2 VAE\(s\), one per group 0\.\.1, but its layer_groups .* got groups \['0', '7'\]"),
            ("scales_of_another_layout", lambda p: p.update(scales=[0.2, 0.3, 0.4]),
             r"holds 2 VAE\(s\), one per group, but its group scales do not match, got scales=\[0\.2, 0\.3, 0\.4\]"),
            ("vae_weights_missing", lambda p: p["vae_state_dicts"].pop(),
             r"dwp\.pt' is incomplete, got 2 VAE config\(s\) and 1 VAE weight set\(s\); refit the prior"),
        ]
    )
    def test_other_group_layout(self, _, change, pattern):
        with tempfile.TemporaryDirectory() as tmp:
            path = self._saved(tmp, change)
            with self.assertRaisesRegex(ValueError, pattern):
                DeepWeightPrior.load(path)

    def test_not_a_checkpoint(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "dwp.pt"
            path.write_bytes(b"\x00 this is not a checkpoint" * 4)
            with self.assertRaisesRegex(ValueError, r"^prior checkpoint '.*dwp\.pt' is not a readable PyTorch "
                                                    r"checkpoint, got \w+: .*; pass the dwp_prior\.pt written by the "
                                                    r"dwp_prior bundle\.$"):
                DeepWeightPrior.load(path)

    def test_prior_of_another_network(self):
        with tempfile.TemporaryDirectory() as tmp:
            prior = DeepWeightPrior.load(self._saved(tmp, lambda p: p.update(layer_groups={"0": 0, "down9.conv": 1})))
        pattern = (r"^the prior covers layer 'down9\.conv' \(group 1, kernel \(3, 3, 3\)\) but the network has no "
                   r"such module there, not a BayesianConv; build the network the prior was fitted for")
        with self.assertRaisesRegex(ValueError, pattern):
            prior.check_network(_net())


if __name__ == "__main__":
    unittest.main()
