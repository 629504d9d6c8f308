from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest
from pathlib import Path

from monai_dwp.utils.io import atomic_directory, atomic_path, atomic_write


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


class TestAtomicFiles(unittest.TestCase):
    def test_exception_keeps_the_previous_file(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "report.md"
            atomic_write(path, "w", lambda f: f.write("old"))
            with self.assertRaises(RuntimeError):
                atomic_write(path, "w", lambda f: (f.write("half"), (_ for _ in ()).throw(RuntimeError("boom"))))
            self.assertEqual(path.read_text(), "old")
            with self.assertRaises(RuntimeError), atomic_path(path) as p:
                p.write_text("half")
                raise RuntimeError("boom")
            self.assertEqual(path.read_text(), "old")
            self.assertEqual(os.listdir(tmp), ["report.md"])  # no temporary file or folder left

    def test_atomic_path_keeps_the_name(self):
        with tempfile.TemporaryDirectory() as tmp:
            with atomic_path(Path(tmp) / "sub" / "case_seg.nii.gz") as p:
                self.assertEqual(p.name, "case_seg.nii.gz")
                p.write_bytes(b"x")
            self.assertEqual((Path(tmp) / "sub" / "case_seg.nii.gz").read_bytes(), b"x")
            self.assertEqual(os.listdir(Path(tmp) / "sub"), ["case_seg.nii.gz"])

    def test_atomic_directory(self):
        with tempfile.TemporaryDirectory() as tmp:
            with atomic_directory(tmp) as folder:
                (folder / "a.csv").write_text("1")
                self.assertEqual(_visible(Path(tmp)), [])  # nothing visible before the block ends
            self.assertEqual(os.listdir(tmp), ["a.csv"])

    def test_sigkill_mid_write_leaves_nothing_visible(self):
        script = textwrap.dedent(
            """
            import sys, time
            from monai_dwp.utils.io import atomic_path
            with atomic_path(sys.argv[1]) as p:
                with open(p, "wb") as f:
                    f.write(b"half a volume")
                    f.flush()
                    print("writing", flush=True)
                    time.sleep(60)
            """
        )
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / "case_seg.nii.gz"
            proc = subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, text=True)
            self.assertEqual(proc.stdout.readline().strip(), "writing")
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            self.assertFalse(target.exists())
            self.assertEqual(_visible(Path(tmp)), [])
            self.assertEqual(list(Path(tmp).glob("*.nii.gz")), [])  # what a later stage would look for


if __name__ == "__main__":
    unittest.main()
