"""Decathlon loading: splits, validation errors (each one), transform chains, on phantoms and an MSD-style folder."""

from __future__ import annotations

import gzip
import json
import shutil
import tempfile
import unittest
from pathlib import Path
from typing import Any, Callable

import nibabel as nib
import numpy as np
import torch
from monai.bundle.config_item import ComponentLocator
from parameterized import parameterized

import monai_dwp.data as data_pkg
from monai_dwp.data import (
    decathlon_split,
    eval_transforms,
    label_rule_transforms,
    make_phantom_dataset,
    read_dataset_json,
    resolve_modality,
    train_transforms,
    validate_decathlon,
)

MSD_CASES = 6
MSD_SHAPE = (12, 14, 10)


def make_msd_folder(root: Path, num_cases: int = MSD_CASES) -> Path:
    """An MSD-like single-modality folder: 3D files, ``./`` paths, a test list of plain strings, labels 0/1/2."""
    rng = np.random.default_rng(0)
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    affine[:3, 3] = (-9.0, -10.0, -10.0)
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    training, test = [], []
    for i in range(num_cases):
        image = np.zeros(MSD_SHAPE, dtype=np.float32)
        image[2:-2, 2:-2, 2:-2] = rng.uniform(100, 200, (MSD_SHAPE[0] - 4, MSD_SHAPE[1] - 4, MSD_SHAPE[2] - 4))
        label = np.zeros(MSD_SHAPE, dtype=np.uint8)
        label[4:7, 5:8, 3:6] = 1
        label[5:7, 6:8, 4:6] = 2
        name = f"case_{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / name)
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / name)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    for i in range(2):
        name = f"case_{100 + i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(np.ones(MSD_SHAPE, dtype=np.float32), affine), root / "imagesTs" / name)
        test.append(f"./imagesTs/{name}")
    content = {
        "name": "tiny MSD-like",
        "tensorImageSize": "3D",
        "modality": {"0": "FLAIR"},
        "labels": {"0": "background", "1": "lesion", "2": "core"},
        "numTraining": num_cases,
        "numTest": 2,
        "training": training,
        "test": test,
    }
    (root / "dataset.json").write_text(json.dumps(content, indent=1))
    return root


