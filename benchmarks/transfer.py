"""The transfer benchmark: does the Deep Weight Prior help, at N = 5, 10, 15, 20 target training cases?

Protocol of Kuzina, Egorov & Burnaev (2019, "Bayesian Generative Models for Knowledge Transfer in MRI Semantic
Segmentation Problems", Frontiers in Neuroscience 13:844): source networks and the kernel prior are trained once on
the source task (MS-like phantoms) and reused; every target method is trained on nested subsets of N target cases
(tumour phantoms, binary whole tumour), with several seeds, the same optimiser-step budget and patch size for every
method, checkpoints chosen on a fixed validation split, and evaluated on one fixed held-out test set.

Every run is a bundle command as users run it (``python -m monai.bundle run`` of ``dwp_finetune``'s ``train.json``,
then ``train.json`` + ``evaluate.json`` with Monte Carlo sliding-window evaluation). Each finished run is one row of
``<results>/transfer.csv`` (seed, N, method, budget, wall time, metrics), appended as it finishes: an interrupted
benchmark resumes where it stopped and never redoes a row. ``transfer.md`` (mean ± sd per method and N, the paired
difference of ``dwp`` against each other method with its 95 % t-interval over seeds, best per column in bold) and
``transfer.png`` (Dice and ECE against N, one line per method) are written from the CSV after every run.

Scales (``--scale``):

- ``tiny``: seconds per stage, for the test suite (6 mm phantoms, 16³ patches, one epoch).
- ``cpu``: the paper's protocol reduced for 2 CPU cores: 3 mm phantoms, 32³ patches, 120 optimiser steps per run,
  5 Monte Carlo samples; what is reduced is written into ``transfer.md``.
- ``paper``: the full setting for a GPU (2 mm phantoms, 64³ patches, 1,000 optimiser steps, 10 samples).

Usage::

    python benchmarks/transfer.py --scale cpu
"""

from __future__ import annotations

import csv
import dataclasses
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _stats import paired_interval  # noqa: E402
from monai_dwp.bundle_utils import run_name  # noqa: E402
from monai_dwp.pipeline import PipelineSettings, StageRunner, default_bundles_dir, make_handoffs  # noqa: E402
from monai_dwp.report import collect_metrics  # noqa: E402
from monai_dwp.transfer import METHODS  # noqa: E402
from monai_dwp.utils.io import atomic_write  # noqa: E402

CITATION = ("Kuzina, Egorov & Burnaev (2019), Bayesian Generative Models for Knowledge Transfer in MRI Semantic "
            "Segmentation Problems, Frontiers in Neuroscience 13:844")
METRICS = ("val_mean_dice", "val_iou", "val_hd95", "ece", "fg_ece", "auc_mutual_information")
LABELS = {"val_mean_dice": "Dice ↑", "val_iou": "IoU ↑", "val_hd95": "HD95 ↓", "ece": "ECE ↓",
          "fg_ece": "fg ECE ↓", "auc_mutual_information": "AUC MI→error ↑"}
HIGHER_IS_BETTER = {"val_mean_dice", "val_iou", "auc_mutual_information"}
BUDGET_KEYS = ("scale", "steps", "patch_size", "spacing", "mc_samples")


@dataclasses.dataclass(frozen=True)
class TransferScale:
    """One setting of the benchmark.

    Attributes:
        handoffs: sizes of the data, the source networks and the prior (:class:`PipelineSettings`); its
            ``num_target_pool`` must hold ``max(sizes) + num_val_cases`` cases and ``num_target_test`` is the fixed
            test set.
        sizes: the target training sizes N (nested subsets).
        seeds: the seeds of every (method, N).
        methods: the target methods.
        steps: optimiser steps per run, the same for every method and N (epochs = steps / iterations per epoch).
        validations: about how many validations a run makes (checkpoint selection on the validation split).
        reduced: what this scale reduces against the paper, for ``transfer.md``.
    """

    handoffs: PipelineSettings
    sizes: tuple[int, ...]
    seeds: tuple[int, ...]
    methods: tuple[str, ...]
    steps: int
    validations: int
    reduced: str


SCALES: dict[str, TransferScale] = {
    "tiny": TransferScale(
        handoffs=dataclasses.replace(PipelineSettings.quick(), num_target_pool=5, num_target_test=1, seeds=(0,)),
        sizes=(2, 3), seeds=(0,), methods=("random_init", "dwp"), steps=2, validations=1,
        reduced="a smoke test: 6 mm phantoms, 16³ patches, 2 optimiser steps; its numbers mean nothing",
    ),
    "cpu": TransferScale(
        handoffs=dataclasses.replace(PipelineSettings.default(), num_target_pool=23, num_target_test=20,
                                     mc_samples=5),
        sizes=(5, 10, 15, 20), seeds=(0, 1, 2), methods=METHODS, steps=120, validations=8,
        reduced="3 mm phantoms (the paper: 1 mm BraTS), 32³ patches, 120 optimiser steps per run, 5 Monte Carlo "
                "samples, 3 seeds",
    ),
    "paper": TransferScale(
        handoffs=dataclasses.replace(PipelineSettings.default(), spacing=2.0, patch_size=64, num_target_pool=23,
                                     num_target_test=20, pretrain_epochs=200, mc_samples=10),
        sizes=(5, 10, 15, 20), seeds=(0, 1, 2, 3, 4), methods=METHODS, steps=1000, validations=20,
        reduced="2 mm phantoms (the paper: 1 mm BraTS), 64³ patches",
    ),
}


