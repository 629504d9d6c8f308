"""Monte Carlo samples of the evaluation, chosen on validation cases: what fewer weight draws change, per case.

A Bayesian method's evaluation (the finetune bundle's ``evaluate.json``, ``MCInferer``) runs its sliding windows once
per weight draw, T = ``mc_samples`` times, so its cost grows with T while the deterministic methods' does not. The
mean prediction, its calibration and the uncertainty maps are Monte Carlo estimates: fewer draws make them noisier,
the mutual information (the epistemic part, a difference of two estimated entropies) most of all. This study takes
the target networks of one finished ``make demo`` (the Bayesian methods, trained as the pipeline trains them),
evaluates each at every T of ``--samples`` on its **validation** cases (the choice) and on the held-out test cases
(reported, never used for the choice), and compares, case by case, against the reference (the largest T, inferer
seed 0):

- each smaller T with independent draws (inferer seed 1), paired over (method, case);
- the reference T itself with independent draws (seed 1): the Monte Carlo noise of the reference, the floor that no
  smaller T can go below;

on the tumour Dice, the ECE and the AUC of the mutual information as an error detector (per case, inside the brain
mask, ``calibration.csv``), with the seconds per volume of the evaluator.

The choice (:func:`choose`) is the smallest T whose differences to the reference have their whole 95 % t-interval
inside ``±margin`` on every metric (an equivalence test at the margins of ``--margins``); the reference itself when
none has.

Writes ``<results>/mc_samples.{csv,md}``. Finished evaluations are reused (an interrupted study resumes).

Usage::

    make demo    # or: python -m monai_dwp pipeline --output-dir outputs/pipeline
    python benchmarks/mc_samples.py --demo_dir . --work_dir runs/mc_samples
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _runs import (  # noqa: E402
    case_calibration,
    case_dice,
    demo_evaluation,
    evaluation_machine,
    evaluator_seconds,
    write_rows,
)
from _stats import paired_diffs, paired_interval  # noqa: E402
from _tables import interval_text  # noqa: E402
from monai_dwp.pipeline import PipelineSettings, StageRunner, default_bundles_dir, stop_stages_on_sigterm  # noqa: E402
from monai_dwp.transfer import BAYESIAN_METHODS  # noqa: E402
from monai_dwp.utils.io import atomic_write  # noqa: E402

PIPELINE = PipelineSettings.default()
"""The pipeline's settings, whose evaluation this study repeats."""
SPLITS = ("val", "test")
METRICS = {"dice": "Dice", "ece": "ECE", "auc_mutual_information": "AUC MI→error"}
"""The per-case metrics compared, with their names in the report."""
DEFAULT_MARGINS = "dice:0.01,ece:0.002,auc_mutual_information:0.01"
FIELDS = ["split", "method", "samples", "seed", "case", *METRICS, "seconds_per_volume"]
Key = tuple[str, str]
"""``(method, case)``: the pairs of the comparison."""


def parse_samples(value: str | int | tuple) -> list[int]:
    """``"3,5,10"`` (or fire's tuple, or one int) -> ``[3, 5, 10]``: at least two distinct counts ≥ 1, sorted."""
    parts = value if isinstance(value, (tuple, list)) else str(value).split(",")
    try:
        counts = sorted({int(p) for p in parts if str(p).strip()})
    except ValueError:
        counts = []
    if len(counts) < 2 or counts[0] < 1:
        raise SystemExit(f"--samples must name at least two Monte Carlo sample counts ≥ 1, e.g. 3,5,10; "
                         f"got {value!r}.")
    return counts


def parse_margins(value: str | tuple) -> dict[str, float]:
    """``"dice:0.01,ece:0.002,auc_mutual_information:0.01"`` -> ``{metric: margin}``, one positive margin for each of
    :data:`METRICS`."""
    parts = value if isinstance(value, (tuple, list)) else str(value).split(",")
    margins: dict[str, float] = {}
    for part in parts:
        name, _, number = str(part).partition(":")
        try:
            margins[name] = float(number)
        except ValueError:
            margins[name] = -1.0
    if set(margins) != set(METRICS) or any(not m > 0 for m in margins.values()):
        raise SystemExit(f"--margins must give one positive margin for each of {list(METRICS)}, e.g. "
                         f"{DEFAULT_MARGINS}; got {value!r}.")
    return margins


def label(samples: int, seed: int) -> str:
    """``T5_seed1``: the folder and log name of an evaluation."""
    return f"T{samples}_seed{seed}"


