"""Bundle runs of the benchmark scripts: their folders, their training logs and the machine they ran on."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from monai_dwp.utils.machine import cpu_label

__all__ = ["claim_run_dir", "best_validation", "case_calibration", "case_dice", "demo_evaluation", "describe_machine",
           "evaluation_machine", "evaluator_seconds", "logged_seconds", "mean_test_dice", "reuse_source_run",
           "trained_seconds", "write_rows"]

MARKER = "benchmark_run.json"
"""The file in a run folder that holds the settings (bundle overrides) of the run that made it."""


def claim_run_dir(ckpt_dir: Path, settings: dict[str, object]) -> None:
    """Make ``ckpt_dir`` the folder of a run with ``settings`` (its bundle overrides): a folder left by a run with
    other settings (another split, budget or protocol; or one from before this check) moves to
    ``<work_dir>/replaced/`` instead of being reused, so a stage is only skipped for outputs of this very run (a
    benchmark interrupted between training and evaluation resumes at the evaluation)."""
    marker = ckpt_dir / MARKER
    want = json.dumps(settings, sort_keys=True, default=str)
    if ckpt_dir.exists() and not (marker.is_file() and marker.read_text() == want):
        base = ckpt_dir.parent.parent / "replaced" / f"{ckpt_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        target, k = base, 1
        while target.exists():
            target, k = base.with_name(f"{base.name}-{k}"), k + 1
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(ckpt_dir), str(target))
        print(f"[move] {ckpt_dir.name}: made with other settings, moved to {target}", flush=True)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(want)


def logged_seconds(log: Path, event: str) -> float | None:
    """The time of the last Ignite ``<event>. Time taken: HH:MM:SS.fff`` line of a bundle log, in seconds (``event`` a
    regular expression, e.g. ``SupervisedEvaluator - INFO - Epoch\\[\\d+\\] Complete``); ``None`` when it records none
    or the log is missing."""
    found = re.findall(event + r"\. Time taken: (\d+):(\d+):([0-9.]+)", log.read_text(errors="replace")) \
        if log.is_file() else []
    if not found:
        return None
    hours, minutes, seconds = found[-1]
    return 3600 * int(hours) + 60 * int(minutes) + float(seconds)


def trained_seconds(log: Path) -> float | None:
    """The wall time of the last training run a training log records (Ignite's ``SupervisedTrainer ... Engine run
    finished. Time taken: HH:MM:SS.fff``), in seconds; ``None`` when it records none. What a resumed benchmark
    reports for a run whose training an earlier invocation finished (its own stage was skipped)."""
    return logged_seconds(log, r"SupervisedTrainer - INFO - Engine run finished")


def evaluator_seconds(log: Path) -> float:
    """The evaluator's wall time of the last run an evaluation log records (Ignite's ``SupervisedEvaluator ...
    Epoch[1] Complete. Time taken: HH:MM:SS.fff``).

    Raises:
        ValueError: the log records no evaluator time.
    """
    seconds = logged_seconds(log, r"SupervisedEvaluator - INFO - Epoch\[\d+\] Complete")
    if seconds is None:
        raise ValueError(f"no evaluator time in {log}; rerun the study with --force to evaluate again.")
    return seconds


def case_dice(eval_dir: Path) -> dict[str, float]:
    """``{case file name: Dice}`` from the ``val_mean_dice_raw.csv`` that the finetune bundle's ``evaluate.json``
    wrote."""
    with open(eval_dir / "val_mean_dice_raw.csv", newline="") as f:
        return {Path(row["filename"]).name: float(row["mean"]) for row in csv.DictReader(f)}


def case_calibration(eval_dir: Path) -> dict[str, dict[str, float]]:
    """``{case file name: {"ece": ..., "fg_ece": ..., "auc_entropy": ..., "auc_mutual_information": ...}}`` from the
    ``calibration.csv`` that the finetune bundle's ``evaluate.json`` wrote (per case, inside the brain mask)."""
    keys = ("ece", "fg_ece", "auc_entropy", "auc_mutual_information")
    with open(eval_dir / "calibration.csv", newline="") as f:
        return {Path(row["filename"]).name: {k: float(row[k]) for k in keys} for row in csv.DictReader(f)}


