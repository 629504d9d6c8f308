from __future__ import annotations

import tempfile
import unittest
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from monai_dwp.data import KernelDataset
from monai_dwp.networks import KernelVAE
from monai_dwp.visualize import save_kernel_figure, save_uncertainty_montage


def _png_ok(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000


class TestFigures(unittest.TestCase):
    def test_kernel_figure(self):
        kernels = {"a": torch.randn(40, 3, 3, 3), "b": torch.randn(30, 3, 3, 3)}
        ds = KernelDataset(kernels, {"a": 0, "b": 1})
        vaes = [KernelVAE(latent_size=2, hidden_channels=(4, 8, 16)) for _ in range(2)]
        with tempfile.TemporaryDirectory() as tmp:
            path = save_kernel_figure(ds, vaes, Path(tmp) / "k.png", num_kernels=8)
            self.assertTrue(_png_ok(path))
            with self.assertRaisesRegex(ValueError, "vaes has 1 VAEs for 2 groups"):
                save_kernel_figure(ds, vaes[:1], Path(tmp) / "x.png")

    def test_uncertainty_montage(self):
        with tempfile.TemporaryDirectory() as tmp:
            case = {}
            rng = np.random.default_rng(0)
            for key in ("image", "label", "pred", "entropy", "mutual_information"):
                data = rng.random((16, 16, 8)).astype(np.float32)
                if key in ("label", "pred"):
                    data = (data > 0.7).astype(np.uint8)
                nib.save(nib.Nifti1Image(data, np.eye(4)), Path(tmp) / f"{key}.nii.gz")
                case[key] = Path(tmp) / f"{key}.nii.gz"
            path = save_uncertainty_montage([case, case], Path(tmp) / "m.png", title="test")
            self.assertTrue(_png_ok(path))
            with self.assertRaisesRegex(ValueError, r"case 0 lacks \['pred'\]"):
                save_uncertainty_montage([{"image": case["image"], "label": case["label"]}], Path(tmp) / "x.png")


if __name__ == "__main__":
    unittest.main()
