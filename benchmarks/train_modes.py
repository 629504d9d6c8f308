"""Which training mode reaches a given validation Dice sooner: ``local`` against ``sampled``, and the estimators of
the Deep Weight Prior term, measured on the finetune bundle in wall-clock seconds.

DESIGN §3 leaves open whether local reparameterization (``train_mode local``: two convolutions per layer, one
noise draw per output element) or one weight draw per step (``sampled``: one convolution, noisier gradient) trains
better per second. Each variant below is the finetune bundle as users run it (``python -m monai.bundle run
--config_file bundles/dwp_finetune/configs/train.json`` with overrides) on N target cases of the transfer
benchmark's phantoms, with the same optimiser steps, seeds and splits; the training log gives, at each validation,
the validation Dice and the training seconds so far (Ignite's epoch time minus the validation's own time, so that
validation is not counted). Runs of the same seed go side by side, so that both modes share the machine alike.

Writes ``<results>/train_modes.csv`` (one row per validation of every run), ``train_modes.md`` (seconds per step,
the best-so-far validation Dice at fixed training times, paired differences over seeds) and ``train_modes.png``
(validation Dice against training seconds). Finished runs are reused: an interrupted study resumes.

Usage::

    python -m monai_dwp make-data --disease tumour --num-cases 23 --num-test 20 --spacing 3 \\
        --output-dir runs/phantoms_3mm/tumour
    python benchmarks/train_modes.py --work_dir runs/train_modes --data_dir runs/phantoms_3mm/tumour \\
        --prior_ckpt bundles/dwp_prior/models/dwp_prior.pt --workers 2
"""

from __future__ import annotations

import csv
import math
import os
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _stats import paired_interval  # noqa: E402
from monai_dwp.pipeline import StageRunner, default_bundles_dir, stop_stages_on_sigterm  # noqa: E402
from monai_dwp.utils.io import atomic_write  # noqa: E402
from monai_dwp.utils.validation import check_int  # noqa: E402

VARIANTS: dict[str, dict[str, object]] = {
    # every dwp variant without the Gaussian control variate, as its recorded runs (the bundle's default since 0.5.0)
    # the Deep Weight Prior term refreshed on a rotating quarter of the kernels per step, in both modes
    "dwp/local/refresh_4": {"method": "dwp", "train_mode": "local", "max_kernels": "None",
                            "prior_refresh_interval": 4, "prior_control_variate": False},
    "dwp/sampled/refresh_4": {"method": "dwp", "train_mode": "sampled", "max_kernels": "None",
                              "prior_refresh_interval": 4, "prior_control_variate": False},
    # the bundles' mode with a rotating sixteenth of the kernels per step (their estimator before 0.5.0)
    "dwp/sampled/refresh_16": {"method": "dwp", "train_mode": "sampled", "max_kernels": "None",
                               "prior_refresh_interval": 16, "prior_control_variate": False},
    # the same with the VAE passes of the term in float32 (the bundle's default `auto` uses bfloat16 where the
    # device multiplies it in hardware)
    "dwp/sampled/refresh_16/float32": {"method": "dwp", "train_mode": "sampled", "max_kernels": "None",
                                       "prior_refresh_interval": 16, "prior_compute_dtype": "float32",
                                       "prior_control_variate": False},
    "gaussian_prior/local": {"method": "gaussian_prior", "train_mode": "local"},
    "gaussian_prior/sampled": {"method": "gaussian_prior", "train_mode": "sampled"},
    # the term's estimators (local mode): every kernel at every step, and the earlier per-group subsample
    "dwp/local/all_kernels": {"method": "dwp", "train_mode": "local", "max_kernels": "None",
                              "prior_refresh_interval": 1, "prior_control_variate": False},
    "dwp/local/max_kernels_2048": {"method": "dwp", "train_mode": "local", "max_kernels": 2048,
                                   "prior_refresh_interval": 1, "prior_control_variate": False},
}
"""``name -> bundle overrides``; names are ``<method>/<train_mode>[/<prior estimator>]``."""

