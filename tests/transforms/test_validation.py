"""The data checks of monai_dwp.transforms: alone, and inside the train/eval chains on real NIfTI files."""

from __future__ import annotations

import tempfile
import unittest
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.bundle.config_item import ComponentLocator
from monai.data import MetaTensor

import monai_dwp.transforms as transforms_pkg
from monai_dwp.data import eval_transforms, train_transforms
from monai_dwp.transforms import CheckFinited, CheckNonEmptyd, CheckPatchFitsd

SHAPE = (16, 16, 16)


def _image(values: np.ndarray, name: str = "/data/case_007.nii.gz") -> MetaTensor:
    return MetaTensor(torch.as_tensor(values), meta={"filename_or_obj": name})


def _write_case(root: Path, image: np.ndarray) -> dict[str, str]:
    """A 16³ case (1 mm, RAS) with a cubic lesion, written as NIfTI."""
    label = np.zeros(SHAPE, np.uint8)
    label[6:10, 6:10, 6:10] = 1
    nib.save(nib.Nifti1Image(image.astype(np.float32), np.eye(4)), root / "image.nii.gz")
    nib.save(nib.Nifti1Image(label, np.eye(4)), root / "label.nii.gz")
    return {"image": str(root / "image.nii.gz"), "label": str(root / "label.nii.gz")}


class TestCheckFinited(unittest.TestCase):
    def test_passes_finite_and_integer_data_unchanged(self):
        data = {"image": _image(np.ones((1, 4, 4, 4), np.float32)), "label": np.zeros((1, 4, 4, 4), np.uint8)}
        out = CheckFinited(keys=["image", "label"])(data)
        self.assertIs(out["image"], data["image"])
        self.assertIs(out["label"], data["label"])

    def test_nan_and_inf_name_the_file_and_count(self):
        values = np.ones((1, 4, 4, 4), np.float32)
        values[0, 0, 0, :3] = np.nan
        values[0, 1, 1, 1] = -np.inf
        with self.assertRaisesRegex(
            ValueError,
            r"^'image' image '/data/case_007\.nii\.gz' has non-finite voxels, got 3 NaN and 1 infinite of 64; "
            r"replace them \(e\.g\. numpy\.nan_to_num\) and save the file again, or remove the case from "
            r"dataset\.json\.$",
        ):
            CheckFinited(keys="image")({"image": _image(values)})

    def test_numpy_without_meta_and_bad_types(self):
        values = np.full((1, 2, 2, 2), np.nan, np.float32)
        with self.assertRaisesRegex(ValueError, r"'image' image \(no file name in its meta data\) has non-finite"):
            CheckFinited(keys="image")({"image": values})
        with self.assertRaisesRegex(TypeError, r"data\['image'\] must be a channel-first image .* got list"):
            CheckFinited(keys="image")({"image": [1.0]})


class TestCheckNonEmptyd(unittest.TestCase):
    def test_blank_image(self):
        with self.assertRaisesRegex(
            ValueError,
            r"^'image' image '/data/case_007\.nii\.gz' is blank \(every voxel is 0\), got 0 non-zero voxels of 64; "
            r"the file holds no image \(a failed export\?\): export it again or remove the case from dataset\.json\.$",
        ):
            CheckNonEmptyd(keys="image")({"image": _image(np.zeros((1, 4, 4, 4), np.float32))})

    def test_blank_channel_of_a_multimodal_image(self):
        values = np.ones((2, 4, 4, 4), np.float32)
        values[1] = 0.0
        with self.assertRaisesRegex(ValueError, r"is blank \(channel 1 of 2 is 0\), got 0 non-zero voxels of 64"):
            CheckNonEmptyd(keys="image")({"image": _image(values)})
        values[1, 2, 2, 2] = 5.0
        CheckNonEmptyd(keys="image")({"image": _image(values)})  # one bright voxel is enough


