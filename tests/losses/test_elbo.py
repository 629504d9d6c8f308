from __future__ import annotations

import unittest

import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser
from monai.losses import DiceLoss
from parameterized import parameterized
from torch import nn

from monai_dwp.losses import ELBOLoss, GaussianPrior
from monai_dwp.networks import convert_to_bayesian


def _net() -> nn.Module:
    torch.manual_seed(0)
    return convert_to_bayesian(nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 2, 3, padding=1)))


class TestELBOLoss(unittest.TestCase):
    def setUp(self):
        self.net = _net()
        self.x = torch.randn(2, 1, 8, 8, 8)
        self.y = (torch.rand(2, 1, 8, 8, 8) > 0.5).float()

    def test_per_voxel_elbo_formula(self):
        """loss = mean CE + aux_weight · Dice + temperature · KL / (N · V̄)."""
        prior = GaussianPrior(scale=0.1)
        loss = ELBOLoss(self.net, prior, dataset_size=20, voxels_per_case=5000.0, temperature=0.5, aux_weight=0.3)
        torch.manual_seed(1)
        pred = self.net(self.x)
        value = loss(pred, self.y)
        nll = F.cross_entropy(pred, self.y[:, 0].long())
        dice = DiceLoss(to_onehot_y=True, softmax=True)(pred, self.y)
        kl = prior(self.net)
        torch.testing.assert_close(value, nll + 0.3 * dice + 0.5 * kl / (20 * 5000.0))
        torch.testing.assert_close(loss.last_terms["nll"], nll.detach())
        torch.testing.assert_close(loss.last_terms["kl_scaled"], (0.5 * kl / (20 * 5000.0)).detach())
        self.assertEqual(set(loss.last_terms), {"nll", "aux", "data", "kl", "kl_scaled"})
        self.assertAlmostEqual(loss.kl_weight, 0.5 / (20 * 5000.0))

    def test_likelihood_is_the_cross_entropy_only(self):
        """With aux_weight 0 the loss is exactly the negative ELBO over the data set divided by N·V̄."""
        prior = GaussianPrior(scale=0.1)
        loss = ELBOLoss(self.net, prior, dataset_size=2, voxels_per_case=8**3, aux_weight=0.0)
        pred = self.net(self.x)
        value = loss(pred, self.y)
        # log-likelihood summed over both volumes and every voxel; the minibatch is the whole data set here
        log_lik = -F.cross_entropy(pred, self.y[:, 0].long(), reduction="sum")
        elbo = log_lik - prior(self.net)
        torch.testing.assert_close(value, -elbo / (2 * 8**3))

    def test_voxels_per_case_default_is_the_first_target_and_logged(self):
        loss = ELBOLoss(self.net, GaussianPrior(), dataset_size=5)
        self.assertTrue(loss.kl_weight != loss.kl_weight)  # nan before the first call
        with self.assertLogs("monai_dwp.losses.elbo", "INFO") as logs:
            loss(self.net(self.x), self.y)
        self.assertEqual(loss.voxels_per_case, 512.0)
        self.assertIn("voxels_per_case not given; using the 512 voxels", logs.output[0])

    def test_readme_example_is_balanced(self):
        """The README's call: a KL term of the same order as the data term, not 10⁶ times larger."""
        torch.manual_seed(0)
        from monai_dwp.networks.nets import DWPUNet

        net = DWPUNet(bayesian=True)
        loss_fn = ELBOLoss(net, GaussianPrior(scale=0.1), dataset_size=10, voxels_per_case=64 * 80 * 64)
        image, label = torch.randn(1, 1, 32, 32, 32), (torch.rand(1, 1, 32, 32, 32) > 0.9).float()
        loss_fn(net(image), label)
        ratio = float(loss_fn.last_terms["kl_scaled"] / loss_fn.last_terms["data"])
        self.assertLess(ratio, 10.0)
        self.assertGreater(ratio, 1e-4)

    def test_without_prior_is_the_data_terms(self):
        loss = ELBOLoss(self.net, None, dataset_size=5)
        pred = self.net(self.x)
        expected = F.cross_entropy(pred, self.y[:, 0].long()) + DiceLoss(to_onehot_y=True, softmax=True)(pred, self.y)
        torch.testing.assert_close(loss(pred, self.y), expected)
        self.assertEqual(set(loss.last_terms), {"nll", "aux", "data"})

    def test_one_hot_target(self):
        loss = ELBOLoss(self.net, None, dataset_size=5, aux_loss=None)
        pred = self.net(self.x)
        onehot = torch.cat([1 - self.y, self.y], 1)
        torch.testing.assert_close(loss(pred, onehot), loss(pred, self.y))

    def test_network_not_registered_and_gradients_flow(self):
        loss = ELBOLoss(self.net, GaussianPrior(), dataset_size=5, voxels_per_case=100)
        self.assertEqual(len(list(loss.parameters())), 0)
        self.assertNotIn("network", dict(loss.named_children()))
        loss(self.net(self.x), self.y).backward()
        self.assertTrue(all(p.grad is not None for p in self.net.parameters()))

    @parameterized.expand(
        [
            ({"dataset_size": 0}, ValueError, "dataset_size must be ≥ 1, got 0; the number of training volumes"),
            ({"dataset_size": 2.5}, TypeError, "dataset_size must be an integer, got 2.5"),
            ({"temperature": -1.0}, ValueError, r"temperature must lie in \[0.0, inf\], got -1.0"),
            ({"voxels_per_case": 0}, ValueError, r"voxels_per_case must lie in \(0.0, inf\], got 0.0"),
            ({"aux_weight": float("nan")}, ValueError, "aux_weight must be finite, got nan"),
            ({"aux_loss": "focal"}, ValueError, "aux_loss must be a loss module, None or 'dice', got 'focal'"),
            ({"network": "net"}, TypeError, "network must be a torch.nn.Module, got str"),
            ({"prior": 3}, TypeError, "prior must be callable prior\\(network\\) -> Tensor, got int"),
        ]
    )
    def test_bad_arguments(self, override, error, pattern):
        kwargs = {"network": self.net, "prior": GaussianPrior(), "dataset_size": 5}
        kwargs.update(override)
        with self.assertRaisesRegex(error, pattern):
            ELBOLoss(**kwargs)

    def test_from_config(self):
        parser = ConfigParser(
            {
                "imports": ["$import monai_dwp"],
                "network": {"_target_": "monai_dwp.networks.nets.DWPUNet", "bayesian": True},
                "loss": {"_target_": "ELBOLoss", "network": "@network", "voxels_per_case": 1000,
                         "prior": {"_target_": "GaussianPrior", "scale": 0.1}, "dataset_size": 5},
            }
        )
        loss = parser.get_parsed_content("loss")
        self.assertIsInstance(loss, ELBOLoss)
        self.assertEqual(loss.dataset_size, 5)
        self.assertAlmostEqual(loss.kl_weight, 1 / 5000)


if __name__ == "__main__":
    unittest.main()
