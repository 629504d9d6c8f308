"""Where the prior acts: the per-layer gradient ratios and the loss terms of the transfer benchmark's runs.

The finetune bundle's :class:`~monai_dwp.handlers.GradientRatioHandler` logs, every ``grad_ratio_interval`` steps,
``‖∇ data term‖ / ‖∇ KL term‖`` per Bayesian layer for the posterior means (``grad_ratio/loc/<layer>``) and the
posterior log-scales (``grad_ratio/log_scale/<layer>``), and the trainer logs the loss terms per epoch
(``loss_data``, ``loss_kl_scaled``: the KL per voxel of the ELBO, as it enters the loss). This script reads them back
from the TensorBoard logs of the benchmark's run folders (``<method>_n<N>_seed<S>/tensorboard``) and writes:

- ``prior_diagnostics.csv``: one row per (run, parameter, layer): the median ratio over the run's logged steps;
- ``prior_diagnostics.md``: per N, two tables (posterior means, posterior log-scales) with a row per layer (in the
  network's order) and, per method, the median over seeds of those run medians with their range over seeds (a
  ratio above 1: the data pull that layer's parameters harder than the prior); and the loss terms at the first and
  the last logged epoch (mean over seeds);
- ``prior_diagnostics.png``: the ratios per layer at the smallest N, one line per method, for the posterior means and
  log-scales.

Nothing is trained: the runs are those of ``benchmarks/transfer.py`` (or any folder of finetune-bundle runs).

Usage::

    python benchmarks/prior_diagnostics.py --runs_dir runs/transfer/runs --methods dwp,gaussian_prior --sizes 5
"""

from __future__ import annotations

import csv
import re
import statistics
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _tables import EMPTY, save_figure  # noqa: E402
from monai_dwp.utils.io import atomic_write  # noqa: E402

__all__ = ["RunLog", "read_run", "find_runs", "write_csv", "write_markdown", "write_figure", "main"]

RUN_PATTERN = re.compile(r"^(?P<method>.+)_n(?P<n>\d+)_seed(?P<seed>\d+)$")
"""A finetune run folder's name (:func:`monai_dwp.bundle_utils.run_name`)."""
PARAMETERS = ("loc", "log_scale")
LOSS_TAGS = ("loss_data", "loss_kl_scaled")
FIELDS = ("method", "num_train_cases", "seed", "parameter", "layer", "median_ratio", "logged_steps")


class RunLog:
    """The diagnostics of one run.

    Attributes:
        method, num_train_cases, seed: from the folder name.
        ratios: ``{(parameter, layer): (median over the logged steps, number of logged steps)}``, layers in the
            order of the log (the network's order).
        losses: ``{tag: [(epoch, value), ...]}`` for :data:`LOSS_TAGS`.
    """

    def __init__(self, method: str, num_train_cases: int, seed: int,
                 ratios: dict[tuple[str, str], tuple[float, int]], losses: dict[str, list[tuple[int, float]]]) -> None:
        self.method, self.num_train_cases, self.seed = method, num_train_cases, seed
        self.ratios, self.losses = ratios, losses