def runs(counts: list[int]) -> list[tuple[int, int]]:
    """The ``(T, inferer seed)`` evaluations of a study: the reference (the largest T) at seeds 0 and 1, every other
    T at seed 1 (draws independent of the reference's)."""
    return [(counts[-1], 0), *((t, 1) for t in counts)]


def main(demo_dir: str = ".", work_dir: str = "runs/mc_samples", results: str | None = None,
         samples: str | tuple = "3,5,10", margins: str | tuple = DEFAULT_MARGINS,
         methods: str | tuple = ",".join(m for m in PIPELINE.methods if m in BAYESIAN_METHODS),
         workers: int = PIPELINE.workers, force: bool = False, note: str = "") -> Path:
    """Run (or resume) the study and write ``mc_samples.{csv,md}``.

    Args:
        demo_dir: a checkout where ``make demo`` ran (see ``_runs.demo_evaluation``).
        work_dir: where the evaluations and their logs go.
        results: the folder of the result files (default ``benchmarks/results``).
        samples: comma-separated Monte Carlo sample counts T; the largest is the reference.
        margins: ``<metric>:<margin>`` pairs, the equivalence margins of :func:`choose`.
        methods: comma-separated Bayesian methods (default those ``make demo`` trains).
        workers: evaluations side by side, each with ``cpu_count // workers`` threads (the pipeline's: 2).
        force: evaluate again even where an evaluation exists.
        note: a sentence for the report on how the runs were made.
    """
    demo = Path(demo_dir).resolve()
    counts = parse_samples(samples)
    margin = parse_margins(margins)
    method_list = [m for m in (methods if isinstance(methods, (tuple, list)) else str(methods).split(",")) if m]
    unknown = [m for m in method_list if m not in BAYESIAN_METHODS]
    if unknown or not method_list:
        raise SystemExit(f"--methods {unknown or methods!r}: choose Bayesian methods among {list(BAYESIAN_METHODS)} "
                         "(a deterministic method makes one pass whatever T).")
    ckpts, common = demo_evaluation(demo, method_list, PIPELINE)
    work = Path(work_dir).resolve()
    out = Path(results).resolve() if results else ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    runner = StageRunner(work, "cpu", force, default_bundles_dir(), preload=True)
    load_before = os.getloadavg()
    chains = []
    for split in SPLITS:
        for method in method_list:
            chain = []
            for t, seed in runs(counts):
                eval_dir = work / split / method / label(t, seed)
                cmd = runner.bundle("dwp_finetune", ["train", "evaluate"], method=method, ckpt_dir=ckpts[method],
                                    eval_dir=eval_dir, mc_samples=t, **common,
                                    **{"validate#dataset#data": f"$@split['{split}']", "validate#inferer#seed": seed})
                chain.append((_stage(split, method, t, seed), cmd, [eval_dir / "calibration.csv"]))
            chains.append(chain)
    from tqdm import tqdm

    with tqdm(total=sum(len(c) for c in chains), desc="mc_samples evaluations", unit="stage") as bar:
        runner.run_chains(chains, bar, workers=workers)
    rows = []
    for split in SPLITS:
        for method in method_list:
            for t, seed in runs(counts):
                eval_dir = work / split / method / label(t, seed)
                dice, calibration = case_dice(eval_dir), case_calibration(eval_dir)
                seconds = evaluator_seconds(runner.log_dir / f"{_stage(split, method, t, seed)}.log") / len(dice)
                for case, value in sorted(dice.items()):
                    rows.append({"split": split, "method": method, "samples": t, "seed": seed, "case": case,
                                 "dice": round(value, 5), **{k: round(calibration[case][k], 6) for k in METRICS
                                                             if k != "dice"},
                                 "seconds_per_volume": round(seconds, 2)})
    write_rows(out / "mc_samples.csv", rows, FIELDS)
    machine = evaluation_machine(workers, load_before)
    text = _markdown(rows, margin, machine, note)
    atomic_write(out / "mc_samples.md", "w", lambda f: f.write(text))
    return out / "mc_samples.md"


def _stage(split: str, method: str, samples: int, seed: int) -> str:
    return f"evaluate_{split}_{method}_{label(samples, seed)}"


def equivalent(a: dict[Key, float], b: dict[Key, float], margin: float) -> bool:
    """Whether the paired differences ``a - b`` (over their common keys) have their whole 95 % t-interval inside
    ``[-margin, margin]``; never with fewer than two pairs."""
    diffs = paired_diffs(a, b)
    if len(diffs) < 2:
        return False
    _, low, high = paired_interval(diffs)
    return -margin <= low and high <= margin


