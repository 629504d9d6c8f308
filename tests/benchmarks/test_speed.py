"""``benchmarks/speed.py``: per-round ratios with their 95 % interval, and the verdict against a target."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import speed  # noqa: E402
from speed import _dwp_note, _ratio, _ratio_cell, _ratio_of, _typed, _verdict, _write  # noqa: E402


class TestRatios(unittest.TestCase):
    def test_per_round_ratio_cancels_load_that_hits_both_sides(self):
        # a loaded round (the third) slows both kinds alike: every per-round ratio is 2, so the interval has no width
        slow = [1.0, 1.0, 3.0]
        ratio = _ratio([2 * t for t in slow], slow)
        self.assertAlmostEqual(ratio["ratio"], 2.0)
        self.assertAlmostEqual(ratio["ratio_low"], 2.0)
        self.assertAlmostEqual(ratio["ratio_high"], 2.0)

    def test_older_rows_fall_back_to_the_ratio_of_medians(self):
        mean, low, high = _ratio_of({"seconds": 3.0}, {"seconds": 2.0})
        self.assertEqual(mean, 1.5)
        self.assertTrue(math.isnan(low) and math.isnan(high))
        self.assertEqual(_ratio_cell((mean, low, high)), "**1.50×**")
        self.assertEqual(_ratio_cell((0.065, 0.062, 0.068), "%"), "**6.5%** [6.2%–6.8%]")
        self.assertEqual(_ratio_cell((1.04, 0.97, 1.12)), "**1.04×** [0.97–1.12]")


class TestVerdict(unittest.TestCase):
    def test_the_whole_interval_decides(self):
        self.assertTrue(_verdict((1.01, 0.99, 1.03), 1.05).endswith("(target ≤ 1.05×: met)"))
        self.assertTrue(_verdict((1.10, 1.06, 1.14), 1.05).endswith("(target ≤ 1.05×: not met)"))
        # a mean below the target with an interval that reaches above it is not a pass
        self.assertIn("not resolved", _verdict((1.04, 0.97, 1.12), 1.05))
        self.assertEqual(_verdict((0.065, 0.062, 0.068), 0.10, "%"), "6% [6%–7%] (target ≤ 10%: met)")

    def test_without_an_interval_the_mean_decides(self):
        self.assertEqual(_verdict((1.59, math.nan, math.nan), 1.3), "1.59× (target ≤ 1.30×: not met)")
        self.assertEqual(_verdict((1.14, math.nan, math.nan), 1.3), "1.14× (target ≤ 1.30×: met)")


class TestRender(unittest.TestCase):
    def test_committed_results_render_with_every_field_filled(self):
        """``speed.md`` re-rendered from the committed ``speed.csv`` / ``speed.json``: the header names the PyTorch
        build, and no placeholder of the template is left unformatted."""
        results = REPO / "benchmarks" / "results"
        meta = json.loads((results / "speed.json").read_text())
        with open(results / "speed.csv") as f:
            rows = [_typed(r) for r in csv.DictReader(f)]
        with tempfile.TemporaryDirectory() as tmp:
            _write(rows, meta, Path(tmp))
            text = (Path(tmp) / "speed.md").read_text()
        self.assertIn(f"PyTorch {meta['torch']}.", text)
        self.assertNotIn("{", text)
        self.assertIn("Against the targets:", text)

    def test_dwp_note_follows_the_cpu_of_the_run(self):
        """On a CPU without native bfloat16 the note says so and gives the float32 estimators' costs (named as
        float32) where the bfloat16 ones were not run; on one with it, the bfloat16 rows."""
        ref = {"what": "step", "device": "cpu", "kind": "local step 64³ b2", "seconds": 2.0, "ratio": None}

        def dwp(kind: str, seconds: float) -> dict:
            return {"what": "dwp", "device": "cpu", "kind": kind, "seconds": seconds, "ratio": None}

        float32_rows = [ref, dwp("refresh=8+cv", 0.2), dwp("refresh=4+cv", 0.3), dwp("refresh=16", 0.1)]
        with mock.patch.object(speed, "_bundle_estimator", return_value=(8, True)):  # the bundle's R = 8 + cv
            text = _dwp_note(float32_rows, bf16_native=False)
            self.assertIn("this one has not: `auto` computes in float32 here", text)
            self.assertIn("uses R = 8 with the control variate (10.0% of a step with `auto`", text)
            text = _dwp_note([*float32_rows, dwp("refresh=8+cv+bf16", 0.12), dwp("refresh=16+bf16", 0.06)],
                             bf16_native=True)
            self.assertIn("(this one has it)", text)
            self.assertIn("(6.0% of a step with `auto`", text)
            text = _dwp_note(float32_rows, bf16_native=True)  # its bfloat16 estimator not timed: the float32 form
            self.assertIn("(10.0% of a step in float32 with `auto`", text)
        with mock.patch.object(speed, "_bundle_estimator", return_value=(16, False)):
            self.assertIn("uses R = 16 without the control variate (5.0% of a step with `auto`",
                          _dwp_note(float32_rows, bf16_native=False))


class TestDWPQuality(unittest.TestCase):
    """The DWP target's second half: an estimator's gradient along training against a fresh all-kernel draw's,
    read from ``dwp_estimator.py``'s training tables, one verdict over every prior of ``DWP_QUALITY``."""

    @staticmethod
    def _table(folder: Path, stem: str, trained: str, gaps: list[float]) -> None:
        with open(folder / f"{stem}_training.csv", "w", newline="") as f:
            fields = ["trained_with", "step", "cos_ref_loc[all]", f"cos_ref_loc[{trained}]"]
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            for step, gap in enumerate(gaps, 1):
                writer.writerow({"trained_with": trained, "step": step, "cos_ref_loc[all]": 0.5,
                                 f"cos_ref_loc[{trained}]": 0.5 + gap})

    def test_as_good_only_when_measured_on_every_prior_and_never_below(self):
        priors = {"prior A": ("a", "a2"), "prior B": ("b",)}
        with tempfile.TemporaryDirectory() as tmp, mock.patch.object(speed, "RESULTS", Path(tmp)), \
                mock.patch.object(speed, "DWP_QUALITY", priors):
            self._table(Path(tmp), "a", "refresh=8+cv", [0.01, 0.02])
            quality = speed._quality("refresh=8+cv")
            self.assertEqual(list(quality), ["prior A"])
            self.assertEqual([round(g, 6) for g in quality["prior A"]], [0.01, 0.02])
            text = speed._quality_text("refresh=8+cv", speed._quality("refresh=8+cv"))
            self.assertIn("+0.010 to +0.020 (prior A): not shown as good: not measured on every prior", text)
            self._table(Path(tmp), "b", "refresh=8+cv", [0.0, 0.03])
            self.assertTrue(speed._as_good(speed._quality("refresh=8+cv")))
            self.assertIn("over 4 checks", speed._quality_text("refresh=8+cv", speed._quality("refresh=8+cv")))
            self.assertTrue(speed._quality_text("refresh=8+cv", speed._quality("refresh=8+cv")).endswith(": as good"))
            self._table(Path(tmp), "a2", "refresh=8+cv", [-0.001])  # a second run on prior A, one check below
            self.assertFalse(speed._as_good(speed._quality("refresh=8+cv")))
            self.assertTrue(speed._quality_text("refresh=8+cv", speed._quality("refresh=8+cv")).endswith(": worse"))
            self.assertEqual(speed._quality_text("refresh=16", speed._quality("refresh=16")),
                             "its gradient along training not measured")


