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
``transfer.png`` (Dice and ECE against N, one line per method) are written from the CSV after every run;
``transfer_timing.json`` keeps the wall-clock time of each invocation that wrote rows, its hand-offs included.

Ablations (:data:`ABLATIONS`, with ``--ablations``): variants of ``dwp`` that change one setting, run with the same
seeds, splits and budget at the scale's ``ablation_sizes`` right after the main runs of that N, and compared with the
method they vary in a second table of ``transfer.md``; a variant is chosen on the validation split only.

Scales (``--scale``):

- ``tiny``: seconds per stage, for the test suite (6 mm phantoms, 16³ patches, one epoch).
- ``cpu``: the paper's protocol reduced for 2 CPU cores: 4 mm phantoms, source nets on 24³ patches, target runs of
  the paper's six methods on 16³ patches for 1,200 optimiser steps, 3 Monte Carlo samples; what is reduced is
  written into ``transfer.md``. The two source-informed Gaussian priors beyond the paper run when named
  (``--methods source_gaussian,swag_prior``) and join the same tables.
- ``paper``: the full setting for a GPU (2 mm phantoms, 64³ patches, 1,000 optimiser steps, 10 samples).

Usage::

    python benchmarks/transfer.py --scale cpu --workers 2                  # the main table
    python benchmarks/transfer.py --scale cpu --workers 2 --methods source_gaussian,swag_prior   # beyond the paper
    python benchmarks/transfer.py --scale cpu --workers 2 --ablations      # and every ablation at N = 5
    python benchmarks/transfer.py --scale cpu --workers 2 --sw_overlap 0.25 --results <folder>  # the earlier overlap
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import json
import math
import statistics
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import bundle_default  # noqa: E402
from _runs import best_validation, claim_run_dir, describe_machine, trained_seconds  # noqa: E402
from _tables import mean_sd, mean_table, paired_cell, save_figure, size_axis  # noqa: E402
from monai_dwp.bundle_utils import run_name  # noqa: E402
from monai_dwp.pipeline import (  # noqa: E402
    PipelineSettings,
    StageRunner,
    default_bundles_dir,
    fit_prior,
    make_handoffs,
    source_stages,
    stop_stages_on_sigterm,
)
from monai_dwp.report import collect_metrics  # noqa: E402
from monai_dwp.transfer import HANDOFFS, LR_SCHEDULES, METHODS, PAPER_METHODS  # noqa: E402
from monai_dwp.utils.io import atomic_write  # noqa: E402
from monai_dwp.utils.validation import check_int  # noqa: E402

CITATION = ("Kuzina, Egorov & Burnaev (2019), Bayesian Generative Models for Knowledge Transfer in MRI Semantic "
            "Segmentation Problems, Frontiers in Neuroscience 13:844")
METRICS = ("val_mean_dice", "val_iou", "val_pooled_dice", "val_pooled_iou", "val_hd95", "ece", "fg_ece",
           "auc_mutual_information")
LABELS = {"val_mean_dice": "Dice, per-case mean ↑", "val_iou": "IoU, per-case mean ↑",
          "val_pooled_dice": "Dice, pooled over voxels ↑", "val_pooled_iou": "IoU, pooled over voxels ↑",
          "val_hd95": "HD95 (voxels) ↓", "ece": "ECE ↓", "fg_ece": "foreground ECE ↓",
          "auc_mutual_information": "AUC mutual information→error ↑"}
HIGHER_IS_BETTER = {"val_mean_dice", "val_iou", "val_pooled_dice", "val_pooled_iou", "auc_mutual_information"}


@dataclasses.dataclass(frozen=True)
class TransferScale:
    """One setting of the benchmark.

    Attributes:
        handoffs: sizes of the data, the source networks and the prior (:class:`PipelineSettings`); its
            ``num_target_pool`` must hold ``max(sizes) + num_val_cases`` cases and ``num_target_test`` is the fixed
            test set.
        sizes: the target training sizes N (nested subsets).
        seeds: the seeds of every (method, N).
        methods: the target methods of a run without ``--methods``.
        more_methods: methods run only when named by ``--methods`` (beyond the paper; their rows are tabled with
            the others of the same budget).
        steps: optimiser steps per run, the same for every method and N (epochs = steps / iterations per epoch).
        validations: about how many validations a run makes (checkpoint selection on the validation split).
        reduced: what this scale reduces against the paper, for ``transfer.md``.
        ablations: the :data:`ABLATIONS` run at ``ablation_sizes`` (same seeds, budget and splits).
        ablation_sizes: the N of the ablations.
        lr_schedule: the finetune bundle's ``lr_schedule`` for every run (``constant`` or ``cosine``).
        train_mode: the finetune bundle's ``train_mode`` of the Bayesian methods (``sampled`` or ``local``).
        patch_size: the target runs' patch (and sliding-window) edge in voxels; ``None``: the source nets' patch,
            ``handoffs.patch_size``.
        own_handoffs: make the source nets and the prior in ``<work_dir>/handoffs/`` instead of the bundles'
            ``models/``: phantoms at another spacing than the bundles' default need source nets of their own, and
            those must not replace (or be replaced by) the ones ``make demo`` uses.
    """

    handoffs: PipelineSettings
    sizes: tuple[int, ...]
    seeds: tuple[int, ...]
    methods: tuple[str, ...]
    steps: int
    validations: int
    reduced: str
    ablations: tuple[str, ...] = ()
    ablation_sizes: tuple[int, ...] = ()
    lr_schedule: str = "constant"
    train_mode: str = "sampled"
    patch_size: int | None = None
    own_handoffs: bool = False
    more_methods: tuple[str, ...] = ()

    @property
    def all_methods(self) -> tuple[str, ...]:
        """``methods`` and then ``more_methods``: the order of the tables."""
        return (*self.methods, *self.more_methods)

    @property
    def target_patch(self) -> int:
        """The patch edge of the target runs."""
        return self.handoffs.patch_size if self.patch_size is None else self.patch_size


def dwp_estimator(settings: PipelineSettings) -> str:
    """How the runs estimate the Deep Weight Prior term: ``max_kernels=<m>``, ``refresh=<R>`` or ``all``, with
    ``+cv`` for the Gaussian control variate."""
    if settings.max_kernels is not None:
        base = f"max_kernels={settings.max_kernels}"
    else:
        base = f"refresh={settings.prior_refresh_interval}" if settings.prior_refresh_interval > 1 else "all"
    return base + ("+cv" if settings.prior_control_variate else "")


PRIOR_ABLATIONS: dict[str, dict[str, object]] = {
    "dwp_prior_per_layer": {"num_groups": 25},
    "dwp_prior_latent_16": {"latent_size": 16},
    "dwp_prior_unfiltered": {"min_norm": 0.0},
}
"""The :data:`ABLATIONS` that change the prior: name -> overrides of ``dwp_prior``'s ``train.json``. Each variant's
prior is fitted once (the same source nets, epochs and VAE as the main prior otherwise) into
``<work_dir>/priors/<name>/`` and read by its runs. ``dwp_prior_per_layer`` fits one VAE per layer (the 25
convolutions with 3×3×3 kernels of the appendix-B network) instead of the paper's 7 groups of consecutive layers,
``dwp_prior_latent_16`` a 16-dimensional latent instead of the paper's 6, ``dwp_prior_unfiltered`` keeps the
near-zero kernels the paper drops (L2 norm < 10⁻²) in the prior's training set."""


