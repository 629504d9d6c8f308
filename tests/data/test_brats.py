"""BraTS folders as downloaded: layout detection, the written dataset.json, loading through the Decathlon loaders."""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
import tempfile
import unittest
from pathlib import Path
from unittest import mock

import nibabel as nib
import numpy as np

from monai_dwp import cli
from monai_dwp.data import (
    decathlon_split,
    eval_transforms,
    find_brats_cases,
    is_brats_folder,
    read_dataset_json,
    validate_decathlon,
    write_brats_datalist,
)
from monai_dwp.utils.validation import InputFileError, InputValueError

SHAPE = (16, 16, 16)
BOX = (slice(2, 14),) * 3  # the "brain": every modality is non-zero there, 0 outside
SUFFIXES = ("flair", "t1", "t1ce", "t2")


def _modality(name: str) -> np.ndarray:
    """A 12^3 brain whose intensity ramps along x for FLAIR, y for T1, z for T1ce, down along x for T2."""
    ramp = np.arange(SHAPE[0], dtype=np.float32)
    axis = {"flair": 0, "t1": 1, "t1ce": 2, "t2": 0}[name]
    values = (ramp if name != "t2" else ramp[::-1].copy()).reshape([-1 if a == axis else 1 for a in range(3)])
    image = np.zeros(SHAPE, np.float32)
    image[BOX] = (100.0 + 10.0 * np.broadcast_to(values, SHAPE))[BOX]
    return image


def _label() -> np.ndarray:
    label = np.zeros(SHAPE, np.uint8)
    label[5:9, 5:9, 5:9] = 2  # oedema
    label[6:8, 6:8, 6:8] = 4  # enhancing tumour
    label[6, 6, 6] = 1  # necrotic core
    return label


def write_case(case_dir: Path, with_seg: bool = True, ext: str = ".nii.gz") -> None:
    """One BraTS case folder ``<id>/<id>_{flair,t1,t1ce,t2}[, _seg]<ext>`` on a 1 mm RAS grid."""
    case_dir.mkdir(parents=True)
    for name in SUFFIXES:
        nib.save(nib.Nifti1Image(_modality(name), np.eye(4)), case_dir / f"{case_dir.name}_{name}{ext}")
    if with_seg:
        nib.save(nib.Nifti1Image(_label(), np.eye(4)), case_dir / f"{case_dir.name}_seg{ext}")


def make_hgg_lgg(root: Path) -> Path:
    """2018/2019 layout; ids interleave the grades so that sorting by id mixes them."""
    for grade, ids in (("HGG", ("Brats18_A_1", "Brats18_C_1")), ("LGG", ("Brats18_B_1", "Brats18_D_1"))):
        for case_id in ids:
            write_case(root / grade / case_id)
    return root


def make_flat(root: Path, num_cases: int = 6, prefix: str = "BraTS20_Training", with_seg: bool = True) -> Path:
    """2020/2021 layout, with an uncompressed case, a csv and a macOS folder that must be ignored."""
    for i in range(num_cases, 0, -1):  # written in reverse order: the listing must sort them
        write_case(root / f"{prefix}_{i:03d}", with_seg=with_seg, ext=".nii" if i == 2 else ".nii.gz")
    (root / "name_mapping.csv").write_text("BraTS_2020_subject_ID\n")
    (root / "__MACOSX").mkdir()
    return root