class TestMemory(unittest.TestCase):
    @staticmethod
    def _text(memory_rows: list[dict], device: str = "cpu") -> str:
        step = {"what": "step", "device": device, "size": 64, "batch": 2, "seconds": 1.0, "min": 1.0, "max": 1.0,
                "ratio": None}
        rows = [{**step, "kind": k} for k in ("deterministic", "local", "sampled")]
        rows += [{**step, "kind": "local step 64³ b2"},
                 {"what": "dwp", "device": device, "kind": "refresh=16", "seconds": 0.1, "min": 0.1, "max": 0.1,
                  "ratio": None, "num_kernels": 33808}]
        meta = {"repeats": 1, "torch": "x", "load_before": [0, 0, 0], "load_after": [0, 0, 0],
                "devices": {device: device.upper()}}
        with tempfile.TemporaryDirectory() as tmp:
            _write(rows + memory_rows, meta, Path(tmp))
            return (Path(tmp) / "speed.md").read_text()

    def test_the_exact_measure_decides_and_both_are_listed(self):
        def row(kind: str, mib: float, allocator: str | None) -> dict:
            out = {"what": "memory", "device": "cpu", "kind": kind, "size": 64, "batch": 2, "step_mib": mib,
                   "peak_mib": mib + 450}
            return out if allocator is None else {**out, "allocator": allocator}

        exact = [row("deterministic", 750, "exact"), row("local", 960, "exact"), row("sampled", 770, "exact")]
        tuned = [row("deterministic", 1100, "tuned"), row("local", 1480, "tuned"), row("sampled", 1150, "tuned")]
        text = self._text(exact + tuned)
        self.assertIn("deterministic 750 (1200), local 960 (1410), sampled 770 (1220).", text)
        self.assertIn("deterministic 1100 (1550), local 1480 (1930), sampled 1150 (1600).", text)
        self.assertIn("- Peak memory (exact), `local` / deterministic: 1.28× (target ≤ 1.30×: met).", text)
        # rows of runs before the exact measure (no allocator column) were measured tuned, and decide then
        text = self._text([row("deterministic", 1100, None), row("local", 1480, None), row("sampled", 1150, None)])
        self.assertIn("- Peak memory (tuned), `local` / deterministic: 1.35× (target ≤ 1.30×: not met).", text)
        self.assertNotIn("`exact`", text)

    def test_the_cpu_reasons_only_where_a_cpu_was_measured(self):
        """The explanations of the misses come from CPU measurements: a run on CUDA alone does not carry them."""
        self.assertIn("Why the misses are where they are:", self._text([]))
        self.assertNotIn("Why the misses are where they are:", self._text([], device="cuda"))


