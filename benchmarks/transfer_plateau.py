"""Where does a method's validation Dice level off? The transfer benchmark's budget, read off long runs.

The transfer protocol gives every method the same optimiser-step budget, "chosen so that ``random_init``'s
validation Dice has plateaued". This script reads the validation curves of long runs made by
``benchmarks/transfer.py --steps <long>`` (one run per seed and N; every validation of a run is a line of its
training log) and writes, per N:

- the validation Dice at each validation against optimiser steps, mean ± sd over seeds, and the best-so-far
  validation Dice (what the benchmark's checkpoint choice keeps) — ``transfer_plateau.md`` and ``.png``;
- the *plateau budget*: the fewest steps at which the seed-mean best-so-far validation Dice lies within
  ``tolerance`` of its value at the end of the long run (the best-so-far of a noisy curve only grows, so this
  errs towards more steps).

Only the validation split decides; the test Dice of the long runs' checkpoints is shown beside, for the record.

Usage::

    python benchmarks/transfer.py --scale cpu --workers 2 --methods random_init --sizes 5,20 --steps 2000 \\
        --work_dir runs/transfer_plateau --data_dir runs/transfer/data --handoffs_dir runs/transfer/handoffs \\
        --results benchmarks/results/transfer_budget/constant_2000
    python benchmarks/transfer_plateau.py --results benchmarks/results/transfer_budget/constant_2000 \\
        --logs runs/transfer_plateau/logs

(A work folder of its own: the benchmark's own runs of the same method, N and seed would replace the long runs'
folders and logs.) ``python benchmarks/transfer_budget.py --scale cpu`` makes the same long runs as its recipe
``constant_2000``, with their logs in ``runs/transfer_budget/constant_2000/logs``.
"""

from __future__ import annotations

import csv
import math
import re
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _tables import mean_sd, save_figure  # noqa: E402
from monai_dwp.bundle_utils import run_name  # noqa: E402
from monai_dwp.utils.io import atomic_write  # noqa: E402
from monai_dwp.utils.validation import check_float  # noqa: E402

__all__ = ["validation_curve", "best_so_far", "plateau_step", "main"]

Curve = list[tuple[int, float]]
"""``[(optimiser steps, validation Dice), ...]`` in the order of the validations."""


def validation_curve(log: Path, steps_per_epoch: int) -> Curve:
    """Every validation of a training log: Ignite's ``Epoch[E] Metrics -- val_mean_dice: D`` lines, as
    ``(E × steps_per_epoch, D)``; empty when the log holds none."""
    text = log.read_text(errors="replace") if log.is_file() else ""
    return [(int(e) * steps_per_epoch, float(d))
            for e, d in re.findall(r"Epoch\[(\d+)\] Metrics -- val_mean_dice: ([0-9.eE+-]+)", text)]


def best_so_far(curve: Curve) -> Curve:
    """The running maximum of a validation curve: the validation Dice of the checkpoint kept at each step."""
    out: Curve = []
    for step, dice in curve:
        out.append((step, max(dice, out[-1][1]) if out else dice))
    return out


def plateau_step(mean_curve: Sequence[tuple[int, float]], tolerance: float) -> int:
    """The fewest steps at which a (seed-mean, best-so-far) curve lies within ``tolerance`` of its last value.

    Raises:
        ValueError: an empty curve or a negative ``tolerance``.
    """
    if not mean_curve:
        raise ValueError("mean_curve is empty: no validation was found in the runs' training logs.")
    tolerance = check_float(tolerance, "tolerance", minimum=0.0, hint="e.g. --tolerance 0.01")
    final = mean_curve[-1][1]
    return next(step for step, value in mean_curve if value >= final - tolerance)


def _mean_curve(curves: Sequence[Curve]) -> Curve:
    """The mean over seeds at the validations every curve holds."""
    steps = sorted(set.intersection(*(set(s for s, _ in c) for c in curves))) if curves else []
    return [(s, statistics.mean(dict(c)[s] for c in curves)) for s in steps]