class TestCheckPatchFitsd(unittest.TestCase):
    def test_patch_larger_than_the_volume(self):
        check = CheckPatchFitsd(keys="image", patch_size=(64, 64, 64))
        with self.assertRaisesRegex(
            ValueError,
            r"^patch_size=\(64, 64, 64\) is larger than the whole preprocessed volume of 'image' image "
            r"'/data/case_007\.nii\.gz', got spatial shape \(30, 36, 30\): every patch would be mostly padding; "
            r"use a patch_size of at most \(30, 36, 30\) voxels or a finer spacing\.$",
        ):
            check({"image": _image(np.ones((1, 30, 36, 30), np.float32))})
        check({"image": _image(np.ones((1, 30, 80, 30), np.float32))})  # smaller along some axes only: padded

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, r"patch_size must be positive ints \(X, Y, Z\), got \(32, 0, 32\)"):
            CheckPatchFitsd(keys="image", patch_size=(32, 0, 32))
        with self.assertRaisesRegex(ValueError, r"has spatial shape \(4, 4\) but patch_size=\(8, 8, 8\) has 3"):
            CheckPatchFitsd(keys="image", patch_size=(8, 8, 8))({"image": np.ones((1, 4, 4), np.float32)})


class TestInTheChains(unittest.TestCase):
    """The checks run right after loading in train_transforms / eval_transforms and name the NIfTI file."""

    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.root = Path(tmp.name)
        rng = np.random.default_rng(0)
        self.image = np.zeros(SHAPE, np.float32)
        self.image[2:14, 2:14, 2:14] = rng.uniform(10, 20, (12, 12, 12))

    def _cause(self, chain, case) -> BaseException:
        with self.assertRaises(RuntimeError) as ctx:  # MONAI's Compose wraps the error of a transform
            chain(case)
        return ctx.exception.__cause__

    def test_clean_case_passes(self):
        case = _write_case(self.root, self.image)
        patches = train_transforms(spacing=None, patch_size=8, num_samples=1)(case)
        self.assertEqual(tuple(patches[0]["image"].shape), (1, 8, 8, 8))
        self.assertEqual(tuple(eval_transforms(spacing=None)(case)["image"].shape), (1, 16, 16, 16))

    def test_nan_image(self):
        self.image[5, 5, 5] = np.nan
        case = _write_case(self.root, self.image)
        for chain in (train_transforms(spacing=None, patch_size=8), eval_transforms(spacing=None, with_label=False)):
            cause = self._cause(chain, case)
            self.assertIsInstance(cause, ValueError)
            self.assertRegex(str(cause), r"'image' image '.*image\.nii\.gz' has non-finite voxels, got 1 NaN and 0 "
                                         r"infinite of 4096")

    def test_all_zero_image(self):
        case = _write_case(self.root, np.zeros(SHAPE, np.float32))
        cause = self._cause(train_transforms(spacing=None, patch_size=8), case)
        self.assertIsInstance(cause, ValueError)
        self.assertRegex(str(cause), r"'image' image '.*image\.nii\.gz' is blank \(every voxel is 0\)")

    def test_patch_larger_than_the_volume(self):
        case = _write_case(self.root, self.image)
        cause = self._cause(train_transforms(spacing=None, patch_size=(32, 32, 32)), case)
        self.assertIsInstance(cause, ValueError)
        self.assertRegex(str(cause), r"patch_size=\(32, 32, 32\) is larger than the whole preprocessed volume of "
                                     r"'image' image '.*image\.nii\.gz', got spatial shape \(12, 12, 12\)")


class TestRegistration(unittest.TestCase):
    def test_components_resolve_by_short_name(self):
        locator = ComponentLocator()
        for name in ("CheckFinited", "CheckNonEmptyd", "CheckPatchFitsd"):
            self.assertIn(name, transforms_pkg.__all__)
            found = locator.get_component_module_name(name)
            modules = [found] if isinstance(found, str) else found
            self.assertEqual(modules, ["monai_dwp.transforms.validation"], f"{name} resolves to {modules}")


if __name__ == "__main__":
    unittest.main()
