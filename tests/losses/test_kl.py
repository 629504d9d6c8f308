from __future__ import annotations

import unittest

import torch
from torch.distributions import Normal, kl_divergence

from monai_dwp.losses import gaussian_entropy, gaussian_kl, gaussian_log_prob, standard_normal_kl


class TestClosedForms(unittest.TestCase):
    def setUp(self):
        g = torch.Generator().manual_seed(0)
        self.loc_q = torch.randn(1000, generator=g, dtype=torch.float64)
        self.log_scale_q = torch.randn(1000, generator=g, dtype=torch.float64) * 2
        self.loc_p = torch.randn(1000, generator=g, dtype=torch.float64)
        self.log_scale_p = torch.randn(1000, generator=g, dtype=torch.float64)
        self.value = torch.randn(1000, generator=g, dtype=torch.float64) * 3

    def test_against_torch_distributions(self):
        q = Normal(self.loc_q, self.log_scale_q.exp())
        p = Normal(self.loc_p, self.log_scale_p.exp())
        torch.testing.assert_close(gaussian_kl(self.loc_q, self.log_scale_q, self.loc_p, self.log_scale_p),
                                   kl_divergence(q, p), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(gaussian_entropy(self.log_scale_q), q.entropy(), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(gaussian_log_prob(self.value, self.loc_q, self.log_scale_q),
                                   q.log_prob(self.value), rtol=1e-6, atol=1e-6)
        std = Normal(torch.zeros_like(self.loc_q), torch.ones_like(self.loc_q))
        torch.testing.assert_close(standard_normal_kl(self.loc_q, self.log_scale_q), kl_divergence(q, std),
                                   rtol=1e-6, atol=1e-6)

    def test_float_prior_arguments(self):
        expected = kl_divergence(Normal(self.loc_q, self.log_scale_q.exp()), Normal(0.5, 2.0))
        got = gaussian_kl(self.loc_q, self.log_scale_q, 0.5, torch.tensor(2.0).log().item())
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)

    def test_kl_zero_for_equal_distributions(self):
        kl = gaussian_kl(self.loc_q, self.log_scale_q, self.loc_q, self.log_scale_q)
        torch.testing.assert_close(kl, torch.zeros_like(kl))


if __name__ == "__main__":
    unittest.main()