MODE_PAIRS = (("dwp/local/refresh_4", "dwp/sampled/refresh_4"), ("gaussian_prior/local", "gaussian_prior/sampled"))
ESTIMATOR_PAIRS = (("dwp/local/refresh_4", "dwp/local/all_kernels"),
                   ("dwp/local/refresh_4", "dwp/local/max_kernels_2048"),
                   ("dwp/sampled/refresh_4", "dwp/sampled/refresh_16"),
                   ("dwp/sampled/refresh_16", "dwp/sampled/refresh_16/float32"))
FIELDS = ("variant", "seed", "num_train_cases", "steps", "epoch", "step", "train_seconds", "val_dice")


def _seconds(text: str) -> float:
    hours, minutes, seconds = text.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def parse_log(log: Path, steps_per_epoch: int) -> list[dict[str, float]]:
    """``[{epoch, step, train_seconds, val_dice}]`` at every validation of a finetune training log.

    ``train_seconds`` adds up the trainer's epoch times (Ignite's ``Epoch[k] Complete. Time taken``, which include
    the validation run at that epoch's end) less the evaluator's own time.
    """
    text = log.read_text(errors="replace") if log.is_file() else ""
    trainer = {int(e): _seconds(t) for e, t in
               re.findall(r"SupervisedTrainer - INFO - Epoch\[(\d+)\] Complete\. Time taken: ([0-9:.]+)", text)}
    evaluator = {int(e): _seconds(t) for e, t in
                 re.findall(r"SupervisedEvaluator - INFO - Epoch\[(\d+)\] Complete\. Time taken: ([0-9:.]+)", text)}
    dice = {int(e): float(v) for e, v in re.findall(r"Epoch\[(\d+)\] Metrics -- val_mean_dice: ([0-9.eE+-]+)", text)}
    rows, elapsed = [], 0.0
    for epoch in sorted(trainer):
        elapsed += trainer[epoch] - evaluator.get(epoch, 0.0)
        if epoch in dice:
            rows.append({"epoch": epoch, "step": epoch * steps_per_epoch, "train_seconds": round(elapsed, 2),
                         "val_dice": dice[epoch]})
    return rows


def best_so_far(rows: list[dict[str, float]], seconds: float) -> float:
    """The best validation Dice among the validations reached within ``seconds`` of training (nan before the
    first): what a run stopped at that time would keep as its best checkpoint."""
    reached = [r["val_dice"] for r in rows if r["train_seconds"] <= seconds]
    return max(reached) if reached else float("nan")


