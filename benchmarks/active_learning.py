"""Does ranking unlabeled studies by mutual information help? A simulated labelling loop with MONAI Label's classes.

The MONAI Label integration (``monai_dwp.apps.monailabel``, docs/monailabel.md) ranks the unlabeled studies of a
datastore by the mean voxel-wise mutual information of one Monte Carlo call of the Bayesian target network
(:class:`~monai_dwp.apps.monailabel.MutualInformationScoring`, served by MONAI Label's ``Epistemic`` strategy with
``key=MI_SCORE_KEY``). This benchmark simulates the annotator's loop on the target (tumour) phantoms and compares
three ways of choosing the next studies to label:

- ``mutual_information``: our scoring, then the app's ``mutual_information`` strategy (highest score first);
- ``epistemic``: MONAI Label's stock ``EpistemicScoring`` (``epistemic_simulation_size`` inference calls per study,
  each one fresh draw of all weights, entropy of the label frequencies), then the app's ``epistemic`` strategy;
- ``random``: MONAI Label's ``Random`` strategy.

Protocol, per seed:

1. The phantoms' training pool is split by :func:`monai_dwp.data.validate_decathlon` with ``split_seed`` = seed
   (the split the finetune bundle itself makes): ``num_val_cases`` validation cases, the rest the *selection pool*
   in the seed's permuted order. The test set is the dataset's labelled ``test`` list (the first ``num_test``
   cases). Validation and test cases never change across rounds and strategies.
2. Round 0: the first 3 cases of the pool are labelled; one run of the ``dwp_finetune`` bundle is trained on them
   and evaluated. It is shared by the three strategies of the seed (three CSV rows, one run).
3. Each later round, per strategy: the previous round's model is packaged for MONAI Label
   (:func:`~monai_dwp.apps.monailabel.package_bundle`) and every unlabeled pool study of a fresh MONAI Label
   ``LocalDatastore`` (labelled studies carry their label in ``labels/final``) is scored by the strategy's scoring
   method, built exactly as our app builds it (``app/lib``: ``scoring_task`` infer tasks,
   ``MutualInformationScoring`` / ``EpistemicScoring``); then the strategy object of the app (``strategies()``)
   is asked for the next study twice, the chosen study's label being saved into the datastore in between (what an
   annotator's submission does). The bundle is then *retrained from scratch* on the labelled studies with the same
   budget as every other run (``steps`` optimiser steps; best checkpoint on the fixed validation cases) and
   evaluated on the fixed test set (Monte Carlo predictive mean, ``mc_samples`` weight draws). 3 → 5 → ... → 15.

The strategies are called directly on the datastore, as ``POST /activelearning/<strategy>`` calls them, without the
serving timestamps the app records (no study has been served before): ``Epistemic`` then returns the highest score,
ties in the datastore's order (the stock epistemic score ties at its floor when no weight draw segments anything, as
with the ``tiny`` scale's 2-step models), ``Random`` a uniform choice (the ``random`` module, seeded per seed and
round, as is torch's global RNG of the Monte Carlo draws).

The labelled studies reach the bundle through its own ``split`` key: each run's folder gets a ``datalist.json``
(``{"split": {"train": labelled, "val": validation, "test": test}}``) and the bundle command overrides ``split``
with it, ``--split %<run>/datalist.json#split`` (MONAI's documented override by part of another config file). The
ELBO's N, the mean voxels per case and the evaluation all follow from that one key.

Outputs (``--results``): ``active_learning.csv``, one row per finished (strategy, seed, round), appended as it
finishes, so an interrupted benchmark resumes where it stopped and never redoes a row (a round's picks are kept in
``<run>/selection.json`` as soon as they are made, so a round interrupted during training is not scored again);
``active_learning.md``: test Dice (mean ± sd over seeds) per strategy and number of labelled studies, the paired
differences ``mutual_information − random`` and ``mutual_information − epistemic`` with 95 % t-intervals over seeds,
the scoring seconds per study, the machine; ``active_learning.png``: test Dice against labelled studies.

Scales (``--scale``):

- ``tiny``: seconds, for the test suite: 6 mm phantoms (8 in the pool, 2 test), 16³ patches, 2 optimiser steps,
  one round (3 → 5), one seed; its numbers mean nothing.
- ``cpu``: sized for about 1–2 hours on 2 CPU cores with ``--workers 2``: an estimate, not a measurement, from the
  transfer benchmark's costs on that machine (about 1 s per optimiser step and 2 s per Monte Carlo pass over a 3 mm
  volume, about 15 s to start a bundle run): 57 runs of about 130 s training and 55 s evaluation, and 2 × 3 × 72
  scored studies of about 6 s, i.e. about 13,000 s of one core. 3 mm
  phantoms (23 pool cases, 3 for validation, as the transfer benchmark's earlier 3 mm scale; made in ``--data_dir``
  when it holds none), 3 seeds, 3 → 15 labelled studies by 2. Reduced: 100 optimiser steps of batch 2 × 2 patches of 24³ per
  run (the transfer benchmark: 200), 2 validations per run, evaluation on the first 10 of the 20 test cases with 2
  weight draws, 3 weight draws per study for both scorings (the app's defaults: the bundle's 10 draws for mutual
  information, ``epistemic_simulation_size`` 5 for the stock scoring).

``--workers W`` runs W (strategy, seed) loops side by side (each bundle run with ``cpu_count // W`` threads; the
scorings, in this process, one at a time). ``--method`` is the finetune bundle's Bayesian method (default
``gaussian_prior``, which needs no hand-off; ``dwp`` reuses or makes the transfer benchmark's source nets and prior in
``--bundles_dir``'s ``models/``).

Usage (in the MONAI Label environment, ``bash .ci/monailabel.sh`` builds it)::

    .venv-monailabel/bin/python benchmarks/active_learning.py --scale cpu --workers 2 --data_dir runs/phantoms_3mm
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import random
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "benchmarks"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from transfer import SCALES as TRANSFER_SCALES  # noqa: E402
from _runs import best_validation, claim_run_dir, describe_machine  # noqa: E402
from _tables import interval_text, mean_sd, mean_table, save_figure, size_axis  # noqa: E402

from monai_dwp.bundle_utils import run_name  # noqa: E402
from monai_dwp.pipeline import (  # noqa: E402
    PipelineSettings,
    StageRunner,
    default_bundles_dir,
    make_handoffs,
    stop_stages_on_sigterm,
)
from monai_dwp.report import collect_metrics  # noqa: E402
from monai_dwp.transfer import BAYESIAN_METHODS, HANDOFFS  # noqa: E402
from monai_dwp.utils.io import atomic_write  # noqa: E402

__all__ = ["ALScale", "SCALES", "STRATEGIES", "FIELDS", "write_markdown", "write_figure", "main"]

BUNDLE = "dwp_finetune"
STRATEGIES: tuple[str, ...] = ("mutual_information", "epistemic", "random")
"""The compared strategies, named as our MONAI Label app names them (``app/lib/activelearning.strategies()``)."""
INITIAL = "initial"
"""Run name of round 0 (shared by the strategies of a seed)."""
ROUND0_EVALUATOR = "random"
"""The strategy whose loop evaluates round 0 and writes its rows (it scores nothing, so it does so while the other
loops of the seed score the pool with round 0's model)."""
LABELS = {"mutual_information": "mutual information (ours)", "epistemic": "epistemic (MONAI Label)",
          "random": "random (MONAI Label)"}
FIELDS: tuple[str, ...] = (
    "strategy", "seed", "round", "num_labelled", "scale", "method", "steps", "patch_size", "spacing", "mc_samples",
    "scoring_mc_samples", "epistemic_simulation_size", "num_val_cases", "num_test", "epochs", "workers", "run",
    "picked", "labelled", "scored_studies", "scoring_seconds", "scoring_seconds_per_study", "train_seconds",
    "eval_seconds", "best_val_dice", "best_epoch", "test_dice", "test_pooled_dice",
)
"""Columns of ``active_learning.csv``."""
BUDGET_KEYS: tuple[str, ...] = ("scale", "method", "steps", "patch_size", "spacing", "mc_samples",
                                "scoring_mc_samples", "epistemic_simulation_size", "num_val_cases", "num_test")
"""Columns that must match the current setting for a row to count as done (other rows stay in the CSV, untabled)."""


@dataclasses.dataclass(frozen=True)
class ALScale:
    """One setting of the benchmark.

    Attributes:
        spacing: phantom and training voxel size (mm).
        patch_size: training patch and sliding-window edge (voxels).
        num_pool: training cases of the phantoms: the validation cases plus the selection pool.
        num_test_data: test cases of the phantoms (made when the data folder holds none).
        num_test: test cases evaluated (the first of the dataset's labelled ``test`` list).
        num_val_cases: fixed validation cases per seed (checkpoint selection).
        initial: labelled studies at round 0.
        per_round: studies labelled per round.
        max_labelled: labelled studies at the last round.
        seeds: default seeds.
        steps: optimiser steps of every run.
        validations: about how many validations a run makes.
        batch_size: cases per batch.
        num_samples: patches per case per batch.
        mc_samples: weight draws of the test evaluation.
        scoring_mc_samples: weight draws of the one mutual-information call per study.
        epistemic_simulation_size: inference calls per study of the stock epistemic scoring (one draw each).
        reduced: what the scale reduces, for the markdown.
    """

    spacing: float
    patch_size: int
    num_pool: int
    num_test_data: int
    num_test: int
    num_val_cases: int
    initial: int
    per_round: int
    max_labelled: int
    seeds: tuple[int, ...]
    steps: int
    validations: int
    batch_size: int
    num_samples: int
    mc_samples: int
    scoring_mc_samples: int
    epistemic_simulation_size: int
    reduced: str

    @property
    def sizes(self) -> tuple[int, ...]:
        """Labelled studies per round: ``initial, initial + per_round, ..., max_labelled``."""
        return tuple(range(self.initial, self.max_labelled + 1, self.per_round))

    @property
    def rounds(self) -> int:
        """Rounds after round 0."""
        return len(self.sizes) - 1


SCALES: dict[str, ALScale] = {
    "tiny": ALScale(
        spacing=6.0, patch_size=16, num_pool=8, num_test_data=2, num_test=2, num_val_cases=1, initial=3,
        per_round=2, max_labelled=5, seeds=(0,), steps=2, validations=1, batch_size=1, num_samples=1, mc_samples=2,
        scoring_mc_samples=2, epistemic_simulation_size=2,
        reduced="a smoke test: 6 mm phantoms, 16³ patches, 2 optimiser steps, one round (3 → 5 labelled), one seed; "
                "its numbers mean nothing",
    ),
    "cpu": ALScale(
        spacing=3.0, patch_size=24, num_pool=23, num_test_data=20, num_test=10, num_val_cases=3, initial=3,
        per_round=2, max_labelled=15, seeds=(0, 1, 2), steps=100, validations=2, batch_size=2, num_samples=2,
        mc_samples=2, scoring_mc_samples=3, epistemic_simulation_size=3,
        reduced="3 mm phantoms; 100 optimiser steps of batch 2 × 2 patches of 24³ per run (the transfer benchmark: "
                "200), 2 validations per run; evaluation on the first 10 of the 20 test cases with 2 weight draws; "
                "3 weight draws per study for both scorings (the app's defaults: the bundle's 10 draws for mutual "
                "information, 5 calls of the stock epistemic scoring)",
    ),
}


# ----------------------------------------------------------------------------------------------------------------------
# flags


def _check_scale(scale: object) -> ALScale:
    if not isinstance(scale, str) or scale not in SCALES:
        raise SystemExit(f"--scale must be one of {sorted(SCALES)}, got {scale!r}; e.g. --scale tiny.")
    return SCALES[scale]


def _check_seeds(seeds: object, default: tuple[int, ...]) -> tuple[int, ...]:
    """``--seeds 0,1,2`` (fire: a tuple), ``--seeds 4`` (one seed) or ``None`` (the scale's)."""
    if seeds is None:
        return default
    listed = seeds if isinstance(seeds, (list, tuple)) else str(seeds).split(",")
    chosen = []
    for item in listed:
        text = str(item).strip()
        if isinstance(item, bool) or not text.isdigit():
            raise SystemExit(f"--seeds must be comma-separated integers >= 0, e.g. --seeds 0,1,2; got {seeds!r}.")
        chosen.append(int(text))
    if not chosen or len(set(chosen)) != len(chosen):
        raise SystemExit(f"--seeds must list distinct seeds, e.g. --seeds 0,1,2; got {seeds!r}.")
    return tuple(chosen)


def _check_workers(workers: object) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SystemExit(f"--workers must be an integer >= 1 (runs side by side), e.g. --workers 2; got {workers!r}.")
    return workers


def _check_method(method: object) -> str:
    if method not in BAYESIAN_METHODS:
        raise SystemExit(f"--method must be a Bayesian method of the finetune bundle (the scores need weight draws), "
                         f"one of {BAYESIAN_METHODS}; got {method!r}, e.g. --method gaussian_prior.")
    return str(method)


def _check_device(device: object) -> str:
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise SystemExit(f"--device must be cpu or cuda, got {device!r}.")
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here; pass --device cpu.")
    return str(device)


def _require_monailabel() -> None:
    """Import MONAI Label, with its settings for in-process use, or stop with the fix."""
    # MONAI Label reads these when first imported: no POST to port 8000 after a label, no datastore watcher
    os.environ.setdefault("MONAI_LABEL_AUTO_UPDATE_SCORING", "false")
    os.environ.setdefault("MONAI_LABEL_DATASTORE_AUTO_RELOAD", "false")
    os.environ.setdefault("MONAI_LABEL_SESSIONS", "false")
    from monai_dwp.apps.monailabel import require_monailabel

    try:
        require_monailabel()
    except ImportError as err:
        raise SystemExit(f"benchmarks/active_learning.py drives MONAI Label's classes: {err} Then run it with "
                         ".venv-monailabel/bin/python.") from err


# ----------------------------------------------------------------------------------------------------------------------
# CSV


def read_rows(csv_path: Path) -> list[dict[str, str]]:
    """The rows of ``csv_path`` (none when it does not exist).

    Raises:
        SystemExit: the file has other columns (another tool's file, or an older version's).
    """
    if not csv_path.is_file():
        return []
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is not None and tuple(reader.fieldnames) != FIELDS:
            raise SystemExit(f"{csv_path} has the columns {reader.fieldnames}, not this benchmark's; move it aside or "
                             "pass another --results folder.")
        return list(reader)


def append_row(csv_path: Path, row: Mapping[str, object]) -> None:
    """Append one finished (strategy, seed, round) to ``csv_path`` (with the header when new)."""
    new = not csv_path.is_file()
    with open(csv_path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in FIELDS})
        f.flush()
        os.fsync(f.fileno())


