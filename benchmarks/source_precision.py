"""Source U-Nets trained with bfloat16 forward passes against float32 ones: how much faster, and as good?

The source nets (the ``dwp_pretrain`` bundle, two seeds side by side) are the longest stage of ``make demo``. On a
device that multiplies bfloat16 in hardware, ``DWPUNet(compute_dtype="bfloat16")`` runs a training step of the
appendix-B U-Net much faster (:class:`~monai_dwp.networks.nets.DWPUNet`, *Precision*). This study trains the source
nets as the pipeline does (same command, data, epochs and seeds, one thread each, ``workers`` side by side) with the
bundle's ``compute_dtype`` set to ``float32`` and to ``bfloat16``, and compares, seed by seed:

- the best validation Dice and its epoch (the checkpoint the bundle keeps), from the training log;
- the Dice on the held-out test cases of that checkpoint, evaluated in float32 (``evaluate.json``), so that only
  the training's precision differs;
- the training's wall time (Ignite's, validation included).

Writes ``<results>/source_precision.{csv,md}``. Finished runs are reused (an interrupted study resumes), and
``--reuse seed<S>=<folder> --reuse_logs <logs>`` takes a float32 source net that the pipeline already trained with
the same command (``<folder>`` holds its ``model.pt`` and ``checkpoint_epoch=<epochs>.pt``, ``<logs>`` its
``pretrain_seed<S>.log``).

Usage::

    python -m monai_dwp make-data --disease ms --num-cases 30 --num-test 4 --spacing 3 --output-dir data/ms
    python benchmarks/source_precision.py --data_dir data/ms --work_dir runs/source_precision --seeds 0,1,2
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _runs import evaluation_machine, reuse_source_run, write_rows  # noqa: E402
from _source_study import PIPELINE, paired_tables, source_chain, source_row, study_seeds  # noqa: E402
from monai_dwp.pipeline import StageRunner, default_bundles_dir, stop_stages_on_sigterm  # noqa: E402
from monai_dwp.utils.io import atomic_write  # noqa: E402

DTYPES = ("float32", "bfloat16")
FIELDS = ["compute_dtype", "seed", "best_val_dice", "best_epoch", "test_dice", "train_seconds", "seconds_per_epoch"]


def main(data_dir: str, work_dir: str = "runs/source_precision", results: str | None = None,
         seeds: str | int | tuple = "0,1,2", epochs: int = PIPELINE.pretrain_epochs,
         val_interval: int = PIPELINE.pretrain_val_interval, num_val_cases: int = PIPELINE.num_source_test,
         workers: int = PIPELINE.workers, spacing: float = PIPELINE.spacing, patch_size: int = PIPELINE.patch_size,
         reuse: str | tuple = (), reuse_logs: str | None = None, note: str = "") -> Path:
    """Run (or resume) the study and write ``source_precision.{csv,md}``.

    Args:
        data_dir: the source (MS) dataset in the Decathlon layout, as ``make demo`` makes it.
        work_dir: where the runs and their logs go.
        results: the folder of the result files (default ``benchmarks/results``).
        seeds: comma-separated seeds.
        epochs, val_interval, num_val_cases: the source training (default the pipeline's: 80, 4, 4); the last
            ``PIPELINE.swag_epochs`` epochs record SWAG moments, as in the pipeline (they do not change the training).
        workers: runs side by side, each with ``cpu_count // workers`` threads (default the pipeline's: 2).
        spacing, patch_size: the phantoms' spacing in mm and the training patch edge (default the pipeline's).
        reuse: ``seed<S>=<folder>`` (or several, comma-separated): float32 runs the pipeline made.
        reuse_logs: the pipeline's ``logs/`` folder, with their ``pretrain_seed<S>.log``.
        note: a sentence for the report on how the runs were made (e.g. which ran side by side).
    """
    seed_list = study_seeds(data_dir, seeds)
    out = Path(results).resolve() if results else ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    runner = StageRunner(Path(work_dir).resolve(), "cpu", False, default_bundles_dir(), preload=True)
    for spec in ([reuse] if isinstance(reuse, str) else list(reuse)):
        for part in filter(None, str(spec).split(",")):
            reuse_source_run(runner, part, Path(reuse_logs or "outputs/pipeline/logs"), epochs, "float32")
    load_before = os.getloadavg()
    common = dict(dataset_dir=Path(data_dir).resolve(), num_val_cases=num_val_cases, spacing=[spacing] * 3,
                  patch_size=[patch_size] * 3)
    chains = [source_chain(runner, f"{dtype}_seed{s}", s, epochs, val_interval, common, "eval_float32",
                           train={"compute_dtype": dtype}, evaluate={"compute_dtype": "float32"})
              for s in seed_list for dtype in DTYPES]
    from tqdm import tqdm

    with tqdm(total=sum(len(c) for c in chains), desc="source_precision stages", unit="stage") as bar:
        runner.run_chains(chains, bar, workers=workers)
    rows = [{"compute_dtype": dtype, "seed": s, **source_row(runner, f"{dtype}_seed{s}", epochs, "eval_float32")}
            for s in seed_list for dtype in DTYPES]
    write_rows(out / "source_precision.csv", rows, FIELDS)
    machine = evaluation_machine(workers, load_before, "run")
    text = _markdown(rows, machine, epochs, seed_list, note, val_interval, num_val_cases, spacing, patch_size)
    atomic_write(out / "source_precision.md", "w", lambda f: f.write(text))
    return out / "source_precision.md"


def _markdown(rows: list[dict], machine: str, epochs: int, seeds: list[int], note: str = "",
              val_interval: int = PIPELINE.pretrain_val_interval, num_val_cases: int = PIPELINE.num_source_test,
              spacing: float = PIPELINE.spacing, patch_size: int = PIPELINE.patch_size) -> str:
    by = {(r["compute_dtype"], r["seed"]): r for r in rows}
    lines = [
        "# Source U-Nets in bfloat16 against float32",
        "",
        f"Written by `python benchmarks/source_precision.py`. The `dwp_pretrain` bundle as `make demo` runs it ({epochs} "
        f"epochs, validation every {val_interval}, the built-in MS phantoms at {spacing:g} mm, {patch_size}³ patches, "
        f"batch {PIPELINE.batch_size} × {PIPELINE.num_samples}), seeds "
        f"{', '.join(map(str, seeds))}, with `compute_dtype` `float32` and `bfloat16` (`DWPUNet`'s forward passes under "
        f"`torch.autocast`); the test Dice of each best-validation checkpoint is evaluated in float32 on the "
        f"{num_val_cases} held-out test cases. Machine: {machine}." + (f" {note}" if note else ""),
        "",
    ]
    lines += paired_tables({s: by[("float32", s)] for s in seeds}, {s: by[("bfloat16", s)] for s in seeds}, seeds,
                           ("float32", "bfloat16"), (("best_val_dice", "best validation Dice"), ("test_dice", "test Dice"),
                                                     ("seconds_per_epoch", "training seconds per epoch")))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import fire

    stop_stages_on_sigterm()  # `kill` stops the running stages with the benchmark
    fire.Fire(main)
