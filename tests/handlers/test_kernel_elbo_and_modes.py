from __future__ import annotations

import unittest

import torch
from ignite.engine import Engine
from torch import nn

from monai_dwp.handlers import KernelELBO, StochasticModeHandler, kernel_elbo_metrics
from monai_dwp.losses import KernelVAELoss
from monai_dwp.networks import KernelVAEGroup, bayesian_modules, convert_to_bayesian


class TestKernelELBO(unittest.TestCase):
    def test_overall_and_per_group_means(self):
        torch.manual_seed(0)
        net = KernelVAEGroup(2, latent_size=2, hidden_channels=(4, 8, 16))
        batches = [{"image": torch.randn(6, 1, 3, 3, 3), "group": torch.tensor([0, 1, 0, 1, 1, 1])} for _ in range(2)]
        outputs = []

        def step(engine, batch):
            torch.manual_seed(len(outputs))
            out = net(batch["image"], batch["group"])
            outputs.append((out, batch))
            return {"pred": out, "label": batch["image"]}

        engine = Engine(step)
        KernelELBO().attach(engine, "val_elbo")
        for name, metric in kernel_elbo_metrics(2).items():
            metric.attach(engine, name)
        engine.run(batches, max_epochs=1)
        loss = KernelVAELoss(reduction="none")
        elbo = torch.cat([-loss(o, b["image"]) for o, b in outputs]).double()
        groups = torch.cat([b["group"] for _, b in outputs])
        self.assertAlmostEqual(engine.state.metrics["val_elbo"], elbo.mean().item(), places=4)
        self.assertAlmostEqual(engine.state.metrics["val_elbo_group1"], elbo[groups == 1].mean().item(), places=4)


class TestStochasticModeHandler(unittest.TestCase):
    def test_mean_while_running_then_restored(self):
        net = convert_to_bayesian(nn.Sequential(nn.Conv2d(1, 2, 3)), mode="local")
        seen = []
        engine = Engine(lambda e, b: seen.append({m.mode for m in bayesian_modules(net).values()}))
        StochasticModeHandler(net, "mean").attach(engine)
        engine.run([0], max_epochs=1)
        self.assertEqual(seen, [{"mean"}])
        self.assertEqual({m.mode for m in bayesian_modules(net).values()}, {"local"})

    def test_restored_after_an_error(self):
        net = convert_to_bayesian(nn.Sequential(nn.Conv2d(1, 2, 3)), mode="local")

        def fail(engine, batch):
            raise RuntimeError("boom")

        engine = Engine(fail)
        StochasticModeHandler(net, "mean").attach(engine)
        with self.assertRaisesRegex(RuntimeError, "boom"):
            engine.run([0], max_epochs=1)
        self.assertEqual({m.mode for m in bayesian_modules(net).values()}, {"local"})
        with self.assertRaisesRegex(ValueError, "mode must be one of .* got 'exact'"):
            StochasticModeHandler(net, "exact")

    def test_sampled_draws_fresh_weights_each_run(self):
        net = convert_to_bayesian(nn.Sequential(nn.Conv2d(1, 2, 3)), mode="mean")
        layer = next(iter(bayesian_modules(net).values()))
        draws = []
        engine = Engine(lambda e, b: draws.append((layer.mode, layer.epsilon.clone())))
        StochasticModeHandler(net, "sampled").attach(engine)
        engine.run([0], max_epochs=1)
        engine.run([0], max_epochs=1)
        self.assertEqual([mode for mode, _ in draws], ["sampled", "sampled"])
        self.assertFalse(torch.equal(draws[0][1], draws[1][1]))
        self.assertEqual(layer.mode, "mean")


if __name__ == "__main__":
    unittest.main()
