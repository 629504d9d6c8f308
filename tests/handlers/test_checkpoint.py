from __future__ import annotations

import os
import tempfile
import unittest
from pathlib import Path
from unittest import mock

import torch
from ignite.engine import Engine, Events

from monai_dwp.handlers import AtomicCheckpointSaver, AtomicDiskSaver


def _engine(metric_values: list[float]) -> Engine:
    engine = Engine(lambda e, b: None)

    @engine.on(Events.EPOCH_COMPLETED)
    def _metric(e):
        e.state.metrics = {"dice": metric_values[e.state.epoch - 1]}

    return engine


class TestAtomicDiskSaver(unittest.TestCase):
    def test_fixed_file_is_replaced_not_deleted(self):
        with tempfile.TemporaryDirectory() as tmp:
            saver = AtomicDiskSaver(tmp, "model.pt")
            saver({"w": torch.ones(2)}, "ignored.pt")
            saver.remove("ignored.pt")  # Ignite removes before it saves: the best model must survive that
            self.assertTrue(torch.equal(torch.load(Path(tmp) / "model.pt")["w"], torch.ones(2)))
            self.assertEqual(os.listdir(tmp), ["model.pt"])
            self.assertEqual(os.stat(Path(tmp) / "model.pt").st_mode & 0o044, 0o044 & ~_umask())  # readable like open()

    def test_a_failed_write_keeps_the_previous_file(self):
        with tempfile.TemporaryDirectory() as tmp:
            saver = AtomicDiskSaver(tmp, "model.pt")
            saver({"w": torch.ones(2)}, "x")
            with mock.patch("torch.save", side_effect=KeyboardInterrupt):  # killed while writing
                with self.assertRaises(KeyboardInterrupt):
                    saver({"w": torch.zeros(2)}, "x")
            self.assertTrue(torch.equal(torch.load(Path(tmp) / "model.pt")["w"], torch.ones(2)))
            self.assertEqual(os.listdir(tmp), ["model.pt"])  # no temporary file left

    def test_interval_files_are_removed(self):
        with tempfile.TemporaryDirectory() as tmp:
            saver = AtomicDiskSaver(tmp)
            saver({}, "checkpoint_epoch=1.pt")
            saver.remove("checkpoint_epoch=1.pt")
            self.assertEqual(os.listdir(tmp), [])


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class TestAtomicCheckpointSaver(unittest.TestCase):
    def test_same_files_as_monai(self):
        with tempfile.TemporaryDirectory() as tmp:
            net = torch.nn.Linear(2, 2)
            engine = _engine([0.5, 0.7, 0.6])
            opt = torch.optim.SGD(net.parameters(), lr=0.1)
            AtomicCheckpointSaver(tmp, {"model": net, "optimizer": opt}, save_interval=1, n_saved=2).attach(engine)
            AtomicCheckpointSaver(tmp, {"model": net}, save_key_metric=True, key_metric_name="dice",
                                  key_metric_filename="model.pt").attach(engine)
            engine.run([0], max_epochs=3)
            self.assertEqual(sorted(os.listdir(tmp)), ["checkpoint_epoch=2.pt", "checkpoint_epoch=3.pt", "model.pt"])
            for name in os.listdir(tmp):
                torch.load(Path(tmp) / name, weights_only=True)


if __name__ == "__main__":
    unittest.main()
