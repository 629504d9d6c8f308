"""Paired comparison at one training size: ``dwp`` against its baselines and ablations, several seeds.

Every run is the finetune bundle as users run it (``python -m monai.bundle run`` train, then train+evaluate with
Monte Carlo sliding-window evaluation on the fixed held-out test cases), with the same data, split, patch size
and budget; only ``method`` and the named overrides differ. Seeds pair the runs: seed ``s`` of every variant
shares the training cases and the validation split; it changes the initialisation, patch sampling and noise.

Writes ``<results>/dwp_ablation.csv`` (one row per run with its budget, appended as runs finish: an interrupted
benchmark resumes where it stopped, nothing is redone) and ``dwp_ablation.md``: mean ± sd per variant and the
paired difference of ``dwp`` minus each other variant with its 95 % t-interval over seeds, over the runs of the
requested budget only (epochs, validation interval, Monte Carlo samples); runs of another budget stay in the CSV.

Usage::

    python benchmarks/dwp_ablation.py --seeds 0 1 2 --epochs 40 --mc_samples 5
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(ROOT))

from _stats import paired_interval  # noqa: E402
from monai_dwp.bundle_utils import run_name  # noqa: E402
from monai_dwp.report import collect_metrics  # noqa: E402

# name -> (method, overrides); "dwp" is the reference every other variant is compared with
VARIANTS: dict[str, tuple[str, dict[str, object]]] = {
    "dwp": ("dwp", {}),
    "gaussian_prior": ("gaussian_prior", {}),
    "finetune": ("finetune", {}),
    "random_init": ("random_init", {}),
    "dwp without DWP init": ("dwp", {"dwp_init": False}),
    "dwp, temperature 0.1": ("dwp", {"kl_temperature": 0.1}),
    "dwp, temperature 5 (≈ old KL weight)": ("dwp", {"kl_temperature": 5.0}),
    "dwp, log_scale lr 0.01": ("dwp", {"log_scale_lr": 0.01}),
    # every group has fewer kernels than this: all kernels every step (a None override is dropped by monai.bundle)
    "dwp, all kernels": ("dwp", {"max_kernels": 1_000_000}),
    "gaussian_prior, scale 0.02": ("gaussian_prior", {"prior_scale": 0.02}),
    "finetune_frozen": ("finetune_frozen", {}),
    "dwp_init": ("dwp_init", {}),
}
METRICS = ("val_mean_dice", "val_iou", "val_hd95", "ece", "fg_ece", "auc_mutual_information")


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def _cli(value: object) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"  # fire reads True/False as booleans, "false" as a (truthy) string
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_cli(v) for v in value) + "]"
    return str(value)


def _run(cmd: list[str], log: Path, threads: int | None) -> None:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    with open(log, "a") as f:
        f.write(" ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    if proc.returncode:
        raise RuntimeError(f"failed (exit {proc.returncode}): {' '.join(cmd)}; see {log}")


def write_markdown(rows: list[dict[str, str]], path: Path, header: str) -> None:
    """Mean ± sd per variant and paired differences against ``dwp``."""
    by: dict[str, dict[int, dict[str, str]]] = {}
    for r in rows:
        by.setdefault(r["variant"], {})[int(r["seed"])] = r
    lines = [header, "", "| variant | seeds | Dice | IoU | HD95 (voxels) | ECE | foreground ECE | AUC MI→error |",
             "|---|---|---|---|---|---|---|---|"]
    for name in [v for v in VARIANTS if v in by]:
        runs = list(by[name].values())
        cells = []
        for m in METRICS:
            vals = [float(r[m]) for r in runs if r.get(m) not in (None, "", "nan")]
            cells.append(f"{statistics.mean(vals):.3f} ± {statistics.pstdev(vals):.3f}" if vals else "–")
        lines.append(f"| `{name}` | {len(runs)} | " + " | ".join(cells) + " |")
    if "dwp" in by:
        lines += ["", "Paired difference `dwp` − variant over the seeds both ran (mean [95 % t-interval]); a positive "
                  "Dice difference favours `dwp`, a negative ECE difference favours `dwp`.", "",
                  "| variant | seeds | Δ Dice | Δ ECE | Δ foreground ECE |", "|---|---|---|---|---|"]
        for name in [v for v in VARIANTS if v in by and v != "dwp"]:
            seeds = sorted(set(by[name]) & set(by["dwp"]))
            if not seeds:
                continue
            cells = []
            for m in ("val_mean_dice", "ece", "fg_ece"):
                diffs = [float(by["dwp"][s][m]) - float(by[name][s][m]) for s in seeds]
                mean, lo, hi = paired_interval(diffs)
                cells.append(f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}]")
            lines.append(f"| `{name}` | {len(seeds)} | " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--num_train_cases", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--val_interval", type=int, default=5)
    parser.add_argument("--mc_samples", type=int, default=5)
    parser.add_argument("--dataset_dir", default="data/tumour")
    parser.add_argument("--output_dir", default="runs/dwp_ablation")
    parser.add_argument("--source_ckpt", default="bundles/dwp_pretrain/models/seed0/model.pt")
    parser.add_argument("--prior_ckpt", default="bundles/dwp_prior/models/dwp_prior.pt")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--results", default=str(RESULTS / "dwp_ablation.csv"))
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel, one PyTorch thread each")
    args = parser.parse_args()

    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants {unknown} unknown; choose from {list(VARIANTS)}")
    out = Path(args.results)
    out.parent.mkdir(parents=True, exist_ok=True)
    budget = {"epochs": str(args.epochs), "val_interval": str(args.val_interval), "mc_samples": str(args.mc_samples)}

    def same_budget(rows: list[dict[str, str]]) -> list[dict[str, str]]:
        """Only runs of this budget are paired and tabulated (runs of another budget stay in the CSV)."""
        return [r for r in rows if all(r.get(k) == v for k, v in budget.items())]

    previous = list(csv.DictReader(out.open())) if out.is_file() else []
    done = {(r["variant"], r["seed"]) for r in same_budget(previous)}
    logs = ROOT / args.output_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # variant by variant: an interrupted benchmark leaves complete seed sets for the variants it reached
    jobs = [(s, v) for v in args.variants for s in args.seeds if (v, str(s)) not in done]
    # parallel runs get one thread each: several PyTorch processes with several OpenMP threads on few cores
    # spin against each other and run many times slower than one after the other
    threads = 1 if args.jobs > 1 else None
    lock = threading.Lock()

    def one(seed: int, name: str) -> None:
        method, overrides = VARIANTS[name]
        ckpt = ROOT / args.output_dir / _slug(name) / run_name(method, args.num_train_cases, seed)
        common = {"method": method, "seed": seed, "num_train_cases": args.num_train_cases,
                  "dataset_dir": args.dataset_dir, "ckpt_dir": ckpt, "source_ckpt": args.source_ckpt,
                  "prior_ckpt": args.prior_ckpt, "device": args.device, **overrides}
        flags = [x for k, v in common.items() for x in (f"--{k}", _cli(v))]
        base = [sys.executable, "-m", "monai.bundle", "run", "--config_file"]
        log = logs / f"{run_name(_slug(name), None, seed)}.log"
        start = time.perf_counter()
        _run(base + ["bundles/dwp_finetune/configs/train.json", "--epochs", str(args.epochs),
                     "--val_interval", str(args.val_interval)] + flags, log, threads)
        train_s = time.perf_counter() - start
        _run(base + ["['bundles/dwp_finetune/configs/train.json','bundles/dwp_finetune/configs/evaluate.json']",
                     "--mc_samples", str(args.mc_samples)] + flags, log, threads)
        metrics = collect_metrics(ckpt / "eval")
        row = {"variant": name, "method": method, "seed": seed, "num_train_cases": args.num_train_cases,
               "epochs": args.epochs, "val_interval": args.val_interval, "mc_samples": args.mc_samples,
               "train_seconds": round(train_s, 1),
               "total_seconds": round(time.perf_counter() - start, 1), "threads": threads or "default",
               **{m: metrics.get(m, float("nan")) for m in METRICS}}
        with lock:
            new = not out.is_file()
            with open(out, "a", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(row))
                if new:
                    writer.writeheader()
                writer.writerow(row)
            write_markdown(same_budget(list(csv.DictReader(out.open()))), out.with_suffix(".md"), _header(args))

    with ThreadPoolExecutor(max_workers=args.jobs) as pool, tqdm(total=len(jobs), desc="runs", unit="run") as bar:
        futures = {pool.submit(one, seed, name): (seed, name) for seed, name in jobs}
        for future in as_completed(futures):
            future.result()
            bar.update()
            bar.set_postfix_str(f"done {futures[future][1]} seed {futures[future][0]}")
    print("results:", out, out.with_suffix(".md"))


def _header(args: argparse.Namespace) -> str:
    return (
        f"# `dwp` against baselines and ablations at N = {args.num_train_cases}\n\n"
        f"Finetune bundle, {args.epochs} epochs (validation every {args.val_interval}; the best validation "
        f"checkpoint is evaluated), Monte Carlo evaluation with {args.mc_samples} samples for the Bayesian "
        f"methods, sliding windows of the training patch size, on the fixed held-out test cases of "
        f"`{args.dataset_dir}`; 2-core CPU. Metrics: test Dice/IoU of the tumour class (mean over cases), HD95 in "
        f"voxels, ECE and foreground ECE inside the brain mask, AUC of mutual information against errors. "
        f"`python benchmarks/dwp_ablation.py` (results: `dwp_ablation.csv`)."
    )


if __name__ == "__main__":
    main()
