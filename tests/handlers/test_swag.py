"""``SWAGHandler``: running moments of the weights over the last epochs, resumable; ``load_swag`` and
``GaussianPrior.from_swag`` built on them."""

from __future__ import annotations

import tempfile
import unittest
from unittest import mock
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from torch import nn
from torch.distributions import Normal, kl_divergence

from monai_dwp.handlers import SWAGHandler, load_swag
from monai_dwp.losses import GaussianPrior
from monai_dwp.networks import bayesian_modules, convert_to_bayesian


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(1, 2, 3), nn.InstanceNorm3d(2, affine=True), nn.Conv3d(2, 1, 3))


def _train(net: nn.Module, handler: SWAGHandler, epochs: int, first: int = 1) -> list[dict[str, torch.Tensor]]:
    """Epochs ``first..epochs`` of a run whose every epoch sets the weights to a known draw (a resumed run when
    ``first > 1``); returns the weights at the end of each epoch."""
    seen = []

    def step(engine, _):
        torch.manual_seed(engine.state.epoch)
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn_like(p))

    engine = Engine(step)
    engine.add_event_handler(Events.EPOCH_COMPLETED,
                             lambda e: seen.append({k: v.clone() for k, v in net.state_dict().items()}))
    handler.attach(engine)
    if first > 1:
        engine.load_state_dict({"epoch": first - 1, "max_epochs": epochs, "epoch_length": 1})
    engine.run([0], max_epochs=epochs)
    return seen


class TestSWAG(unittest.TestCase):
    def test_moments_of_the_collected_epochs(self):
        net = _net()
        with tempfile.TemporaryDirectory() as tmp:
            handler = SWAGHandler(net, Path(tmp) / "seed0" / "swag.pt", start_epoch=3)
            seen = _train(net, handler, epochs=6)
            mean, variance = load_swag(Path(tmp) / "seed0" / "swag.pt")
        self.assertEqual(handler.count, 4)  # epochs 3, 4, 5, 6
        for name in ("0.weight", "1.weight", "2.bias"):
            stack = torch.stack([s[name] for s in seen[2:]])
            torch.testing.assert_close(mean[name], stack.mean(0))
            torch.testing.assert_close(variance[name], stack.var(0, unbiased=False), rtol=1e-4, atol=1e-6)

    def test_only_rank_0_writes(self):
        net = _net()
        with tempfile.TemporaryDirectory() as tmp, mock.patch("monai_dwp.handlers.swag.idist.get_rank", return_value=1):
            handler = SWAGHandler(net, Path(tmp) / "swag.pt", start_epoch=1)
            _train(net, handler, epochs=2)
            self.assertEqual(handler.count, 2)  # every rank keeps the moments (its checkpoint state) ...
            self.assertFalse((Path(tmp) / "swag.pt").exists())  # ... but only rank 0 writes the file

    def test_small_late_movements_keep_their_variance(self):
        """Weights of size 0.1 moving by 1e-4: float32 moments would lose the variance to rounding."""
        net = nn.Conv3d(1, 64, 3)
        with tempfile.TemporaryDirectory() as tmp:
            handler = SWAGHandler(net, Path(tmp) / "swag.pt", start_epoch=1)
            torch.manual_seed(0)
            base = 0.1 + 0.01 * torch.randn_like(net.weight)
            draws = []
            for _ in range(20):
                with torch.no_grad():
                    net.weight.copy_(base + 1e-4 * torch.randn_like(base))
                draws.append(net.weight.detach().double().clone())
                handler.update()
            handler.save()
            _, variance = load_swag(Path(tmp) / "swag.pt")
        expected = torch.stack(draws).var(0, unbiased=False).float()
        torch.testing.assert_close(variance["weight"], expected, rtol=1e-3, atol=1e-14)

    def test_resume_continues_the_moments(self):
        with tempfile.TemporaryDirectory() as tmp:
            whole = SWAGHandler(_net(), Path(tmp) / "a.pt", start_epoch=2)
            _train(whole.network, whole, epochs=5)
            first = SWAGHandler(_net(), Path(tmp) / "b.pt", start_epoch=2)
            _train(first.network, first, epochs=3)
            resumed = SWAGHandler(_net(), Path(tmp) / "b.pt", start_epoch=2)
            resumed.load_state_dict(torch.load(Path(tmp) / "b.pt", weights_only=True))
            _train(resumed.network, resumed, epochs=5, first=4)
        self.assertEqual(resumed.count, whole.count)
        for name in whole.mean:
            torch.testing.assert_close(resumed.mean[name], whole.mean[name])
            torch.testing.assert_close(resumed.sq_mean[name], whole.sq_mean[name])

    def test_prior_from_swag(self):
        net = _net()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "swag.pt"
            _train(net, SWAGHandler(net, path, start_epoch=1), epochs=4)
            mean, variance = load_swag(path)
            prior = GaussianPrior.from_swag(path, scale_factor=0.5)
        self.assertEqual(sorted(prior.layer_names), ["0", "2"])  # convolutions, not the norm's affine
        bayes = convert_to_bayesian(_net(), kernel_size=3, init_log_scale=-3.0)
        expected = sum(
            kl_divergence(Normal(m.loc, m.scale), Normal(mean[f"{n}.weight"], (0.5 * variance[f"{n}.weight"]).sqrt())).sum()
            for n, m in bayesian_modules(bayes).items()
        )
        torch.testing.assert_close(prior(bayes), expected)

    def test_errors(self):
        net = _net()
        with tempfile.TemporaryDirectory() as tmp:
            with self.assertRaisesRegex(FileNotFoundError, r"swag_ckpt '.*nope.pt' does not exist; train the source "
                                                           r"network with `--swag_start_epoch N`"):
                load_swag(Path(tmp) / "nope.pt")
            torch.save({"model": {}}, Path(tmp) / "model.pt")
            with self.assertRaisesRegex(ValueError, r"is not a SWAG moments file \(monai_dwp.swag/1\)"):
                load_swag(Path(tmp) / "model.pt")
            _train(net, SWAGHandler(net, Path(tmp) / "one.pt", start_epoch=3), epochs=3)
            with self.assertRaisesRegex(ValueError, r"holds 1 epoch\(s\); a variance needs at least 2"):
                GaussianPrior.from_swag(Path(tmp) / "one.pt")
            with self.assertRaisesRegex(ValueError, r"start_epoch must be"):
                SWAGHandler(net, Path(tmp) / "x.pt", start_epoch=0)
            with self.assertRaisesRegex(ValueError, r"differs from the 3 of the run being resumed"):
                SWAGHandler(net, Path(tmp) / "x.pt", start_epoch=2).load_state_dict(
                    torch.load(Path(tmp) / "one.pt", weights_only=True))
            engine = Engine(lambda e, b: None)
            engine.state.max_epochs = 5
            with self.assertRaisesRegex(ValueError, r"swag_start_epoch 6 lies after the last epoch \(5\)"):
                SWAGHandler(net, Path(tmp) / "x.pt", start_epoch=6).attach(engine)
            with self.assertRaisesRegex(ValueError, r"scale_factor must lie in \(0.0, inf\], got 0.0"):
                GaussianPrior.from_swag(Path(tmp) / "one.pt", scale_factor=0.0)


if __name__ == "__main__":
    unittest.main()
