from __future__ import annotations

import unittest

import torch
from ignite.engine import Engine, Events
from torch import nn

from monai_dwp.handlers import LossTermsHandler, ResampleWeightsHandler
from monai_dwp.networks import convert_to_bayesian, stochastic_mode


class _Loss:
    def __init__(self) -> None:
        self.last_terms: dict[str, torch.Tensor] = {}


class TestLossTermsHandler(unittest.TestCase):
    def test_epoch_means_in_metrics(self):
        loss = _Loss()

        def step(engine, batch):
            loss.last_terms = {"data": torch.tensor(float(batch)), "kl": torch.tensor(10.0 * batch)}

        engine = Engine(step)
        LossTermsHandler(loss).attach(engine)
        engine.run([1, 2, 3], max_epochs=2)
        self.assertAlmostEqual(engine.state.metrics["loss_data"], 2.0)
        self.assertAlmostEqual(engine.state.metrics["loss_kl"], 20.0)

    def test_means_restart_every_epoch_and_first_step_logged_once(self):
        loss = _Loss()

        def step(engine, batch):
            loss.last_terms = {"data": torch.tensor(batch + 10.0 * engine.state.epoch), "kl": 5.0}

        engine = Engine(step)
        LossTermsHandler(loss, prefix="elbo_").attach(engine)
        means: dict[int, dict[str, float]] = {}

        @engine.on(Events.EPOCH_COMPLETED)
        def keep(e: Engine) -> None:
            means[e.state.epoch] = dict(e.state.metrics)

        with self.assertLogs("monai_dwp.handlers.loss_terms", level="INFO") as logs:
            engine.run([1, 2, 3], max_epochs=2)
        self.assertEqual(means, {1: {"elbo_data": 12.0, "elbo_kl": 5.0}, 2: {"elbo_data": 22.0, "elbo_kl": 5.0}})
        messages = [r.getMessage() for r in logs.records]
        self.assertEqual(messages, ["loss terms at iteration 1: elbo_data: 11 elbo_kl: 5"])

    def test_rejects_loss_without_terms(self):
        with self.assertRaisesRegex(TypeError, "loss must keep its terms in a `last_terms` dict .*got MSELoss"):
            LossTermsHandler(nn.MSELoss())


class TestResampleWeightsHandler(unittest.TestCase):
    def test_new_draw_every_iteration(self):
        net = convert_to_bayesian(nn.Sequential(nn.Conv2d(1, 2, 3)), init_log_scale=-1.0)
        stochastic_mode(net, "sampled")
        x = torch.randn(1, 1, 5, 5)
        outputs = []
        engine = Engine(lambda e, b: outputs.append(net(x).detach()))
        ResampleWeightsHandler(net).attach(engine)
        engine.run([0, 1], max_epochs=1)
        self.assertFalse(torch.allclose(outputs[0], outputs[1]))

    def test_rejects_deterministic_network(self):
        with self.assertRaisesRegex(ValueError, "Sequential has no BayesianConv layer to resample"):
            ResampleWeightsHandler(nn.Sequential(nn.Conv2d(1, 1, 3)))


if __name__ == "__main__":
    unittest.main()