def read_run(run_dir: Path) -> RunLog | None:
    """The :class:`RunLog` of ``run_dir`` (a folder named ``<method>_n<N>_seed<S>`` with ``tensorboard/``), or
    ``None`` when its name does not fit or its logs hold no gradient ratio."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    match = RUN_PATTERN.match(run_dir.name)
    if match is None or not (run_dir / "tensorboard").is_dir():
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
        acc.Reload()
    tags = acc.Tags()["scalars"]
    ratios = {}
    for tag in tags:
        parts = tag.split("/", 2)
        if len(parts) == 3 and parts[0] == "grad_ratio" and parts[1] in PARAMETERS:
            values = [e.value for e in acc.Scalars(tag)]
            ratios[(parts[1], parts[2])] = (statistics.median(values), len(values))
    if not ratios:
        return None
    losses = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in LOSS_TAGS if t in tags}
    return RunLog(match["method"], int(match["n"]), int(match["seed"]), ratios, losses)


def find_runs(runs_dir: Path, methods: Sequence[str] | None = None, sizes: Sequence[int] | None = None) -> list[RunLog]:
    """The :class:`RunLog` of every run folder of ``runs_dir`` with gradient ratios, optionally only ``methods`` and
    ``sizes``, sorted by (method order, N, seed)."""
    runs = []
    for run_dir in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        match = RUN_PATTERN.match(run_dir.name)
        if match is None or (methods and match["method"] not in methods) or (sizes and int(match["n"]) not in sizes):
            continue
        log = read_run(run_dir)
        if log is not None:
            runs.append(log)
    order = {m: i for i, m in enumerate(methods or sorted({r.method for r in runs}))}
    return sorted(runs, key=lambda r: (order.get(r.method, len(order)), r.num_train_cases, r.seed))


def write_csv(runs: Sequence[RunLog], path: Path) -> None:
    """One row per (run, parameter, layer) (:data:`FIELDS`)."""
    def write(f) -> None:
        w = csv.DictWriter(f, fieldnames=FIELDS, lineterminator="\n")
        w.writeheader()
        for r in runs:
            for (param, layer), (median, count) in r.ratios.items():
                w.writerow({"method": r.method, "num_train_cases": r.num_train_cases, "seed": r.seed,
                            "parameter": param, "layer": layer, "median_ratio": f"{median:.6g}",
                            "logged_steps": count})

    atomic_write(path, "w", write)


def _layers(runs: Sequence[RunLog]) -> list[str]:
    """The layers in the order of the first run that logs each."""
    layers: dict[str, None] = {}
    for r in runs:
        for _, layer in r.ratios:
            layers.setdefault(layer, None)
    return list(layers)


def _cell(values: Sequence[float]) -> str:
    """``median [min–max]`` over seeds (3 significant digits), ``–`` for none."""
    if not values:
        return EMPTY
    if len(values) == 1:
        return f"{values[0]:.3g}"
    return f"{statistics.median(values):.3g} [{min(values):.3g}–{max(values):.3g}]"


def _seed_values(runs: Sequence[RunLog], method: str, n: int, param: str, layer: str) -> list[float]:
    return [r.ratios[(param, layer)][0] for r in runs
            if r.method == method and r.num_train_cases == n and (param, layer) in r.ratios]


def _loss_cell(runs: Sequence[RunLog], tag: str, last: bool) -> str:
    values = [r.losses[tag][-1 if last else 0][1] for r in runs if r.losses.get(tag)]
    return f"{statistics.mean(values):.3g}" if values else EMPTY


def write_markdown(runs: Sequence[RunLog], path: Path, source: str) -> None:
    """Per N: the per-layer tables of the ratios (rows: layers; columns: methods), one per parameter, and the loss
    terms."""
    methods = list(dict.fromkeys(r.method for r in runs))
    sizes = sorted({r.num_train_cases for r in runs})
    lines = ["# Where the prior acts: gradient ratios per layer", "",
             "Written by `benchmarks/prior_diagnostics.py` from the TensorBoard logs of " + source + ". "
             "`GradientRatioHandler` logs ‖∇ data term‖ / ‖∇ KL term‖ of each Bayesian layer's posterior means "
             "(`loc`) and log-scales (`log_scale`) every `grad_ratio_interval` steps; each cell is the median over "
             "the seeds of each run's median over its logged steps, with the range over the seeds in brackets. "
             "Above 1 the data pull that layer harder than the prior; below 1 the prior dominates.", ""]
    for n in sizes:
        at_n = [r for r in runs if r.num_train_cases == n]
        present = [m for m in methods if any(r.method == m for r in at_n)]
        seeds = {m: sorted(r.seed for r in at_n if r.method == m) for m in present}
        lines += [f"## N = {n}", "", "Seeds: " + "; ".join(f"`{m}` {', '.join(map(str, s))}"
                                                              for m, s in seeds.items()) + ".", ""]
        for param, what in zip(PARAMETERS, ("posterior means", "posterior log-scales")):
            lines += [f"### {what} (`{param}`), N = {n}", "",
                      "| layer | " + " | ".join(f"`{m}`" for m in present) + " |", "|---|" + "---|" * len(present)]
            for layer in _layers(at_n):
                cells = [_cell(_seed_values(at_n, m, n, param, layer)) for m in present]
                lines.append(f"| `{layer}` | " + " | ".join(cells) + " |")
            lines.append("")
        lines += ["Loss terms per training voxel, mean over seeds, at the first and the last logged epoch:", "",
                  "| method | `loss_data` first | `loss_data` last | `loss_kl_scaled` first | `loss_kl_scaled` last |",
                  "|---|---|---|---|---|"]
        for m in present:
            mine = [r for r in at_n if r.method == m]
            lines.append(f"| `{m}` | " + " | ".join(_loss_cell(mine, t, last) for t in LOSS_TAGS
                                                       for last in (False, True)) + " |")
        lines.append("")
    lines += ["![prior diagnostics](prior_diagnostics.png)", ""]
    text = "\n".join(lines)
    atomic_write(path, "w", lambda f: f.write(text))


def write_figure(runs: Sequence[RunLog], path: Path) -> None:
    """The median ratio per layer (log scale) at the smallest N of ``runs``, one line per method, posterior means
    left, log-scales right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(r.num_train_cases for r in runs)
    runs = [r for r in runs if r.num_train_cases == n]
    layers = _layers(runs)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, param in zip(axes, PARAMETERS):
        for m in dict.fromkeys(r.method for r in runs):
            ys = [statistics.median(v) if (v := _seed_values(runs, m, n, param, layer)) else float("nan")
                  for layer in layers]
            ax.plot(range(len(layers)), ys, marker="o", markersize=3, label=m)
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_yscale("log")
        ax.set_xticks(range(len(layers)))
        ax.set_xticklabels([layer.removesuffix(".conv") for layer in layers], rotation=90, fontsize=7)
        ax.set_title(f"‖∇ data‖ / ‖∇ KL‖, posterior {param}, N = {n}")
    axes[0].set_ylabel("median over seeds of the run medians")
    axes[0].legend(fontsize=8)
    save_figure(fig, path)