def _edit_json(root: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    content = json.loads((root / "dataset.json").read_text())
    change(content)
    (root / "dataset.json").write_text(json.dumps(content))


def _save(root: Path, rel: str, array: np.ndarray, affine: np.ndarray | None = None) -> None:
    old = nib.load(root / rel)
    nib.save(nib.Nifti1Image(array, old.affine if affine is None else affine), root / rel)


def _truncate(root: Path, rel: str) -> None:
    raw = gzip.decompress((root / rel).read_bytes())
    (root / rel).write_bytes(gzip.compress(raw[: len(raw) // 2]))  # valid header, missing voxels


def _shifted_affine(root: Path) -> None:
    rel = "labelsTr/case_000.nii.gz"
    img = nib.load(root / rel)
    affine = img.affine.copy()
    affine[0, 3] += 3.0
    _save(root, rel, np.asarray(img.dataobj), affine)


def _first_train_label(root: Path) -> str:
    return decathlon_split(root, num_val_cases=2)["train"][0]["label"]


def _empty_train_label(root: Path) -> None:
    path = Path(_first_train_label(root))
    _save(root, str(path.relative_to(root)), np.zeros(MSD_SHAPE, np.uint8))


def _zero_voxel_size(root: Path) -> None:
    rel = "imagesTr/case_002.nii.gz"  # a singular sform (no qform): nibabel and MONAI load it as it is
    img = nib.Nifti1Image(np.asarray(nib.load(root / rel).dataobj), None)
    img.header.set_sform(np.diag([1.5, 0.0, 2.0, 1.0]), code=1)
    nib.save(img, root / rel)


def _image_values(root: Path, rel: str, value: float) -> None:
    data = np.asarray(nib.load(root / rel).dataobj).astype(np.float32)
    if np.isnan(value):
        data[3, 4, 5] = value
        data[5, 6, 4] = value
    else:
        data[:] = value
    _save(root, rel, data)


def _duplicate_case(root: Path, section: str) -> None:
    def change(content: dict[str, Any]) -> None:
        copy = dict(content["training"][1])
        copy["image"] = copy["image"].removeprefix("./")  # same file, written differently
        if section == "test":
            content["test"].append(copy["image"])
        else:
            content["training"].append(copy)

    _edit_json(root, change)


# (name, how to break the folder, validate_decathlon kwargs, error, message pattern)
TEST_VALIDATION_ERRORS = [
    (
        "missing_dir",
        lambda r: shutil.rmtree(r),
        {},
        FileNotFoundError,
        r"dataset_dir '.*' is not a directory; make it with `python -m monai_dwp make-data --disease tumour "
        r"--num-cases 16 --num-test 8 --spacing 3 --output-dir .*`",
    ),
    (
        "missing_json",
        lambda r: (r / "dataset.json").unlink(),
        {},
        FileNotFoundError,
        r"dataset\.json not found: .*make-data",
    ),
    (
        "bad_json",
        lambda r: (r / "dataset.json").write_text('{"training": [}'),
        {},
        ValueError,
        r"dataset\.json is not valid JSON \(.* at line 1, column \d+\); fix the file",
    ),
    ("not_an_object", lambda r: (r / "dataset.json").write_text("[1, 2]"), {}, ValueError, r"must hold a JSON object"),
    (
        "no_training",
        lambda r: _edit_json(r, lambda c: c.pop("training")),
        {},
        ValueError,
        r"field 'training' is missing; a Decathlon dataset\.json lists",
    ),
    (
        "entry_without_label",
        lambda r: _edit_json(r, lambda c: c["training"][2].pop("label")),
        {},
        ValueError,
        r"entry 2 of 'training' is .*must be \{\"image\": \.\.\., \"label\": \.\.\.\}",
    ),
    (
        "entry_not_a_path",
        lambda r: _edit_json(r, lambda c: c["training"][0].update(image=3)),
        {},
        ValueError,
        r"entry 0 of 'training' has image=3; it must be a file path",
    ),
    (
        "no_modality",
        lambda r: _edit_json(r, lambda c: c.pop("modality")),
        {},
        ValueError,
        r"field 'modality' is missing; add e\.g\.",
    ),
    (
        "bad_modality",
        lambda r: _edit_json(r, lambda c: c.update(modality={"1": "T1"})),
        {},
        ValueError,
        r"field 'modality' is \{'1': 'T1'\}; it must map channel indices 0\.\.C-1",
    ),
    (
        "no_labels",
        lambda r: _edit_json(r, lambda c: c.pop("labels")),
        {},
        ValueError,
        r"field 'labels' is missing; add e\.g\.",
    ),
    (
        "empty_training",
        lambda r: _edit_json(r, lambda c: c.update(training=[])),
        {},
        ValueError,
        r"field 'training' is empty, the dataset has no case",
    ),
    (
        "missing_image",
        lambda r: (r / "imagesTr" / "case_001.nii.gz").unlink(),
        {},
        FileNotFoundError,
        r"image file .*case_001\.nii\.gz listed in .*dataset\.json \(.*\) does not exist; fix the path",
    ),
    (
        "missing_label",
        lambda r: (r / "labelsTr" / "case_004.nii.gz").unlink(),
        {},
        FileNotFoundError,
        r"label file .*labelsTr/case_004\.nii\.gz listed in .* does not exist",
    ),
    (
        "corrupt_image",
        lambda r: (r / "imagesTr" / "case_003.nii.gz").write_bytes(b"not a nifti at all" * 10),
        {},
        ValueError,
        r"cannot read image file .*case_003\.nii\.gz listed in .* as NIfTI .*corrupt or not NIfTI",
    ),
    (
        "truncated_label",
        lambda r: _truncate(r, "labelsTr/case_002.nii.gz"),
        {},
        ValueError,
        r"cannot read the voxels of label file .*case_002\.nii\.gz .*truncated or corrupt",
    ),
    (
        "truncated_image",
        lambda r: _truncate(r, "imagesTr/case_002.nii.gz"),
        {"check_image_data": True},
        ValueError,
        r"cannot read the voxels of image file .*case_002\.nii\.gz",
    ),
    (
        "shape_mismatch",
        lambda r: _save(r, "labelsTr/case_005.nii.gz", np.zeros((12, 14, 9), np.uint8)),
        {},
        ValueError,
        r"spatial shape \(12, 14, 10\) but label .*case_005\.nii\.gz has shape \(12, 14, 9\).*resample the label",
    ),
    (
        "affine_mismatch",
        _shifted_affine,
        {},
        ValueError,
        r"case_000\.nii\.gz .* have different affines \(largest difference 3 mm\)",
    ),
    (
        "undeclared_label",
        lambda r: _save(r, "labelsTr/case_001.nii.gz", np.full(MSD_SHAPE, 7, np.uint8)),
        {},
        ValueError,
        r"case_001\.nii\.gz .* contains values \[7\] that dataset\.json's 'labels' does not declare \(\[0, 1, 2\]\)",
    ),
    (
        "channel_mismatch",
        lambda r: _edit_json(r, lambda c: c.update(modality={"0": "T1", "1": "FLAIR"})),
        {},
        ValueError,
        r"has 1 channel\(s\) but dataset\.json's 'modality' declares 2",
    ),
    (
        "modality_out_of_range",
        lambda r: None,
        {"modality": 3},
        ValueError,
        r"modality index 3 is out of range; dataset\.json's 'modality' allows \[0, 0\] \(\['FLAIR'\]\)",
    ),
    (
        "modality_unknown_name",
        lambda r: None,
        {"modality": "T2"},
        ValueError,
        r"modality 'T2' is not in dataset\.json's 'modality' \['FLAIR'\]",
    ),
    (
        "too_many_train_cases",
        lambda r: None,
        {"num_train_cases": 50},
        ValueError,
        r"num_train_cases=50 is larger than the 3 cases available .*\(6 training, 1 test, 2 validation\)",
    ),
    (
        "too_many_val_cases",
        lambda r: None,
        {"num_val_cases": 5},
        ValueError,
        r"num_val_cases=5 leaves no training case",
    ),
    (
        "undeclared_label_rule",
        lambda r: None,
        {"label_rule": [9]},
        ValueError,
        r"label_rule value 9 is not declared in dataset\.json's 'labels'",
    ),
    (
        "bad_label_rule",
        lambda r: None,
        {"label_rule": "tumour"},
        ValueError,
        r"label_rule must be 'foreground', a non-empty list",
    ),
    (
        "image_2d",
        lambda r: _save(r, "imagesTr/case_004.nii.gz", np.ones(MSD_SHAPE[:2], np.float32)),
        {},
        ValueError,
        r"image file .*case_004\.nii\.gz listed in .* is not a volume, got shape \(12, 14\); the networks segment 3D "
        r"volumes .*stack the 2D slices into a volume first\.$",
    ),
    (
        "zero_voxel_size",
        _zero_voxel_size,
        {},
        ValueError,
        r"image file .*case_002\.nii\.gz listed in .* has a zero or non-finite voxel size, got \(1\.5, 0\.0, 2\.0\) mm "
        r"from its affine; fix the header",
    ),
    (
        "duplicate_training_case",
        lambda r: _duplicate_case(r, "training"),
        {},
        ValueError,
        r"dataset\.json: entry 6 of 'training' duplicates entry 1 of 'training', got the image "
        r"'imagesTr/case_001\.nii\.gz' twice; .*remove the duplicate entry\.$",
    ),
    (
        "duplicate_training_and_test_case",
        lambda r: _duplicate_case(r, "test"),
        {},
        ValueError,
        r"entry 2 of 'test' duplicates entry 1 of 'training', got the image 'imagesTr/case_001\.nii\.gz' twice",
    ),
    (
        "empty_training_label",
        _empty_train_label,
        {},
        ValueError,
        r"label .*labelsTr/case_\d+\.nii\.gz \(.*train case 0: .*\) has no foreground voxel under "
        r"label_rule='foreground', got only the values \[0\]; .*pass allow_empty_labels=True",
    ),
    (
        "nan_image",
        lambda r: _image_values(r, "imagesTr/case_003.nii.gz", float("nan")),
        {"check_image_data": True},
        ValueError,
        r"image file .*case_003\.nii\.gz listed in .* has non-finite voxels, got 2 NaN and 0 infinite of 1680; "
        r"replace them",
    ),
    (
        "blank_image",
        lambda r: _image_values(r, "imagesTr/case_005.nii.gz", 0.0),
        {"check_image_data": True},
        ValueError,
        r"image file .*case_005\.nii\.gz listed in .* is blank \(every voxel is 0\), got 0 non-zero voxels of 1680; "
        r"the file holds no image",
    ),
]


class TestMSDFolder(unittest.TestCase):
    """A hand-made MSD-style folder; every test that breaks it works on its own copy."""

    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory()
        cls.root = make_msd_folder(Path(cls._tmp.name) / "msd")

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def _copy(self) -> Path:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        return Path(shutil.copytree(self.root, Path(tmp.name) / "msd"))

    def test_split_without_labelled_test_entries(self):
        split = decathlon_split(self.root, num_val_cases=1, seed=0)
        self.assertEqual([len(split[k]) for k in ("train", "val", "test")], [4, 1, 1])  # test: round(0.2 * 6)
        names = [Path(c["image"]).name for part in split.values() for c in part]
        self.assertEqual(len(set(names)), MSD_CASES)  # disjoint, and the plain-string test list is not used
        for case in split["train"]:
            self.assertTrue(Path(case["image"]).is_absolute() and "./" not in case["image"])
            self.assertTrue(Path(case["label"]).is_file())

    def test_test_split_is_fixed(self):
        reference = decathlon_split(self.root, num_val_cases=1)
        for num_train, num_val in ((1, 0), (2, 1), (3, 2), (None, 0)):
            split = decathlon_split(self.root, num_train_cases=num_train, num_val_cases=num_val)
            self.assertEqual(split["test"], reference["test"])
            if num_val == 1:
                self.assertEqual(split["val"], reference["val"])
        small = decathlon_split(self.root, num_train_cases=1, num_val_cases=1)["train"]
        large = decathlon_split(self.root, num_train_cases=3, num_val_cases=1)["train"]
        self.assertEqual(large[:1], small)  # nested training subsets
        self.assertNotEqual(
            decathlon_split(self.root, seed=1)["test"] + decathlon_split(self.root, seed=2)["test"],
            reference["test"] * 2,
        )

    def test_validate_passes_and_writes_nothing(self):
        before = sorted((p.relative_to(self.root), p.stat().st_mtime_ns) for p in self.root.rglob("*"))
        split = validate_decathlon(
            self.root, modality="flair", num_train_cases=3, num_val_cases=2, label_rule=[1, 2], check_image_data=True
        )
        self.assertEqual([len(split[k]) for k in ("train", "val", "test")], [3, 2, 1])
        after = sorted((p.relative_to(self.root), p.stat().st_mtime_ns) for p in self.root.rglob("*"))
        self.assertEqual(before, after)

    @parameterized.expand(TEST_VALIDATION_ERRORS)
    def test_validation_error(self, _, breaker, kwargs, error, pattern):
        root = self._copy()
        breaker(root)
        with self.assertRaisesRegex(error, pattern):
            validate_decathlon(root, **{"num_val_cases": 2, **kwargs})

    def test_empty_labels_allowed_on_request_and_outside_training(self):
        root = self._copy()
        _empty_train_label(root)
        split = validate_decathlon(root, num_val_cases=2, allow_empty_labels="true")
        self.assertEqual(len(split["train"]), 3)
        root = self._copy()
        test_label = Path(decathlon_split(root, num_val_cases=2)["test"][0]["label"])
        _save(root, str(test_label.relative_to(root)), np.zeros(MSD_SHAPE, np.uint8))
        validate_decathlon(root, num_val_cases=2)  # an empty label is fine in the test split
        with self.assertRaisesRegex(ValueError, r"allow_empty_labels must be true or false .*got 'maybe'"):
            validate_decathlon(root, allow_empty_labels="maybe")

    def test_eval_chain_on_3d_files(self):
        case = decathlon_split(self.root)["train"][0]
        out = eval_transforms(modality=0, spacing=None, label_rule="foreground")(case)
        self.assertEqual(out["image"].shape[0], 1)
        self.assertTrue(all(s % 16 == 0 for s in out["image"].shape[1:]))
        self.assertEqual(out["image"].shape, out["label"].shape)
        self.assertEqual(set(torch.unique(out["label"]).tolist()), {0.0, 1.0})
        self.assertAlmostEqual(float(out["image"].max()), 1.0, places=5)
        self.assertAlmostEqual(float(out["image"].min()), 0.0, places=5)

    def test_one_file_per_modality(self):
        root = self._copy()  # BraTS style: a list of 3D files per case, one per modality
        _edit_json(root, lambda c: c.update(modality={"0": "FLAIR", "1": "T1"}))
        _edit_json(root, lambda c: [e.update(image=[e["image"], e["image"]]) for e in c["training"]])
        split = validate_decathlon(root, modality="T1", num_train_cases=2)
        out = eval_transforms(modality="T1", dataset_dir=root, spacing=None)(split["train"][0])
        self.assertEqual(out["image"].shape[0], 1)
        both = eval_transforms(spacing=None)(split["train"][0])
        self.assertEqual(both["image"].shape[0], 2)

    def test_keep_label_values_and_inference_chain(self):
        case = decathlon_split(self.root)["train"][0]
        out = eval_transforms(label_rule=None, spacing=(3.0, 3.0, 2.0))(case)
        self.assertEqual(set(torch.unique(out["label"]).tolist()) - {0.0}, {1.0, 2.0})
        image_only = eval_transforms(modality="FLAIR", dataset_dir=self.root, with_label=False)(
            {"image": case["image"]}
        )
        self.assertNotIn("label", image_only)
        self.assertEqual(image_only["image"].shape[0], 1)


class TestPhantomFolder(unittest.TestCase):
    """A tiny generated tumour dataset: 4D images, labelled test entries, modality by name."""

    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory()
        cls.root = make_phantom_dataset(
            Path(cls._tmp.name) / "tumour", "tumour", num_cases=4, num_test=2, spacing=6.0, progress=False
        ).parent

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def test_split_uses_labelled_test_entries(self):
        split = validate_decathlon(self.root, modality="FLAIR", num_train_cases=2, num_val_cases=1)
        self.assertEqual(
            [Path(c["image"]).name for c in split["test"]], ["tumour_ts_001.nii.gz", "tumour_ts_002.nii.gz"]
        )
        self.assertTrue(all("imagesTs" in c["image"] and "labelsTs" in c["label"] for c in split["test"]))
        self.assertEqual(len(split["train"]), 2)
        self.assertEqual(len(split["val"]), 1)
        self.assertEqual(decathlon_split(self.root, num_train_cases=1, num_val_cases=0)["test"], split["test"])
        self.assertEqual(len(decathlon_split(self.root, num_test_cases=1)["test"]), 1)
        with self.assertRaisesRegex(ValueError, r"num_test_cases=3 but .* has only 2 labelled test cases"):
            decathlon_split(self.root, num_test_cases=3)

    @parameterized.expand([("FLAIR", 1), (1, 1), ("t1", 1), ([0, "FLAIR"], 2), (None, 2)])
    def test_eval_chain_modalities(self, modality, channels):
        case = decathlon_split(self.root)["test"][0]
        out = eval_transforms(modality=modality, dataset_dir=self.root, spacing=6.0)(case)
        self.assertEqual(out["image"].shape[0], channels)
        self.assertTrue(all(s % 16 == 0 for s in out["image"].shape[1:]))
        self.assertEqual(tuple(out["label"].shape[1:]), tuple(out["image"].shape[1:]))
        self.assertLessEqual(float(out["image"].max()), 1.0 + 1e-6)

    def test_flair_channel_is_the_flair_volume(self):
        case = decathlon_split(self.root)["test"][0]
        raw = np.asarray(nib.load(case["image"]).dataobj)[..., 1].astype(np.float32)  # RAS already, channel last
        box = tuple(
            slice(int(lo), int(hi) + 1) for lo, hi in zip(*(lambda p: (p.min(0), p.max(0)))(np.argwhere(raw > 0)))
        )
        out = eval_transforms(modality="FLAIR", dataset_dir=self.root, spacing=None, k_divisible=1)(case)
        np.testing.assert_allclose(out["image"][0].numpy(), (raw / raw.max())[box], rtol=1e-5, atol=1e-6)

    @parameterized.expand([("foreground", {0.0, 1.0}), ([2, 4], {0.0, 1.0}), ([1], {0.0, 1.0})])
    def test_train_chain_patches(self, label_rule, values):
        case = decathlon_split(self.root)["train"][0]
        chain = train_transforms(
            modality="FLAIR",
            dataset_dir=self.root,
            label_rule=label_rule,
            spacing=6.0,
            patch_size=(16, 16, 16),
            num_samples=3,
        )
        chain.set_random_state(seed=0)
        patches = chain(case)
        self.assertEqual(len(patches), 3)
        for patch in patches:
            self.assertEqual(tuple(patch["image"].shape), (1, 16, 16, 16))
            self.assertEqual(tuple(patch["label"].shape), (1, 16, 16, 16))
            self.assertLessEqual(set(torch.unique(patch["label"]).tolist()), values)
        self.assertTrue(any(float(p["label"].sum()) > 0 for p in patches))  # positive sampling finds the lesion

    def test_label_rule_selects_values(self):
        case = decathlon_split(self.root)["train"][0]
        whole = eval_transforms(spacing=None, label_rule="foreground")(case)["label"]
        core = eval_transforms(spacing=None, label_rule=[2, 4])(case)["label"]
        raw = np.asarray(nib.load(case["label"]).dataobj)
        self.assertEqual(int(whole.sum()), int((raw > 0).sum()))
        self.assertEqual(int(core.sum()), int(np.isin(raw, (2, 4)).sum()))

    def test_read_dataset_json(self):
        content = read_dataset_json(self.root)
        self.assertEqual(content["modality"], {"0": "T1", "1": "FLAIR"})
        self.assertEqual(content["numTraining"], 4)


class TestArguments(unittest.TestCase):
    @parameterized.expand(
        [
            ("FLAIR", ["T1", "FLAIR"], [1]),
            ("flair", {"0": "T1", "1": "FLAIR"}, [1]),
            ([1, "T1"], ["T1", "FLAIR"], [1, 0]),
            (0, None, [0]),
            (None, ["T1"], None),
        ]
    )
    def test_resolve_modality(self, modality, names, expected):
        self.assertEqual(resolve_modality(modality, names), expected)

    @parameterized.expand(
        [
            ("FLAIR", None, ValueError, r"modality 'FLAIR' is a name: pass dataset_dir"),
            (
                "T2",
                ["T1", "FLAIR"],
                ValueError,
                r"modality 'T2' is not in dataset\.json's 'modality' \['T1', 'FLAIR'\]",
            ),
            (2, ["T1", "FLAIR"], ValueError, r"modality index 2 is out of range"),
            (-1, None, ValueError, r"modality index -1 is out of range"),
            ([], None, ValueError, r"modality must be an int, a name or a non-empty list"),
            (1.5, None, TypeError, r"modality must be an int, a name or a non-empty list of them, got 1\.5"),
            ([0.5], None, TypeError, r"modality entries must be int or str, got float"),
        ]
    )
    def test_resolve_modality_errors(self, modality, names, error, pattern):
        with self.assertRaisesRegex(error, pattern):
            resolve_modality(modality, names)

    @parameterized.expand(
        [
            ({"patch_size": (16, 16)}, r"patch_size must be a positive int or 3 of them"),
            ({"patch_size": (16, 0, 16)}, r"patch_size must be a positive int"),
            ({"spacing": (1.0, -1.0, 1.0)}, r"spacing must be a positive number or 3 of them"),
            ({"num_samples": 0}, r"num_samples must be ≥ 1, got 0; patches per volume"),
            ({"pos": 0.0, "neg": 0.0}, r"pos and neg must be >= 0 and not both 0"),
            ({"label_rule": [0, 1]}, r"label_rule values must be positive label ints \(0 is background\), got 0"),
            ({"label_rule": "whole"}, r"label_rule must be 'foreground', a non-empty list"),
            ({"modality": "FLAIR"}, r"modality 'FLAIR' is a name: pass dataset_dir"),
            ({"patch_size": -32}, r"patch_size must be a positive int or 3 of them \(X, Y, Z\), got -32; e\.g\. "
                                  r"patch_size=\(64, 64, 64\) voxels\.$"),
            ({"spacing": 0}, r"spacing must be a positive number or 3 of them \(X, Y, Z\), got 0; e\.g\. spacing=2\.0"),
            ({"spacing": (2.0, 0.0, 2.0)}, r"spacing must be a positive number .*got \(2\.0, 0\.0, 2\.0\)"),
        ]
    )
    def test_train_transforms_errors(self, kwargs, pattern):
        with self.assertRaisesRegex(ValueError, pattern):
            train_transforms(**kwargs)

    def test_split_argument_errors(self):
        with self.assertRaisesRegex(ValueError, r"num_train_cases must be >= 1, got 0"):
            decathlon_split("unused", num_train_cases=0)
        with self.assertRaisesRegex(TypeError, r"num_val_cases must be an int, got float"):
            decathlon_split("unused", num_val_cases=1.0)
        with self.assertRaisesRegex(ValueError, r"test_fraction must be in \(0, 1\), got 1\.5"):
            decathlon_split("unused", test_fraction=1.5)
        with self.assertRaisesRegex(ValueError, r"k_divisible must be ≥ 1, got 0; use 16"):
            eval_transforms(k_divisible=0)

    def test_label_rule_transforms(self):
        label = {"label": torch.tensor([[[[0.0, 1.0], [2.0, 4.0]]]])}
        self.assertEqual(label_rule_transforms(None), [])
        whole = label_rule_transforms("foreground")[0](label)["label"]
        self.assertEqual(whole.flatten().tolist(), [0.0, 1.0, 1.0, 1.0])
        core = label
        for t in label_rule_transforms([2, 4]):
            core = t(core)
        self.assertEqual(core["label"].flatten().tolist(), [0.0, 0.0, 1.0, 1.0])

    def test_components_resolve_by_short_name(self):
        locator = ComponentLocator()
        for name in data_pkg.__all__:
            obj = getattr(data_pkg, name)
            mine = ("monai_dwp.data.phantoms", "monai_dwp.data.decathlon", "monai_dwp.data.visualize")
            if name.isupper() or not callable(obj) or getattr(obj, "__module__", "") not in mine:
                continue
            found = locator.get_component_module_name(name)
            modules = [found] if isinstance(found, str) else found
            self.assertEqual(modules, [obj.__module__], f"{name} resolves to {modules}")


if __name__ == "__main__":
    unittest.main()
