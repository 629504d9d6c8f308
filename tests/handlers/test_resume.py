from __future__ import annotations

import random
import tempfile
import unittest

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data import Dataset
from monai.transforms import Compose, RandCropByPosNegLabeld, RandFlipd

from monai_dwp.handlers import AtomicCheckpointSaver, BestMetricState, RandomStates, random_generators, training_state


def _dataset() -> Dataset:
    transform = Compose([RandCropByPosNegLabeld(["image", "label"], "label", (4, 4, 4), num_samples=2),
                         RandFlipd(["image", "label"], prob=0.5)])
    item = {"image": torch.rand(1, 8, 8, 8), "label": (torch.rand(1, 8, 8, 8) > 0.5).float()}
    return Dataset([item], transform=transform)


def _draws(dataset: Dataset) -> list:
    return [torch.rand(3), np.random.rand(3), random.random(), dataset[0][0]["image"]]


class TestRandomStates(unittest.TestCase):
    def test_nested_generators_are_found(self):
        ds = _dataset()
        # Compose, the dictionary crop, the array cropper it wraps, the flip and its array flip
        self.assertGreaterEqual(len(random_generators(ds.transform)), 4)

    def test_round_trip_repeats_every_draw(self):
        ds = _dataset()
        ds.transform.set_random_state(seed=3)
        states = RandomStates(ds)
        with tempfile.NamedTemporaryFile(suffix=".pt") as f:
            torch.save({"rng": states.state_dict()}, f.name)
            first = _draws(ds)
            _draws(ds)  # move every generator on
            states.load_state_dict(torch.load(f.name, weights_only=True)["rng"])  # loads like CheckpointLoader
        again = _draws(ds)
        for a, b in zip(first, again):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    def test_other_transform_chain(self):
        saved = RandomStates(_dataset()).state_dict()
        with self.assertRaisesRegex(ValueError, r"the checkpoint holds the random states of \d+ random transform"):
            RandomStates(Dataset([{}], transform=Compose([]))).load_state_dict(saved)


class TestBestMetricState(unittest.TestCase):
    def test_a_resumed_run_keeps_the_better_model(self):
        with tempfile.TemporaryDirectory() as tmp:
            net = torch.nn.Linear(1, 1, bias=False)

            def evaluator(scores: list[float]) -> tuple[Engine, AtomicCheckpointSaver]:
                engine = Engine(lambda e, b: None)
                engine.state.best_metric, engine.state.best_metric_epoch = -1.0, -1

                @engine.on(Events.EPOCH_COMPLETED)
                def _score(e):
                    score = scores[e.state.epoch - 1]
                    e.state.metrics = {"dice": score}
                    if score > e.state.best_metric:
                        e.state.best_metric, e.state.best_metric_epoch = score, e.state.epoch

                saver = AtomicCheckpointSaver(tmp, {"model": net}, save_key_metric=True, key_metric_name="dice",
                                              key_metric_filename="model.pt")
                saver.attach(engine)
                return engine, saver

            first, saver = evaluator([0.8])
            torch.nn.init.constant_(net.weight, 1.0)
            first.run([0], max_epochs=1)
            saved = BestMetricState(first, saver).state_dict()
            self.assertEqual(saved["best_metric"], 0.8)

            second, saver = evaluator([0.5])  # the resumed run validates a worse model first
            BestMetricState(second, saver).load_state_dict(saved)
            torch.nn.init.constant_(net.weight, 2.0)
            second.run([0], max_epochs=1)
            self.assertEqual(float(torch.load(f"{tmp}/model.pt")["weight"]), 1.0)  # not replaced by the worse model
            self.assertEqual((second.state.best_metric, second.state.best_metric_epoch), (0.8, 1))


class TestTrainingState(unittest.TestCase):
    def test_drops_none_and_checks(self):
        net = torch.nn.Linear(1, 1)
        self.assertEqual(training_state(model=net, prior=None), {"model": net})
        with self.assertRaisesRegex(TypeError, r"training_state: rng=int has no state_dict\(\)"):
            training_state(rng=3)


if __name__ == "__main__":
    unittest.main()
