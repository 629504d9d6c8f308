from __future__ import annotations

import os
import tempfile
import unittest

import torch
from ignite.engine import Engine, Events

from monai_dwp.handlers import AtomicCheckpointSaver, NonFiniteLossError, NonFiniteLossHandler


class _Loss:
    last_terms: dict = {}


class TestNonFiniteLossHandler(unittest.TestCase):
    def _run(self, tmp: str, bad_iteration: int, image_nan: bool = False) -> Engine:
        net = torch.nn.Sequential(torch.nn.Conv3d(1, 1, 3))
        loss = _Loss()

        def step(engine, batch):
            bad = engine.state.iteration == bad_iteration
            if bad:
                with torch.no_grad():
                    net[0].weight.fill_(float("nan"))  # what the optimiser step does with a NaN gradient
            loss.last_terms = {"data": torch.tensor(0.5), "kl": torch.tensor(float("inf") if bad else 1.0)}
            return {"loss": torch.tensor(float("nan") if bad else 1.0)}

        engine = Engine(step)
        engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: setattr(e.state, "metrics", {"dice": 0.5}))
        NonFiniteLossHandler(loss, net).attach(engine)
        AtomicCheckpointSaver(tmp, {"model": net, "trainer": engine}, save_interval=1, n_saved=2).attach(engine)
        AtomicCheckpointSaver(tmp, {"model": net}, save_key_metric=True, key_metric_name="dice",
                              key_metric_filename="model.pt").attach(engine)
        image = torch.full((1, 1, 4, 4, 4), float("nan") if image_nan else 0.0)
        engine.run([{"image": image}] * 3, max_epochs=3)
        return engine

    def test_names_term_layer_and_iteration_and_keeps_the_last_checkpoint(self):
        with tempfile.TemporaryDirectory() as tmp:
            pattern = (r"training loss is nan at iteration 5 \(epoch 2\); non-finite terms: kl = inf; non-finite "
                       r"parameters in 1 layer\(s\): 0\. Training stopped before this step was saved")
            with self.assertRaisesRegex(NonFiniteLossError, pattern):
                self._run(tmp, bad_iteration=5)
            self.assertEqual(sorted(os.listdir(tmp)), ["checkpoint_epoch=1.pt", "model.pt"])
            for name in os.listdir(tmp):
                state = torch.load(os.path.join(tmp, name), weights_only=True)
                weights = state["model"] if "model" in state else state
                self.assertTrue(all(torch.isfinite(w).all() for w in weights.values()), name)

    def test_names_a_bad_batch(self):
        with tempfile.TemporaryDirectory() as tmp:
            with self.assertRaisesRegex(FloatingPointError, r"the input batch 'image' holds 64 non-finite voxels"):
                self._run(tmp, bad_iteration=1, image_nan=True)
            self.assertEqual(os.listdir(tmp), [])

    def test_non_finite_start(self):
        net = torch.nn.Sequential(torch.nn.Conv3d(1, 1, 3), torch.nn.Conv3d(1, 1, 1))
        with torch.no_grad():
            net[1].bias.fill_(float("inf"))
        engine = Engine(lambda e, b: {"loss": torch.tensor(1.0)})
        NonFiniteLossHandler(None, net).attach(engine)
        with self.assertRaisesRegex(NonFiniteLossError, r"before the first training step \(iteration 1\): non-finite "
                                                         r"parameters in 1 layer\(s\): 1\. The network was loaded"):
            engine.run([0], max_epochs=1)

    def test_finite_runs_through(self):
        with tempfile.TemporaryDirectory() as tmp:
            self.assertEqual(self._run(tmp, bad_iteration=-1).state.epoch, 3)


if __name__ == "__main__":
    unittest.main()
