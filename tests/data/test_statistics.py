from __future__ import annotations

import tempfile
import unittest
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.transforms import Compose, LoadImaged, RandSpatialCropd

from monai_dwp.data import mean_voxels, train_transforms


class TestMeanVoxels(unittest.TestCase):
    def test_counts_whole_volumes_not_patches(self):
        with tempfile.TemporaryDirectory() as tmp:
            items = []
            for i, shape in enumerate([(10, 12, 14), (20, 10, 10)]):
                img = np.zeros(shape, np.float32)
                img[1:-1, 1:-1, 1:-1] = 1.0  # CropForegroundd keeps the inner box
                lab = np.zeros(shape, np.uint8)
                lab[3:5, 3:5, 3:5] = 1
                for key, arr in (("image", img), ("label", lab)):
                    nib.save(nib.Nifti1Image(arr, np.eye(4)), Path(tmp) / f"{key}{i}.nii.gz")
                items.append({k: str(Path(tmp) / f"{k}{i}.nii.gz") for k in ("image", "label")})
            chain = train_transforms(spacing=None, patch_size=4, num_samples=2)
            with self.assertLogs("monai_dwp.data.statistics", "INFO") as logs:
                value = mean_voxels(items, chain)
        self.assertEqual(value, (8 * 10 * 12 + 18 * 8 * 8) / 2)
        self.assertIn("mean voxels per preprocessed training volume: 1056 over 2 volumes", logs.output[0])

    def test_errors(self):
        with self.assertRaisesRegex(TypeError, "transform must be a monai.transforms.Compose, got list"):
            mean_voxels([{"image": "x"}], [])
        with self.assertRaisesRegex(ValueError, "data is empty"):
            mean_voxels([], Compose([LoadImaged("image")]))
        with self.assertRaisesRegex(ValueError, "did not produce key 'img'"):
            mean_voxels([{"image": np.zeros((1, 4, 4, 4))}], Compose([RandSpatialCropd("image", (2, 2, 2))]), key="img")


if __name__ == "__main__":
    unittest.main()
