"""Inference inputs: what image_datalist accepts, and the errors for a folder without images or a 2D file."""

from __future__ import annotations

import json
import tempfile
import unittest
from pathlib import Path

import nibabel as nib
import numpy as np

from monai_dwp.data import image_datalist


class TestImageDatalist(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.root = Path(tmp.name)

    def test_folder_file_and_glob(self):
        for name in ("b.nii.gz", "a.nii"):
            nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), self.root / name)
        (self.root / "notes.txt").write_text("not an image")
        expected = [{"image": str(self.root / "a.nii")}, {"image": str(self.root / "b.nii.gz")}]
        self.assertEqual(image_datalist(self.root), expected)
        self.assertEqual(image_datalist(str(self.root / "*.nii*")), expected)
        self.assertEqual(image_datalist(self.root / "a.nii", key="img"), [{"img": str(self.root / "a.nii")}])

    def test_folder_without_images(self):
        (self.root / "notes.txt").write_text("not an image")
        with self.assertRaisesRegex(
            FileNotFoundError,
            r"^no image to segment in '.*': expected a NIfTI file, a folder of \*\.nii/\*\.nii\.gz, a Decathlon folder "
            r"with a 'test' list in dataset\.json, or a glob pattern; pass another one with --input_dir\.$",
        ):
            image_datalist(self.root)
        with self.assertRaisesRegex(FileNotFoundError, r"no image to segment in '.*nowhere/\*\.nii\.gz'"):
            image_datalist(str(self.root / "nowhere" / "*.nii.gz"))

    def test_2d_image(self):
        nib.save(nib.Nifti1Image(np.zeros((32, 32), np.float32), np.eye(4)), self.root / "slice.nii.gz")
        with self.assertRaisesRegex(
            ValueError,
            r"slice\.nii\.gz has shape \(32, 32\): the networks segment 3D volumes \(X, Y, Z\) or 4D ones with the "
            r"modalities last \(X, Y, Z, C\); convert 2D slices to a volume first\.$",
        ):
            image_datalist(self.root)

    def _decathlon(self, test: list) -> None:
        (self.root / "imagesTs").mkdir()
        for name in ("x.nii.gz", "y.nii.gz", "x_t2.nii.gz"):
            nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), self.root / "imagesTs" / name)
        content = {"modality": {"0": "FLAIR"}, "labels": {"0": "background", "1": "lesion"},
                   "training": [{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"}], "test": test}
        (self.root / "dataset.json").write_text(json.dumps(content))

    def test_decathlon_test_list(self):
        ts = self.root.resolve() / "imagesTs"
        self._decathlon(["./imagesTs/x.nii.gz", "imagesTs/y.nii.gz"])  # MSD: plain strings
        self.assertEqual(image_datalist(self.root), [{"image": str(ts / "x.nii.gz")}, {"image": str(ts / "y.nii.gz")}])

    def test_decathlon_test_dicts_with_one_file_per_modality(self):
        ts = self.root.resolve() / "imagesTs"
        self._decathlon([{"image": ["./imagesTs/x.nii.gz", "imagesTs/x_t2.nii.gz"]}, {"image": "imagesTs/y.nii.gz"}])
        self.assertEqual(
            image_datalist(self.root, key="img"),
            [{"img": [str(ts / "x.nii.gz"), str(ts / "x_t2.nii.gz")]}, {"img": str(ts / "y.nii.gz")}],
        )

    def test_decathlon_empty_or_mixed_test_list(self):
        self._decathlon([])
        with self.assertRaisesRegex(FileNotFoundError, r"no image to segment in .*a Decathlon folder with a 'test'"):
            image_datalist(self.root)
        self._decathlon_rewrite(["./imagesTs/x.nii.gz", {"image": "./imagesTs/y.nii.gz"}])
        with self.assertRaisesRegex(ValueError, r"the 'test' list mixes plain image paths and \{\"image\": "):
            image_datalist(self.root)

    def _decathlon_rewrite(self, test: list) -> None:
        content = json.loads((self.root / "dataset.json").read_text())
        (self.root / "dataset.json").write_text(json.dumps({**content, "test": test}))


if __name__ == "__main__":
    unittest.main()
