"""Helpers shared by the benchmark scripts: device names, synchronisation, one measurement per fresh process."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

from monai_dwp.utils.machine import cpu_label

__all__ = ["sync", "device_name", "run_child", "find_row", "estimator_kwargs"]


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work so that wall-clock timings are complete."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: str) -> str:
    """The GPU's name, or the CPU's core count, processor and PyTorch thread count."""
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"{os.cpu_count()}-core CPU ({cpu_label()}, {platform.machine()}), {torch.get_num_threads()} PyTorch threads"


def run_child(script: str, **kwargs: object) -> dict:
    """Run ``script --child <json kwargs>`` in a fresh process (its own peak memory) and parse its last line."""
    cmd = [sys.executable, script, "--child", json.dumps(kwargs)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def bundle_default(bundle: str, key: str, bundles_dir: Path | None = None) -> object:
    """The default value of ``key`` in ``<bundles_dir>/<bundle>/configs/train.json`` (default: the repository's
    bundles), e.g. ``bundle_default("dwp_finetune", "sw_overlap")``."""
    from monai_dwp.pipeline import default_bundles_dir

    config = (bundles_dir or default_bundles_dir()) / bundle / "configs" / "train.json"
    return json.loads(config.read_text())[key]


def find_row(rows: list[dict], **match: object) -> dict:
    """The first row whose items include ``match``."""
    return next(r for r in rows if all(r.get(k) == v for k, v in match.items()))


def estimator_kwargs(setting: str) -> dict[str, int | bool | str]:
    """``DeepWeightPrior`` arguments of an estimator named ``all``, ``max_kernels=<m>`` or ``refresh=<R>``, with
    ``+cv`` for the Gaussian control variate and ``+bf16`` for bfloat16 VAE passes (``compute_dtype``), e.g.
    ``all+cv``, ``refresh=16+cv`` or ``refresh=4+cv+bf16``."""
    base, *suffixes = setting.split("+")
    key, _, value = base.partition("=")
    usage = (f"--estimators: {setting!r} is not 'all', 'max_kernels=<m>' or 'refresh=<R>', each optionally with "
             "'+cv' and '+bf16', e.g. refresh=4, all+cv or refresh=16+cv+bf16.")
    if len(set(suffixes)) != len(suffixes) or not set(suffixes) <= {"cv", "bf16"}:
        raise SystemExit(usage)
    extra: dict[str, int | bool | str] = {}
    if "cv" in suffixes:
        extra["control_variate"] = True
    if "bf16" in suffixes:
        extra["compute_dtype"] = "bfloat16"
    if base == "all":
        return extra
    if key in ("max_kernels", "refresh") and value.isdigit():
        return {"max_kernels" if key == "max_kernels" else "refresh_interval": int(value), **extra}
    raise SystemExit(usage)