def write_results(rows: list[dict[str, object]], out: Path, machine: str, settings: str) -> None:
    """``train_modes.md`` and ``train_modes.png`` from the rows of finished runs."""
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    for r in rows:
        runs.setdefault((str(r["variant"]), int(r["seed"])), []).append(
            {k: float(r[k]) for k in ("epoch", "step", "train_seconds", "val_dice")})
    variants = [v for v in VARIANTS if any(k[0] == v for k in runs)]
    seeds = sorted({k[1] for k in runs})
    total = {k: max(r["train_seconds"] for r in v) for k, v in runs.items()}
    steps = {k: max(r["step"] for r in v) for k, v in runs.items()}
    horizon = min(total.values()) if total else 0.0
    marks = [horizon / 4, horizon / 2, horizon]
    lines = ["# Training per second: `local` against `sampled`, and the Deep Weight Prior term's estimators", "",
             f"Written by `python benchmarks/train_modes.py`. {settings} Machine: {machine}.", "",
             "Validation Dice is the best so far (the checkpoint a run stopped at that time would keep); training "
             "seconds leave validation out. Mean ± sd over seeds, paired differences with a 95 % t-interval over "
             "seeds.", "",
             "| variant | seeds | seconds per step | " + " | ".join(f"Dice at {t:.0f} s" for t in marks)
             + " | best Dice (whole run) |",
             "|---|---|---|" + "---|" * len(marks) + "---|"]

    def fmt(values: list[float]) -> str:
        values = [v for v in values if not math.isnan(v)]
        if not values:
            return "–"
        return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 \
            else f"{values[0]:.3f}"

    for v in variants:
        keys = [(v, s) for s in seeds if (v, s) in runs]
        per_step = [total[k] / steps[k] for k in keys]
        lines.append(f"| `{v}` | {len(keys)} | {fmt(per_step)} | "
                     + " | ".join(fmt([best_so_far(runs[k], t) for k in keys]) for t in marks)
                     + f" | {fmt([max(r['val_dice'] for r in runs[k]) for k in keys])} |")
    lines += ["", "Paired differences (first − second), mean [95 % interval] over the seeds both ran:", "",
              "| pair | seconds per step | " + " | ".join(f"Dice at {t:.0f} s" for t in marks) + " |",
              "|---|---|" + "---|" * len(marks)]
    for a, b in MODE_PAIRS + ESTIMATOR_PAIRS:
        both = [s for s in seeds if (a, s) in runs and (b, s) in runs]
        if not both:
            continue

        def diff(f) -> str:
            d = [f((a, s)) - f((b, s)) for s in both]
            d = [x for x in d if not math.isnan(x)]
            if len(d) < 2:
                return f"{d[0]:+.3f} (1 seed)" if d else "–"
            mean, low, high = paired_interval(d)
            return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"

        lines.append(f"| `{a}` − `{b}` | {diff(lambda k: total[k] / steps[k])} | "
                     + " | ".join(diff(lambda k, t=t: best_so_far(runs[k], t)) for t in marks) + " |")
    atomic_write(out / "train_modes.md", "w", lambda f: f.write("\n".join(lines) + "\n"))
    _plot(runs, variants, seeds, out / "train_modes.png")


