"""Studies of the source U-Nets (``source_precision.py``, ``source_schedule.py``): the ``dwp_pretrain`` bundle trained
as the pipeline trains it, one way against another, seed by seed; each run is a training then an evaluation on the
held-out test cases, and a row of its best validation Dice, test Dice and training time."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from _runs import best_validation, mean_test_dice, trained_seconds
from _tables import interval_text, mean_sd
from monai_dwp.pipeline import PipelineSettings, StageRunner
from monai_dwp.utils.validation import check_int

__all__ = ["PIPELINE", "paired_tables", "source_chain", "source_row", "study_seeds"]

PIPELINE = PipelineSettings.default()
"""The pipeline's settings, whose source training the studies repeat."""


def study_seeds(data_dir: str, seeds: str | int | Sequence[Any]) -> list[int]:
    """The seeds of a study (``"0,1,2"``, or the tuple ``fire`` makes of it), once its source (MS) dataset is known
    to exist.

    Raises:
        SystemExit: ``data_dir`` is not a directory (with the command that makes it), or a seed is negative.
    """
    if not Path(data_dir).is_dir():
        raise SystemExit(f"--data_dir {data_dir!r} is not a directory; make it with `python -m monai_dwp make-data "
                         f"--disease ms --num-cases 30 --num-test 4 --spacing 3 --output-dir {data_dir}`.")
    parts = seeds if isinstance(seeds, (tuple, list)) else str(seeds).split(",")  # fire reads 0,1,2 as a tuple
    return [check_int(int(s), "seeds", minimum=0) for s in parts]


def source_chain(runner: StageRunner, name: str, seed: int, epochs: int, val_interval: int,
                 common: Mapping[str, Any], eval_dir: str = "eval", train: Mapping[str, Any] | None = None,
                 evaluate: Mapping[str, Any] | None = None) -> list[tuple[str, list[str], list[Path]]]:
    """The two stages of one run, ``<runner.output_dir>/runs/<name>/``: the training (``dwp_pretrain``'s
    ``train.json``, SWAG over the last ``PIPELINE.swag_epochs`` epochs, the pipeline's batches) and the evaluation of
    its best-validation checkpoint into ``<run>/<eval_dir>/``.

    Args:
        common: overrides of both (data, validation cases, spacing, patch size).
        train, evaluate: overrides of the training only and of the evaluation only.
    """
    ckpt = runner.output_dir / "runs" / name
    train_cmd = runner.bundle("dwp_pretrain", ["train"], seed=seed, epochs=epochs, val_interval=val_interval,
                              swag_start_epoch=max(1, epochs - PIPELINE.swag_epochs + 1), ckpt_dir=ckpt,
                              batch_size=PIPELINE.batch_size, num_samples=PIPELINE.num_samples,
                              **dict(train or {}), **common)
    evaluate_cmd = runner.bundle("dwp_pretrain", ["train", "evaluate"], seed=seed, ckpt_dir=ckpt,
                                 eval_dir=ckpt / eval_dir, **dict(evaluate or {}), **common)
    return [(f"train_{name}", train_cmd, [ckpt / f"checkpoint_epoch={epochs}.pt", ckpt / "model.pt"]),
            (f"evaluate_{name}", evaluate_cmd, [ckpt / eval_dir / "metrics.csv"])]


def source_row(runner: StageRunner, name: str, epochs: int, eval_dir: str = "eval") -> dict[str, Any]:
    """What run ``name`` of :func:`source_chain` gave: ``best_val_dice`` and ``best_epoch`` (the checkpoint the
    bundle keeps, from its training log), ``test_dice`` (its evaluation), ``train_seconds`` (Ignite's, validation
    included) and ``seconds_per_epoch``."""
    log = runner.log_dir / f"train_{name}.log"
    dice, epoch = best_validation(log)
    seconds = trained_seconds(log)
    return {"best_val_dice": round(dice, 4), "best_epoch": epoch,
            "test_dice": round(mean_test_dice(runner.output_dir / "runs" / name / eval_dir), 4),
            "train_seconds": None if seconds is None else round(seconds, 1),
            "seconds_per_epoch": None if seconds is None else round(seconds / epochs, 2)}


def paired_tables(first: Mapping[int, Mapping[str, Any]], second: Mapping[int, Mapping[str, Any]], seeds: Sequence[int],
                  names: tuple[str, str], measures: Sequence[tuple[str, str]]) -> list[str]:
    """The two tables of a study's report: one row per seed (best validation Dice with its epoch, test Dice,
    training seconds: ``first`` / ``second``), then each of ``measures`` (``(key, label)``) as mean ± sd over the
    seeds and the paired difference ``second − first`` with its 95 % t-interval.

    Args:
        first, second: ``{seed: row}`` of :func:`source_row` rows (numbers, or the strings of a CSV).
        names: what the two ways are called in the headers.
    """
    a_name, b_name = names
    lines = [f"| seed | best validation Dice (epoch): {a_name} / {b_name} | test Dice: {a_name} / {b_name} | training "
             f"s: {a_name} / {b_name} |", "|---|---|---|---|"]
    for s in seeds:
        a, b = first[s], second[s]
        lines.append(f"| {s} | {float(a['best_val_dice']):.3f} ({a['best_epoch']}) / {float(b['best_val_dice']):.3f} "
                     f"({b['best_epoch']}) | {float(a['test_dice']):.3f} / {float(b['test_dice']):.3f} | "
                     f"{a['train_seconds']} / {b['train_seconds']} |")
    lines += ["", f"Over the seeds: mean ± sd (seeds), and the paired difference {b_name} − {a_name} with its 95 % "
              "t-interval:", "", f"| measure | {a_name} | {b_name} | {b_name} − {a_name} |", "|---|---|---|---|"]
    for key, label in measures:
        x = [float(first[s][key]) for s in seeds]
        y = [float(second[s][key]) for s in seeds]
        digits = 3 if "dice" in key else (1 if key == "train_seconds" else 2)
        lines.append(f"| {label} | {mean_sd(x, digits)} | {mean_sd(y, digits)} | "
                     f"{interval_text([b - a for a, b in zip(x, y)], digits)} |")
    return lines
