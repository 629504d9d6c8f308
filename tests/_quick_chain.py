"""The README's main job in ``--quick`` mode, run once per test process and shared by the tests that need its
hand-offs (the pipeline's own test and the transfer benchmark's), so the chain is trained once, not per test."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def copy_bundles(root: Path, with_models: Path | None = None) -> Path:
    """A copy of the repository's ``bundles/`` under ``root`` without trained weights, or with the ``models/`` of
    the bundles under ``with_models``."""
    if with_models is None:
        shutil.copytree(REPO / "bundles", root / "bundles", ignore=shutil.ignore_patterns("models", "eval"))
    else:
        shutil.copytree(with_models, root / "bundles", ignore=shutil.ignore_patterns("eval"))
    return root / "bundles"


@dataclass(frozen=True)
class QuickChain:
    """Where the quick chain ran: ``repo`` (its ``bundles/`` with the hand-offs and ``data/``), ``out`` (report,
    logs, baselines), ``elsewhere`` (the working directory it ran from), its command and its first run."""

    repo: Path
    out: Path
    elsewhere: Path
    cmd: tuple[str, ...]
    first: subprocess.CompletedProcess


@functools.cache
def quick_chain() -> QuickChain:
    """Runs ``python -m monai_dwp pipeline --quick`` once, from a working directory outside the repository copy."""
    tmp = Path(tempfile.mkdtemp(prefix="monai_dwp_quick_"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    repo, out, elsewhere = tmp / "repo", tmp / "out", tmp / "elsewhere"
    bundles = copy_bundles(repo)
    elsewhere.mkdir()
    cmd = (sys.executable, "-m", "monai_dwp", "pipeline", "--quick", "--output-dir", str(out), "--device", "cpu",
           "--bundles-dir", str(bundles))
    first = subprocess.run(cmd, cwd=elsewhere, env=quiet_env(), capture_output=True, text=True, timeout=900)
    return QuickChain(repo, out, elsewhere, cmd, first)


def quiet_env() -> dict[str, str]:
    return dict(os.environ, PYTHONWARNINGS="ignore")
