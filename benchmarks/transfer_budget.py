"""The training recipe of the transfer benchmark, measured: does a method gain from more target cases under the
benchmark's step budget, and does the learning-rate schedule decide it?

With 300 optimiser steps at a constant Adam learning rate no method of the transfer benchmark scored higher at
N = 10 than at N = 5, and one run's validation Dice swings by tens of points between neighbouring validations, so
the best-validation checkpoint is partly luck. This study runs the fast methods at the smallest and the largest N
under several recipes (:data:`STUDIES`: learning-rate schedule × steps), with the transfer benchmark's seeds,
splits and hand-offs (and its phantoms with ``--data_dir``; the phantoms are deterministic, so others are the same
cases made again). Each recipe is one ``benchmarks/transfer.py`` run with ``--lr_schedule``, ``--steps`` and
``--sizes``. The study writes one comparison:

- test Dice pooled over voxels, mean ± sd per recipe, method and N; the best validation Dice and where it fell;
- N_max − N_min paired by seed (the nested subsets of one seed), per recipe and method: does the recipe show the
  data-size effect;
- each recipe − the benchmark's own recipe, paired by seed, per method and N.

The rows of the benchmark's own recipe are taken from ``benchmarks/results/transfer.csv`` where it has them.
A recipe is judged on the validation split and on the size effect; the test columns only report.

Usage::

    python benchmarks/transfer_budget.py --scale cpu --workers 2
"""

from __future__ import annotations

import csv
import dataclasses
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import transfer  # noqa: E402
from _runs import describe_machine  # noqa: E402
from _tables import mean_sd, paired_cell, save_figure, size_axis  # noqa: E402
from monai_dwp.utils.io import atomic_write  # noqa: E402
from monai_dwp.utils.validation import check_int  # noqa: E402

__all__ = ["Recipe", "STUDIES", "summarise", "write_figure", "main"]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One training recipe of the study: ``schedule`` and ``steps`` for ``methods`` at ``sizes``."""

    schedule: str
    steps: int
    sizes: tuple[int, ...]
    methods: tuple[str, ...]

    @property
    def name(self) -> str:
        """The recipe's folder name, e.g. ``cosine_300``."""
        return f"{self.schedule}_{self.steps}"


STUDIES: dict[str, tuple[Recipe, ...]] = {
    "tiny": (Recipe("cosine", 2, (2,), ("random_init",)),),
    "cpu": (
        Recipe("constant", 2000, (5, 20), ("random_init",)),
        Recipe("cosine", 1200, (5, 20), ("random_init", "finetune")),
        Recipe("constant", 1600, (5, 20), ("random_init", "finetune")),
    ),
}
"""The recipes per ``--scale``, in the order they run; the scale's own recipe (``constant``, its ``steps``) reuses
the transfer benchmark's rows. At ``cpu``: the long ``random_init`` runs whose validation curves
``benchmarks/transfer_plateau.py`` reads, a cosine-annealed learning rate at the benchmark's budget, and runs of
1,600 steps (where the 2,000-step runs' best-so-far curve levels off), which say, paired by seed, whether the
benchmark's budget is at the plateau. (``transfer_budget/constant_600/`` holds a probe of the earlier 3 mm scale.)"""

METRIC = "val_pooled_dice"


def _key(row: dict[str, str]) -> tuple[str, int]:
    return row.get("lr_schedule") or "constant", int(row["steps"])


def _values(rows: list[dict[str, str]], recipe: tuple[str, int], method: str, n: int, metric: str) -> dict[int, float]:
    return transfer._values([r for r in rows if _key(r) == recipe], method, n, metric)


