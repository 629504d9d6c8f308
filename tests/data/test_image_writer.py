from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import SaveImaged

from monai_dwp.data import AtomicNibabelWriter


class TestAtomicNibabelWriter(unittest.TestCase):
    def test_writes_like_nibabel_writer(self):
        with tempfile.TemporaryDirectory() as tmp:
            affine = np.diag([2.0, 2.0, 3.0, 1.0])
            image = MetaTensor(torch.rand(1, 6, 7, 8), affine=torch.as_tensor(affine),
                               meta={"filename_or_obj": "case_1.nii.gz"})
            SaveImaged("pred", output_dir=tmp, output_postfix="seg", writer=AtomicNibabelWriter, separate_folder=False,
                       resample=False, print_log=False)({"pred": image})
            out = nib.load(Path(tmp) / "case_1_seg.nii.gz")
            self.assertEqual(out.shape, (6, 7, 8))
            np.testing.assert_allclose(out.affine, affine)
            self.assertEqual(sorted(p.name for p in Path(tmp).iterdir()), ["case_1_seg.nii.gz"])

    def test_inference_killed_mid_volume(self):
        """SaveImaged killed by SIGKILL while nibabel writes the volume: no truncated ``*_seg.nii.gz`` appears."""
        script = textwrap.dedent(
            """
            import sys, time
            import nibabel, torch
            from monai.data import MetaTensor
            from monai.transforms import SaveImaged
            from monai_dwp.data import AtomicNibabelWriter

            def slow_save(img, filename):  # write half the file, then hang as a big volume would
                with open(filename, "wb") as f:
                    f.write(b"\\x1f\\x8b" + b"0" * 1000)
                    f.flush()
                print("writing", flush=True)
                time.sleep(60)

            nibabel.save = slow_save
            image = MetaTensor(torch.rand(1, 8, 8, 8), meta={"filename_or_obj": "case_1.nii.gz"})
            SaveImaged("pred", output_dir=sys.argv[1], output_postfix="seg", writer=AtomicNibabelWriter,
                       separate_folder=False, resample=False, print_log=False)({"pred": image})
            """
        )
        with tempfile.TemporaryDirectory() as tmp:
            proc = subprocess.Popen([sys.executable, "-c", script, tmp], stdout=subprocess.PIPE, text=True)
            self.assertEqual(proc.stdout.readline().strip(), "writing")
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            self.assertEqual(list(Path(tmp).glob("*.nii.gz")), [])


if __name__ == "__main__":
    unittest.main()
