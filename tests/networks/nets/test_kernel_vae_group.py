from __future__ import annotations

import unittest

import torch

from monai_dwp.networks.nets import KernelVAEGroup, KernelVAEOutput


class TestKernelVAEGroup(unittest.TestCase):
    def test_each_kernel_goes_through_its_group(self):
        torch.manual_seed(0)
        net = KernelVAEGroup(3, latent_size=2, hidden_channels=(4, 8, 16)).eval()
        kernels = torch.randn(7, 1, 3, 3, 3)
        group = torch.tensor([2, 0, 1, 2, 0, 0, 1])
        out = net(kernels, group)
        self.assertIsInstance(out, KernelVAEOutput)
        self.assertEqual(tuple(out.recon_loc.shape), (7, 1, 3, 3, 3))
        for i in range(7):  # encoder and decoder means are deterministic
            z_loc, _ = net.vaes[int(group[i])].encode(kernels[i : i + 1])
            torch.testing.assert_close(out.z_loc[i : i + 1], z_loc)
        whole = net(kernels, 1)
        torch.testing.assert_close(whole.z_loc, net.vaes[1].encode(kernels)[0])

    def test_bad_input(self):
        net = KernelVAEGroup(2, latent_size=2, hidden_channels=(4, 8, 16))
        with self.assertRaisesRegex(ValueError, r"group indices must lie in \[0, 2\), got \[0, 5\]"):
            net(torch.randn(2, 1, 3, 3, 3), torch.tensor([0, 5]))
        with self.assertRaisesRegex(ValueError, "group has 3 entries for 2 kernels"):
            net(torch.randn(2, 1, 3, 3, 3), torch.tensor([0, 1, 1]))
        with self.assertRaisesRegex(ValueError, "num_groups must be ≥ 1, got 0"):
            KernelVAEGroup(0)


if __name__ == "__main__":
    unittest.main()
