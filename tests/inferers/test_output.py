"""check_output_dir: inference refuses, before writing anything, an output folder it cannot or must not write."""

from __future__ import annotations

import os
import tempfile
import unittest
from pathlib import Path
from unittest import mock

from monai.bundle import ConfigParser
from monai.bundle.config_item import ComponentLocator
from parameterized import parameterized

from monai_dwp.bundle_utils import BundleInputError
from monai_dwp.inferers import OutputDirError, check_output_dir

REPO = Path(__file__).resolve().parents[2]


class TestCheckOutputDir(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.root = Path(tmp.name)
        self.images = self.root / "imagesTs"
        self.images.mkdir()
        (self.images / "case.nii.gz").write_bytes(b"")

    def _listing(self) -> list[str]:
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*"))

    def test_accepts_a_new_folder_and_creates_nothing(self):
        before = self._listing()
        out = self.root / "runs" / "a" / "predictions"
        self.assertEqual(check_output_dir(out, self.images, "pred_dir"), str(out))
        self.assertEqual(check_output_dir(str(self.root / "preds")), str(self.root / "preds"))
        self.assertEqual(self._listing(), before)

    @parameterized.expand(
        [
            ("same_folder", "imagesTs", "imagesTs"),
            ("subfolder", "imagesTs/predictions", "imagesTs"),
            ("file_input", "imagesTs", "imagesTs/case.nii.gz"),
            ("glob_input", "imagesTs/out", "imagesTs/*.nii.gz"),
        ]
    )
    def test_inside_the_input_folder(self, _, output, source):
        before = self._listing()
        with self.assertRaisesRegex(
            ValueError,
            r"^pred_dir '.*' is inside the input folder, got input_dir='.*imagesTs.*'; predictions would be written "
            r"among the images and read as inputs by the next run: pass a --pred_dir outside it\.$",
        ):
            check_output_dir(self.root / output, self.root / source if "*" not in source else f"{self.root}/{source}",
                             "pred_dir")
        self.assertEqual(self._listing(), before)

    def test_not_writable(self):
        real_access = os.access

        def no_write(path, mode, *args, **kwargs):  # root ignores permission bits: simulate a read-only folder
            return False if Path(path) == self.root and mode & os.W_OK else real_access(path, mode, *args, **kwargs)

        with mock.patch("monai_dwp.inferers.output.os.access", side_effect=no_write):
            with self.assertRaisesRegex(
                ValueError,
                r"^pred_dir '.*/new/predictions' is not writable, got no write permission on '.*'; pass a writable "
                r"--pred_dir or fix the folder's permissions\.$",
            ):
                check_output_dir(self.root / "new" / "predictions", self.images, "pred_dir")
        self.assertFalse((self.root / "new").exists())

    @unittest.skipIf(hasattr(os, "geteuid") and os.geteuid() == 0, "root may write into a read-only folder")
    def test_read_only_folder(self):
        locked = self.root / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        self.addCleanup(locked.chmod, 0o700)
        with self.assertRaisesRegex(ValueError, r"output_dir '.*locked/out' is not writable"):
            check_output_dir(locked / "out")

    def test_file_in_the_way(self):
        (self.root / "preds").write_text("a file")
        with self.assertRaisesRegex(ValueError, r"^pred_dir must be a folder, got the existing file '.*preds'"):
            check_output_dir(self.root / "preds", key="pred_dir")
        with self.assertRaisesRegex(ValueError, r"^pred_dir '.*preds/out' cannot be created, got the file '.*preds' "
                                                r"where a folder is needed; pass another --pred_dir\.$"):
            check_output_dir(self.root / "preds" / "out", key="pred_dir")

    def test_error_type(self):
        self.assertTrue(issubclass(OutputDirError, ValueError) and issubclass(OutputDirError, BundleInputError))

    def test_resolves_by_short_name(self):
        self.assertEqual(ComponentLocator().get_component_module_name("check_output_dir"), "monai_dwp.inferers.output")


class TestInferenceConfigs(unittest.TestCase):
    """The inference.json configs check pred_dir in `initialize`, before the evaluator exists (nothing written)."""

    @parameterized.expand([("dwp_pretrain",), ("dwp_finetune",)])
    def test_prediction_into_the_input_folder(self, bundle):
        with tempfile.TemporaryDirectory() as tmp:
            parser = ConfigParser()
            parser.read_config(str(REPO / "bundles" / bundle / "configs" / "inference.json"))
            parser["input_dir"] = tmp
            parser["pred_dir"] = tmp
            initialize = parser.get("initialize")
            step = next(i for i, s in enumerate(initialize) if "check_output_dir" in s)
            self.assertLess(step, next(i for i, s in enumerate(initialize) if "@evaluator" in s))
            with self.assertRaises(RuntimeError) as ctx:  # MONAI's "Failed to evaluate ConfigExpression"
                parser.get_parsed_content(f"initialize#{step}")
            self.assertIsInstance(ctx.exception.__cause__, OutputDirError)
            self.assertRegex(str(ctx.exception.__cause__), r"^pred_dir '.*' is inside the input folder")
            self.assertEqual(os.listdir(tmp), [])


if __name__ == "__main__":
    unittest.main()