def _key(row: Mapping[str, object]) -> tuple[str, int, int]:
    return str(row["strategy"]), int(row["seed"]), int(row["round"])


# ----------------------------------------------------------------------------------------------------------------------
# markdown and figure


def _floats(rows: Sequence[Mapping[str, str]], strategy: str, n: int, column: str) -> dict[int, float]:
    out = {}
    for r in rows:
        if r["strategy"] == strategy and int(r["num_labelled"]) == n and r.get(column) not in (None, "", "nan"):
            out[int(r["seed"])] = float(r[column])
    return out


def _dice_table(rows: Sequence[Mapping[str, str]], strategies: Sequence[str], sizes: Sequence[int],
                column: str) -> list[str]:
    return mean_table(lambda s, n: _floats(rows, s, n, column), strategies, sizes, first="strategy", column_label=str)


def _paired_table(rows: Sequence[Mapping[str, str]], strategies: Sequence[str], sizes: Sequence[int],
                  column: str) -> list[str]:
    """``mutual_information`` − each other strategy per number of labelled studies (after round 0), and averaged over
    those rounds per seed (the area between the learning curves)."""
    later = list(sizes[1:])
    lines = ["| difference | " + " | ".join(f"{n}" for n in later) + f" | mean over rounds 1–{len(later)} |",
             "|---|" + "---|" * (len(later) + 1)]
    for other in [s for s in ("random", "epistemic") if s in strategies]:
        cells, per_seed = [], {}
        for n in later:
            ours, theirs = _floats(rows, "mutual_information", n, column), _floats(rows, other, n, column)
            seeds = sorted(set(ours) & set(theirs))
            for seed in seeds:
                per_seed.setdefault(seed, {})[n] = ours[seed] - theirs[seed]
            cells.append(interval_text([ours[k] - theirs[k] for k in seeds]))
        complete = [statistics.mean(d.values()) for d in per_seed.values() if len(d) == len(later)]
        cells.append(interval_text(complete))
        lines.append(f"| `mutual_information` − `{other}` | " + " | ".join(cells) + " |")
    return lines + [""]


