from __future__ import annotations

import csv
import os
import tempfile
import unittest
from pathlib import Path

import torch

from monai_dwp.metrics import VoxelCalibration
from monai_dwp.visualize import save_reliability_diagram


def _table() -> list[dict]:
    g = torch.Generator().manual_seed(0)
    prob = (3 * torch.randn(2, 10, 10, 10, generator=g)).softmax(0)
    label = (torch.rand(1, 10, 10, 10, generator=g) < prob[1:]).long()
    metric = VoxelCalibration(n_bins=10)
    return metric.histograms(prob, label).reliability_table()


class TestReliabilityDiagram(unittest.TestCase):
    def test_png_from_rows_and_from_csv(self):
        from matplotlib.image import imread

        table = _table()
        with tempfile.TemporaryDirectory() as tmp:
            path = save_reliability_diagram(table, Path(tmp) / "sub" / "reliability.png", title="ECE 0.01")
            self.assertEqual(path, Path(tmp) / "sub" / "reliability.png")
            self.assertEqual(path.read_bytes()[:8], b"\x89PNG\r\n\x1a\n")
            self.assertEqual(imread(path).shape[:2], (700, 600))
            # the rows of reliability.csv read back (strings, "nan" for empty bins) draw the same picture
            csv_path = os.path.join(tmp, "reliability.csv")
            with open(csv_path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(table[0]))
                writer.writeheader()
                writer.writerows(table)
            with open(csv_path, newline="") as f:
                rows = list(csv.DictReader(f))
            again = save_reliability_diagram(rows, os.path.join(tmp, "again.png"), title="ECE 0.01")
            self.assertEqual(again.read_bytes(), path.read_bytes())
            self.assertEqual(sorted(os.listdir(path.parent)), ["reliability.png"])  # no temporary file left

    def test_empty_bins_and_no_title(self):
        table = VoxelCalibration(n_bins=3).local_histograms().reliability_table()  # all bins empty
        with tempfile.TemporaryDirectory() as tmp:
            path = save_reliability_diagram(table, os.path.join(tmp, "empty.png"))
            self.assertGreater(path.stat().st_size, 1000)

    def test_bad_rows(self):
        with tempfile.TemporaryDirectory() as tmp:
            with self.assertRaisesRegex(ValueError, r"table row 0 has no \['accuracy'\]"):
                save_reliability_diagram([{k: v for k, v in _table()[0].items() if k != "accuracy"}], f"{tmp}/x.png")
            with self.assertRaisesRegex(ValueError, "curve 'other'"):
                save_reliability_diagram([{**_table()[0], "curve": "other"}], f"{tmp}/x.png")
            self.assertEqual(os.listdir(tmp), [])


if __name__ == "__main__":
    unittest.main()
