from __future__ import annotations

import unittest

import torch
from monai.bundle import ConfigParser
from monai.losses import DiceCELoss, DiceLoss
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

    def test_value_is_data_plus_scaled_kl(self):
        prior = GaussianPrior(scale=0.1)
        data_loss = DiceLoss(to_onehot_y=True, softmax=True)
        loss = ELBOLoss(self.net, prior, dataset_size=20, data_loss=data_loss, kl_weight=0.5)
        torch.manual_seed(1)
        pred = self.net(self.x)
        value = loss(pred, self.y)
        expected = data_loss(pred, self.y) + 0.5 * prior(self.net) / 20
        torch.testing.assert_close(value, expected)
        torch.testing.assert_close(loss.last_terms["kl_scaled"], 0.5 * prior(self.net).detach() / 20)
        self.assertEqual(set(loss.last_terms), {"data", "kl", "kl_scaled"})

    def test_default_data_loss_is_papers_dice_ce(self):
        loss = ELBOLoss(self.net, GaussianPrior(), dataset_size=5)
        self.assertIsInstance(loss.data_loss, DiceCELoss)
        self.assertAlmostEqual(loss.data_loss.lambda_dice, 0.99)
        self.assertAlmostEqual(loss.data_loss.lambda_ce, 0.01)

    def test_without_prior_is_the_data_loss(self):
        loss = ELBOLoss(self.net, None, dataset_size=5)
        pred = self.net(self.x)
        torch.testing.assert_close(loss(pred, self.y), loss.data_loss(pred, self.y))
        self.assertEqual(set(loss.last_terms), {"data"})

    def test_network_not_registered_and_gradients_flow(self):
        loss = ELBOLoss(self.net, GaussianPrior(), dataset_size=5)
        self.assertEqual(len(list(loss.parameters())), 0)
        self.assertNotIn("network", dict(loss.named_children()))
        loss(self.net(self.x), self.y).backward()
        self.assertTrue(all(p.grad is not None for p in self.net.parameters()))

    @parameterized.expand(
        [
            ({"dataset_size": 0}, ValueError, "dataset_size must be the number of training cases, a positive int, got 0"),
            ({"dataset_size": 2.5}, ValueError, "got 2.5"),
            ({"kl_weight": -1.0}, ValueError, "kl_weight must be a finite float >= 0, got -1.0"),
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
                "loss": {"_target_": "ELBOLoss", "network": "@network",
                         "prior": {"_target_": "GaussianPrior", "scale": 0.1}, "dataset_size": 5},
            }
        )
        loss = parser.get_parsed_content("loss")
        self.assertIsInstance(loss, ELBOLoss)
        self.assertEqual(loss.dataset_size, 5)


if __name__ == "__main__":
    unittest.main()
