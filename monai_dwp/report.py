"""``report.md`` of a pipeline run: the metrics table (methods × metrics), reliability diagram and montages."""

from __future__ import annotations

import csv
import os
import platform
from collections.abc import Mapping
from pathlib import Path

from monai_dwp.utils.io import atomic_write
from monai_dwp.utils.machine import cpu_label

__all__ = ["collect_metrics", "write_eval_summary", "write_report"]

_COLUMNS = (
    ("val_mean_dice", "Dice ↑"),
    ("val_iou", "IoU ↑"),
    ("val_pooled_dice", "pooled Dice ↑"),
    ("val_pooled_iou", "pooled IoU ↑"),
    ("val_hd95", "HD95 (voxels) ↓"),
    ("ece", "ECE ↓"),
    ("fg_ece", "foreground ECE ↓"),
    ("auc_entropy", "AUC entropy→error ↑"),
    ("auc_mutual_information", "AUC MI→error ↑"),
)


def _read_pairs(path: Path) -> dict[str, float]:
    """``name,value`` rows (MONAI's ``MetricsSaver`` ``metrics.csv``) or a header + one row (our summaries)."""
    if not path.is_file():
        return {}
    rows = list(csv.reader(path.open()))
    out: dict[str, float] = {}
    if rows and len(rows) == 2 and len(rows[0]) > 2:
        pairs = zip(rows[0], rows[1])
    else:
        pairs = ((r[0], r[1]) for r in rows if len(r) >= 2)
    for name, value in pairs:
        try:
            out[name] = float(value)
        except ValueError:
            continue
    return out


def collect_metrics(eval_dir: str | os.PathLike) -> dict[str, float]:
    """The summary metrics an ``evaluate.json`` run wrote to ``eval_dir``."""
    eval_dir = Path(eval_dir)
    metrics = _read_pairs(eval_dir / "metrics.csv")
    metrics.update(_read_pairs(eval_dir / "calibration_summary.csv"))
    return metrics


def _fmt(value: float | None) -> str:
    return "–" if value is None or value != value else f"{value:.3f}"


def write_eval_summary(eval_dir: str | os.PathLike, title: str = "Evaluation") -> Path:
    """``<eval_dir>/summary.md``: the summary metrics of an ``evaluate.json`` run as a markdown table, with links
    to the per-case CSV files and the reliability diagram. Returns its path."""
    eval_dir = Path(eval_dir)
    metrics = collect_metrics(eval_dir)
    lines = [f"# {title}", "", "| metric | value |", "|---|---|"]
    lines += [f"| {label} | {_fmt(metrics.get(key))} |" for key, label in _COLUMNS if key in metrics]
    lines += ["", "Per case: " + ", ".join(f"[{p.name}]({p.name})" for p in sorted(eval_dir.glob("*_raw.csv")))]
    if (eval_dir / "calibration.csv").is_file():
        lines += ["", "Calibration per case: [calibration.csv](calibration.csv)", "",
                  "![reliability diagram](reliability.png)"]
    path = eval_dir / "summary.md"
    text = "\n".join(lines) + "\n"
    atomic_write(path, "w", lambda f: f.write(text))
    return path


def write_report(
    output_dir: str | os.PathLike,
    ckpt_dirs: Mapping[str, str | os.PathLike],
    num_train_cases: int,
    elapsed: float | None = None,
    montage_method: str = "dwp",
    num_montage_cases: int = 3,
) -> Path:
    """Write ``<output_dir>/report.md`` from the evaluated finetune runs.

    Args:
        output_dir: where the report (and its montage) go.
        ckpt_dirs: each method's run folder (its ``ckpt_dir``, holding ``eval/``), in table order.
        num_train_cases: the target training set size, for the text.
        elapsed: the pipeline's wall time in seconds.
        montage_method: the method whose held-out predictions are shown.
        num_montage_cases: how many cases the montage shows.

    Returns:
        The report's path.
    """
    from monai_dwp.visualize.uncertainty import save_uncertainty_montage

    out = Path(output_dir)
    runs = {method: Path(d) for method, d in ckpt_dirs.items()}
    lines = ["# monai_dwp pipeline report", "",
             f"Target: {num_train_cases} training cases of the tumour phantoms, evaluated on the held-out test cases "
             "with Monte Carlo inference (Bayesian methods) or one pass (deterministic methods).", ""]
    header = "| method | " + " | ".join(label for _, label in _COLUMNS) + " |"
    lines += [header, "|" + "---|" * (len(_COLUMNS) + 1)]
    for method, run in runs.items():
        metrics = collect_metrics(run / "eval")
        lines.append(f"| `{method}` | " + " | ".join(_fmt(metrics.get(key)) for key, _ in _COLUMNS) + " |")
    lines += ["", "Dice and IoU of the tumour class; HD95 in voxels of the evaluation grid; ECE (top label) and "
              "foreground ECE (tumour class) and the AUCs over the voxels inside the brain mask (input image > 0 in "
              "any channel, not the zero padding of the crop box), pooled over the test cases; AUC: how well "
              "voxel-wise uncertainty ranks misclassified voxels above correct ones (0.5 = no better than "
              "chance).", ""]
    if montage_method in runs:
        reliability = runs[montage_method] / "eval" / "reliability.png"
        if reliability.is_file():
            lines += [f"## Reliability diagram (`{montage_method}`)", "",
                      f"![reliability]({os.path.relpath(reliability, out)})", ""]
    predictions = runs[montage_method] / "eval" / "predictions" if montage_method in runs else None
    cases = []
    for seg in sorted(predictions.glob("*_seg.nii.gz"))[:num_montage_cases] if predictions else []:
        stem = seg.name[: -len("_seg.nii.gz")]
        case = {"image": predictions / f"{stem}_image.nii.gz", "label": predictions / f"{stem}_label.nii.gz",
                "pred": seg, "entropy": predictions / f"{stem}_entropy.nii.gz",
                "mutual_information": predictions / f"{stem}_mutual_information.nii.gz"}
        cases.append({k: v for k, v in case.items() if Path(v).is_file()})
    if cases and all({"image", "label", "pred"} <= set(c) for c in cases):
        montage = save_uncertainty_montage(cases, out / "montage.png", modality=0,
                                           title=f"{montage_method}: held-out target cases")
        lines += [f"## Segmentations and uncertainty (`{montage_method}`)", "", f"![montage]({montage.name})", ""]
    import torch

    lines += ["## Run", "", f"- machine: {cpu_label()} ({platform.machine()}), {os.cpu_count()} CPU cores, PyTorch "
              f"{torch.__version__}" + (f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "")]
    if elapsed is not None:
        lines.append(f"- wall time: {elapsed / 60:.1f} min")
    lines += [f"- logs and the bundle command of every stage: `{out / 'logs'}`", ""]
    path = out / "report.md"
    text = "\n".join(lines)
    atomic_write(path, "w", lambda f: f.write(text))
    return path