def _scoring_table(rows: Sequence[Mapping[str, str]], strategies: Sequence[str]) -> list[str]:
    lines = ["| strategy | scoring (MONAI Label class) | weight draws per study | seconds per study | studies scored "
             "| scoring seconds, total |", "|---|---|---|---|---|---|"]
    for s in strategies:
        scored = [r for r in rows if r["strategy"] == s and int(r["round"]) > 0]
        if not scored:
            continue
        if s == "random":
            lines.append("| `random` | none (`Random` strategy) | 0 | 0 | 0 | 0 |")
            continue
        first = scored[0]
        if s == "mutual_information":
            what, draws = "`MutualInformationScoring` (one call)", f"{first['scoring_mc_samples']} (one call)"
        else:
            what = "`EpistemicScoring` (epistemic_v2)"
            draws = f"{first['epistemic_simulation_size']} (calls of one draw)"
        per_study = [float(r["scoring_seconds_per_study"]) for r in scored]
        lines.append(f"| `{s}` | {what} | {draws} | {mean_sd(per_study, 2)} | "
                     f"{sum(int(r['scored_studies']) for r in scored)} | "
                     f"{sum(float(r['scoring_seconds']) for r in scored):.0f} |")
    return lines + [""]


def write_markdown(rows: Sequence[Mapping[str, str]], scale_name: str, scale: ALScale, path: Path,
                   machine: str = "") -> None:
    """Write ``active_learning.md`` from the rows of the current setting.

    Args:
        rows: CSV rows (strings), one per finished (strategy, seed, round).
        scale_name: the ``--scale``.
        scale: its setting.
        path: the markdown file (written atomically).
        machine: the machine in words.
    """
    strategies = [s for s in STRATEGIES if any(r["strategy"] == s for r in rows)]
    sizes = sorted({int(r["num_labelled"]) for r in rows})
    method = rows[0]["method"] if rows else "?"
    seeds = sorted({int(r["seed"]) for r in rows})
    lines = [
        f"# Active learning: which studies to label next (`--scale {scale_name}`)", "",
        f"A simulated labelling loop on the tumour phantoms: {scale.initial} labelled studies at round 0 (the same "
        f"seed-drawn studies for every strategy, one shared run), then {scale.per_round} more per round up to "
        f"{scale.max_labelled}, chosen from a fixed pool by MONAI Label's classes as our app serves them: "
        "`mutual_information` (our `MutualInformationScoring` + `Epistemic(key=MI_SCORE_KEY)`), `epistemic` "
        "(MONAI Label's `EpistemicScoring` + `Epistemic`) and `random` (MONAI Label's `Random`). Every round the "
        f"`{BUNDLE}` bundle (method `{method}`) is retrained from scratch on the labelled studies with the same "
        f"budget ({scale.steps} optimiser steps, batch {scale.batch_size} × {scale.num_samples} patches of "
        f"{scale.patch_size}³, {scale.spacing:g} mm; best checkpoint on {scale.num_val_cases} fixed validation "
        f"case(s)) and evaluated on {scale.num_test} fixed test cases (Monte Carlo mean of {scale.mc_samples} weight "
        f"draws). Seeds: {', '.join(map(str, seeds)) or '–'}. Reduced: {scale.reduced}. Written by "
        "`benchmarks/active_learning.py` from `active_learning.csv`" + (f"; {machine}" if machine else "") + ".", "",
    ]
    runs = {r["run"]: r for r in rows}
    busy = sum(float(r["train_seconds"]) + float(r["eval_seconds"]) for r in runs.values()
               if r.get("train_seconds") not in (None, ""))
    scoring = sum(float(r["scoring_seconds"]) for r in rows if r.get("scoring_seconds") not in (None, ""))
    lines += [f"Cost: {len(runs)} training runs, {busy / 3600:.2f} h of training and evaluation and "
              f"{scoring / 3600:.2f} h of scoring (sums of wall times; with `--workers` > 1 they overlap).", ""]
    if not rows:
        lines += ["No finished round yet.", ""]
    else:
        lines += ["## Test Dice (per-case mean) against labelled studies", "",
                  "Mean ± sd over seeds (number of seeds); columns: labelled studies; best per column in bold.", ""]
        lines += _dice_table(rows, strategies, sizes, "test_dice")
        if "mutual_information" in strategies and len(strategies) > 1 and len(sizes) > 1:
            lines += ["## Paired differences of test Dice", "",
                      "Mean [95 % t-interval] over the seeds both ran; the last column averages each seed's "
                      "differences over the rounds after round 0 first.", ""]
            lines += _paired_table(rows, strategies, sizes, "test_dice")
        lines += ["## Test Dice pooled over voxels", ""]
        lines += _dice_table(rows, strategies, sizes, "test_pooled_dice")
        lines += ["## Scoring time per study", "",
                  "Wall time of one scoring call over every unlabeled study of the pool (the network loaded once per "
                  "call, included), divided by the studies scored; mean ± sd over rounds and seeds (number of "
                  "rounds). Scoring runs one study at a time in the benchmark's process; with `--workers` > 1 another "
                  "loop's bundle run may share the machine meanwhile.", ""]
        lines += _scoring_table(rows, strategies)
    lines += ["![active learning](active_learning.png)", ""]
    text = "\n".join(lines)
    atomic_write(path, "w", lambda f: f.write(text))


