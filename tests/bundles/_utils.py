"""Run the shipped bundles as users do, ``python -m monai.bundle run ...``, on tiny phantom data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUNDLES = REPO / "bundles"
SCHEMA = BUNDLES / "schema" / "meta_schema_20240725.json"

# tiny settings shared by the end-to-end tests: 6 mm phantoms (32^3 volumes), 16^3 patches, small batches
TINY = {"spacing": "[6.0,6.0,6.0]", "patch_size": "[16,16,16]", "num_val_cases": 1, "epochs": 1, "val_interval": 1,
        "device": "cpu", "batch_size": 1, "num_samples": 2}


def config_files(bundle: str, *names: str) -> str:
    """The ``--config_file`` value for one or several configs of ``bundle``."""
    files = [str(BUNDLES / bundle / "configs" / f"{n}.json") for n in names]
    return files[0] if len(files) == 1 else "[" + ",".join(f"'{f}'" for f in files) + "]"


def _args(overrides: dict) -> list[str]:
    args = []
    for key, value in overrides.items():
        if value is not None:
            args += [f"--{key}", str(value)]
    return args


def run_bundle(bundle: str, *configs: str, torchrun: int = 0, timeout: int = 600, **overrides) -> subprocess.CompletedProcess:
    """Run ``configs`` of ``bundle`` in a fresh process from the repository root; returns the completed process."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    if torchrun:
        # gloo ranks on the CPU, also on a GPU machine (multi_gpu_train.json would put rank r on cuda:r)
        env["CUDA_VISIBLE_DEVICES"] = ""
        # --standalone: a rendezvous on a free local port (two test workers never share one)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(torchrun),
               "-m", "monai.bundle", "run"]
    else:
        cmd = [sys.executable, "-m", "monai.bundle", "run"]
    cmd += ["--config_file", config_files(bundle, *configs)] + _args(overrides)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def run_script(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m monai.bundle <args>`` from the repository root."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def check(proc: subprocess.CompletedProcess) -> str:
    """The output of a successful run; on failure an AssertionError with its tail."""
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise AssertionError(f"command failed ({proc.returncode}): {' '.join(proc.args)}\n{out[-6000:]}")
    return out