def choose(values: dict[tuple[int, int], dict[str, dict[Key, float]]], margins: dict[str, float]) -> int:
    """The smallest T whose values at inferer seed 1 are equivalent (:func:`equivalent`) to the reference's (the
    largest T, seed 0) on every metric of ``margins``; the reference's T when no smaller one is.

    Args:
        values: ``{(T, seed): {metric: {(method, case): value}}}`` of the validation cases.
        margins: ``{metric: margin}``.
    """
    reference = max(t for t, _ in values)
    if (reference, 0) not in values:
        raise ValueError(f"the reference (T = {reference}, seed 0) was not evaluated; evaluate it with the others.")
    for t in sorted({t for t, seed in values if seed == 1 and t < reference}):
        if all(equivalent(values[(t, 1)][m], values[(reference, 0)][m], margins[m]) for m in margins):
            return t
    return reference


def _markdown(rows: list[dict], margins: dict[str, float], machine: str, note: str = "") -> str:
    values: dict[tuple[str, int, int], dict[str, dict[Key, float]]] = {}
    seconds: dict[tuple[str, int, int], list[float]] = {}
    for r in rows:
        run = (r["split"], int(r["samples"]), int(r["seed"]))
        for m in METRICS:
            values.setdefault(run, {}).setdefault(m, {})[(r["method"], r["case"])] = float(r[m])
        seconds.setdefault(run, []).append(float(r["seconds_per_volume"]))
    counts = sorted({t for _, t, _ in values})
    reference = counts[-1]
    chosen = choose({(t, s): v for (sp, t, s), v in values.items() if sp == "val"}, margins)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cases = {sp: len({c for (_, c) in values[(sp, reference, 0)]["dice"]}) for sp in SPLITS}
    lines = [
        "# Monte Carlo samples of the evaluation: what fewer weight draws change",
        "",
        f"Written by `python benchmarks/mc_samples.py`. The Bayesian target networks of one `make demo` run "
        f"({', '.join(f'`{m}`' for m in methods)}; N = {PIPELINE.num_train_cases}, one seed), each evaluated by the "
        f"finetune bundle's `evaluate.json` ({PIPELINE.patch_size}³ sliding windows, the bundle's overlap) with T "
        f"weight draws, on the {cases['val']} validation cases (the choice) and the {cases['test']} test cases "
        f"(reported, not used for the choice). Machine: {machine}." + (f" {note}" if note else ""),
        "",
        f"Each row: T draws with inferer seed 1 − the reference, T = {reference} with seed 0 (independent draws), "
        f"paired over ({len(methods)} methods × cases), mean [95 % t-interval]; the row T = {reference} is the "
        "reference's own Monte Carlo noise. Per case: the tumour Dice, the ECE and the AUC of the mutual information "
        "as a detector of the errors, inside the brain mask. Seconds per volume: the evaluator's time over the cases, "
        "the mean over the methods.",
        "",
        "| T | split | " + " | ".join(f"{name} (margin ±{margins[m]:g})" for m, name in METRICS.items())
        + " | seconds per volume |",
        "|---|---|" + "---|" * len(METRICS) + "---|",
    ]
    for split in SPLITS:
        for t in counts:
            run = (split, t, 1)
            cells = [interval_text(paired_diffs(values[run][m], values[(split, reference, 0)][m]), digits=4)
                     for m in METRICS]
            lines.append(f"| {t} | {split} | " + " | ".join(cells) + f" | {statistics.mean(seconds[run]):.1f} |")
    lines += ["", "Mean per method at seed 1, validation / test (Dice | ECE | AUC MI→error):", "",
              "| method | " + " | ".join(f"T = {t}" for t in counts) + " |", "|---|" + "---|" * len(counts)]
    for method in methods:
        cells = []
        for t in counts:
            parts = []
            for m in METRICS:
                per_split = [statistics.mean(v for (mm, _), v in values[(sp, t, 1)][m].items() if mm == method)
                             for sp in SPLITS]
                parts.append(" / ".join(f"{v:.3f}" if m != "ece" else f"{v:.4f}" for v in per_split))
            cells.append(" \\| ".join(parts))
        lines.append(f"| `{method}` | " + " | ".join(cells) + " |")
    lines += ["", f"Choice (`choose`: the smallest T whose validation differences to the reference lie, with their "
              f"whole 95 % interval, inside the margins on every metric; the reference when none does): **T = "
              f"{chosen}**."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import fire

    stop_stages_on_sigterm()  # `kill` stops the running stages with the benchmark
    fire.Fire(main)