SOURCE_ABLATIONS: dict[str, float] = {"dwp_source_epochs_quarter": 0.25, "dwp_source_epochs_half": 0.5}
"""The :data:`ABLATIONS` that change the source training length: name -> the fraction of the scale's
``pretrain_epochs`` (80 at ``--scale cpu``: 20 and 40 epochs; at least 2, SWAG's minimum) that the source nets of
its prior train for. Each variant trains its own source nets (the same seeds, data and settings otherwise) into
``<work_dir>/sources/<name>/`` and fits its prior to them, with the main prior's settings, into
``<work_dir>/priors/<name>/``; its runs read that prior."""


SOURCE_COUNT_ABLATIONS: dict[str, int] = {"dwp_prior_one_source": 1}
"""The :data:`ABLATIONS` that fit the prior to fewer source nets: name -> how many of the scale's source nets (its
first seeds) the prior is fitted to, for as many optimiser steps as the main prior (its epochs times the main prior's
nets over this one's, :func:`source_count_settings`), into ``<work_dir>/priors/<name>/``. ``dwp_prior_one_source``
asks whether the second source net (the pipeline's seeds 0 and 1 train side by side, and only the prior reads the
second) earns its training time."""


SOURCE_SEED_BASES: tuple[str, ...] = ("finetune", "dwp_source_init_temperature_0.1")
"""The methods (or :data:`ABLATIONS`) that the source-seed checks start from other source nets."""
OTHER_SOURCE_SEEDS: tuple[int, ...] = (1, 2)
"""The source nets the checks start from instead of seed 0's: the scale's second, and a third trained for them."""
SOURCE_SEED_ABLATIONS: dict[str, int] = {f"{base}_source_seed{seed}": seed for base in SOURCE_SEED_BASES
                                         for seed in OTHER_SOURCE_SEEDS}
"""The :data:`ABLATIONS` ``<base>_source_seed<S>`` (each the run of its base, :data:`SOURCE_SEED_BASES`) that start
from another source net: name -> its seed (the main table's methods all start
from, or centre their prior on, seed 0's net; the scale's second net only feeds the prior). A seed the scale does not
train (seed 2 at ``--scale cpu``) is trained with the scale's settings into its source folder before the runs
(:func:`~monai_dwp.pipeline.source_stages`); the prior still reads the scale's seeds only. A check of how much the
main table's source-based rows owe to one draw of the source net, not a candidate: it is never chosen among its
method's variants (:func:`choose_variant`)."""


def source_seed_handoffs(handoffs: Mapping[str, Path], seeds: Sequence[int], seed: int) -> dict[str, Path]:
    """``source_ckpt`` and ``swag_ckpt`` of source net ``seed`` beside those of ``handoffs`` (the first seed's,
    ``<sources>/seed<S>/model.pt`` and ``swag.pt``) for a :data:`SOURCE_SEED_ABLATIONS` variant.

    Raises:
        ValueError: ``seed`` is not one of the scale's source seeds ``seeds``.
    """
    if seed not in seeds:
        raise ValueError(f"source seed {seed} is not one of the scale's source nets (seeds {tuple(seeds)}).")
    root = Path(handoffs["source_ckpt"]).parent.parent
    return {"source_ckpt": root / f"seed{seed}" / "model.pt", "swag_ckpt": root / f"seed{seed}" / "swag.pt"}


def source_count_settings(settings: PipelineSettings, count: int) -> PipelineSettings:
    """The hand-off settings of a :data:`SOURCE_COUNT_ABLATIONS` variant: the first ``count`` seeds, and the prior's
    epochs scaled so that it takes as many optimiser steps over their kernels as the main prior over all."""
    if not 1 <= count <= len(settings.seeds):
        raise ValueError(f"count must lie in [1, {len(settings.seeds)}] (the scale's source nets), got {count}.")
    return dataclasses.replace(settings, seeds=settings.seeds[:count],
                               prior_epochs=round(settings.prior_epochs * len(settings.seeds) / count))


def source_settings(settings: PipelineSettings, fraction: float) -> PipelineSettings:
    """The hand-off settings of a :data:`SOURCE_ABLATIONS` variant: ``fraction`` of the source epochs (at least 2)
    and SWAG over at most all of them."""
    epochs = max(2, round(settings.pretrain_epochs * fraction))
    return dataclasses.replace(settings, pretrain_epochs=epochs, swag_epochs=min(settings.swag_epochs, epochs),
                               pretrain_val_interval=min(settings.pretrain_val_interval, epochs))


ABLATIONS: dict[str, tuple[str, dict[str, object]]] = {
    "dwp_source_init": ("dwp", {"source_init": True}),
    "dwp_temperature_0.1": ("dwp", {"kl_temperature": 0.1}),
    "dwp_temperature_0.01": ("dwp", {"kl_temperature": 0.01}),
    "dwp_no_dwp_init": ("dwp", {"dwp_init": False}),
    "dwp_prior_sample_init": ("dwp", {"dwp_init_noise": True}),
    "dwp_init_prior_sample": ("dwp_init", {"dwp_init_noise": True}),
    "dwp_train_encoder": ("dwp", {"train_encoder": True}),
    "dwp_refresh_4": ("dwp", {"prior_refresh_interval": 4}),
    "dwp_refresh_2": ("dwp", {"prior_refresh_interval": 2}),
    "dwp_control_variate": ("dwp", {"prior_control_variate": True}),
    "dwp_refresh_8_control_variate": ("dwp", {"prior_refresh_interval": 8, "prior_control_variate": True}),
    "dwp_log_scale_lr_1e-4": ("dwp", {"log_scale_lr": 1e-4}),
    **{name: ("dwp", {}) for name in (*PRIOR_ABLATIONS, *SOURCE_ABLATIONS, *SOURCE_COUNT_ABLATIONS)},  # another prior
    "gaussian_prior_source_init": ("gaussian_prior", {"source_init": True}),
    "gaussian_prior_log_scale_lr_1e-4": ("gaussian_prior", {"log_scale_lr": 1e-4}),
    "dwp_source_init_temperature_0.1": ("dwp", {"source_init": True, "kl_temperature": 0.1}),
    "gaussian_prior_source_init_temperature_0.1": ("gaussian_prior", {"source_init": True, "kl_temperature": 0.1}),
    "dwp_source_init_train_encoder": ("dwp", {"source_init": True, "train_encoder": True}),
    "source_gaussian_scale_0.01": ("source_gaussian", {"prior_scale": 0.01}),
    "source_gaussian_scale_0.001": ("source_gaussian", {"prior_scale": 0.001}),
    "swag_prior_scale_1": ("swag_prior", {"swag_scale_factor": 1.0}),
    "swag_prior_scale_100": ("swag_prior", {"swag_scale_factor": 100.0}),
}
"""Ablations of ``dwp`` (and their controls): name -> (method, overrides of the finetune bundle). Each is judged against
the method it varies on the validation split; the test set only reports. ``dwp_source_init`` starts the posterior at
the source network (fine-tuning with the kernel prior) and ``gaussian_prior_source_init`` is its control (the same
start under a Gaussian prior), ``dwp_temperature_0.1`` and ``dwp_temperature_0.01`` weaken the prior ten- and a
hundredfold (at β = 1 the per-voxel KL is 3–8× the data term over the budget, ``prior_diagnostics.md``),
``dwp_no_dwp_init`` starts at PyTorch's initialisation instead of VAE samples; ``dwp_prior_sample_init`` and ``dwp_init_prior_sample`` start
``dwp`` and ``dwp_init`` at samples of the prior itself (decoder mean plus decoder noise, ``dwp_init_noise``) instead
of decoder means. ``dwp_train_encoder`` fine-tunes the prior's encoders (the auxiliary :math:`r(z|w)` of the
bound) with the posterior. ``dwp_refresh_4`` and ``dwp_refresh_2`` re-estimate a quarter and a half of the kernels'
terms per step instead of the scale's sixteenth (``prior_refresh_interval``; the row's ``dwp_estimator`` column keeps
the scale's estimator): a fresher, costlier prior gradient (``dwp_estimator_4mm.md`` measures how far the cached
gradient drifts from the all-kernel one along training); ``dwp_control_variate`` keeps the sixteenth but refreshes only
the residual against a Gaussian fitted to each VAE, taken at the same draws, the Gaussian part exact at every step
(``prior_control_variate``; rows before the residual was taken at the same draws used the Gaussian's closed form), and
``dwp_refresh_8_control_variate`` refreshes an eighth with it, the cheapest estimator whose gradient was as good as an
all-kernel draw's along training (``speed.md``).
``dwp_log_scale_lr_1e-4`` moves the posterior scales at a tenth of the learning rate (``log_scale_lr``), and
``gaussian_prior_log_scale_lr_1e-4`` is its control: Adam moves every ``log_scale`` by about the learning rate per step
in the direction the KL pushes, whatever the KL's weight (up to a factor e^1.2 ≈ 3.3 over 1,200 steps at 10⁻³), and
at the end of the main runs the deep layers' signal-to-noise ratio RMS(loc) / RMS(scale) has fallen from 10 to about
1 (``dwp``) or below (``gaussian_prior``); with the slower scales the posterior's noise stays near its start while the
prior acts on the means. ``dwp_source_init_temperature_0.1`` changes two things against ``dwp``: the source-network
start of ``dwp_source_init`` and a prior weakened tenfold (``kl_temperature`` 0.1), since at β = 1 the KL is several
times the data term; ``gaussian_prior_source_init_temperature_0.1`` is its control. ``dwp_source_init_train_encoder``
starts at the source network and fine-tunes the prior's encoders with the posterior, as Atanov et al. (2019) optimise
the auxiliary :math:`r(z|w)` jointly (a tighter bound; the Gaussian prior has no counterpart).
The ``dwp_prior_*`` variants run ``dwp`` under another prior (:data:`PRIOR_ABLATIONS`),
the ``dwp_source_epochs_*`` variants under a prior fitted to source nets trained for fewer epochs
(:data:`SOURCE_ABLATIONS`), ``dwp_prior_one_source`` under a prior fitted to one source net instead of two
(:data:`SOURCE_COUNT_ABLATIONS`). ``finetune_source_seed1`` and ``finetune_source_seed2`` fine-tune the second and a
third source net instead of the first (:data:`SOURCE_SEED_ABLATIONS`): how much of plain fine-tuning's lead is one
source net's; ``dwp_source_init_temperature_0.1_source_seed*`` start that variant from them, to set it against
fine-tuning from the same net.
``source_gaussian_scale_*`` tighten the L2-SP prior around the
source weights (``prior_scale`` 0.1 in the main table): its scale is chosen on validation among the three.
``swag_prior_scale_*`` narrow the SWAG prior (``swag_scale_factor`` λ = 10⁴ in the main table, the bundle's default:
"Pre-Train Your Loss" rescales the SWAG variance, and 10⁴ had the best validation Dice among 1, 10² and 10⁴ in the
benchmark's earlier runs) back to λ = 10² and to the SWAG variance itself (λ = 1): λ is chosen on validation among
the three."""