def write_figure(rows: Sequence[Mapping[str, str]], path: Path) -> None:
    """Test Dice against labelled studies, mean ± sd over seeds, one line per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({int(r["num_labelled"]) for r in rows})
    fig, ax = plt.subplots(figsize=(6, 4))
    strategies = [s for s in STRATEGIES if any(r["strategy"] == s for r in rows)]
    for i, s in enumerate(strategies):
        pts = [(n, list(_floats(rows, s, n, "test_dice").values())) for n in sizes]
        pts = [(n, v) for n, v in pts if v]
        offset = 0.08 * (i - (len(strategies) - 1) / 2)  # error bars side by side
        ax.errorbar([n + offset for n, _ in pts], [statistics.mean(v) for _, v in pts],
                    yerr=[statistics.pstdev(v) if len(v) > 1 else 0.0 for _, v in pts], marker="o", capsize=3,
                    label=LABELS.get(s, s))
    seeds = len({r["seed"] for r in rows})
    ax.set_title(f"mean ± sd over {seeds} seed{'s' if seeds != 1 else ''}", fontsize=9)
    size_axis(ax, sizes, "test Dice, per-case mean ↑", xlabel="labelled studies")
    ax.legend(fontsize=8)
    save_figure(fig, path)


# ----------------------------------------------------------------------------------------------------------------------
# the loop


def _case_id(case: Mapping[str, Any]) -> str:
    """The MONAI Label datastore id of a case: its image file name without the extension."""
    name = Path(str(case["image"])).name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return Path(name).stem


def _budget(scale: ALScale, n: int) -> tuple[int, int]:
    """``(epochs, val_interval)`` giving ``scale.steps`` optimiser steps on ``n`` labelled studies."""
    per_epoch = math.ceil(n / scale.batch_size)
    epochs = max(1, round(scale.steps / per_epoch))
    return epochs, max(1, epochs // scale.validations)


class _Loop:
    """The benchmark's state (runner, data, rows, locks) and its steps: bundle runs, MONAI Label selection, loops."""

    def __init__(self, scale_name: str, scale: ALScale, seeds: Sequence[int], method: str, device: str, workers: int,
                 work: Path, out: Path, bundles: Path, data: Path, handoffs: Mapping[str, Path], machine: str) -> None:
        self.scale_name, self.s, self.method, self.device, self.workers = scale_name, scale, method, device, workers
        self.work, self.out, self.bundles, self.data, self.machine = work, out, bundles, data, machine
        self.handoffs = {k: v for k, v in handoffs.items() if k in HANDOFFS[method]}
        self.runner = StageRunner(work, device, False, bundles, preload=True)
        self.threads = max(1, (os.cpu_count() or 1) // workers)
        self.csv = out / "active_learning.csv"
        self.budget_row = {"scale": scale_name, "method": method, "steps": scale.steps,
                           "patch_size": scale.patch_size, "spacing": scale.spacing, "mc_samples": scale.mc_samples,
                           "scoring_mc_samples": scale.scoring_mc_samples,
                           "epistemic_simulation_size": scale.epistemic_simulation_size,
                           "num_val_cases": scale.num_val_cases, "num_test": scale.num_test}
        want = {k: str(v) for k, v in self.budget_row.items()}
        # the rows of this setting and these seeds are tabled; any other row stays in the CSV untouched
        self.rows = [r for r in read_rows(self.csv) if all(r.get(k) == v for k, v in want.items())
                     and int(r["seed"]) in seeds]
        self.done = {_key(r): r for r in self.rows}
        self.row_lock = threading.Lock()  # one whole row at a time, then the markdown and figure
        self.scoring_lock = threading.Lock()  # one scoring at a time: global RNG seeds, the cores for the others
        self.seed_locks = {seed: threading.Lock() for seed in seeds}  # round 0 of a seed is trained once
        self.train_seconds: dict[str, float] = {}  # wall time of the trainings run by this process, by run label
        self.failed = threading.Event()
        self.bar: Any = None

    # -- runs ----------------------------------------------------------------------------------------------------------

    def run_dir(self, name: str, n: int, seed: int) -> Path:
        return self.work / "runs" / run_name(name, n, seed)

    def _stages(self, name: str, seed: int, labelled: Sequence[Mapping[str, Any]],
                split: Mapping[str, Any]) -> tuple[str, Path, int, dict[str, object], bool]:
        """``(label, ckpt_dir, epochs, bundle overrides, changed)`` of a run on ``labelled``, after writing its
        ``datalist.json`` (``changed``: it held another labelled set, so a finished training is stale)."""
        n = len(labelled)
        ckpt_dir = self.run_dir(name, n, seed)
        epochs, _ = _budget(self.s, n)
        datalist = ckpt_dir / "datalist.json"
        content = {"split": {"train": list(labelled), "val": split["val"], "test": split["test"][: self.s.num_test]}}
        changed = datalist.is_file() and json.loads(datalist.read_text()) != content
        if changed or not datalist.is_file():
            atomic_write(datalist, "w", lambda f: json.dump(content, f, indent=1))
        args = dict(method=self.method, spacing=[self.s.spacing] * 3, patch_size=[self.s.patch_size] * 3,
                    batch_size=self.s.batch_size, num_samples=self.s.num_samples, dataset_dir=self.data,
                    num_train_cases=n, num_val_cases=self.s.num_val_cases, seed=seed, split_seed=seed,
                    split=f"%{datalist}#split", ckpt_dir=ckpt_dir, **self.handoffs)
        return run_name(name, n, seed), ckpt_dir, epochs, args, changed

    def train(self, name: str, seed: int, labelled: Sequence[Mapping[str, Any]], split: Mapping[str, Any]) -> None:
        """Train the bundle on ``labelled`` (skipped when this very training finished before); a training that runs
        removes the run's test metrics, so that its evaluation runs again."""
        label, ckpt_dir, epochs, args, changed = self._stages(name, seed, labelled, split)
        outputs = [ckpt_dir / "model.pt", ckpt_dir / f"checkpoint_epoch={epochs}.pt"]  # a finished training only
        if changed or not all(p.exists() for p in outputs):
            (ckpt_dir / "eval" / "metrics.csv").unlink(missing_ok=True)
        _, val_interval = _budget(self.s, len(labelled))
        cmd = self.runner.bundle(BUNDLE, ["train"], epochs=epochs, val_interval=val_interval, **args)
        start = time.perf_counter()
        if self.runner.run(f"{label}_train", cmd, outputs, self.bar, self.threads, force=changed):
            self.train_seconds[label] = round(time.perf_counter() - start, 1)  # a skip (round 0's 2nd call) keeps it

    def evaluate(self, name: str, seed: int, labelled: Sequence[Mapping[str, Any]],
                 split: Mapping[str, Any]) -> dict[str, object]:
        """Evaluate the trained run on the fixed test set (skipped when its metrics exist); returns the row's run
        columns."""
        label, ckpt_dir, epochs, args, _ = self._stages(name, seed, labelled, split)
        cmd = self.runner.bundle(BUNDLE, ["train", "evaluate"], mc_samples=self.s.mc_samples, **args)
        start = time.perf_counter()
        ran = self.runner.run(f"{label}_evaluate", cmd, [ckpt_dir / "eval" / "metrics.csv"], self.bar, self.threads)
        metrics = collect_metrics(ckpt_dir / "eval")
        best_dice, best_epoch = best_validation(self.runner.log_dir / f"{label}_train.log")
        return {"epochs": epochs, "run": label, "train_seconds": self.train_seconds.get(label, 0.0),
                "eval_seconds": round(time.perf_counter() - start, 1) if ran else 0.0, "best_val_dice": best_dice,
                "best_epoch": best_epoch, "test_dice": metrics.get("val_mean_dice", float("nan")),
                "test_pooled_dice": metrics.get("val_pooled_dice", float("nan"))}

    def claim(self, name: str, n: int, seed: int, extra: Mapping[str, object]) -> Path:
        """The run folder, moved aside first when another setting made it."""
        ckpt_dir = self.run_dir(name, n, seed)
        claim_run_dir(ckpt_dir, {**self.budget_row, **extra})
        return ckpt_dir

    def record(self, row: Mapping[str, object]) -> None:
        full = {**self.budget_row, "workers": self.workers, **row}
        with self.row_lock:
            append_row(self.csv, full)
            text = {k: str(full.get(k, "")) for k in FIELDS}
            self.rows.append(text)
            self.done[_key(text)] = text
            self.write_outputs()
            if self.bar is not None:
                self.bar.update()

    def write_outputs(self) -> None:
        write_markdown(self.rows, self.scale_name, self.s, self.out / "active_learning.md", self.machine)
        write_figure(self.rows, self.out / "active_learning.png")

    # -- MONAI Label ---------------------------------------------------------------------------------------------------

    def select(self, strategy: str, seed: int, rnd: int, previous: Path, ckpt_dir: Path,
               pool: Sequence[Mapping[str, Any]], labelled: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Score the unlabeled pool with the previous round's model and pick ``per_round`` studies, with the
        MONAI Label objects our app serves. Runs under the scoring lock."""
        import torch
        from monailabel.datastore.local import LocalDatastore

        from monai_dwp.apps.monailabel import package_bundle
        from monai_dwp.apps.monailabel.app.lib import activelearning, infers, scoring

        served = package_bundle(
            self.bundles / BUNDLE, ckpt_dir / "served" / BUNDLE, model=previous / "model.pt", overwrite=True,
            overrides={"method": self.method, "spacing": [self.s.spacing] * 3,
                       "patch_size": [self.s.patch_size] * 3, "mc_samples": self.s.scoring_mc_samples},
            dataset_dir=self.data,
        )
        studies = ckpt_dir / "studies"
        if studies.exists():
            shutil.rmtree(studies)
        studies.mkdir(parents=True)
        for case in pool:  # the pool's images, linked; labels go through the datastore
            (studies / Path(case["image"]).name).symlink_to(Path(case["image"]).resolve())
        datastore = LocalDatastore(str(studies), extensions=("*.nii.gz", "*.nii"), auto_reload=False)
        by_id = {_case_id(c): c for c in pool}
        for case in labelled:
            datastore.save_label(_case_id(case), str(case["label"]), "final", {})
        unlabeled = sorted(datastore.get_unlabeled_images())
        expected = sorted(set(by_id) - {_case_id(c) for c in labelled})
        if unlabeled != expected:
            raise RuntimeError(f"the datastore of {ckpt_dir} lists {unlabeled} as unlabeled, expected {expected}.")

        torch.manual_seed(1_000 * seed + rnd)  # the Monte Carlo weight draws use the global RNG
        random.seed(1_000 * seed + rnd)  # MONAI Label's Random strategy uses the random module
        request = {"device": self.device, "max_workers": 1}
        score_key = None
        start = time.perf_counter()
        if strategy == "mutual_information":
            task = infers.scoring_task(str(served), {}, num_samples=self.s.scoring_mc_samples)
            scoring.MutualInformationScoring(task, num_samples=self.s.scoring_mc_samples)(request, datastore)
            score_key = scoring.MI_SCORE_KEY
        elif strategy == "epistemic":
            # as the app builds it: one fresh draw of all weights per call, no dropout, network.train()
            task = infers.scoring_task(str(served), {}, num_samples=1, train_mode=True, dropout=0.0)
            scoring.EpistemicScoring(task, simulation_size=self.s.epistemic_simulation_size)(request, datastore)
            score_key = "epistemic_entropy"
        seconds = time.perf_counter() - start if score_key else 0.0
        scores = {i: datastore.get_image_info(i).get(score_key) for i in unlabeled} if score_key else {}
        if score_key and any(v is None for v in scores.values()):
            raise RuntimeError(f"{strategy} scoring left studies without {score_key!r}: {scores}")
        chooser = activelearning.strategies()[strategy]
        picked = []
        for _ in range(self.s.per_round):
            choice = chooser({"strategy": strategy}, datastore)
            if not choice:
                raise RuntimeError(f"strategy {strategy} found no unlabeled study in {studies}")
            picked.append(choice["id"])
            datastore.save_label(choice["id"], str(by_id[choice["id"]]["label"]), "final", {})  # the annotator
        return {"labelled_before": [_case_id(c) for c in labelled], "picked": picked, "scores": scores,
                "scored_studies": len(unlabeled) if score_key else 0, "scoring_seconds": round(seconds, 3)}

    # -- chains --------------------------------------------------------------------------------------------------------

    def chain(self, strategy: str, seed: int, split: Mapping[str, Any]) -> None:
        """The labelling loop of one strategy and seed: round 0's training (shared: whichever loop of the seed comes
        first trains it, the others wait), its evaluation and rows (by the :data:`ROUND0_EVALUATOR` loop, while the
        others score), then every later round."""
        pool = split["train"]
        by_id = {_case_id(c): c for c in pool}
        initial = list(pool[: self.s.initial])
        labelled = initial
        previous = self.run_dir(INITIAL, len(initial), seed)
        round0_rows = [s for s in STRATEGIES if (s, seed, 0) not in self.done] if strategy == ROUND0_EVALUATOR else []
        if round0_rows or (strategy, seed, 1) not in self.done:  # round 0's model is needed
            with self.seed_locks[seed]:
                if self.failed.is_set():
                    return
                self.claim(INITIAL, len(initial), seed, {"labelled": [_case_id(c) for c in initial]})
                self.train(INITIAL, seed, initial, split)
        if round0_rows:
            run = self.evaluate(INITIAL, seed, initial, split)
            for name in round0_rows:
                self.record({"strategy": name, "seed": seed, "round": 0, "num_labelled": len(initial), **run,
                             "picked": "", "labelled": ";".join(_case_id(c) for c in initial), "scored_studies": 0,
                             "scoring_seconds": 0.0, "scoring_seconds_per_study": 0.0})
        for rnd in range(1, self.s.rounds + 1):
            if self.failed.is_set():
                return
            n = self.s.initial + rnd * self.s.per_round
            done = self.done.get((strategy, seed, rnd))
            if done is not None:
                unknown = [i for i in done["labelled"].split(";") if i not in by_id]
                if unknown:
                    raise SystemExit(f"{self.csv} has a row of {strategy}, seed {seed}, round {rnd} with studies "
                                     f"{unknown} that are not in the pool of {self.data}: pass the --data_dir those "
                                     "rows were made with, or another --results folder.")
                labelled = [by_id[i] for i in done["labelled"].split(";")]
                previous = self.run_dir(strategy, n, seed)
                continue
            if not (previous / "model.pt").is_file():
                raise RuntimeError(f"the model of the previous round, {previous / 'model.pt'}, is gone while its row "
                                   f"is in {self.csv}; restore --work_dir or move the CSV aside to start again.")
            ckpt_dir = self.claim(strategy, n, seed, {"strategy": strategy, "round": rnd,
                                                      "initial": [_case_id(c) for c in initial]})
            selection_file = ckpt_dir / "selection.json"
            before = [_case_id(c) for c in labelled]
            selection = json.loads(selection_file.read_text()) if selection_file.is_file() else None
            if selection is None or selection.get("labelled_before") != before:
                with self.scoring_lock:
                    selection = self.select(strategy, seed, rnd, previous, ckpt_dir, pool, labelled)
                atomic_write(selection_file, "w", lambda f, sel=selection: json.dump(sel, f, indent=1))
            labelled = labelled + [by_id[i] for i in selection["picked"]]
            self.train(strategy, seed, labelled, split)
            run = self.evaluate(strategy, seed, labelled, split)
            scored, seconds = int(selection["scored_studies"]), float(selection["scoring_seconds"])
            self.record({"strategy": strategy, "seed": seed, "round": rnd, "num_labelled": n, **run,
                         "picked": ";".join(selection["picked"]), "labelled": ";".join(_case_id(c) for c in labelled),
                         "scored_studies": scored, "scoring_seconds": seconds,
                         "scoring_seconds_per_study": round(seconds / scored, 3) if scored else 0.0})
            previous = ckpt_dir

    def run_all(self, tasks: Sequence[Callable[[], None]]) -> None:
        """Run ``tasks`` on ``workers`` threads; after a failure no task starts, and the first error is raised."""
        def guarded(task: Callable[[], None]) -> None:
            if self.failed.is_set():
                return
            try:
                task()
            except BaseException:
                self.failed.set()
                raise

        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            futures = [pool.submit(guarded, t) for t in tasks]
            errors = [f.exception() for f in futures]
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first


def _prepare_data(runner_work: Path, scale_name: str, scale: ALScale, method: str, data_dir: Path, bundles: Path,
                  device: str) -> tuple[Path, dict[str, Path]]:
    """The tumour phantoms (made when ``data_dir/tumour`` holds none) and the hand-offs ``method`` needs: the
    3 mm ones in ``bundles``' ``models/`` (the source nets and the 15-epoch prior of the transfer benchmark's earlier
    3 mm scale; ``tiny``: the quick chain's), reused when there."""
    base = TRANSFER_SCALES["tiny"].handoffs if scale_name == "tiny" else dataclasses.replace(
        PipelineSettings.default(), mc_samples=3, prior_epochs=15, seeds=(0, 1))
    settings = dataclasses.replace(base, spacing=scale.spacing, num_target_pool=scale.num_pool,
                                   num_target_test=scale.num_test_data)
    if HANDOFFS[method]:  # source nets / prior in the bundles' models/, reused when they exist
        handoffs = make_handoffs(StageRunner(runner_work, device, False, bundles, preload=True), settings, data_dir,
                                 swag="swag_ckpt" in HANDOFFS[method])
        return handoffs["target_data"], handoffs
    target = data_dir / "tumour"
    if not (target / "dataset.json").is_file():
        from monai_dwp.data.phantoms import make_phantom_dataset

        print(f"[data] making {scale.num_pool} + {scale.num_test_data} tumour phantoms at {scale.spacing:g} mm in "
              f"{target}", flush=True)
        make_phantom_dataset(target, disease="tumour", num_cases=scale.num_pool, num_test=scale.num_test_data,
                             spacing=scale.spacing, progress=False)
    return target, {}


def _split(data: Path, scale: ALScale, seed: int) -> dict[str, list[dict[str, Any]]]:
    """The seed's split as the bundle makes it: validation cases, the selection pool (permuted), the test list.

    Raises:
        SystemExit: the dataset is too small for the scale (names ``--data_dir``).
    """
    from monai_dwp.data import validate_decathlon

    try:
        split = validate_decathlon(data, modality="FLAIR", num_train_cases=None, num_val_cases=scale.num_val_cases,
                                   seed=seed, label_rule="foreground")
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"--data_dir: the tumour phantoms in {data} cannot be used ({err}).") from err
    if len(split["train"]) < scale.max_labelled or len(split["test"]) < scale.num_test:
        raise SystemExit(
            f"--data_dir: {data} has {len(split['train'])} pool cases (after {scale.num_val_cases} validation) and "
            f"{len(split['test'])} labelled test cases; this scale needs at least {scale.max_labelled} and "
            f"{scale.num_test}: pass another --data_dir, or remove this one to make the phantoms again."
        )
    return split