class _TmpCase(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.tmp = Path(tmp.name)


class TestFindBratsCases(_TmpCase):
    def test_hgg_lgg_layout(self):
        root = make_hgg_lgg(self.tmp / "MICCAI_BraTS_2018_Data_Training")
        cases = find_brats_cases(root)
        ids = [Path(c["image"][0]).parent.name for c in cases]
        self.assertEqual(ids, ["Brats18_A_1", "Brats18_B_1", "Brats18_C_1", "Brats18_D_1"])
        self.assertEqual(Path(cases[1]["image"][0]).parent.parent.name, "LGG")
        for case in cases:
            case_id = Path(case["image"][0]).parent.name
            self.assertEqual(set(case), {"image", "label"})
            self.assertEqual([Path(p).name for p in case["image"]], [f"{case_id}_{s}.nii.gz" for s in SUFFIXES])
            self.assertEqual(Path(case["label"]).name, f"{case_id}_seg.nii.gz")
            self.assertTrue(all(Path(p).is_absolute() and Path(p).is_file() for p in [*case["image"], case["label"]]))

    def test_flat_layout(self):
        root = make_flat(self.tmp / "MICCAI_BraTS2020_TrainingData")
        cases = find_brats_cases(root)
        self.assertEqual([Path(c["image"][0]).parent.name for c in cases],
                         [f"BraTS20_Training_{i:03d}" for i in range(1, 7)])  # csv and __MACOSX ignored
        self.assertEqual([Path(p).name for p in cases[1]["image"]],
                         [f"BraTS20_Training_002_{s}.nii" for s in SUFFIXES])  # uncompressed files accepted
        self.assertTrue(all("label" in c for c in cases))

    def test_validation_folder_has_no_labels(self):
        root = make_flat(self.tmp / "val", num_cases=2, prefix="BraTS20_Validation", with_seg=False)
        cases = find_brats_cases(root)
        self.assertEqual(len(cases), 2)
        self.assertTrue(all("label" not in c and len(c["image"]) == 4 for c in cases))
        self.assertTrue(is_brats_folder(root))

    def test_is_brats_folder(self):
        self.assertTrue(is_brats_folder(make_hgg_lgg(self.tmp / "a")))
        self.assertTrue(is_brats_folder(make_flat(self.tmp / "b", num_cases=1)))
        decathlon = self.tmp / "decathlon"
        (decathlon / "imagesTr").mkdir(parents=True)
        nib.save(nib.Nifti1Image(_label(), np.eye(4)), decathlon / "imagesTr" / "case_001.nii.gz")
        (self.tmp / "empty").mkdir()
        for folder in (decathlon, self.tmp / "empty", self.tmp / "missing", self.tmp / "a" / "HGG" / "Brats18_A_1"):
            self.assertFalse(is_brats_folder(folder), folder)

    def test_missing_modality_file(self):
        root = make_flat(self.tmp / "train", num_cases=3)
        (root / "BraTS20_Training_003" / "BraTS20_Training_003_t1ce.nii.gz").unlink()
        with self.assertRaises(InputFileError) as ctx:
            find_brats_cases(root)
        self.assertIsInstance(ctx.exception, FileNotFoundError)
        self.assertRegex(str(ctx.exception), r"^BraTS case BraTS20_Training_003 \(.*\) lacks BraTS20_Training_003_t1ce"
                                             r"\.nii\.gz, got only \[.*\]; every case needs the four modalities")

    def test_folder_without_cases(self):
        (self.tmp / "empty").mkdir()
        for folder, extra in [
            (self.tmp / "empty", ""),
            (self.tmp, r" The sub-folder '.*nested' holds BraTS cases: pass it instead\."),
        ]:
            if extra:
                make_flat(self.tmp / "nested", num_cases=1)
            with self.assertRaises(InputValueError) as ctx:
                find_brats_cases(folder)
            self.assertIsInstance(ctx.exception, ValueError)
            pattern = (r"^no BraTS case found in .*: expected BraTS 2018–2021 case folders .*<id>_flair\.nii\.gz.*"
                       r"under HGG/ and LGG/ \(2018/2019\)\." + extra)
            self.assertRegex(str(ctx.exception), pattern)
        with self.assertRaisesRegex(InputFileError, r"BraTS folder '.*missing' is not a directory"):
            find_brats_cases(self.tmp / "missing")

    def test_2023_names_are_refused(self):
        case = self.tmp / "brats2023" / "BraTS-GLI-00000-000"
        case.mkdir(parents=True)
        nib.save(nib.Nifti1Image(_modality("flair"), np.eye(4)), case / "BraTS-GLI-00000-000-t2f.nii.gz")
        self.assertFalse(is_brats_folder(case.parent))
        with self.assertRaisesRegex(InputValueError, r"BraTS 2023 names \(-t1n, -t1c, -t2w, -t2f\), which are not "
                                                     r"supported"):
            find_brats_cases(case.parent)


class TestWriteBratsDatalist(_TmpCase):
    def test_content_hgg_lgg(self):
        root = make_hgg_lgg(self.tmp / "brats18")
        path = write_brats_datalist(root)
        self.assertEqual(path, root / "dataset.json")
        content = json.loads(path.read_text())
        self.assertEqual(content["modality"], {"0": "FLAIR", "1": "T1", "2": "T1ce", "3": "T2"})
        self.assertEqual(content["labels"], {"0": "background", "1": "necrotic/non-enhancing core", "2": "oedema",
                                             "4": "enhancing tumour"})
        self.assertEqual((content["numTraining"], content["numTest"], content["test"]), (4, 0, []))
        self.assertEqual(content["training"][1], {
            "image": [f"./LGG/Brats18_B_1/Brats18_B_1_{s}.nii.gz" for s in SUFFIXES],
            "label": "./LGG/Brats18_B_1/Brats18_B_1_seg.nii.gz",
        })
        self.assertEqual(read_dataset_json(root)["training"], content["training"])  # the package accepts it

    def test_validate_and_load_the_flair_channel(self):
        root = make_flat(self.tmp / "brats20")
        write_brats_datalist(root)
        split = validate_decathlon(root, modality="FLAIR", num_train_cases=3, num_val_cases=2, label_rule="foreground")
        self.assertEqual([len(split[k]) for k in ("train", "val", "test")], [3, 2, 1])  # test: 20 % of 6, seeded
        case = split["train"][0]
        self.assertEqual(len(case["image"]), 4)
        out = eval_transforms(modality="FLAIR", dataset_dir=root, spacing=None)(case)
        image, label = np.asarray(out["image"]), np.asarray(out["label"])
        self.assertEqual(image.shape, (1, 16, 16, 16))  # the 12^3 brain cropped, padded to a multiple of 16
        brain = image[0] > 0
        self.assertEqual(int(brain.sum()), 12**3)  # the background (0) is the minimum: the brain stays > 0
        inside = image[0][:, 8, 8]
        inside = inside[inside > 0]
        self.assertTrue(np.all(np.diff(inside) > 0), inside)  # increases along x: FLAIR, not T2 (decreasing)
        self.assertTrue(np.allclose(image[0][8, :, 8][brain[8, :, 8]], image[0][8, 8, 8]))  # flat along y (not T1)
        self.assertTrue(np.allclose(image[0][8, 8, :][brain[8, 8, :]], image[0][8, 8, 8]))  # flat along z (not T1ce)
        self.assertEqual(sorted(np.unique(label).tolist()), [0.0, 1.0])
        self.assertEqual(int(label.sum()), 64)  # labels 1, 2 and 4 are all whole tumour

    def test_num_test_fixes_the_test_split(self):
        root = make_flat(self.tmp / "brats20")
        write_case(root / "BraTS20_Training_007", with_seg=False)  # a case without its _seg file
        with self.assertWarnsRegex(UserWarning, r"1 of the 7 cases .* have no _seg file .*BraTS20_Training_007"):
            content = json.loads(write_brats_datalist(root, num_test=2, seed=3).read_text())
        self.assertEqual((content["numTraining"], content["numTest"]), (4, 3))
        labelled_test = [t for t in content["test"] if "label" in t]
        self.assertEqual(len(labelled_test), 2)
        self.assertEqual(content["test"][2], {"image": [f"./BraTS20_Training_007/BraTS20_Training_007_{s}.nii.gz"
                                                        for s in SUFFIXES]})
        names = [t["image"][0] for t in labelled_test]
        self.assertEqual(names, sorted(names))
        self.assertFalse({t["image"][0] for t in content["training"]} & set(names))
        split = decathlon_split(root, num_val_cases=1)
        self.assertEqual([Path(c["label"]).parent.name for c in split["test"]], [Path(n).parent.name for n in names])
        with self.assertWarns(UserWarning):
            again = json.loads(write_brats_datalist(root, self.tmp / "again" / "dataset.json", num_test=2, seed=3)
                               .read_text())
        self.assertEqual([Path(t["image"][0]).name for t in again["test"]],
                         [Path(t["image"][0]).name for t in content["test"]])  # deterministic

    def test_refusals(self):
        val = make_flat(self.tmp / "val", num_cases=2, prefix="BraTS20_Validation", with_seg=False)
        with self.assertRaisesRegex(InputValueError, r"holds 2 BraTS case\(s\) but none has a _seg label file \(a "
                                                     r"validation folder\?\)"):
            write_brats_datalist(val)
        train = make_flat(self.tmp / "train", num_cases=3)
        with self.assertRaisesRegex(InputValueError, r"num_test=3 would leave no training case: .* has 3 labelled "
                                                     r"case\(s\); use num_test <= 2\."):
            write_brats_datalist(train, num_test=3)
        with self.assertRaisesRegex(InputValueError, r"num_test must be an int >= 0, got -1"):
            write_brats_datalist(train, num_test=-1)
        self.assertFalse((val / "dataset.json").exists() or (train / "dataset.json").exists())

    def test_overwrite(self):
        root = make_flat(self.tmp / "brats20", num_cases=3)
        path = write_brats_datalist(root)
        first = path.read_text()
        self.assertEqual(write_brats_datalist(root), path)  # same content: accepted, left as it is
        with self.assertRaisesRegex(FileExistsError, r"dataset\.json already exists with other content; pass "
                                                     r"overwrite=True \(--overwrite on the command line\)"):
            write_brats_datalist(root, num_test=1)
        self.assertEqual(path.read_text(), first)
        write_brats_datalist(root, num_test=1, overwrite=True)
        self.assertEqual(json.loads(path.read_text())["numTest"], 1)
        self.assertEqual(sorted(p.name for p in root.iterdir() if p.is_file()), ["dataset.json", "name_mapping.csv"])

    def test_output_file_in_another_folder(self):
        root = make_flat(self.tmp / "readonly" / "brats20", num_cases=4)
        path = write_brats_datalist(root, self.tmp / "lists" / "dataset.json")
        content = json.loads(path.read_text())
        self.assertTrue(content["training"][0]["image"][0].startswith("../readonly/brats20/BraTS20_Training_001/"))
        split = decathlon_split(path.parent, num_val_cases=1)
        self.assertTrue(all(Path(p).is_file() for c in split["train"] for p in [*c["image"], c["label"]]))
        self.assertFalse((root / "dataset.json").exists())


class TestCommandAndHint(_TmpCase):
    def test_make_datalist_command(self):
        root = make_flat(self.tmp / "brats 20", num_cases=3)  # a space: the printed command must quote it
        stdout = io.StringIO()
        with mock.patch.object(sys, "argv", ["monai_dwp", "make-datalist", "--dataset-dir", str(root), "--num-test",
                                             "1"]), contextlib.redirect_stdout(stdout):
            cli.main()
        self.assertEqual(json.loads((root / "dataset.json").read_text())["numTest"], 1)
        self.assertEqual(stdout.getvalue().splitlines(), [
            f"wrote {root / 'dataset.json'}",
            "next: python -m monai.bundle run --config_file bundles/dwp_finetune/configs/train.json "
            f"--dataset_dir '{root}' --modality FLAIR --in_channels 1",
        ])
        stderr = io.StringIO()
        with self.assertRaises(SystemExit) as ctx, contextlib.redirect_stderr(stderr):
            cli.make_datalist(str(root))  # different from the file written above, without --overwrite
        self.assertEqual(ctx.exception.code, 1)
        self.assertRegex(stderr.getvalue(), r"^monai_dwp: .*dataset\.json already exists with other content; pass "
                                             r"overwrite=True \(--overwrite")

    def test_read_dataset_json_names_the_command(self):
        root = make_hgg_lgg(self.tmp / "brats18")
        pattern = (rf"^{re.escape(str(root / 'dataset.json'))} not found: '{re.escape(str(root))}' is a BraTS folder "
                   r"as downloaded .*; write one with `python -m monai_dwp make-datalist --dataset-dir "
                   rf"{re.escape(str(root))}` and run again\.$")
        for call in (read_dataset_json, lambda r: validate_decathlon(r, modality="FLAIR")):
            with self.assertRaisesRegex(InputFileError, pattern):
                call(root)
        (self.tmp / "other").mkdir()
        with self.assertRaises(InputFileError) as ctx:
            read_dataset_json(self.tmp / "other")
        self.assertNotIn("BraTS", str(ctx.exception))
        self.assertIn("must contain a Decathlon dataset.json", str(ctx.exception))


if __name__ == "__main__":
    unittest.main()
