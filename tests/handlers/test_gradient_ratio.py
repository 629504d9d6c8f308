from __future__ import annotations

import tempfile
import unittest
from pathlib import Path

import torch
from monai.engines import SupervisedTrainer
from torch import nn

from monai_dwp.handlers import GradientRatioHandler
from monai_dwp.losses import DeepWeightPrior, ELBOLoss, GaussianPrior
from monai_dwp.networks import KernelVAE, convert_to_bayesian


def _net() -> nn.Module:
    torch.manual_seed(0)
    return convert_to_bayesian(nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 2, 3, padding=1)))


class TestGradientRatioHandler(unittest.TestCase):
    def test_ratios_match_separate_gradients(self):
        net = _net()
        loss = ELBOLoss(net, GaussianPrior(scale=0.1), dataset_size=4, voxels_per_case=1000, aux_weight=0.0)
        handler = GradientRatioHandler(loss, net, interval=1)
        x, y = torch.randn(2, 1, 6, 6, 6), (torch.rand(2, 1, 6, 6, 6) > 0.5).float()
        torch.manual_seed(1)
        ratios = handler.ratios(x, y)
        torch.manual_seed(1)
        data = loss.nll(net(x), y)
        g_data = torch.autograd.grad(data, [net[0].loc, net[0].log_scale])
        g_kl = torch.autograd.grad(loss.prior(net) * loss.kl_weight, [net[0].loc, net[0].log_scale])
        self.assertAlmostEqual(ratios["loc"]["0"], float(g_data[0].norm() / g_kl[0].norm()), places=4)
        self.assertAlmostEqual(ratios["log_scale"]["0"], float(g_data[1].norm() / g_kl[1].norm()), places=4)
        self.assertEqual(set(ratios["loc"]), {"0", "2"})
        self.assertTrue(all(p.grad is None for p in net.parameters()))  # training gradients untouched

    def test_keeps_the_refresh_rotation_of_a_deep_weight_prior(self):
        net = _net()
        torch.manual_seed(0)
        prior = DeepWeightPrior([KernelVAE(latent_size=2, hidden_channels=(4, 8, 16))], scales=[0.1],
                                layer_groups={"0": 0, "2": 0}, refresh_interval=4)
        loss = ELBOLoss(net, prior, dataset_size=4, voxels_per_case=216, aux_weight=0.0)
        loss.prior(net).backward()  # a training step fills the cache
        calls = [c.calls for c in prior._caches.values()]
        x, y = torch.randn(2, 1, 6, 6, 6), (torch.rand(2, 1, 6, 6, 6) > 0.5).float()
        ratios = GradientRatioHandler(loss, net, interval=1).ratios(x, y)
        self.assertTrue(all(0 < v < float("inf") for v in ratios["loc"].values()))
        self.assertEqual([c.calls for c in prior._caches.values()], calls)  # the rotation did not advance

    def test_in_a_trainer_writes_tensorboard(self):
        net = _net()
        loss = ELBOLoss(net, GaussianPrior(scale=0.1), dataset_size=4, voxels_per_case=216)
        data = [{"image": torch.randn(1, 6, 6, 6), "label": (torch.rand(1, 6, 6, 6) > 0.5).float()} for _ in range(4)]
        loader = torch.utils.data.DataLoader(data, batch_size=2)
        with tempfile.TemporaryDirectory() as tmp:
            handler = GradientRatioHandler(loss, net, interval=2, log_dir=tmp)
            trainer = SupervisedTrainer(
                device=torch.device("cpu"), max_epochs=2, train_data_loader=loader, network=net,
                optimizer=torch.optim.Adam(net.parameters(), 1e-3), loss_function=loss, train_handlers=[handler],
            )
            trainer.run()
            self.assertTrue(list(Path(tmp).glob("events.out.tfevents.*")))
        self.assertEqual(set(handler.last_ratios), {"loc", "log_scale"})
        self.assertTrue(all(v > 0 for v in handler.last_ratios["log_scale"].values()))

    def test_no_prior_is_a_no_op_and_bad_arguments(self):
        net = _net()
        handler = GradientRatioHandler(ELBOLoss(net, None, dataset_size=2), net)
        trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=1, train_data_loader=[], network=net,
                                    optimizer=torch.optim.SGD(net.parameters(), 0.1), loss_function=nn.MSELoss())
        handler.attach(trainer)
        self.assertFalse(trainer.has_event_handler(handler))
        with self.assertRaisesRegex(TypeError, "loss must be an ELBOLoss, got MSELoss"):
            GradientRatioHandler(nn.MSELoss(), net)
        with self.assertRaisesRegex(ValueError, "interval must be ≥ 1, got 0; a number of iterations"):
            GradientRatioHandler(ELBOLoss(net, None, dataset_size=2), net, interval=0)


if __name__ == "__main__":
    unittest.main()
