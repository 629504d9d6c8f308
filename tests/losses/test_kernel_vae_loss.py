from __future__ import annotations

import unittest

import torch
from torch.distributions import Independent, Normal, kl_divergence

from monai_dwp.losses import KernelVAELoss
from monai_dwp.networks import KernelVAE


class TestKernelVAELoss(unittest.TestCase):
    def setUp(self):
        torch.manual_seed(0)
        self.vae = KernelVAE(latent_size=3, hidden_channels=(4, 8, 16))
        self.kernels = torch.randn(10, 1, 3, 3, 3) * 0.1

    def test_against_torch_distributions(self):
        out = self.vae(self.kernels)
        loss = KernelVAELoss(beta=0.5, reduction="none")(out, self.kernels)
        nll = -Independent(Normal(out.recon_loc, out.recon_log_scale.exp()), 4).log_prob(self.kernels)
        kl = kl_divergence(Independent(Normal(out.z_loc, out.z_log_scale.exp()), 1),
                           Independent(Normal(torch.zeros(3), torch.ones(3)), 1))
        torch.testing.assert_close(loss, nll + 0.5 * kl)
        torch.testing.assert_close(KernelVAELoss(beta=0.5)(out, self.kernels), (nll + 0.5 * kl).mean())

    def test_training_lowers_loss(self):
        loss_fn = KernelVAELoss()
        opt = torch.optim.Adam(self.vae.parameters(), lr=1e-2)
        first = None
        for _ in range(60):
            opt.zero_grad()
            loss = loss_fn(self.vae(self.kernels), self.kernels)
            loss.backward()
            opt.step()
            first = loss.item() if first is None else first
        self.assertLess(loss.item(), first)

    def test_bad_input(self):
        out = self.vae(self.kernels)
        with self.assertRaisesRegex(ValueError, r"target shape \(10, 27\) must equal the reconstruction shape"):
            KernelVAELoss()(out, self.kernels.flatten(1))
        with self.assertRaisesRegex(TypeError, "output must be the KernelVAEOutput of KernelVAE.forward, got tuple"):
            KernelVAELoss()(tuple(out), self.kernels)
        with self.assertRaisesRegex(ValueError, "reduction must be 'mean', 'sum' or 'none', got 'max'"):
            KernelVAELoss(reduction="max")
        with self.assertRaisesRegex(ValueError, r"beta must lie in \[0.0, inf\], got -1.0"):
            KernelVAELoss(beta=-1)


if __name__ == "__main__":
    unittest.main()
