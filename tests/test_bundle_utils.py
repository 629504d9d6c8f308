from __future__ import annotations

import tempfile
import unittest
from pathlib import Path

import torch

from monai_dwp.bundle_utils import latest_checkpoint, require_handoff, require_handoffs, resume_handlers


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


if __name__ == "__main__":
    unittest.main()