ABLATIONS.update({f"{base}_source_seed{seed}": ABLATIONS.get(base, (base, {})) for base in SOURCE_SEED_BASES
                  for seed in OTHER_SOURCE_SEEDS})  # another source net: the run of its base

ABLATION_FAMILIES: tuple[str, ...] = ("dwp", "dwp_init", "gaussian_prior", "source_gaussian", "swag_prior")
"""The methods whose variants (:data:`ABLATIONS` of that method) the ablation table compares, with the variant of
each chosen on the validation split."""

SCALES: dict[str, TransferScale] = {
    "tiny": TransferScale(
        handoffs=dataclasses.replace(PipelineSettings.quick(), num_target_pool=5, num_target_test=1, seeds=(0,)),
        sizes=(2, 3), seeds=(0,), methods=("random_init", "dwp"), steps=2, validations=1,
        reduced="a smoke test: 6 mm phantoms, 16³ patches, 2 optimiser steps; its numbers mean nothing",
        ablations=("dwp_no_dwp_init", "dwp_source_epochs_quarter", "dwp_prior_one_source"), ablation_sizes=(2,),
    ),
    "cpu": TransferScale(
        # 4 mm phantoms and 16³ target patches (the field of view of 24³ at 3 mm): six times the 3 mm scale's steps
        # fit 2 hours of 2 cores, near where random_init's validation Dice levels off; the source nets on 24³
        # patches (the field of view of 32³ at 3 mm). Two source nets (the demo trains one since its prior over one
        # net's kernels showed no loss, ablation dwp_prior_one_source). The prior: 15 epochs on both (its validation
        # ELBO changed by < 0.05 nats per kernel over epochs 10-15 of the 3 mm fit). The DWP term by the estimator
        # its tables were run with, a rotating sixteenth without the control variate (a row records it; rows of
        # another setting stay in the CSV untabled); since 0.5.0 the finetune bundle's default is the ablation
        # dwp_refresh_8_control_variate instead.
        handoffs=dataclasses.replace(PipelineSettings.default(), spacing=4.0, patch_size=24, num_target_pool=23,
                                     num_target_test=20, mc_samples=3, seeds=(0, 1), prior_epochs=15,
                                     prior_refresh_interval=16, prior_control_variate=False),
        sizes=(5, 10, 15, 20), seeds=(0, 1, 2), methods=PAPER_METHODS, steps=1200, validations=10, patch_size=16,
        more_methods=tuple(m for m in METHODS if m not in PAPER_METHODS),
        own_handoffs=True,
        reduced="4 mm phantoms (the paper: 1 mm BraTS); source nets trained on 24³ patches for 80 epochs, the kernel "
                "prior fitted for 15 epochs; target runs on 16³ patches (sliding windows of 16³ at evaluation), "
                "batches of 2 × 2 patches, 3 Monte Carlo samples, 3 seeds; the budget is the most that fits 2 hours "
                "of 2 cores, and longer runs reach no higher validation Dice: against runs of 1,200 steps, "
                "random_init's best validation Dice is -0.010 [-0.053, +0.032] (N = 5) and -0.019 [-0.164, +0.127] "
                "(N = 20) at 1,600 steps and -0.018 / +0.005 at 2,000, and a cosine-annealed rate is lower "
                "(`transfer_budget.md`). The earlier 3 mm / 24³ / 200-step setting, "
                "further from that level, is kept as `transfer_3mm.md`",
        # the paper's kernel filter dropped none of the 67,616 kernels of the 3 mm source nets (the smallest L2 norm
        # was 0.055, the threshold 0.01), so its ablation would fit the same prior again
        ablations=tuple(a for a in ABLATIONS if a != "dwp_prior_unfiltered"), ablation_sizes=(5,),
    ),
    "paper": TransferScale(
        handoffs=dataclasses.replace(PipelineSettings.default(), spacing=2.0, patch_size=64, num_target_pool=23,
                                     num_target_test=20, pretrain_epochs=200, mc_samples=10, seeds=(0, 1)),
        own_handoffs=True,
        sizes=(5, 10, 15, 20), seeds=(0, 1, 2, 3, 4), methods=METHODS, steps=1000, validations=20,
        reduced="2 mm phantoms (the paper: 1 mm BraTS), 64³ patches",
        ablations=tuple(ABLATIONS), ablation_sizes=(5, 10),
    ),
}