def demo_evaluation(demo: Path, methods: list[str], settings: Any) -> tuple[dict[str, Path], dict[str, object]]:
    """Where one finished ``make demo`` left its target networks, and how the pipeline evaluates them.

    Args:
        demo: the checkout where ``make demo`` ran (``data/tumour``, the hand-offs in ``bundles/*/models``, ``dwp`` in
            ``bundles/dwp_finetune/models``, the other methods in ``outputs/pipeline/runs``).
        methods: the target methods.
        settings: the pipeline's ``PipelineSettings`` that made them.

    Returns:
        ``({method: its ckpt_dir}, the finetune bundle's overrides shared by every evaluation)``.

    Raises:
        SystemExit: a network or hand-off is missing (``make demo`` has not run there).
    """
    from monai_dwp.bundle_utils import run_name

    models = demo / "bundles"
    source = models / "dwp_pretrain" / "models" / f"seed{settings.seeds[0]}"
    prior = models / "dwp_prior" / "models" / "dwp_prior.pt"
    ckpts = {m: models / "dwp_finetune" / "models" if m == "dwp" else
             demo / "outputs" / "pipeline" / "runs" / run_name(m, settings.num_train_cases, 0) for m in methods}
    missing = [str(p) for p in [*(c / "model.pt" for c in ckpts.values()), source / "model.pt", prior]
               if not p.is_file()]
    if missing:
        raise SystemExit(f"--demo_dir {str(demo)!r} lacks {missing}; run `make demo` there first (`python -m "
                         "monai_dwp pipeline --methods all` for the methods beyond the paper).")
    common = dict(dataset_dir=demo / "data" / "tumour", num_train_cases=settings.num_train_cases,
                  num_val_cases=settings.num_val_cases, source_ckpt=source / "model.pt", prior_ckpt=prior,
                  swag_ckpt=source / "swag.pt", prior_refresh_interval=settings.prior_refresh_interval,
                  spacing=[settings.spacing] * 3, patch_size=[settings.patch_size] * 3, batch_size=settings.batch_size,
                  num_samples=settings.num_samples)
    return ckpts, common


def best_validation(log: Path) -> tuple[float, int]:
    """``(best validation Dice, its epoch)`` from the last ``Key metric`` line Ignite's checkpoint logging wrote to
    a training log (``(nan, -1)`` when there is none)."""
    found = re.findall(r"Key metric: val_mean_dice best value: ([0-9.eE+-]+) at epoch: (\d+)",
                       log.read_text(errors="replace")) if log.is_file() else []
    return (float(found[-1][0]), int(found[-1][1])) if found else (float("nan"), -1)


def describe_machine(device: str | None, workers: int) -> str:
    """The machine in words, for a results file: processor, cores, PyTorch, device, load average at the start."""
    import torch

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(0) if dev.startswith("cuda") and torch.cuda.is_available() else cpu_label()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"run on {name} ({os.cpu_count()} CPU cores), PyTorch {torch.__version__}, device {dev}, {workers} "
            f"run(s) side by side, load average {load:.1f} at the start")


def evaluation_machine(workers: int, load_before: tuple[float, float, float], what: str = "evaluation") -> str:
    """The machine of a study of evaluations (or other ``what``) run ``workers`` side by side, in words: cores,
    processor, PyTorch, threads per evaluation and the load average when the study started (``load_before``) and
    now."""
    import torch

    return (f"{os.cpu_count()}-core CPU ({cpu_label()}), PyTorch {torch.__version__}, {workers} {what}(s) side by "
            f"side with {max(1, (os.cpu_count() or 1) // workers)} thread(s) each; load average {load_before[0]:.2f} "
            f"when this call started, {os.getloadavg()[0]:.2f} when it ended")


def write_rows(path: Path, rows: list[dict[str, object]], fields: list[str]) -> None:
    """Write ``rows`` as a CSV with the columns ``fields`` to ``path``, atomically (a reader never sees half a file)."""
    from monai_dwp.utils.io import atomic_write

    def write(f) -> None:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)

    atomic_write(path, "w", write)


def mean_test_dice(eval_dir: Path) -> float:
    """The mean test Dice that an evaluate config's ``AtomicMetricsSaver`` wrote to ``<eval_dir>/metrics.csv``.

    Raises:
        ValueError: the file holds no ``val_mean_dice``.
    """
    from monai_dwp.report import collect_metrics

    metrics = collect_metrics(eval_dir)
    if "val_mean_dice" not in metrics:
        raise ValueError(f"no val_mean_dice in {eval_dir / 'metrics.csv'}")
    return metrics["val_mean_dice"]


def reuse_source_run(runner: Any, spec: str, logs: Path, epochs: int, prefix: str) -> None:
    """Copy a source net that the pipeline trained (``spec`` = ``seed<S>=<folder>``, its training log
    ``<logs>/pretrain_seed<S>.log``) into a study's layout as the run ``<prefix>_seed<S>`` (folder
    ``<output_dir>/runs/``, log ``<output_dir>/logs/train_<prefix>_seed<S>.log``), where its stages are then skipped.

    Raises:
        SystemExit: ``spec`` is malformed, ``<folder>`` holds no finished ``epochs``-epoch run, or the log is missing.
    """
    seed_text, _, folder = spec.partition("=")
    match = re.fullmatch(r"seed(\d+)", seed_text)
    if not match or not (Path(folder) / f"checkpoint_epoch={epochs}.pt").is_file():
        raise SystemExit(f"--reuse {spec!r}: give seed<S>=<folder> with a finished {epochs}-epoch run in <folder>.")
    log = logs / f"pretrain_seed{match.group(1)}.log"
    if not log.is_file():
        raise SystemExit(f"--reuse {spec!r}: no training log {log}; pass --reuse_logs with the pipeline's logs/.")
    dst = runner.output_dir / "runs" / f"{prefix}_seed{match.group(1)}"
    if not dst.exists():
        shutil.copytree(folder, dst, ignore=shutil.ignore_patterns("eval*", "predictions"))
        shutil.copy(log, runner.log_dir / f"train_{prefix}_seed{match.group(1)}.log")