def main(scale: str = "cpu", seeds: str | int | Sequence[int] | None = None, work_dir: str = "runs/active_learning",
         results: str | None = None, device: str | None = None, workers: int = 1, method: str = "gaussian_prior",
         data_dir: str | None = None, bundles_dir: str | None = None) -> Path:
    """Run (or resume) the benchmark; write ``active_learning.csv``, ``.md`` and ``.png``.

    Args:
        scale: ``tiny`` or ``cpu`` (see the module docstring).
        seeds: comma-separated seeds (default: the scale's; ``cpu``: 0,1,2).
        work_dir: runs, logs and (by default) phantoms.
        results: the folder of the result files (default ``benchmarks/results``; ``<work_dir>/results`` for
            ``tiny``, so that a smoke test never overwrites the committed results).
        device: ``cpu`` or ``cuda`` (default: CUDA when available).
        workers: (strategy, seed) loops side by side, each bundle run with ``cpu_count // workers`` threads; the
            scorings run one at a time in this process (with as many threads).
        method: the Bayesian method of the finetune bundle (default ``gaussian_prior``: no hand-off needed).
        data_dir: the folder holding ``tumour/`` (default ``<work_dir>/data``, phantoms made there when missing).
        bundles_dir: the ``bundles/`` folder to run (default: the repository's).

    Returns:
        the path of ``active_learning.md``.

    Raises:
        SystemExit: a bad flag, MONAI Label not importable, or a dataset too small for the scale.
    """
    s = _check_scale(scale)
    chosen_seeds = _check_seeds(seeds, s.seeds)
    workers = _check_workers(workers)
    method = _check_method(method)
    device = _check_device(device)
    _require_monailabel()
    import torch
    from tqdm import tqdm

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    work = Path(work_dir).resolve()
    if "#" in str(work) or "::" in str(work):  # the runs' ``--split %<datalist>#split`` override splits there
        raise SystemExit(f"--work_dir must not contain '#' or '::' (MONAI's config id separators), got {str(work)!r}.")
    out = Path(results).resolve() if results else (work / "results" if scale == "tiny"
                                                    else ROOT / "benchmarks" / "results")
    out.mkdir(parents=True, exist_ok=True)
    bundles = Path(bundles_dir).resolve() if bundles_dir else default_bundles_dir()
    data, handoffs = _prepare_data(work, scale, s, method, Path(data_dir).resolve() if data_dir else work / "data",
                                   bundles, device)
    loop = _Loop(scale, s, chosen_seeds, method, device, workers, work, out, bundles, data, handoffs,
                 describe_machine(device, workers))
    splits = {seed: _split(data, s, seed) for seed in chosen_seeds}
    todo = [(st, seed, r) for seed in chosen_seeds for st in STRATEGIES for r in range(s.rounds + 1)
            if (st, seed, r) not in loop.done]
    with tqdm(total=len(todo), desc="active learning rows", unit="row") as bar:
        loop.bar = bar
        # seed by seed; the loop that evaluates round 0 first, so that it trains round 0 while the others wait
        order = (ROUND0_EVALUATOR, *(st for st in STRATEGIES if st != ROUND0_EVALUATOR))
        loop.run_all([lambda st=st, seed=seed: loop.chain(st, seed, splits[seed])
                      for seed in chosen_seeds for st in order])
    loop.write_outputs()
    return out / "active_learning.md"


if __name__ == "__main__":
    import fire

    stop_stages_on_sigterm()  # `kill` stops the running stages with the benchmark
    fire.Fire(main)