class TestRun(unittest.TestCase):
    def test_a_small_run_writes_every_file(self):
        """The whole script at the smallest settings (16³ steps, one round; the DWP term is timed against its fixed
        64³ step): the table, the machine's bfloat16 fact and the verdicts are written."""
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                [sys.executable, str(REPO / "benchmarks" / "speed.py"), "--sizes", "16", "--batches", "2", "--repeats",
                 "1", "--estimators", "refresh=16", "--memory_size", "16", "--device", "cpu", "--output-dir", tmp],
                check=True, capture_output=True, text=True,
            )
            meta = json.loads((Path(tmp) / "speed.json").read_text())
            text = (Path(tmp) / "speed.md").read_text()
            self.assertTrue((Path(tmp) / "speed.png").is_file())
        self.assertIn(meta["bf16_native"], (True, False))
        self.assertIn("| 16³, 2 |", text)
        self.assertIn("`refresh=16`", text)
        self.assertIn("this one has it" if meta["bf16_native"] else "this one has not", text)
        if sys.platform.startswith("linux"):  # both CPU memory measures, the exact one deciding the verdict
            self.assertIn("- `exact` (", text)
            self.assertIn("- `tuned` (", text)
            self.assertIn("- Peak memory (exact), `local` / deterministic:", text)


if __name__ == "__main__":
    unittest.main()
