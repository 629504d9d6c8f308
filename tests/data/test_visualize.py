"""PNG montage of a Decathlon dataset: a valid PNG of plausible size, no global matplotlib side effects."""

from __future__ import annotations

import json
import struct
import tempfile
import unittest
from pathlib import Path

import matplotlib
import nibabel as nib
import numpy as np

from monai_dwp.data import make_phantom_dataset, save_data_montage

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path: Path) -> tuple[int, int]:
    raw = path.read_bytes()
    if raw[:8] != PNG_SIGNATURE or raw[12:16] != b"IHDR":
        raise AssertionError(f"{path} is not a PNG")
    width, height = struct.unpack(">II", raw[16:24])
    return width, height


class TestMontage(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory()
        cls.tmp = Path(cls._tmp.name)
        cls.root = make_phantom_dataset(
            cls.tmp / "ms", "ms", num_cases=3, num_test=0, spacing=6.0, progress=False
        ).parent

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def test_phantom_montage(self):
        backend = matplotlib.get_backend()
        out = save_data_montage(self.root, self.tmp / "figs" / "ms.png", num_subjects=2, seed=0)
        self.assertEqual(out, self.tmp / "figs" / "ms.png")
        width, height = _png_size(out)
        # 2 modalities x 3 views at ~2.2 in and 100 dpi; 2 rows of subjects
        self.assertTrue(1000 <= width <= 2000 and 400 <= height <= 1000, (width, height))
        self.assertGreater(out.stat().st_size, 20_000)
        self.assertEqual(matplotlib.get_backend(), backend)
        self.assertEqual([p.name for p in out.parent.glob(".*")], [])  # no temporary file left

    def test_single_modality_3d_dataset(self):
        root = self.tmp / "single"
        (root / "imagesTr").mkdir(parents=True)
        (root / "labelsTr").mkdir()
        image = np.zeros((20, 24, 16), dtype=np.float32)
        image[3:-3, 3:-3, 3:-3] = 100.0
        label = np.zeros(image.shape, dtype=np.uint8)
        label[8:12, 10:14, 6:9] = 1
        nib.save(nib.Nifti1Image(image, np.diag([2.0, 2.0, 3.0, 1.0])), root / "imagesTr" / "a.nii.gz")
        nib.save(nib.Nifti1Image(label, np.diag([2.0, 2.0, 3.0, 1.0])), root / "labelsTr" / "a.nii.gz")
        content = {
            "modality": {"0": "CT"},
            "labels": {"0": "background", "1": "lesion"},
            "training": [{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"}],
            "test": [],
        }
        (root / "dataset.json").write_text(json.dumps(content))
        width, height = _png_size(save_data_montage(root, root / "montage.png", num_subjects=5))
        self.assertTrue(width > 300 and height > 150 and width > height, (width, height))

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, r"num_subjects must be ≥ 1, got 0"):
            save_data_montage(self.root, self.tmp / "x.png", num_subjects=0)
        with self.assertRaisesRegex(FileNotFoundError, r"dataset\.json not found"):
            save_data_montage(self.tmp, self.tmp / "x.png")


if __name__ == "__main__":
    unittest.main()
