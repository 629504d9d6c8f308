"""The README's main job in --quick mode, end to end, and its skip / failure behaviour."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

from monai_dwp.pipeline import PipelineSettings, PipelineStageError, run_pipeline
from monai_dwp.transfer import METHODS

REPO = Path(__file__).resolve().parents[1]


class TestPipeline(unittest.TestCase):
    def test_quick_pipeline_writes_the_report_then_skips(self):
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(os.environ, PYTHONWARNINGS="ignore")
            cmd = [sys.executable, "-m", "monai_dwp", "pipeline", "--quick", "--output-dir", tmp, "--device", "cpu"]
            proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
            self.assertEqual(proc.returncode, 0, proc.stdout[-3000:] + proc.stderr[-3000:])
            report = (Path(tmp) / "report.md").read_text()
            for method in METHODS:
                self.assertRegex(report, rf"\| `{method}` \| [0-9.]+ \| [0-9.]+ \|")
            self.assertIn("![montage](montage.png)", report)
            self.assertGreater((Path(tmp) / "montage.png").stat().st_size, 10_000)
            for stage in ("data_ms", "pretrain_seed1", "prior", "finetune_dwp", "evaluate_dwp"):
                self.assertTrue((Path(tmp) / "logs" / f"{stage}.log").is_file(), stage)
            # a second run finds every output and skips every stage
            again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
            self.assertEqual(again.returncode, 0, again.stderr[-3000:])
            self.assertNotIn("[run ]", again.stdout + again.stderr)
            self.assertIn("[skip] finetune_dwp_init", again.stdout + again.stderr)

    def test_failing_stage_names_the_command(self):
        settings = dataclasses.replace(PipelineSettings.quick(), patch_size=12, num_source_cases=2, seeds=(0,))
        with tempfile.TemporaryDirectory() as tmp:
            with self.assertRaises(PipelineStageError) as ctx:
                run_pipeline(tmp, settings=settings, methods=["random_init"], device="cpu")
            message = str(ctx.exception)
            self.assertIn("stage 'pretrain_seed0' failed", message)
            self.assertIn("reproduce it with:", message)
            self.assertIn("-m monai.bundle run --config_file bundles/dwp_pretrain/configs/train.json", message)
            self.assertTrue((Path(tmp) / "logs" / "pretrain_seed0.log").is_file())

    def test_unknown_method(self):
        with self.assertRaisesRegex(ValueError, r"methods \['bayes'\] are not fine-tuning methods"):
            run_pipeline("unused", quick=True, methods=["bayes"])


if __name__ == "__main__":
    unittest.main()