def write_figure(curves: Mapping[int, Sequence[Curve]], plateaus: Mapping[int, int], method: str, path: Path,
                 budget: int | None = None) -> None:
    """Validation Dice (thin: each seed; thick: the seed mean) and the mean best-so-far (dashed) against steps; the
    plateau of each N dotted, ``budget`` dash-dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for k, (n, runs) in enumerate(sorted(curves.items())):
        color = f"C{k}"
        for c in runs:
            ax.plot(*zip(*c), color=color, alpha=0.3, linewidth=0.8)
        ax.plot(*zip(*_mean_curve(runs)), color=color, linewidth=2, label=f"N = {n}, mean of {len(runs)} seeds")
        ax.plot(*zip(*_mean_curve([best_so_far(c) for c in runs])), color=color, linestyle="--",
                label=f"N = {n}, best so far")
        ax.axvline(plateaus[n], color=color, linestyle=":", linewidth=1)
    if budget:
        ax.axvline(budget, color="k", linestyle="-.", linewidth=1, label=f"budget: {budget} steps")
    ax.set(xlabel="optimiser steps", ylabel="validation Dice (per-case mean)", title=f"{method}: validation Dice")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def main(results: str, logs: str, method: str = "random_init", tolerance: float = 0.01,
         batch_size: int = 2, budget: int | None = None) -> Path:
    """Write ``transfer_plateau.md`` and ``.png`` into ``results`` from the long runs in its ``transfer.csv``.

    Args:
        results: a folder written by ``benchmarks/transfer.py --steps <long>`` (its ``transfer.csv``).
        logs: the benchmark's ``<work_dir>/logs``, where the runs' training logs are.
        method: the method whose curves are read.
        tolerance: how far below its final value the seed-mean best-so-far validation Dice may lie at the plateau.
        batch_size: cases per optimiser step (the scale's; an epoch is ``ceil(N / batch_size)`` steps).
        budget: a step budget (e.g. the benchmark's) whose best-so-far validation Dice gets a column: that of the
            last validation at or before it.

    Returns:
        the path of ``transfer_plateau.md``.
    """
    out = Path(results)
    table = out / "transfer.csv"
    if not table.is_file():
        raise SystemExit(f"--results {out}: no transfer.csv there; run benchmarks/transfer.py --results {out} first.")
    rows = [r for r in csv.DictReader(table.open()) if r["method"] == method]
    if not rows:
        raise SystemExit(f"--method {method}: no row of it in {table}.")
    curves: dict[int, list[Curve]] = {}
    test: dict[int, list[float]] = {}
    for r in rows:
        n, seed = int(r["num_train_cases"]), int(r["seed"])
        curve = validation_curve(Path(logs) / f"{run_name(method, n, seed)}_train.log", math.ceil(n / batch_size))
        if curve:
            curves.setdefault(n, []).append(curve)
            test.setdefault(n, []).append(float(r["val_pooled_dice"]))
    if not curves:
        raise SystemExit(f"--logs {logs}: no training log with validations for the {method} rows of {table}.")
    steps = rows[0]["steps"]
    plateaus = {n: plateau_step(_mean_curve([best_so_far(c) for c in runs]), tolerance) for n, runs in curves.items()}
    lines = [f"# Where `{method}`'s validation Dice levels off", "",
             f"Runs of `benchmarks/transfer.py` for {steps} optimiser steps (rows of `{table.name}` in this folder), "
             f"each validated {max(len(c) for runs in curves.values() for c in runs)} times on the benchmark's "
             f"validation split; written by "
             f"`benchmarks/transfer_plateau.py`. Plateau = the fewest steps at which the seed-mean best-so-far "
             f"validation Dice (the checkpoint the benchmark keeps) lies within {tolerance:g} of its value at "
             f"{steps} steps.", "",
             "| N | seeds | plateau (steps) | best-so-far validation Dice there | "
             + (f"at {budget} steps | " if budget else "") + "at the end | test Dice (pooled) at the end |",
             "|---|---|---|---|" + ("---|" if budget else "") + "---|---|"]
    for n in sorted(curves):
        mean_best = dict(_mean_curve([best_so_far(c) for c in curves[n]]))
        within = [step for step in mean_best if step <= budget] if budget else []
        at_budget = (f"{mean_best[max(within)]:.3f} (step {max(within)}) | " if within else "– | ") if budget else ""
        lines.append(f"| {n} | {len(curves[n])} | {plateaus[n]} | {mean_best[plateaus[n]]:.3f} | {at_budget}"
                     f"{mean_best[max(mean_best)]:.3f} | {mean_sd(test[n])} |")
    lines += ["", "Validation Dice at each validation, mean ± sd over seeds (best so far in brackets):", "",
              "| steps | " + " | ".join(f"N = {n}" for n in sorted(curves)) + " |",
              "|---|" + "---|" * len(curves)]
    by_n = {n: ({s: [dict(c)[s] for c in runs if s in dict(c)] for s, _ in _mean_curve(runs)},
                dict(_mean_curve([best_so_far(c) for c in runs]))) for n, runs in curves.items()}
    for step in sorted({s for current, _ in by_n.values() for s in current}):
        cells = []
        for n in sorted(curves):
            current, best = by_n[n]
            cells.append(f"{mean_sd(current[step])} [{best[step]:.3f}]" if step in current else "–")
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    atomic_write(out / "transfer_plateau.md", "w", lambda f: f.write("\n".join(lines) + "\n"))
    write_figure(curves, plateaus, method, out / "transfer_plateau.png", budget)
    return out / "transfer_plateau.md"


if __name__ == "__main__":
    import fire

    fire.Fire(main)