def summarise(rows: list[dict[str, str]], recipes: tuple[Recipe, ...], baseline: tuple[str, int], path: Path,
              machine: str = "") -> None:
    """Write the study's markdown: test Dice per recipe, the best validation Dice, the size effect and each recipe
    against ``baseline`` (the benchmark's ``(schedule, steps)``), all paired by seed.

    Args:
        rows: transfer-benchmark CSV rows of every recipe (``lr_schedule`` missing means ``constant``).
        recipes: the study's recipes (their methods and sizes).
        baseline: the recipe the benchmark ran with.
        path: the markdown file (written atomically).
        machine: where the runs ran, for the header.
    """
    methods = list(dict.fromkeys(m for r in recipes for m in r.methods))
    sizes = sorted({n for r in recipes for n in r.sizes})
    names = list(dict.fromkeys([baseline] + [(r.schedule, r.steps) for r in recipes]))
    label = {k: f"{k[0]}, {k[1]} steps" for k in names}
    lines = ["# Transfer benchmark: the training recipe", "",
             "The fast methods of `benchmarks/transfer.py` at the smallest and the largest N under several recipes "
             "(Adam learning-rate schedule × optimiser steps), with the benchmark's seeds, nested training subsets, "
             "validation cases, phantoms and hand-offs; each run keeps its best-validation checkpoint. Test = the "
             "fixed held-out test set, Dice pooled over voxels; it only reports. Written by "
             "`benchmarks/transfer_budget.py`" + (f"; {machine}" if machine else "") + ".", ""]
    for title, metric in (("Test Dice, pooled over voxels (mean ± sd over seeds)", METRIC),
                          ("Best validation Dice (the checkpoint chosen)", "best_val_dice")):
        lines += [f"## {title}", "", "| method | recipe | " + " | ".join(f"N = {n}" for n in sizes) + " |",
                  "|---|---|" + "---|" * len(sizes)]
        for m in methods:
            for k in names:
                cells = [mean_sd(list(_values(rows, k, m, n, metric).values())) for n in sizes]
                if any(c != "–" for c in cells):
                    lines.append(f"| `{m}` | {label[k]} | " + " | ".join(cells) + " |")
        lines.append("")
    lo, hi = sizes[0], sizes[-1]
    lines += [f"## More cases: N = {hi} − N = {lo}, paired by seed (mean [95 % interval])", "",
              "Each seed's N = {lo} cases are among its N = {hi} cases; a recipe that lets a method use the data shows "
              "a positive difference.".format(lo=lo, hi=hi), "",
              "| method | recipe | test Dice | best validation Dice |", "|---|---|---|---|"]
    for m in methods:
        for k in names:
            cells = [paired_cell(_values(rows, k, m, hi, metric), _values(rows, k, m, lo, metric))
                     for metric in (METRIC, "best_val_dice")]
            if any(c != "–" for c in cells):
                lines.append(f"| `{m}` | {label[k]} | " + " | ".join(cells) + " |")
    lines += ["", f"## Each recipe − {label[baseline]}, paired by seed (test Dice | best validation Dice)", "",
              "A longer recipe whose best validation Dice is not higher than the benchmark's (the checkpoint choice "
              "sees only validation) means the benchmark's budget is at the plateau of that method.", "",
              "| method | recipe | " + " | ".join(f"N = {n}" for n in sizes) + " |", "|---|---|" + "---|" * len(sizes)]
    for m in methods:
        for k in names[1:]:
            cells = []
            for n in sizes:
                pair = [paired_cell(_values(rows, k, m, n, metric), _values(rows, baseline, m, n, metric))
                        for metric in (METRIC, "best_val_dice")]
                cells.append("–" if pair == ["–", "–"] else " \\| ".join(pair))
            if any(c != "–" for c in cells):
                lines.append(f"| `{m}` | {label[k]} | " + " | ".join(cells) + " |")
    lines += ["", "## Where the best validation fell (best epoch / epochs, mean over seeds)", "",
              "| method | recipe | " + " | ".join(f"N = {n}" for n in sizes) + " |", "|---|---|" + "---|" * len(sizes)]
    for m in methods:
        for k in names:
            cells = []
            for n in sizes:
                runs = [r for r in rows if _key(r) == k and r["method"] == m and int(r["num_train_cases"]) == n]
                cells.append(f"{statistics.mean(float(r['best_epoch']) for r in runs):.0f} / {runs[0]['epochs']}"
                             if runs else "–")
            if any(c != "–" for c in cells):
                lines.append(f"| `{m}` | {label[k]} | " + " | ".join(cells) + " |")
    atomic_write(path, "w", lambda f: f.write("\n".join(lines) + "\n"))