def check_phantom_spacing(data: Path, spacing: float, scale: str) -> None:
    """Stop before any stage when ``data`` already holds phantoms made at another spacing than the scale's (the
    stages would reuse them: a made stage is skipped).

    Raises:
        SystemExit: naming the folder, both spacings and the ways out.
    """
    for disease in ("ms", "tumour"):
        meta = data / disease / "dataset.json"
        if not meta.is_file():
            continue
        made = json.loads(meta.read_text()).get("phantom", {}).get("spacing_mm")
        if made is not None and not math.isclose(float(made), spacing):
            raise SystemExit(f"{meta.parent} holds phantoms made at {made} mm, but --scale {scale} needs {spacing} mm: "
                             "pass another --work_dir (or --data_dir), or delete that folder to make them again.")


def budget(scale: TransferScale, num_train_cases: int) -> tuple[int, int]:
    """``(epochs, val_interval)`` giving every method ``scale.steps`` optimiser steps at ``num_train_cases``."""
    per_epoch = math.ceil(num_train_cases / scale.handoffs.batch_size)
    epochs = max(1, round(scale.steps / per_epoch))
    return epochs, max(1, epochs // scale.validations)


COLUMN_DEFAULTS = {"lr_schedule": "constant", "split_seed": "0", "handoffs": "", "train_mode": "local",
                   "dwp_estimator": "max_kernels=2048", "sw_overlap": "0.25"}
"""The values of columns added later, for rows written before them (every earlier run had these settings)."""


def append_row(csv_path: Path, row: dict[str, object]) -> None:
    """Append one run's ``row`` to ``csv_path``; a file whose header differs from the row's columns (written
    before some of them existed) is first rewritten, atomically, under the new header, its rows completed by
    :data:`COLUMN_DEFAULTS`, so that no value lands under another column's name.

    Raises:
        ValueError: the file has columns the row lacks (another tool's file).
    """
    fields = list(row)
    if csv_path.is_file():
        with csv_path.open() as f:
            header = next(csv.reader(f), [])
        if header != fields:
            unknown = sorted(set(header) - set(fields))
            if unknown:
                raise ValueError(f"{csv_path} has columns this benchmark does not write ({unknown}); move it aside "
                                 "or pass another --results folder.")
            old = [{**COLUMN_DEFAULTS, **r} for r in csv.DictReader(csv_path.open())]

            def rewrite(f) -> None:
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                writer.writerows({k: r.get(k, "") for k in fields} for r in old)

            atomic_write(csv_path, "w", rewrite)
    new = not csv_path.is_file()
    with open(csv_path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        if new:
            writer.writeheader()
        writer.writerow(row)


@functools.lru_cache(maxsize=None)
def _file_digest(path: str, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def handoff_fingerprint(files: dict[str, object]) -> str:
    """The first 12 hex digits of a SHA-256 over the hand-off files a run reads (``{key: path}``, in key order):
    rows with different fingerprints were trained from different source nets, priors or SWAG moments."""
    digest = hashlib.sha256()
    for key in sorted(files):
        path = Path(str(files[key]))
        digest.update(f"{key}={_file_digest(str(path), path.stat().st_mtime_ns)};".encode())
    return digest.hexdigest()[:12]


def bundle_sw_overlap(bundles_dir: Path | None = None) -> float:
    """The sliding-window overlap the finetune bundle of ``bundles_dir`` (default: the repository's) validates and
    evaluates with when none is passed (``sw_overlap`` of its ``train.json``)."""
    return float(bundle_default("dwp_finetune", "sw_overlap", bundles_dir))


def budget_of(scale: str, s: TransferScale, sw_overlap: float | None = None) -> dict[str, object]:
    """The columns of ``transfer.csv`` that make two runs of ``--scale scale`` (settings ``s``, evaluated by sliding
    windows at ``sw_overlap``, default :func:`bundle_sw_overlap`) the same budget."""
    h = s.handoffs
    return {"scale": scale, "steps": s.steps, "lr_schedule": s.lr_schedule, "patch_size": s.target_patch,
            "spacing": h.spacing, "mc_samples": h.mc_samples, "train_mode": s.train_mode,
            "dwp_estimator": dwp_estimator(h),
            "sw_overlap": float(bundle_sw_overlap() if sw_overlap is None else sw_overlap)}


def read_budget_rows(csv_path: Path, budget: Mapping[str, object]) -> list[dict[str, str]]:
    """The rows of ``csv_path`` (none if it does not exist) of the budget ``budget`` (:func:`budget_of`) whose
    seed drew its own cases (``split_seed`` = seed; rows made before ``split_seed`` existed all used split 0)."""
    rows = [{**COLUMN_DEFAULTS, **r} for r in csv.DictReader(csv_path.open())] if csv_path.is_file() else []
    return [r for r in rows if all(str(r.get(k)) == str(v) for k, v in budget.items())
            and str(r.get("split_seed")) == str(r["seed"])]


def choose_variant(rows: list[dict[str, str]], names: Sequence[str], family: str, n: int) -> tuple[str, float] | None:
    """The variant of ``family`` (the method itself included) chosen on the validation split at N = ``n``: the
    highest mean best-validation Dice among ``names`` that vary ``family`` and ran every seed the method ran.

    Returns:
        ``(name, mean best-validation Dice)``, or ``None`` when fewer than two variants compete.
    """
    ref = set(_values(rows, family, n, "best_val_dice"))
    means = {}
    for name in names:
        mine = _values(rows, name, n, "best_val_dice")
        if ABLATIONS.get(name, (name,))[0] == family and name not in SOURCE_SEED_ABLATIONS and mine and set(mine) >= ref:
            means[name] = statistics.mean(mine.values())
    if len(means) < 2:
        return None
    chosen = max(means, key=means.get)
    return chosen, means[chosen]


def _values(rows: list[dict[str, str]], method: str, n: int, metric: str) -> dict[int, float]:
    return {int(r["seed"]): float(r[metric]) for r in rows
            if r["method"] == method and int(r["num_train_cases"]) == n and r.get(metric) not in (None, "", "nan")}


def _paired(rows: list[dict[str, str]], methods: list[str], sizes: list[int], metric: str) -> list[str]:
    """``dwp`` − method per N: mean [95 % t-interval] over the seeds both ran."""
    lines = ["| method | " + " | ".join(f"N = {n}" for n in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for m in [m for m in methods if m != "dwp"]:
        cells = [paired_cell(_values(rows, "dwp", n, metric), _values(rows, m, n, metric)) for n in sizes]
        lines.append(f"| `{m}` | " + " | ".join(cells) + " |")
    return lines + [""]


def _against_main(rows: list[dict[str, str]], chosen: str, methods: Sequence[str], n: int) -> list[str]:
    """The variant ``chosen`` on validation against every method of the main table at N = ``n``: its test pooled
    Dice, per-case Dice and ECE minus the method's, paired by seed (mean [95 % t-interval])."""
    metrics = ("val_pooled_dice", "val_mean_dice", "ece")
    lines = ["", f"`{chosen}` − each method of the main table at N = {n}, on the test set (paired by seed; the "
                 "choice above saw only the validation split):", "",
             "| method | " + " | ".join(LABELS[m] for m in metrics) + " |", "|---|" + "---|" * len(metrics)]
    for method in methods:
        if method == chosen or not _values(rows, method, n, "val_pooled_dice"):
            continue
        cells = [paired_cell(_values(rows, chosen, n, m), _values(rows, method, n, m)) for m in metrics]
        lines.append(f"| `{method}` | " + " | ".join(cells) + " |")
    return lines


def _ablation_table(rows: list[dict[str, str]], scale: TransferScale, n: int) -> list[str]:
    """The ablations at N = ``n``: best validation Dice (the choice) and test metrics, each with its paired
    difference against the method it varies (its row of the main table) over the seeds both ran, and the variant
    of each method chosen on validation among those that ran every seed of the method (fewer seeds: shown, not
    chosen); a chosen variant other than the method itself is set against every method of the main table."""
    names = [a for a in (*ABLATION_FAMILIES, *scale.ablations)
             if _values(rows, a, n, "best_val_dice")]
    lines = [f"### N = {n}", "",
             "| variant | what differs | best validation Dice | − its method | test pooled Dice | − its method "
             "| ECE |",
             "|---|---|---|---|---|---|---|"]
    for name in names:
        method, overrides = ABLATIONS.get(name, (name, {}))
        changes = [f"`{k}={v}`" for k, v in overrides.items()]
        changes += [f"prior fitted with `{k}={v}`" for k, v in PRIOR_ABLATIONS.get(name, {}).items()]
        if name in SOURCE_ABLATIONS:
            epochs = source_settings(scale.handoffs, SOURCE_ABLATIONS[name]).pretrain_epochs
            changes.append(f"prior fitted to source nets trained for {epochs} epochs (main prior: "
                           f"{scale.handoffs.pretrain_epochs})")
        if name in SOURCE_COUNT_ABLATIONS:
            fewer = source_count_settings(scale.handoffs, SOURCE_COUNT_ABLATIONS[name])
            changes.append(f"prior fitted to {len(fewer.seeds)} source net(s) for {fewer.prior_epochs} epochs (main "
                           f"prior: {len(scale.handoffs.seeds)} nets, {scale.handoffs.prior_epochs} epochs)")
        if name in SOURCE_SEED_ABLATIONS:
            changes.append(f"started from source net seed {SOURCE_SEED_ABLATIONS[name]} (main table: seed "
                           f"{scale.handoffs.seeds[0]})")
        what = f"`{method}`, " + ", ".join(changes) if name in ABLATIONS else "reference (the table above)"
        cells = []
        for metric in ("best_val_dice", "val_pooled_dice"):
            mine, ref = _values(rows, name, n, metric), _values(rows, method, n, metric)
            cells.append(mean_sd(list(mine.values())))
            cells.append(paired_cell(mine, ref) if name != method else "–")
        ece = list(_values(rows, name, n, "ece").values())
        cells.append(f"{statistics.mean(ece):.4f}" if ece else "–")
        lines.append(f"| `{name}` | {what} | " + " | ".join(cells) + " |")
    for family in ABLATION_FAMILIES:
        choice = choose_variant(rows, names, family, n)
        if choice is None:
            continue
        chosen, val_mean = choice
        test = _values(rows, chosen, n, "val_pooled_dice")
        lines += ["", f"Chosen on the validation split among the `{family}` variants: **`{chosen}`** (mean best "
                      f"validation Dice {val_mean:.3f}); its test pooled Dice: "
                      + (f"{statistics.mean(test.values()):.3f}." if test else "not evaluated.")]
        if chosen != family and test:
            lines += _against_main(rows, chosen, scale.all_methods, n)
    return lines + [""]


def machine_time(rows: list[dict[str, str]], label: str = "Cost") -> str:
    """One sentence on what the tabled runs cost: the sum of their wall times (training and evaluation) divided by
    the runs side by side, i.e. about the wall-clock time of the benchmark without its hand-offs; ``label`` opens
    it (e.g. ``"Cost of the main table"``)."""
    seconds = [float(r["total_seconds"]) / max(1, int(float(r.get("workers") or 1))) for r in rows
               if r.get("total_seconds") not in (None, "", "nan")]
    if not seconds:
        return "No finished run yet."
    hours = sum(seconds) / 3600
    return (f"{label}: {len(seconds)} runs, {hours:.2f} h of wall-clock time for training and evaluation (the sum of "
            "each run's wall time divided by the runs side by side); the hand-offs (source nets, prior) are made once "
            "before and not counted.")


TIMING_FILE = "transfer_timing.json"
"""Beside ``transfer.csv``: per invocation of the benchmark that wrote rows, its wall-clock time, hand-offs included."""


def load_timings(results_dir: Path) -> list[dict[str, object]]:
    """The invocations recorded in :data:`TIMING_FILE` (one object per invocation, oldest first); ``[]`` when absent."""
    path = results_dir / TIMING_FILE
    if not path.is_file():
        return []
    return json.loads(path.read_text())


def budget_key(budget_row: dict[str, object]) -> dict[str, str]:
    """The budget columns as a timing entry records them (and the CSV holds them): every value a string."""
    return {k: str(v) for k, v in budget_row.items()}


def invocation_time(results_dir: Path, budget_row: dict[str, object] | None = None) -> str:
    """What each invocation that wrote rows cost, from :data:`TIMING_FILE` (only those of ``budget_row``, the
    budget columns of the rows, when given: an entry records its own); empty when there is none."""
    wanted = budget_key(budget_row) if budget_row is not None else {}
    # an entry written before a budget column existed had that column's default, as the CSV's rows
    timings = [t for t in load_timings(results_dir)
               if all({**COLUMN_DEFAULTS, **t.get("budget", {})}.get(k) == v for k, v in wanted.items())]
    if not timings:
        return ""
    lines = ["Wall-clock time of each invocation of the benchmark that wrote rows, its hand-offs (phantoms, source "
             "nets, prior) included:"]
    for t in timings:
        made = "made by it" if t["handoffs_made"] else "the source nets and prior found made"
        lines.append(f"- started {str(t['started'])[:16]} UTC: {t['runs']} runs in {float(t['elapsed_s']) / 60:.0f} "
                     f"min, {float(t['handoffs_s']) / 60:.1f} min of it for the hand-offs ({made}), {t['workers']} "
                     "run(s) side by side.")
    return "\n".join(lines)


def write_markdown(rows: list[dict[str, str]], scale_name: str, scale: TransferScale, path: Path,
                   machine: str = "", note: str = "", budget_row: dict[str, object] | None = None) -> None:
    """Every metric as mean ± sd per method and N (best per column in bold), the paired differences of ``dwp``
    against each other method (pooled Dice, per-case Dice, ECE), where each run's best validation epoch lies, and
    the paper's numbers; the wall time of the invocations that wrote rows of ``budget_row`` (all when ``None``)."""
    sizes = sorted({int(r["num_train_cases"]) for r in rows})
    methods = [m for m in scale.all_methods if any(r["method"] == m for r in rows)]
    lines = [f"# Transfer benchmark (`--scale {scale_name}`)", "",
             f"Protocol of {CITATION}: source nets and kernel prior trained once on MS-like phantoms, target methods "
             f"on nested subsets of N tumour phantoms (binary whole tumour), {scale.steps} optimiser steps per run "
             f"(Adam, {'cosine-annealed' if scale.lr_schedule == 'cosine' else 'constant'} learning rate; Bayesian "
             f"methods in `{scale.train_mode}` mode, the Deep Weight Prior term by `{dwp_estimator(scale.handoffs)}`) "
             f"for every method and N, the checkpoint of the best validation Dice ({scale.handoffs.num_val_cases} "
             "validation cases per seed, "
             "never the test set), one fixed held-out test set of "
             f"{scale.handoffs.num_target_test} cases"
             + (f", validated and evaluated by sliding windows at overlap {budget_row['sw_overlap']}"
                if budget_row and "sw_overlap" in budget_row else "")
             + f". Reduced against the paper: {scale.reduced}. Each seed draws "
             "its own validation cases and nested training subsets (`split_seed` = seed; rows of `transfer.csv` with "
             "`split_seed` ≠ seed are earlier runs that repeated seed 0's cases, kept but not tabled). Written by "
             "`benchmarks/transfer.py` from `transfer.csv`" + (f"; {machine}" if machine else "") + ".", ""]
    if note:
        lines += [note, ""]
    ablation_rows = [r for r in rows if r["method"] in ABLATIONS]
    lines += [machine_time([r for r in rows if r["method"] not in ABLATIONS], "Cost of the main table"), ""]
    if ablation_rows:
        lines += [machine_time(ablation_rows, "Cost of the ablations (another invocation each)"), ""]
    if timing := invocation_time(path.parent, budget_row):
        lines += [timing, ""]
    mixed = sorted({r["method"] for r in rows
                    if len({q.get("handoffs") for q in rows if q["method"] == r["method"]} - {"", None}) > 1})
    if mixed:
        lines += [f"**Mixed hand-offs:** the rows of {', '.join(f'`{m}`' for m in mixed)} were trained from more than "
                  "one set of source nets, priors or SWAG moments (column `handoffs` of `transfer.csv`).", ""]
    if "random_init" in methods:
        levels = {n: statistics.mean(v.values()) for n in sizes if (v := _values(rows, "random_init", n,
                                                                                   "val_pooled_dice"))}
        lines += ["## Target difficulty", "",
                  "The tumour phantoms are made hard on purpose (satellites, an oedema whose signal fades before its "
                  "label's edge, unlabelled FLAIR-bright look-alikes, noisier scanners with thick slices: "
                  "`docs/data.md`) so that a U-Net trained from scratch sits near the level the paper reports on "
                  "BraTS18 at N = 5 (Dice ≈ 0.6–0.7) and below its N = 20 level. `random_init` here, pooled Dice: "
                  + ", ".join(f"N = {n}: {v:.3f}" for n, v in levels.items()) + ".", ""]
    if "dwp" in methods:
        for metric in ("val_pooled_dice", "val_mean_dice", "ece"):
            lines += [f"## Paired difference `dwp` − method: {LABELS[metric]} "
                      "(mean [95 % t-interval] over the seeds both ran)", ""]
            lines += _paired(rows, methods, sizes, metric)
    for metric in METRICS:
        if any(_values(rows, m, n, metric) for m in methods for n in sizes):
            lines += [f"## {LABELS[metric]} (mean ± sd over seeds, number of seeds)", ""]
            lines += mean_table(lambda m, n: _values(rows, m, n, metric), methods, sizes,
                                 higher_is_better=metric in HIGHER_IS_BETTER)
    ablation_sizes = [n for n in sizes if any(_values(rows, a, n, "best_val_dice") for a in scale.ablations)]
    if ablation_sizes:
        lines += ["## Ablations of `dwp`, chosen on the validation split", "",
                  "Same seeds, splits and budget as the table above; each variant changes one thing (the overrides "
                  "of the finetune bundle, or of the prior's fit, in the second column), and its differences are "
                  "paired with the seeds of the method it varies (`dwp` for the `dwp_*` variants). A variant competes once it ran every seed of its "
                  "method. The choice is the highest mean best-validation Dice "
                  f"({scale.handoffs.num_val_cases} validation cases per seed, so a noisy choice); the test columns "
                  "only report.", ""]
        for n in ablation_sizes:
            lines += _ablation_table(rows, scale, n)
        confirm = path.parent / "transfer_confirm" / "transfer_confirm.md"
        if confirm.is_file():
            lines += ["The chosen `dwp` variants retrained on fresh seeds, which took no part in the choice, against "
                      "`finetune` and their Gaussian controls (`benchmarks/transfer_confirm.py`): "
                      "[`transfer_confirm/transfer_confirm.md`](transfer_confirm/transfer_confirm.md).", ""]
    lines += ["## Did training plateau?", "",
              "Best validation epoch / epochs per run, mean over seeds (a best epoch near the end hints that more "
              "steps could help; whether they do is measured by longer runs, paired by seed, in "
              "`transfer_budget.md`):", "",
              "| method | " + " | ".join(f"N = {n}" for n in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for m in methods:
        cells = []
        for n in sizes:
            runs = [r for r in rows if r["method"] == m and int(r["num_train_cases"]) == n
                    and r.get("best_epoch") not in (None, "", "nan")]
            cells.append(f"{statistics.mean(float(r['best_epoch']) for r in runs):.0f} / {runs[0]['epochs']}"
                         if runs else "–")
        lines.append(f"| `{m}` | " + " | ".join(cells) + " |")
    lines += ["", "![transfer](transfer.png)", ""]
    text = "\n".join(lines)
    atomic_write(path, "w", lambda f: f.write(text))


def write_figure(rows: list[dict[str, str]], scale: TransferScale, path: Path) -> None:
    """Dice pooled over voxels (left, as in the paper) and ECE (right) against N, mean ± sd over seeds, one line
    per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({int(r["num_train_cases"]) for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("val_pooled_dice", "ece")):
        for m in [m for m in scale.all_methods if any(r["method"] == m for r in rows)]:
            pts = [(n, list(_values(rows, m, n, metric).values())) for n in sizes]
            pts = [(n, v) for n, v in pts if v]
            ax.errorbar([n for n, _ in pts], [statistics.mean(v) for _, v in pts],
                        yerr=[statistics.pstdev(v) for _, v in pts], marker="o", capsize=3, label=m)
        size_axis(ax, sizes, LABELS[metric])
    axes[0].legend(fontsize=8)
    save_figure(fig, path)


def describe_swag(swag_ckpt: Path, pretrain_epochs: int | None = None) -> str:
    """One line on the SWAG moments behind ``swag_prior``: which source epochs they average, and whether they lie
    beyond the scale's ``pretrain_epochs`` (a source run continued to collect them); empty when absent."""
    import torch

    if not Path(swag_ckpt).is_file():
        return ""
    state = torch.load(swag_ckpt, map_location="cpu", weights_only=True)
    first, count = int(state["start_epoch"]), int(state["count"])
    return (f"`swag_prior` uses the SWAG moments of the first source network over its epochs {first}–"
            f"{first + count - 1} ({count} epochs, `{Path(swag_ckpt).parent.name}/{Path(swag_ckpt).name}`); the "
            "posterior starts at that network's best-validation checkpoint (`model.pt`), as `source_gaussian` does."
            + (f" Those epochs continue the {pretrain_epochs}-epoch source run at the same learning rate (resumed from "
               f"its last checkpoint), so the SWAG mean is not the network `model.pt` holds."
               if pretrain_epochs is not None and first > pretrain_epochs else ""))


def _chosen(value: object, allowed: tuple[str, ...], flag: str, scale: str) -> tuple[str, ...]:
    """The names of a comma-separated option (fire turns ``--flag a,b`` into ``('a', 'b')`` and ``--flag a`` into
    ``'a'``), each one of ``allowed``."""
    listed = value if isinstance(value, (list, tuple)) else str(value).split(",")
    chosen = tuple(str(v).strip() for v in listed)
    unknown = [v for v in chosen if v not in allowed]
    if unknown:
        raise SystemExit(f"--{flag} {unknown} are not {flag} of --scale {scale}: {allowed}.")
    return chosen


def _sizes(value: object, allowed: tuple[int, ...], flag: str, what: str) -> tuple[int, ...]:
    """The N of a comma-separated option (fire turns ``--flag 5,10`` into ``(5, 10)`` and ``--flag 5`` into ``5``),
    each one of ``allowed``."""
    listed = value if isinstance(value, (list, tuple)) else str(value).split(",")
    chosen = tuple(check_int(int(str(n).strip()) if str(n).strip().isdigit() else n, flag) for n in listed)
    unknown = [n for n in chosen if n not in allowed]
    if unknown:
        raise SystemExit(f"--{flag} {unknown} are not {what}: {allowed}.")
    return chosen


def main(scale: str = "cpu", work_dir: str = "runs/transfer", results: str | None = None, device: str | None = None,
         bundles_dir: str | None = None, methods: str | None = None, workers: int = 1, ablations: bool | str = False,
         sizes: str | int | None = None, ablation_sizes: str | int | None = None, steps: int | None = None,
         lr_schedule: str | None = None, data_dir: str | None = None, handoffs_dir: str | None = None,
         seeds: str | int | None = None, sw_overlap: float | None = None) -> Path:
    """Run (or resume) the benchmark and write ``transfer.csv``, ``transfer.md`` and ``transfer.png``.

    Args:
        scale: ``tiny``, ``cpu`` or ``paper`` (see the module docstring).
        work_dir: where the phantoms, the runs and the logs go.
        results: the folder of the three result files (default ``benchmarks/results``; ``<work_dir>/results`` for
            ``tiny``).
        device: ``cpu`` or ``cuda`` (default: CUDA when available).
        bundles_dir: the ``bundles/`` folder to run (default: the repository's; its ``models/`` receive the source
            nets and the prior of a scale without ``own_handoffs``, reused when they exist).
        methods: comma-separated subset of the scale's methods and ``more_methods``.
        ablations: also run the scale's :data:`ABLATIONS` (``--ablations``: all of them, at its ``ablation_sizes``,
            right after the main runs of that N; off by default, so that ``--scale cpu`` alone is the protocol's
            main table), or only those named (comma-separated, e.g. ``swag_prior_scale_1,swag_prior_scale_100``);
            they go into the same CSV, named after the ablation, and into their own table.
        workers: runs side by side, each with ``cpu_count // workers`` PyTorch threads (2 on a 2-core machine
            keeps both cores busy through the single-threaded parts of each run). Wall times in the CSV are then
            those of runs sharing the machine; ``workers`` is recorded in every row.
        sizes: comma-separated subset of the scale's N (e.g. ``5,20``), for a budget study.
        ablation_sizes: the N at which the ablations run (comma-separated, among ``sizes``) instead of the scale's
            ``ablation_sizes``, e.g. ``--sizes 10 --ablation_sizes 10 --ablations dwp_source_init``.
        steps: optimiser steps per run instead of the scale's (a budget study; use its own ``--results``).
        lr_schedule: ``constant`` or ``cosine`` instead of the scale's (a budget study; use its own ``--results``).
        data_dir: the phantoms' folder (default ``<work_dir>/data``; made there when it holds none), so that studies
            with their own ``work_dir`` share one set of phantoms.
        handoffs_dir: where a scale with ``own_handoffs`` (``cpu``, ``paper``) makes its source nets
            (``sources/seed<S>/``) and prior (``prior/``), reused when they exist (default ``<work_dir>/handoffs``).
        seeds: comma-separated seeds instead of the scale's (e.g. ``3,4,5`` for a confirmation on fresh seeds; use
            its own ``--results``). A seed sets the run's initialisation and its training and validation cases
            (``split_seed``); the test set is the same for every seed.
        sw_overlap: the overlap of the sliding windows the target runs validate and are evaluated with (default:
            the finetune bundle's, :func:`bundle_sw_overlap`); recorded in every row and part of the budget, so
            rows evaluated at another overlap are neither reused nor tabled (rows from before the column were
            evaluated at 0.25).

    Returns:
        the path of ``transfer.md``.
    """
    from tqdm import tqdm

    started, started_clock = time.time(), time.perf_counter()
    if scale not in SCALES:
        raise SystemExit(f"--scale must be one of {sorted(SCALES)}, got {scale!r}.")
    s = SCALES[scale]
    if steps is not None:
        s = dataclasses.replace(s, steps=check_int(steps, "steps", minimum=1, hint="e.g. --steps 600"))
    if lr_schedule is not None:
        if lr_schedule not in LR_SCHEDULES:
            raise SystemExit(f"--lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}.")
        s = dataclasses.replace(s, lr_schedule=lr_schedule)
    # ``--methods``/``--sizes`` choose what runs now; the results files report every row of this budget
    report = s
    if methods:
        s = dataclasses.replace(s, methods=_chosen(methods, s.all_methods, "methods", scale))
    if sizes:
        chosen_sizes = _sizes(sizes, s.sizes, "sizes", f"sizes of --scale {scale}")
        s = dataclasses.replace(s, sizes=chosen_sizes, ablation_sizes=tuple(n for n in s.ablation_sizes
                                                                            if n in chosen_sizes))
    if seeds is not None:
        listed = seeds if isinstance(seeds, (list, tuple)) else str(seeds).split(",")
        if not listed or not all(str(x).strip().isdigit() for x in listed):
            raise SystemExit(f"--seeds must be non-negative integers, comma-separated (e.g. --seeds 3,4,5), "
                             f"got {seeds!r}.")
        s = dataclasses.replace(s, seeds=tuple(dict.fromkeys(int(str(x).strip()) for x in listed)))
    if ablation_sizes:
        s = dataclasses.replace(s, ablation_sizes=_sizes(ablation_sizes, s.sizes, "ablation_sizes",
                                                         "among the sizes run (--sizes)"))
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
    if sw_overlap is None:
        sw_overlap = bundle_sw_overlap(bundles)
    elif isinstance(sw_overlap, bool) or not isinstance(sw_overlap, (int, float)) or not 0 <= sw_overlap < 1:
        raise SystemExit(f"--sw_overlap must be a number in [0, 1), e.g. --sw_overlap 0.5, got {sw_overlap!r}.")
    runner = StageRunner(work, device, False, bundles, preload=True)
    h = s.handoffs
    # ``--ablations 0/1`` arrive as numbers
    variants = (tuple(s.ablations) if ablations else ()) if isinstance(ablations, (bool, int)) else _chosen(
        ablations, s.ablations, "ablations", scale)
    extra = sorted({SOURCE_SEED_ABLATIONS[a] for a in variants if a in SOURCE_SEED_ABLATIONS} - set(h.seeds))
    if extra and not s.own_handoffs:
        raise SystemExit(f"--ablations of source seeds {extra}: scale {scale} uses the bundles' own source nets "
                         f"(seeds {h.seeds}); run these checks at a scale with its own hand-offs (--scale cpu).")
    swag = "swag_prior" in s.methods or any(ABLATIONS[a][0] == "swag_prior" for a in variants)
    data = Path(data_dir).resolve() if data_dir else work / "data"
    check_phantom_spacing(data, h.spacing, scale)
    own = Path(handoffs_dir).resolve() if handoffs_dir else work / "handoffs"
    sources = own / "sources" if s.own_handoffs else None
    handoffs = make_handoffs(runner, h, data, swag=swag, source_dir=sources,
                             prior_dir=own / "prior" if s.own_handoffs else None)
    # the source nets of other seeds that the source-seed checks start from, beside the scale's
    if extra:
        if not (data / "ms" / "dataset.json").is_file():
            raise SystemExit(f"source seeds {extra} train on {data / 'ms'}, which holds no dataset.json; make it with "
                             f"`python -m monai_dwp make-data --disease ms --num-cases {h.num_source_cases} --num-test "
                             f"{h.num_source_test} --spacing {h.spacing} --output-dir {data / 'ms'}`.")
        runner.run_parallel(source_stages(runner, dataclasses.replace(h, seeds=tuple(extra)), data, source_dir=sources))
    source_seeds = (*h.seeds, *extra)
    # the ablations' own priors, fitted once each before any run
    priors = {a: fit_prior(runner, h, output_dir=work / "priors" / a, name=f"prior_{a}", source_dir=sources,
                           **PRIOR_ABLATIONS[a])
              for a in variants if a in PRIOR_ABLATIONS}
    # those fitted to fewer of the source nets
    priors.update({a: fit_prior(runner, source_count_settings(h, SOURCE_COUNT_ABLATIONS[a]),
                                output_dir=work / "priors" / a, name=f"prior_{a}", source_dir=sources)
                   for a in variants if a in SOURCE_COUNT_ABLATIONS})
    # and those of the source training lengths, each fitted to source nets of its own
    priors.update({a: make_handoffs(runner, source_settings(h, SOURCE_ABLATIONS[a]), data, swag=False,
                                    source_dir=work / "sources" / a, prior_dir=work / "priors" / a,
                                    tag=a)["prior_ckpt"]
                   for a in variants if a in SOURCE_ABLATIONS})
    handoffs_s = time.perf_counter() - started_clock
    prior_file = Path(handoffs["prior_ckpt"])
    handoffs_made = prior_file.is_file() and prior_file.stat().st_mtime >= started  # made by this invocation
    common = {"spacing": [h.spacing] * 3, "patch_size": [s.target_patch] * 3, "batch_size": h.batch_size,
              "num_samples": h.num_samples, "dataset_dir": handoffs["target_data"],
              "num_val_cases": h.num_val_cases, "source_ckpt": handoffs["source_ckpt"],
              "prior_ckpt": handoffs["prior_ckpt"], "swag_ckpt": handoffs["swag_ckpt"], "max_kernels": h.max_kernels,
              "prior_refresh_interval": h.prior_refresh_interval, "prior_control_variate": h.prior_control_variate,
              "train_mode": s.train_mode,
              "sw_overlap": float(sw_overlap)}
    # rows of another recipe (earlier rows: local reparameterization, a 2048-kernel subsample) stay in the CSV untabled
    budget_row = budget_of(scale, s, sw_overlap)
    same = read_budget_rows(csv_path, budget_row)
    done = {(r["method"], int(r["num_train_cases"]), int(r["seed"])) for r in same}
    # N by N, seed by seed: an interrupted benchmark leaves complete (method) sets for the sizes it reached
    jobs = []
    for n in s.sizes:
        jobs += [(n, seed, m) for seed in s.seeds for m in s.methods if (m, n, seed) not in done]
        # the ablations right after the main runs of their N: a session that stops early has both for the first N
        if n in s.ablation_sizes:
            jobs += [(n, seed, a) for a in variants for seed in s.seeds if (a, n, seed) not in done]
    workers = check_int(workers, "workers", minimum=1, hint="e.g. --workers 2 on a 2-core machine")
    machine = describe_machine(device, workers)
    swag_note = (describe_swag(handoffs["swag_ckpt"], h.pretrain_epochs)
                 if swag or any(ABLATIONS.get(r["method"], (r["method"],))[0] == "swag_prior" for r in same) else "")
    chains = []
    for n, seed, name in jobs:
        epochs, val_interval = budget(s, n)
        ckpt_dir = work / "runs" / run_name(name, n, seed)
        method, overrides = ABLATIONS.get(name, (name, {}))
        args = dict(common, method=method, num_train_cases=n, seed=seed, split_seed=seed, ckpt_dir=ckpt_dir,
                    lr_schedule=s.lr_schedule, **overrides)
        if name in priors:
            args["prior_ckpt"] = priors[name]
        if name in SOURCE_SEED_ABLATIONS:
            args.update(source_seed_handoffs(handoffs, source_seeds, SOURCE_SEED_ABLATIONS[name]))
        claim_run_dir(ckpt_dir, {"epochs": epochs, "val_interval": val_interval, "mc_samples": h.mc_samples, **args})
        chains.append([
            (f"{run_name(name, n, seed)}_train",
             runner.bundle("dwp_finetune", ["train"], epochs=epochs, val_interval=val_interval, **args),
             [ckpt_dir / "model.pt", ckpt_dir / f"checkpoint_epoch={epochs}.pt"]),  # a finished training only
            (f"{run_name(name, n, seed)}_evaluate",
             runner.bundle("dwp_finetune", ["train", "evaluate"], mc_samples=h.mc_samples, **args),
             [ckpt_dir / "eval" / "metrics.csv"]),
        ])
    lock = threading.Lock()

    def fingerprint(name: str) -> str:
        method, overrides = ABLATIONS.get(name, (name, {}))
        keys = set(HANDOFFS[method]) | ({"source_ckpt"} if overrides.get("source_init") else set())
        files = dict(common, prior_ckpt=priors.get(name, common["prior_ckpt"]))
        if name in SOURCE_SEED_ABLATIONS:
            files.update(source_seed_handoffs(handoffs, source_seeds, SOURCE_SEED_ABLATIONS[name]))
        return handoff_fingerprint({k: files[k] for k in keys}) if keys else "none"

    finished: list[str] = []
    started_key = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(started))  # this invocation's entry in TIMING_FILE

    def record(index: int, seconds: list[float]) -> None:
        n, seed, method = jobs[index]
        metrics = collect_metrics(work / "runs" / run_name(method, n, seed) / "eval")
        train_log = runner.log_dir / f"{run_name(method, n, seed)}_train.log"
        best_dice, best_epoch = best_validation(train_log)
        if seconds[0] < 1.0:  # an earlier invocation trained it (this one skipped the stage): the time its log records
            seconds = [trained_seconds(train_log) or seconds[0], *seconds[1:]]
        row = {"method": method, "num_train_cases": n, "seed": seed, "split_seed": seed, **budget_row, "epochs": budget(s, n)[0],
               "workers": workers, "train_seconds": round(seconds[0], 1), "total_seconds": round(sum(seconds), 1),
               "best_val_dice": best_dice, "best_epoch": best_epoch,
               **{m: metrics.get(m, float("nan")) for m in METRICS}, "handoffs": fingerprint(method)}
        with lock:  # one whole row per finished run
            append_row(csv_path, row)
            same.append({k: str(v) for k, v in row.items()})
            finished.append(method)
            timing = {"started": started_key, "budget": budget_key(budget_row),
                      "runs": len(finished), "workers": workers, "handoffs_s": round(handoffs_s, 1),
                      "handoffs_made": handoffs_made, "elapsed_s": round(time.perf_counter() - started_clock, 1)}
            timings = [t for t in load_timings(out) if t["started"] != started_key] + [timing]
            atomic_write(out / TIMING_FILE, "w", lambda f: json.dump(timings, f, indent=1))
            write_markdown(same, scale, report, out / "transfer.md", machine, swag_note, budget_row)
            write_figure(same, report, out / "transfer.png")
            bar.update()

    # N by N, seed by seed: an interrupted benchmark leaves complete (method) sets for the sizes it reached;
    # ``workers`` runs go side by side, each with an equal share of the cores
    with tqdm(total=len(jobs), desc="transfer runs", unit="run") as bar:
        runner.run_chains(chains, workers=workers, on_done=record)
    if same and not jobs:
        write_markdown(same, scale, report, out / "transfer.md", machine, swag_note, budget_row)
        write_figure(same, report, out / "transfer.png")
    return out / "transfer.md"


if __name__ == "__main__":
    import fire

    stop_stages_on_sigterm()  # `kill` stops the running stages with the benchmark
    fire.Fire(main)