def _plot(runs: dict, variants: list[str], seeds: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(v.split("/")[0] for v in variants))
    fig, axes = plt.subplots(1, len(methods), figsize=(5.5 * len(methods), 4), squeeze=False)
    colours = {v: f"C{i}" for i, v in enumerate(variants)}
    for ax, method in zip(axes[0], methods):
        for v in (v for v in variants if v.startswith(method + "/")):
            for i, s in enumerate(s for s in seeds if (v, s) in runs):
                r = runs[(v, s)]
                ax.plot([p["train_seconds"] for p in r], [best_so_far(r, p["train_seconds"]) for p in r],
                        color=colours[v], alpha=0.8, marker=".", label=v if i == 0 else None)
        ax.set_xlabel("training seconds (validation excluded)")
        ax.set_ylabel("best validation Dice so far")
        ax.set_title(method)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(data_dir: str, prior_ckpt: str, work_dir: str = "runs/train_modes", results: str | None = None,
         variants: str | None = None, seeds: str | int = "0,1,2", num_train_cases: int = 5, steps: int = 180,
         validations: int = 10, workers: int = 2, device: str = "cpu", spacing: float = 3.0,
         patch_size: int = 32, prior_note: str = "") -> Path:
    """Run (or resume) the study and write ``train_modes.{csv,md,png}``.

    Args:
        data_dir: a tumour dataset in the Decathlon layout (e.g. the transfer benchmark's ``data/tumour``).
        prior_ckpt: the ``dwp_prior.pt`` of the ``dwp`` variants.
        work_dir: where the runs and their logs go.
        results: the folder of the result files (default ``benchmarks/results``).
        variants: comma-separated names of :data:`VARIANTS` (default all).
        seeds: comma-separated seeds; each draws its own training and validation cases (``split_seed``).
        num_train_cases: N.
        steps: optimiser steps per run (rounded to whole epochs).
        validations: validations per run.
        workers: runs side by side, each with ``cpu_count // workers`` threads.
        device: ``cpu`` or ``cuda``.
        spacing: the phantoms' spacing in mm.
        patch_size: the training patch edge.
        prior_note: how the prior was made, for the report.
    """
    chosen = [v.strip() for v in str(variants).split(",")] if variants else list(VARIANTS)
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants {unknown} are not variants; choose from {list(VARIANTS)}.")
    seed_list = [check_int(int(s), "seeds", minimum=0) for s in str(seeds).split(",")]
    check_int(num_train_cases, "num_train_cases", minimum=1)
    check_int(steps, "steps", minimum=1)
    needed = [(data_dir, "data_dir")] + ([(prior_ckpt, "prior_ckpt")] if any(
        VARIANTS[v]["method"] == "dwp" for v in chosen) else [])
    for path, name in needed:
        if not Path(path).exists():
            raise SystemExit(f"--{name} {path!r} does not exist; make the transfer benchmark's hand-offs first "
                             "(`python benchmarks/transfer.py --scale cpu` makes both).")
    batch_size = 2
    per_epoch = math.ceil(num_train_cases / batch_size)
    epochs = max(1, round(steps / per_epoch))
    val_interval = max(1, epochs // validations)
    work = Path(work_dir).resolve()
    out = Path(results).resolve() if results else ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    runner = StageRunner(work, device, False, default_bundles_dir(), preload=True)
    jobs = [(v, s) for s in seed_list for v in chosen]
    chains = []
    for v, s in jobs:
        name = f"{v.replace('/', '-')}_seed{s}"
        ckpt_dir = work / "runs" / name
        cmd = runner.bundle("dwp_finetune", ["train"], dataset_dir=Path(data_dir).resolve(),
                            prior_ckpt=Path(prior_ckpt).resolve(), num_train_cases=num_train_cases, seed=s,
                            split_seed=s, epochs=epochs, val_interval=val_interval, ckpt_dir=ckpt_dir,
                            spacing=[spacing] * 3, patch_size=[patch_size] * 3, batch_size=batch_size,
                            **VARIANTS[v])
        chains.append([(name, cmd, [ckpt_dir / f"checkpoint_epoch={epochs}.pt"])])
    from tqdm import tqdm

    with tqdm(total=len(chains), desc="train_modes runs", unit="run") as bar:
        runner.run_chains(chains, bar, workers=workers)
    rows = []
    # every finished run of these settings in work_dir, also those of earlier calls with other --variants
    for v, s in ((v, s) for s in seed_list for v in VARIANTS):
        name = f"{v.replace('/', '-')}_seed{s}"
        if not (work / "runs" / name / f"checkpoint_epoch={epochs}.pt").is_file():
            continue
        for r in parse_log(runner.log_dir / f"{name}.log", per_epoch):
            rows.append({"variant": v, "seed": s, "num_train_cases": num_train_cases, "steps": epochs * per_epoch,
                         **r})
    atomic_write(out / "train_modes.csv", "w", lambda f: _write_csv(f, rows))
    import torch

    from _common import device_name

    where = device_name(device).rsplit(", ", 1)[0] if device == "cpu" else device_name(device)
    machine = (f"{where}, PyTorch "
               f"{torch.__version__}, device {device}, {workers} run(s) side by side with "
               f"{max(1, (os.cpu_count() or 1) // workers)} thread(s) each")
    settings = (f"N = {num_train_cases} target cases, {epochs * per_epoch} optimiser steps (batch {batch_size} × 2 "
                f"patches of {patch_size}³, Adam, constant learning rate), validation every {val_interval} epochs "
                f"({val_interval * per_epoch} steps), seeds {', '.join(map(str, seed_list))}, each with its own "
                f"training and validation cases."
                + (f" The `dwp` variants use {prior_note}." if prior_note else ""))
    write_results(rows, out, machine, settings)
    return out / "train_modes.md"


def _write_csv(f, rows: list[dict[str, object]]) -> None:
    writer = csv.DictWriter(f, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows(rows)


if __name__ == "__main__":
    import fire

    stop_stages_on_sigterm()  # `kill` stops the running stages with the benchmark
    fire.Fire(main)