def write_figure(rows: list[dict[str, str]], recipes: tuple[Recipe, ...], baseline: tuple[str, int],
                 path: Path) -> None:
    """Test Dice (left) and best validation Dice (right) against N, mean ± sd over seeds, one line per method and
    recipe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(m for r in recipes for m in r.methods))
    sizes = sorted({n for r in recipes for n in r.sizes})
    names = list(dict.fromkeys([baseline] + [(r.schedule, r.steps) for r in recipes]))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, title in zip(axes, (METRIC, "best_val_dice"), ("test Dice (pooled)", "best validation Dice")):
        for m in methods:
            for k in names:
                pts = [(n, list(_values(rows, k, m, n, metric).values())) for n in sizes]
                pts = [(n, v) for n, v in pts if v]
                if pts:
                    ax.errorbar([n for n, _ in pts], [statistics.mean(v) for _, v in pts],
                                yerr=[statistics.pstdev(v) for _, v in pts], marker="o", capsize=3,
                                linestyle="-" if k[0] == "cosine" else "--", label=f"{m}, {k[0]} {k[1]}")
        size_axis(ax, sizes, title)
    axes[0].legend(fontsize=7)
    save_figure(fig, path)


def _read(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open())) if path.is_file() else []


def main(scale: str = "cpu", work_dir: str = "runs/transfer_budget", results: str | None = None,
         device: str | None = None, bundles_dir: str | None = None, workers: int = 1,
         data_dir: str | None = None, handoffs_dir: str | None = None) -> Path:
    """Run (or resume) every recipe of :data:`STUDIES` and write ``transfer_budget.md`` and ``.png``.

    Args:
        scale: ``tiny`` or ``cpu``: the transfer benchmark's scale (phantoms, patches, seeds, hand-offs).
        work_dir: one folder per recipe (its runs and logs) and, unless ``data_dir``, the shared phantoms.
        results: where the per-recipe CSVs (``<recipe>/transfer.csv``) and the summary go (default
            ``benchmarks/results``, ``<work_dir>/results`` for ``tiny``).
        device: ``cpu`` or ``cuda`` (default: CUDA when available).
        bundles_dir: the ``bundles/`` folder to run (default: the repository's; hand-offs in its ``models/``).
        workers: runs side by side (see ``benchmarks/transfer.py``).
        data_dir: the phantoms (default ``<work_dir>/data``), e.g. the transfer benchmark's to reuse them.
        handoffs_dir: the source nets and prior of a scale that makes its own (default ``<work_dir>/handoffs``,
            shared by the recipes), e.g. the transfer benchmark's ``<work_dir>/handoffs`` to reuse them.

    Returns:
        the path of ``transfer_budget.md``.
    """
    if scale not in STUDIES:
        raise SystemExit(f"--scale must be one of {sorted(STUDIES)}, got {scale!r}.")
    workers = check_int(workers, "workers", minimum=1, hint="e.g. --workers 2 on a 2-core machine")
    work = Path(work_dir).resolve()
    default_out = work / "results" if scale == "tiny" else ROOT / "benchmarks" / "results"
    out = Path(results).resolve() if results else default_out
    recipes = STUDIES[scale]
    own = transfer.SCALES[scale]
    baseline = (own.lr_schedule, own.steps)
    data = Path(data_dir).resolve() if data_dir else work / "data"
    handoffs = Path(handoffs_dir).resolve() if handoffs_dir else work / "handoffs"
    rows = [r for r in _read(out / "transfer.csv") if _key(r) == baseline and r.get("scale") == scale
            and str(r.get("split_seed")) == r["seed"]]
    for recipe in recipes:
        folder = out / "transfer_budget" / recipe.name
        if (recipe.schedule, recipe.steps) == baseline and not (folder / "transfer.csv").is_file() and rows:
            # the benchmark's own recipe: its finished runs are this recipe's, so they are not run twice
            folder.mkdir(parents=True, exist_ok=True)
            chosen = [r for r in rows if r["method"] in recipe.methods and int(r["num_train_cases"]) in recipe.sizes]

            def write_rows(f) -> None:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(chosen)

            atomic_write(folder / "transfer.csv", "w", write_rows)
        print(f"recipe {recipe.name}: {', '.join(recipe.methods)} at N = {recipe.sizes}", flush=True)
        transfer.main(scale=scale, work_dir=str(work / recipe.name), results=str(folder), device=device,
                      bundles_dir=bundles_dir, methods=",".join(recipe.methods), workers=workers, ablations=False,
                      sizes=",".join(map(str, recipe.sizes)), steps=recipe.steps, lr_schedule=recipe.schedule,
                      data_dir=str(data), handoffs_dir=str(handoffs))
        seen = {(r["method"], r["num_train_cases"], r["seed"], _key(r)) for r in rows}
        rows += [r for r in _read(folder / "transfer.csv")
                 if (r["method"], r["num_train_cases"], r["seed"], _key(r)) not in seen]
    machine = describe_machine(device, workers)
    summarise(rows, recipes, baseline, out / "transfer_budget.md", machine)
    write_figure(rows, recipes, baseline, out / "transfer_budget.png")
    return out / "transfer_budget.md"


if __name__ == "__main__":
    import fire

    fire.Fire(main)