def _names(value: str | Sequence[str] | None, flag: str) -> list[str] | None:
    if value is None:
        return None
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    names = [str(v).strip() for v in items if str(v).strip()]
    if not names:
        raise SystemExit(f"--{flag} is empty; pass comma-separated values or leave it out.")
    return names


def main(runs_dir: str = "runs/transfer/runs", methods: str | Sequence[str] | None = None,
         sizes: str | int | Sequence[int] | None = None, results: str | None = None, note: str = "") -> Path:
    """Read the runs' logs and write ``prior_diagnostics.{csv,md,png}``.

    Args:
        runs_dir: the folder of the run folders (``<method>_n<N>_seed<S>``), e.g. the transfer benchmark's
            ``<work_dir>/runs``.
        methods: comma-separated methods, in the order of the tables (default: every method with gradient ratios).
        sizes: comma-separated N (default: every N found).
        results: the output folder (default ``benchmarks/results``).
        note: what the runs are, for the report (default: the folder's name and the number of runs).

    Returns:
        the path of ``prior_diagnostics.md``.

    Raises:
        SystemExit: ``runs_dir`` is not a folder, a bad ``--sizes``, or no run with gradient ratios matches.
    """
    folder = Path(runs_dir)
    if not folder.is_dir():
        raise SystemExit(f"--runs_dir {str(folder)!r} is not a folder; pass the transfer benchmark's "
                         "<work_dir>/runs (e.g. --runs_dir runs/transfer/runs).")
    chosen_methods = _names(methods, "methods")
    size_names = _names(sizes if not isinstance(sizes, int) else str(sizes), "sizes")
    if size_names is not None and not all(s.isdigit() for s in size_names):
        raise SystemExit(f"--sizes must be comma-separated ints, got {sizes!r}; e.g. --sizes 5,20.")
    chosen_sizes = [int(s) for s in size_names] if size_names else None
    runs = find_runs(folder, chosen_methods, chosen_sizes)
    if not runs:
        raise SystemExit(f"no run folder of {str(folder)!r} matching --methods {methods!r} --sizes {sizes!r} has "
                         "gradient ratios in its TensorBoard logs (the finetune bundle logs them for Bayesian methods "
                         "with grad_ratio_interval > 0).")
    out = Path(results) if results else ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    write_csv(runs, out / "prior_diagnostics.csv")
    source = f"{len(runs)} run(s) of `{folder.name}/`" + (f" ({note})" if note else "")
    write_markdown(runs, out / "prior_diagnostics.md", source)
    write_figure(runs, out / "prior_diagnostics.png")
    print(f"{len(runs)} run(s) -> {out / 'prior_diagnostics.md'}")
    return out / "prior_diagnostics.md"


if __name__ == "__main__":
    import fire

    fire.Fire(main)