def budget(scale: TransferScale, num_train_cases: int) -> tuple[int, int]:
    """``(epochs, val_interval)`` giving every method ``scale.steps`` optimiser steps at ``num_train_cases``."""
    per_epoch = math.ceil(num_train_cases / scale.handoffs.batch_size)
    epochs = max(1, round(scale.steps / per_epoch))
    return epochs, max(1, epochs // scale.validations)


def _values(rows: list[dict[str, str]], method: str, n: int, metric: str) -> dict[int, float]:
    return {int(r["seed"]): float(r[metric]) for r in rows
            if r["method"] == method and int(r["num_train_cases"]) == n and r.get(metric) not in (None, "", "nan")}


def write_markdown(rows: list[dict[str, str]], scale_name: str, scale: TransferScale, path: Path) -> None:
    """Mean ± sd per method and N (best per column in bold) and paired differences of ``dwp`` against the others."""
    sizes = sorted({int(r["num_train_cases"]) for r in rows})
    methods = [m for m in scale.methods if any(r["method"] == m for r in rows)]
    lines = [f"# Transfer benchmark (`--scale {scale_name}`)", "",
             f"Protocol of {CITATION}: source nets and kernel prior trained once on MS-like phantoms, target methods "
             f"on nested subsets of N tumour phantoms, {scale.steps} optimiser steps per run for every method and N, "
             "best validation checkpoint, one fixed held-out test set. Reduced against the paper: "
             f"{scale.reduced}. Written by `benchmarks/transfer.py` from `transfer.csv`.", ""]
    for metric in ("val_mean_dice", "ece"):
        lines += [f"## {LABELS[metric]} (mean ± sd over seeds)", "",
                  "| method | " + " | ".join(f"N = {n}" for n in sizes) + " |", "|---|" + "---|" * len(sizes)]
        means = {(m, n): statistics.mean(v.values()) for m in methods for n in sizes
                 if (v := _values(rows, m, n, metric))}
        best = {n: (max if metric in HIGHER_IS_BETTER else min)(
            (means[(m, n)] for m in methods if (m, n) in means), default=None) for n in sizes}
        for m in methods:
            cells = []
            for n in sizes:
                v = list(_values(rows, m, n, metric).values())
                if not v:
                    cells.append("–")
                    continue
                text = f"{statistics.mean(v):.3f} ± {statistics.pstdev(v):.3f} ({len(v)})"
                cells.append(f"**{text}**" if means[(m, n)] == best[n] else text)
            lines.append(f"| `{m}` | " + " | ".join(cells) + " |")
        lines.append("")
    if "dwp" in methods:
        lines += ["## Paired difference `dwp` − method (Dice; mean [95 % t-interval] over the seeds both ran)", "",
                  "| method | " + " | ".join(f"N = {n}" for n in sizes) + " |", "|---|" + "---|" * len(sizes)]
        for m in [m for m in methods if m != "dwp"]:
            cells = []
            for n in sizes:
                ref, other = _values(rows, "dwp", n, "val_mean_dice"), _values(rows, m, n, "val_mean_dice")
                seeds = sorted(set(ref) & set(other))
                if not seeds:
                    cells.append("–")
                    continue
                mean, lo, hi = paired_interval([ref[s] - other[s] for s in seeds])
                cells.append(f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}]" if len(seeds) > 1 else f"{mean:+.3f} (1 seed)")
            lines.append(f"| `{m}` | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["![transfer](transfer.png)", ""]
    text = "\n".join(lines)
    atomic_write(path, "w", lambda f: f.write(text))


def write_figure(rows: list[dict[str, str]], scale: TransferScale, path: Path) -> None:
    """Dice (left) and ECE (right) against N, mean ± sd over seeds, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({int(r["num_train_cases"]) for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("val_mean_dice", "ece")):
        for m in [m for m in scale.methods if any(r["method"] == m for r in rows)]:
            pts = [(n, list(_values(rows, m, n, metric).values())) for n in sizes]
            pts = [(n, v) for n, v in pts if v]
            ax.errorbar([n for n, _ in pts], [statistics.mean(v) for _, v in pts],
                        yerr=[statistics.pstdev(v) for _, v in pts], marker="o", capsize=3, label=m)
        ax.set_xlabel("target training cases N")
        ax.set_ylabel(LABELS[metric])
        ax.set_xticks(sizes)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    with open(path.with_suffix(".tmp.png"), "wb") as f:
        fig.savefig(f, dpi=90)
    plt.close(fig)
    path.with_suffix(".tmp.png").replace(path)


def main(scale: str = "cpu", work_dir: str = "runs/transfer", results: str | None = None, device: str | None = None,
         bundles_dir: str | None = None, methods: str | None = None) -> Path:
    """Run (or resume) the benchmark and write ``transfer.csv``, ``transfer.md`` and ``transfer.png``.

    Args:
        scale: ``tiny``, ``cpu`` or ``paper`` (see the module docstring).
        work_dir: where the phantoms, the runs and the logs go.
        results: the folder of the three result files (default ``benchmarks/results``; ``<work_dir>/results`` for
            ``tiny``).
        device: ``cpu`` or ``cuda`` (default: CUDA when available).
        bundles_dir: the ``bundles/`` folder to run (default: the repository's; its ``models/`` receive the source
            nets and the prior, which are reused when they exist).
        methods: comma-separated subset of the scale's methods.

    Returns:
        the path of ``transfer.md``.
    """
    from tqdm import tqdm

    if scale not in SCALES:
        raise SystemExit(f"--scale must be one of {sorted(SCALES)}, got {scale!r}.")
    s = SCALES[scale]
    if methods:
        chosen = tuple(m.strip() for m in str(methods).split(","))
        unknown = [m for m in chosen if m not in s.methods]
        if unknown:
            raise SystemExit(f"--methods {unknown} are not methods of --scale {scale}: {s.methods}.")
        s = dataclasses.replace(s, methods=chosen)
    need = max(s.sizes) + s.handoffs.num_val_cases
    if s.handoffs.num_target_pool < need:
        raise SystemExit(f"scale {scale}: num_target_pool {s.handoffs.num_target_pool} < max(N) + validation {need}.")
    work = Path(work_dir).resolve()
    # a smoke test never overwrites the committed results
    default_out = work / "results" if scale == "tiny" else ROOT / "benchmarks" / "results"
    out = Path(results).resolve() if results else default_out
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "transfer.csv"
    bundles = Path(bundles_dir).resolve() if bundles_dir else default_bundles_dir()
    runner = StageRunner(work, device, False, bundles)
    h = s.handoffs
    handoffs = make_handoffs(runner, h, work / "data")
    common = {"spacing": [h.spacing] * 3, "patch_size": [h.patch_size] * 3, "batch_size": h.batch_size,
              "num_samples": h.num_samples, "dataset_dir": handoffs["target_data"],
              "num_val_cases": h.num_val_cases, "source_ckpt": handoffs["source_ckpt"],
              "prior_ckpt": handoffs["prior_ckpt"], "max_kernels": h.max_kernels}
    budget_row = {"scale": scale, "steps": s.steps, "patch_size": h.patch_size, "spacing": h.spacing,
                  "mc_samples": h.mc_samples}
    rows = list(csv.DictReader(csv_path.open())) if csv_path.is_file() else []
    same = [r for r in rows if all(str(r.get(k)) == str(v) for k, v in budget_row.items())]
    done = {(r["method"], int(r["num_train_cases"]), int(r["seed"])) for r in same}
    # N by N, seed by seed: an interrupted benchmark leaves complete (method) sets for the sizes it reached
    jobs = [(n, seed, m) for n in s.sizes for seed in s.seeds for m in s.methods if (m, n, seed) not in done]
    for n, seed, method in tqdm(jobs, desc="transfer runs", unit="run"):
        epochs, val_interval = budget(s, n)
        ckpt_dir = work / "runs" / run_name(method, n, seed)
        args = dict(common, method=method, num_train_cases=n, seed=seed, ckpt_dir=ckpt_dir)
        start = time.perf_counter()
        runner.run(f"{run_name(method, n, seed)}_train",
                   runner.bundle("dwp_finetune", ["train"], epochs=epochs, val_interval=val_interval, **args),
                   [ckpt_dir / "model.pt"])
        train_s = time.perf_counter() - start
        runner.run(f"{run_name(method, n, seed)}_evaluate",
                   runner.bundle("dwp_finetune", ["train", "evaluate"], mc_samples=h.mc_samples, **args),
                   [ckpt_dir / "eval" / "metrics.csv"])
        metrics = collect_metrics(ckpt_dir / "eval")
        row = {"method": method, "num_train_cases": n, "seed": seed, **budget_row, "epochs": epochs,
               "train_seconds": round(train_s, 1), "total_seconds": round(time.perf_counter() - start, 1),
               **{m: metrics.get(m, float("nan")) for m in METRICS}}
        new = not csv_path.is_file()
        with open(csv_path, "a", newline="") as f:  # one whole row per finished run
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
        same.append({k: str(v) for k, v in row.items()})
        write_markdown(same, scale, s, out / "transfer.md")
        write_figure(same, s, out / "transfer.png")
    if same and not jobs:
        write_markdown(same, scale, s, out / "transfer.md")
        write_figure(same, s, out / "transfer.png")
    return out / "transfer.md"


if __name__ == "__main__":
    import fire

    fire.Fire(main)
