from __future__ import annotations

import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import torch

from monai_dwp.bundle_utils import (
    KEY_RULES,
    BundleInputError,
    InvalidKeyError,
    MissingHandoffError,
    check_keys,
    checked,
    latest_checkpoint,
    require_handoff,
    require_handoffs,
    resume_handlers,
)


class TestBundleUtils(unittest.TestCase):
    def test_checkpoints_and_handoffs(self):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            self.assertIsNone(latest_checkpoint(root))
            for epoch in (2, 10, 9):
                torch.save({}, root / f"checkpoint_epoch={epoch}.pt")
            self.assertTrue(latest_checkpoint(root).endswith("checkpoint_epoch=10.pt"))
            self.assertEqual(resume_handlers(root, {"model": torch.nn.Linear(1, 1)}, resume=False), [])
            self.assertEqual(len(resume_handlers(root, {"model": torch.nn.Linear(1, 1)}, resume=True)), 1)
            self.assertEqual(require_handoff(root / "checkpoint_epoch=2.pt", "model"), str(root / "checkpoint_epoch=2.pt"))
            self.assertEqual(len(require_handoffs(f"{tmp}/checkpoint_epoch=*.pt")), 3)
            with self.assertRaisesRegex(FileNotFoundError, r"--resume true but .* holds no checkpoint_epoch=N.pt"):
                resume_handlers(root / "empty", {}, resume=True)
        with self.assertRaisesRegex(FileNotFoundError, r"source_ckpts \['x/\*.pt'\] matches no file; make them first with "
                                                       r"`python -m monai.bundle run --config_file bundles/dwp_pretrain"):
            require_handoffs("x/*.pt")
        with self.assertRaisesRegex(FileNotFoundError, r"prior_ckpt file 'p.pt' does not exist; .* --prior_ckpt PATH"):
            require_handoff("p.pt", "prior_ckpt")


    def test_resume_accepts_command_line_words(self):
        with tempfile.TemporaryDirectory() as tmp:
            torch.save({}, Path(tmp) / "checkpoint_epoch=1.pt")
            self.assertEqual(resume_handlers(tmp, {"model": torch.nn.Linear(1, 1)}, resume="false"), [])
            self.assertEqual(len(resume_handlers(tmp, {"model": torch.nn.Linear(1, 1)}, resume="true")), 1)


class TestCheckKeys(unittest.TestCase):
    def test_converts_command_line_booleans(self):
        out = check_keys(amp="false", resume="True", dwp_init=0, train_encoder="1", epochs=3, learning_rate=1e-3,
                         log_scale_lr="null", num_train_cases="None", sw_overlap=0.25)
        self.assertEqual(out, {"amp": False, "resume": True, "dwp_init": False, "train_encoder": True, "epochs": 3,
                               "learning_rate": 1e-3, "log_scale_lr": None, "num_train_cases": None, "sw_overlap": 0.25})
        self.assertIs(checked("amp", "false"), False)

    def test_every_rule_rejects_a_word(self):
        for key in KEY_RULES:
            with self.assertRaisesRegex(InvalidKeyError, rf"^--{key} must .*got 'flase'.* Fix the override or the "
                                                         rf"config value of '{key}'\.$"):
                check_keys(**{key: "flase"})

    @staticmethod
    def _first(bad):
        try:
            check_keys(**bad)
        except InvalidKeyError as error:
            return str(error)
        return None

    def test_ranges(self):
        for bad in ({"epochs": 0}, {"epochs": 2.5}, {"seed": -1}, {"sw_overlap": 1.0}, {"cache_rate": 1.5},
                    {"learning_rate": 0}, {"val_fraction": 0.0}, {"out_channels": 1}, {"mc_samples": 0},
                    {"kl_temperature": -1.0}, {"num_train_cases": 0}):
            self.assertIsNotNone(self._first(bad), bad)
        self.assertIsInstance(InvalidKeyError("x"), ValueError)
        self.assertIsInstance(MissingHandoffError("x"), FileNotFoundError)
        with self.assertRaisesRegex(KeyError, "no rule for the bundle key 'colour'"):
            check_keys(colour="red")

    def test_command_line_prints_one_line(self):
        code = ("import monai_dwp.bundle_utils as b\n"
                "try:\n    b.check_keys(amp='maybe')\nexcept ValueError as e:\n    raise RuntimeError('wrapped') from e")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        self.assertEqual(proc.returncode, 1)
        self.assertEqual(proc.stderr.strip().splitlines(), [
            "monai_dwp: --amp must be true or false (true/false/True/False/1/0), got 'maybe'. Fix the override or the "
            "config value of 'amp'."])
        proc = subprocess.run([sys.executable, "-c", "import monai_dwp.bundle_utils\nraise KeyError('other')"],
                              capture_output=True, text=True)
        self.assertIn("Traceback", proc.stderr)  # anything else keeps its traceback
        self.assertTrue(issubclass(InvalidKeyError, BundleInputError))


if __name__ == "__main__":
    unittest.main()
