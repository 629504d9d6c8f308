"""A MONAI Label request for a study that does not exist fails with a message naming the fix.

``check_request_image`` needs no MONAI Label and is tested here; ``TestInferTask`` checks that
:class:`DWPBundleInferTask` calls it before loading anything, and runs where ``monailabel`` is importable (the separate
environment of ``bash .ci/monailabel.sh``); elsewhere it is skipped.
"""

from __future__ import annotations

import importlib.util
import tempfile
import unittest
from pathlib import Path

import numpy as np

from monai_dwp.apps.monailabel import check_request_image

HAS_MONAILABEL = importlib.util.find_spec("monailabel") is not None


class TestCheckRequestImage(unittest.TestCase):
    def test_existing_paths_and_arrays_pass(self):
        with tempfile.TemporaryDirectory() as tmp:
            image = Path(tmp) / "study.nii.gz"
            image.write_bytes(b"")
            self.assertEqual(check_request_image(str(image)), str(image))
            self.assertEqual(check_request_image(tmp), tmp)  # a DICOM series is a folder
        array = np.zeros((4, 4, 4))
        self.assertIs(check_request_image(array), array)

    def test_unknown_study_id(self):
        with self.assertRaisesRegex(
            FileNotFoundError,
            r"^the request's image names no study of the datastore, got an empty path \(MONAI Label's datastore "
            r"returns '' for a study id it does not hold\); use an id listed by GET /datastore/\?output=all, or upload "
            r"the image with the request \(POST /infer/<model> with file=\.\.\.\)\.$",
        ):
            check_request_image("")

    def test_missing_file(self):
        with self.assertRaisesRegex(FileNotFoundError, r"^the request's image does not exist, got '/nowhere/study\.nii"
                                                       r"\.gz'; pass a study id of the datastore"):
            check_request_image("/nowhere/study.nii.gz")


@unittest.skipUnless(HAS_MONAILABEL, "monailabel is not installed here; bash .ci/monailabel.sh runs it in its env")
class TestInferTask(unittest.TestCase):
    def test_unknown_study_is_an_invalid_input(self):
        from monailabel.interfaces.exception import MONAILabelError, MONAILabelException

        from monai_dwp.apps.monailabel import DWPBundleInferTask

        task = DWPBundleInferTask.__new__(DWPBundleInferTask)  # the check runs before the bundle is touched
        with self.assertRaisesRegex(MONAILabelException, r"the request's image names no study of the datastore") as ctx:
            task({"image": "", "device": "cpu"})
        self.assertEqual(ctx.exception.error, MONAILabelError.INVALID_INPUT)


if __name__ == "__main__":
    unittest.main()
