"""Source U-Nets trained in fewer epochs (another learning-rate schedule or rate): as good as the pipeline's?

The source nets (the ``dwp_pretrain`` bundle, two seeds side by side) are the longest stage of ``make demo``: at a
constant Adam rate their validation Dice still rises at the last of 80 epochs. This study trains them as the pipeline
does (same command, data, seeds, SWAG recording over the last ``PIPELINE.swag_epochs`` epochs, one thread each,
``workers`` side by side) in two ways:

- the baseline: the bundle's constant Adam rate (10⁻³) for ``baseline_epochs`` epochs (the pipeline's 80);
- a candidate: ``lr_schedule`` ``constant`` or ``cosine`` for ``epochs`` epochs at ``learning_rate``; with
  ``cosine`` the rate falls by a cosine to ``final_fraction`` of itself over the epochs before the SWAG recording
  starts and stays there while SWAG records (:func:`monai_dwp.transfer.make_lr_scheduler`);

and compares, seed by seed, the best validation Dice and its epoch (the checkpoint the bundle keeps, read from the
training log), the mean Dice of that checkpoint on the held-out test cases (``evaluate.json``; reported, never used to
choose) and the training's wall time (Ignite's, validation included). It draws every validation curve against the
epoch and against the seconds of training.

Writes ``<results>/source_schedule_<candidate>.{csv,md,png}`` and ``..._curves.csv`` (every validation). Finished
runs are reused (an interrupted study resumes; the baseline's runs serve every candidate), and
``--reuse seed<S>=<folder> --reuse_logs <logs>`` takes a baseline source net that the pipeline already trained
with the same command (``<folder>`` holds its ``model.pt`` and ``checkpoint_epoch=<epochs>.pt``, ``<logs>`` its
``pretrain_seed<S>.log``).

Usage::

    python -m monai_dwp make-data --disease ms --num-cases 30 --num-test 4 --spacing 3 --output-dir data/ms
    python benchmarks/source_schedule.py --data_dir data/ms --work_dir runs/source_schedule --seeds 0,1,2 \\
        --schedule cosine --epochs 40 --final_fraction 0.1
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import bundle_default  # noqa: E402
from _runs import evaluation_machine, reuse_source_run, write_rows  # noqa: E402
from _source_study import PIPELINE, paired_tables, source_chain, source_row, study_seeds  # noqa: E402
from _tables import save_figure  # noqa: E402
from train_modes import parse_log  # noqa: E402
from monai_dwp.pipeline import StageRunner, default_bundles_dir, stop_stages_on_sigterm  # noqa: E402
from monai_dwp.utils.io import atomic_write  # noqa: E402
from monai_dwp.utils.validation import check_float, check_int  # noqa: E402

__all__ = ["FIELDS", "arm_tag", "describe_arm", "main", "markdown", "plot", "read_curves", "write_curves"]

FIELDS = ["arm", "seed", "epochs", "best_val_dice", "best_epoch", "test_dice", "train_seconds", "seconds_per_epoch"]


def arm_tag(schedule: str, epochs: int, learning_rate: float, final_fraction: float = 0.0) -> str:
    """The name of a way of training, e.g. ``constant80_lr0.001`` or ``cosine40_lr0.001_f0.1``: its runs'
    folders are ``<tag>_seed<S>``, so every candidate reuses the baseline's runs and none overwrites another's."""
    return f"{schedule}{epochs}_lr{learning_rate:g}" + (f"_f{final_fraction:g}" if schedule == "cosine" else "")


def describe_arm(schedule: str, epochs: int, learning_rate: float, final_fraction: float = 0.0) -> str:
    """A way of training in words, for the report."""
    if schedule == "constant":
        return f"{epochs} epochs at the constant rate {learning_rate:g}"
    swag_from = epochs - PIPELINE.swag_epochs
    return (f"{epochs} epochs with `lr_schedule cosine`: the rate falls by a cosine from {learning_rate:g} to "
            f"{final_fraction:g} of it over the first {swag_from} epochs and stays there while SWAG records")


def main(data_dir: str, work_dir: str = "runs/source_schedule", results: str | None = None,
         seeds: str | int | tuple = "0,1,2", schedule: str = "cosine", epochs: int = 40,
         learning_rate: float = 1e-3, final_fraction: float = 0.1, baseline_epochs: int = PIPELINE.pretrain_epochs,
         val_interval: int = PIPELINE.pretrain_val_interval, num_val_cases: int = PIPELINE.num_source_test,
         workers: int = PIPELINE.workers, spacing: float = PIPELINE.spacing, patch_size: int = PIPELINE.patch_size,
         reuse: str | tuple = (), reuse_logs: str | None = None, note: str = "") -> Path:
    """Run (or resume) the study of one candidate against the baseline and write
    ``source_schedule_<candidate tag>.{csv,md,png}`` and its validation curves ``..._curves.csv``.

    Args:
        data_dir: the source (MS) dataset in the Decathlon layout, as ``make demo`` makes it.
        work_dir: where the runs and their logs go (shared by every candidate: the baseline runs once).
        results: the folder of the result files (default ``benchmarks/results``).
        seeds: comma-separated seeds.
        schedule, epochs, learning_rate, final_fraction: the candidate: its ``lr_schedule`` (``constant`` or
            ``cosine``), epochs, Adam rate and, for the cosine, the fraction of the rate where the cosine ends.
        baseline_epochs: the epochs of the baseline, the bundle's constant rate (the pipeline's 80).
        val_interval, num_val_cases: validation every so many epochs, on so many held-out cases (the pipeline's).
        workers: runs side by side, each with ``cpu_count // workers`` threads (default the pipeline's: 2).
        spacing, patch_size: the phantoms' spacing in mm and the training patch edge (default the pipeline's).
        reuse: ``seed<S>=<folder>`` (or several, comma-separated): baseline runs the pipeline made.
        reuse_logs: the pipeline's ``logs/`` folder, with their ``pretrain_seed<S>.log``.
        note: a sentence for the report on how the runs were made (e.g. which ran side by side).
    """
    if schedule not in ("constant", "cosine"):
        raise SystemExit(f"--schedule must be constant or cosine, got {schedule!r}.")
    seed_list = study_seeds(data_dir, seeds)
    final_fraction = check_float(final_fraction, "final_fraction", minimum=0.0, maximum=1.0, include_minimum=False,
                                 hint="SWAG records at the rate where the cosine ends")
    bundle_lr = float(bundle_default("dwp_pretrain", "learning_rate"))
    arms = {"baseline": ("constant", check_int(baseline_epochs, "baseline_epochs", minimum=PIPELINE.swag_epochs),
                         bundle_lr, 0.0),
            "candidate": (schedule, check_int(epochs, "epochs", minimum=PIPELINE.swag_epochs),
                          check_float(learning_rate, "learning_rate", minimum=0.0, include_minimum=False),
                          final_fraction if schedule == "cosine" else 0.0)}
    tags = {arm: arm_tag(*spec) for arm, spec in arms.items()}
    if tags["candidate"] == tags["baseline"]:
        raise SystemExit(f"the candidate ({tags['candidate']}) is the baseline; change --schedule, --epochs or "
                         "--learning_rate.")
    out = Path(results).resolve() if results else ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    runner = StageRunner(Path(work_dir).resolve(), "cpu", False, default_bundles_dir(), preload=True)
    for spec in ([reuse] if isinstance(reuse, str) else list(reuse)):
        for part in filter(None, str(spec).split(",")):
            reuse_source_run(runner, part, Path(reuse_logs or "outputs/pipeline/logs"), arms["baseline"][1],
                             tags["baseline"])
    load_before = os.getloadavg()
    common = dict(dataset_dir=Path(data_dir).resolve(), num_val_cases=num_val_cases, spacing=[spacing] * 3,
                  patch_size=[patch_size] * 3)
    chains = []
    for arm in ("baseline", "candidate"):  # the longer baseline runs first, so that the short ones fill in beside them
        kind, n, lr, fraction = arms[arm]
        train = {"lr_schedule": kind, **({"lr_final_fraction": fraction} if kind == "cosine" else {}),
                 **({"learning_rate": lr} if lr != bundle_lr else {})}
        chains += [source_chain(runner, f"{tags[arm]}_seed{s}", s, n, val_interval, common, train=train)
                   for s in seed_list]
    from tqdm import tqdm

    with tqdm(total=sum(len(c) for c in chains), desc="source_schedule stages", unit="stage") as bar:
        runner.run_chains(chains, bar, workers=workers)
    rows, curves = [], {}
    for arm in ("baseline", "candidate"):
        n = arms[arm][1]
        for s in seed_list:
            name = f"{tags[arm]}_seed{s}"
            rows.append({"arm": tags[arm], "seed": s, "epochs": n, **source_row(runner, name, n)})
            curves[(tags[arm], s)] = parse_log(runner.log_dir / f"train_{name}.log", 1)
    stem = f"source_schedule_{tags['candidate']}"
    write_rows(out / f"{stem}.csv", rows, FIELDS)
    write_curves(out / f"{stem}_curves.csv", curves)
    machine = evaluation_machine(workers, load_before, "run")
    text = markdown(rows, {tags[arm]: describe_arm(*arms[arm]) for arm in arms}, tags, machine, seed_list, note,
                    val_interval, num_val_cases, spacing, patch_size)
    atomic_write(out / f"{stem}.md", "w", lambda f: f.write(text))
    plot(curves, tags, seed_list, out / f"{stem}.png")
    return out / f"{stem}.md"


def write_curves(path: Path, curves: dict[tuple[str, int], list[dict[str, float]]]) -> None:
    """Every validation of every run (``arm, seed, epoch, train_seconds, val_dice``) as a CSV, atomically."""
    rows = [{"arm": arm, "seed": seed, "epoch": r["epoch"], "train_seconds": r["train_seconds"],
             "val_dice": round(r["val_dice"], 4)} for (arm, seed), curve in curves.items() for r in curve]
    write_rows(path, rows, ["arm", "seed", "epoch", "train_seconds", "val_dice"])


def read_curves(path: Path) -> dict[tuple[str, int], list[dict[str, float]]]:
    """The validation curves :func:`write_curves` wrote."""
    curves: dict[tuple[str, int], list[dict[str, float]]] = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            curves.setdefault((r["arm"], int(r["seed"])), []).append(
                {"epoch": int(r["epoch"]), "train_seconds": float(r["train_seconds"]), "val_dice": float(r["val_dice"])})
    return curves


def markdown(rows: list[dict], descriptions: dict[str, str], tags: dict[str, str], machine: str, seeds: list[int],
             note: str = "", val_interval: int = PIPELINE.pretrain_val_interval,
             num_val_cases: int = PIPELINE.num_source_test, spacing: float = PIPELINE.spacing,
             patch_size: int = PIPELINE.patch_size) -> str:
    """The report: one row per seed, then mean ± sd and the paired difference ``candidate − baseline``.

    Args:
        rows: the CSV's rows; ``descriptions``: each arm's tag in words; ``tags``: ``{"baseline": tag,
            "candidate": tag}``.
    """
    base, cand = tags["baseline"], tags["candidate"]
    by = {(r["arm"], int(r["seed"])): r for r in rows}
    lines = [
        f"# Source U-Nets: `{cand}` against `{base}`",
        "",
        f"Written by `python benchmarks/source_schedule.py`. The `dwp_pretrain` bundle as `make demo` runs it "
        f"(validation every {val_interval} epochs on {num_val_cases} held-out cases, the built-in MS phantoms at "
        f"{spacing:g} mm, {patch_size}³ patches, batch {PIPELINE.batch_size} × {PIPELINE.num_samples}, Adam, SWAG "
        f"moments recorded over the last {PIPELINE.swag_epochs} epochs), seeds {', '.join(map(str, seeds))}, in two "
        f"ways: the baseline `{base}`, {descriptions[base]}; the candidate `{cand}`, {descriptions[cand]}. The "
        f"test Dice of each kept (best-validation) checkpoint is evaluated on the {num_val_cases} held-out test cases "
        f"of the source cohort; it is reported, never used to choose. Machine: {machine}." + (f" {note}" if note else ""),
        "",
    ]
    lines += paired_tables({s: by[(base, s)] for s in seeds}, {s: by[(cand, s)] for s in seeds}, seeds,
                           ("baseline", "candidate"),
                           (("best_val_dice", "best validation Dice"), ("test_dice", "test Dice"),
                            ("train_seconds", "training seconds"), ("seconds_per_epoch", "training seconds per epoch")))
    lines += ["", f"![validation Dice against epochs and seconds](source_schedule_{cand}.png)"]
    return "\n".join(lines) + "\n"


def plot(curves: dict[tuple[str, int], list[dict[str, float]]], tags: dict[str, str], seeds: list[int],
         path: Path) -> None:
    """Validation Dice against the epoch (left) and the seconds of training (right), a line per run: the baseline
    in grey, the candidate in blue, a line style per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    colours = {tags["baseline"]: "tab:grey", tags["candidate"]: "tab:blue"}
    for (tag, seed), curve in sorted(curves.items()):
        style = dict(color=colours.get(tag, "tab:orange"), alpha=0.85, lw=1.4, marker=".",
                     ls=("-", "--", ":", "-.")[seeds.index(seed) % 4] if seed in seeds else "-",
                     label=f"{tag}, seed {seed}")
        axes[0].plot([r["epoch"] for r in curve], [r["val_dice"] for r in curve], **style)
        axes[1].plot([r["train_seconds"] for r in curve], [r["val_dice"] for r in curve], **style)
    axes[0].set_xlabel("epoch")
    axes[1].set_xlabel("seconds of training (validation excluded)")
    axes[0].set_ylabel("validation Dice (source cohort)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Source U-Nets: {tags['candidate']} against {tags['baseline']}")
    save_figure(fig, path)


if __name__ == "__main__":
    import fire

    stop_stages_on_sigterm()  # `kill` stops the running stages with the benchmark
    fire.Fire(main)
