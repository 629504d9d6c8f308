"""Sliding-window settings of the evaluation, chosen on validation cases: Dice against seconds per volume.

Every network of the project is trained on 32³ patches and evaluated by sliding windows of that patch
(``MCInferer``; the finetune and pretrain bundles' ``sw_overlap``, constant blending). A denser overlap averages more
windows per voxel and costs more network calls: on a 64×80×64 volume, 12 windows at overlap 0, 27 at 0.25 and 36 at
0.5, and a Bayesian method runs them once per Monte Carlo sample; Gaussian blending (``mode="gaussian"``) weighs each
window's centre above its borders at no extra call. This study takes the target networks of one finished
``make demo`` (every method, trained as the pipeline trains them), evaluates each with the finetune bundle's
``evaluate.json`` at every setting of ``--settings`` (overlap and blending) on its **validation** cases (the choice)
and on the held-out test cases (reported, never used for the choice), and compares, case by case:

- Dice of the tumour class per case (``val_mean_dice_raw.csv``), paired over (method, case);
- seconds per volume of the evaluation (Ignite's evaluator time over the cases: T = ``mc_samples`` weight draws for
  the Bayesian methods, one pass for the deterministic ones; data loading and writing the predictions included).

The choice (:func:`choose`) starts from ``--incumbent``, the bundles' setting before, and changes one factor at a
time, the overlap and then the blending, each only on a gain whose whole 95 % t-interval on the validation pairs lies
above 0.

Writes ``<results>/sw_overlap.{csv,md}``. Finished evaluations are reused (an interrupted study resumes).

Usage::

    make demo    # or: python -m monai_dwp pipeline --output-dir outputs/pipeline
    python benchmarks/sw_overlap.py --demo_dir . --work_dir runs/sw_overlap
"""

from __future__ import annotations

import math
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _runs import case_dice, demo_evaluation, evaluation_machine, evaluator_seconds, write_rows  # noqa: E402
from _stats import paired_diffs, paired_interval  # noqa: E402
from _tables import interval_text  # noqa: E402
from monai_dwp.pipeline import PipelineSettings, StageRunner, default_bundles_dir, stop_stages_on_sigterm  # noqa: E402
from monai_dwp.transfer import BAYESIAN_METHODS, METHODS  # noqa: E402
from monai_dwp.utils.io import atomic_write  # noqa: E402

PIPELINE = PipelineSettings.default()
"""The pipeline's settings, whose evaluation this study repeats."""
SPLITS = ("val", "test")
MODES = ("constant", "gaussian")
FIELDS = ["split", "method", "bayesian", "overlap", "mode", "case", "dice", "seconds_per_volume"]
Setting = tuple[float, str]
"""A sliding-window setting: ``(overlap, blending mode)``."""


def parse_setting(part: str) -> Setting:
    """``"0.25:gaussian"`` -> ``(0.25, "gaussian")``; without ``:<mode>`` the blending is constant."""
    overlap_text, _, mode = str(part).partition(":")
    try:
        overlap = float(overlap_text)
    except ValueError:
        overlap = -1.0
    mode = mode or "constant"
    if not 0.0 <= overlap < 1.0 or mode not in MODES:
        raise SystemExit(f"{part!r} is not a sliding-window setting <overlap in [0, 1)>[:{'|'.join(MODES)}]; "
                         "e.g. --settings 0:constant,0.25:constant,0.5:constant,0.25:gaussian --incumbent 0.25:constant")
    return overlap, mode


def parse_settings(value: str | tuple) -> list[Setting]:
    """``"0.25:constant,0.5:gaussian"`` (or fire's tuple of its parts) -> ``[(0.25, "constant"), (0.5, "gaussian")]``,
    without repeats."""
    parts = value if isinstance(value, (tuple, list)) else str(value).split(",")
    settings = list(dict.fromkeys(parse_setting(part) for part in parts))
    if len(settings) < 2:
        raise SystemExit(f"--settings must name at least two settings to compare, got {value!r}.")
    return settings


def label(setting: Setting) -> str:
    """``overlap0.25_constant``: the folder and log name of a setting."""
    return f"overlap{setting[0]:g}_{setting[1]}"


def main(demo_dir: str = ".", work_dir: str = "runs/sw_overlap", results: str | None = None,
         settings: str | tuple = "0:constant,0.25:constant,0.5:constant,0.25:gaussian,0.5:gaussian",
         incumbent: str = "0.25:constant", methods: str | tuple = ",".join(PIPELINE.methods),
         workers: int = PIPELINE.workers, force: bool = False, note: str = "") -> Path:
    """Run (or resume) the study and write ``sw_overlap.{csv,md}``.

    Args:
        demo_dir: a checkout where ``make demo`` ran: its ``data/tumour``, the hand-offs in ``bundles/*/models``,
            ``dwp`` in ``bundles/dwp_finetune/models`` and the other methods in ``outputs/pipeline/runs``.
        work_dir: where the evaluations and their logs go.
        results: the folder of the result files (default ``benchmarks/results``).
        settings: comma-separated ``<overlap>:<constant|gaussian>`` sliding-window settings.
        incumbent: the setting the bundles used before (``<overlap>:<blending>``), which only a resolved gain on
            the validation cases replaces (:func:`choose`); it must be one of ``settings``.
        methods: comma-separated methods (default those ``make demo`` trains).
        workers: evaluations side by side, each with ``cpu_count // workers`` threads (the pipeline's: 2).
        force: evaluate again even where an evaluation exists.
        note: a sentence for the report on how the runs were made.
    """
    demo = Path(demo_dir).resolve()
    setting_list = parse_settings(settings)
    before = parse_setting(incumbent)
    if before not in setting_list:
        raise SystemExit(f"--incumbent {incumbent!r} must be one of --settings {settings!r}.")
    method_list = [m for m in (methods if isinstance(methods, (tuple, list)) else str(methods).split(",")) if m]
    unknown = [m for m in method_list if m not in METHODS]
    if unknown:
        raise SystemExit(f"--methods {unknown} are not fine-tuning methods; choose from {list(METHODS)}.")
    ckpts, common = demo_evaluation(demo, method_list, PIPELINE)
    work = Path(work_dir).resolve()
    out = Path(results).resolve() if results else ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    runner = StageRunner(work, "cpu", force, default_bundles_dir(), preload=True)
    common["mc_samples"] = PIPELINE.mc_samples
    load_before = os.getloadavg()
    chains = []
    for split in SPLITS:
        for method in method_list:
            chain = []
            for setting in setting_list:
                eval_dir = work / split / method / label(setting)
                cmd = runner.bundle("dwp_finetune", ["train", "evaluate"], method=method, ckpt_dir=ckpts[method],
                                    eval_dir=eval_dir, sw_overlap=setting[0], **common,
                                    **{"validate#dataset#data": f"$@split['{split}']",
                                       "validate#inferer#mode": setting[1]})
                chain.append((_stage(split, method, setting), cmd, [eval_dir / "metrics.csv"]))
            chains.append(chain)
    from tqdm import tqdm

    with tqdm(total=sum(len(c) for c in chains), desc="sw_overlap evaluations", unit="stage") as bar:
        runner.run_chains(chains, bar, workers=workers)
    rows = []
    for split in SPLITS:
        for method in method_list:
            for setting in setting_list:
                dice = case_dice(work / split / method / label(setting))
                seconds = evaluator_seconds(runner.log_dir / f"{_stage(split, method, setting)}.log") / len(dice)
                for case, value in sorted(dice.items()):
                    rows.append({"split": split, "method": method, "bayesian": method in BAYESIAN_METHODS,
                                 "overlap": setting[0], "mode": setting[1], "case": case, "dice": round(value, 5),
                                 "seconds_per_volume": round(seconds, 2)})
    write_rows(out / "sw_overlap.csv", rows, FIELDS)
    machine = evaluation_machine(workers, load_before)
    text = _markdown(rows, before, machine, note)
    atomic_write(out / "sw_overlap.md", "w", lambda f: f.write(text))
    return out / "sw_overlap.md"


def _stage(split: str, method: str, setting: Setting) -> str:
    return f"evaluate_{split}_{method}_{label(setting)}"


def choose(dice: dict[Setting, dict[tuple[str, str], float]], incumbent: Setting) -> Setting:
    """The setting the evidence supports, one factor at a time from ``incumbent`` (the bundles' setting before):

    1. the overlap, at the incumbent's blending: the setting with the highest mean Dice among those whose paired
       differences to the incumbent (over the ``(method, case)`` keys of ``dice[setting]``) have their whole 95 %
       t-interval above 0; the incumbent's overlap when none has;
    2. the blending, at that overlap: likewise against the setting of step 1.

    A factor changes only on a resolved gain, so noise alone never moves a default.
    """
    if incumbent not in dice:
        raise ValueError(f"the incumbent setting {incumbent} was not evaluated; evaluate it with the others.")
    means = {s: statistics.mean(v.values()) for s, v in dice.items()}
    current = incumbent
    for same in (lambda s: s[1] == current[1], lambda s: s[0] == current[0]):  # the overlap, then the blending
        better = [s for s in dice if same(s) and s != current and _low(dice[s], dice[current]) > 0]
        if better:
            current = max(better, key=lambda s: means[s])
    return current


def _low(a: dict[tuple[str, str], float], b: dict[tuple[str, str], float]) -> float:
    _, low, _ = paired_interval(paired_diffs(a, b))
    return low if low == low else -math.inf


def _markdown(rows: list[dict], incumbent: Setting, machine: str, note: str = "") -> str:
    settings: list[Setting] = sorted(dict.fromkeys((r["overlap"], r["mode"]) for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    dice: dict[tuple[str, Setting], dict[tuple[str, str], float]] = {}
    seconds: dict[tuple[str, Setting, str], float] = {}
    for r in rows:
        setting = (r["overlap"], r["mode"])
        dice.setdefault((r["split"], setting), {})[(r["method"], r["case"])] = r["dice"]
        seconds[(r["split"], setting, r["method"])] = r["seconds_per_volume"]
    chosen = choose({s: dice[("val", s)] for s in settings}, incumbent)
    cases = {sp: len({c for (_, c) in dice[(sp, settings[0])]}) for sp in SPLITS}
    bayes = [m for m in methods if m in BAYESIAN_METHODS]
    det = [m for m in methods if m not in BAYESIAN_METHODS]

    def name(s: Setting) -> str:
        return f"{s[0]:g} {s[1]}"

    def cell(split: str, s: Setting, ref: Setting, group: list[str]) -> str:
        if s == ref:
            return "(reference)"
        values = {k: v for k, v in dice[(split, s)].items() if k[0] in group}
        return interval_text(paired_diffs(values, dice[(split, ref)])) if group else "–"

    lines = [
        "# Sliding-window settings of the evaluation: Dice against seconds per volume",
        "",
        f"Written by `python benchmarks/sw_overlap.py`. The target networks of one `make demo` run ({len(methods)} "
        f"methods, N = {PIPELINE.num_train_cases}, one seed), each evaluated by the finetune bundle's `evaluate.json` "
        f"({PIPELINE.patch_size}³ windows, `sw_batch_size` 4, {PIPELINE.mc_samples} weight draws for the Bayesian "
        f"methods) at every overlap and blending below, on the {cases['val']} validation cases (the choice) and the "
        f"{cases['test']} test cases (reported, not used for the choice). Machine: {machine}."
        + (f" {note}" if note else ""),
        "",
        "Paired differences of the tumour Dice per case, over (method, case) pairs, with their 95 % t-interval (the "
        "pairs of one case share its image, so the interval is somewhat narrow), against the bundles' setting before "
        f"this study ({name(incumbent)}) and against the setting chosen on validation ({name(chosen)}); seconds per "
        "volume: the evaluator's time over the cases, the mean over the methods, Bayesian / deterministic:",
        "",
        "| overlap, blending | split | mean Dice | − the one before: all methods | Bayesian | deterministic | "
        "− the chosen one: all methods | seconds per volume |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for split in SPLITS:
        for s in settings:
            secs = [statistics.mean(seconds[(split, s, m)] for m in g) if g else math.nan for g in (bayes, det)]
            lines.append(f"| {name(s)} | {split} | {statistics.mean(dice[(split, s)].values()):.3f} | "
                         f"{' | '.join(cell(split, s, incumbent, g) for g in (methods, bayes, det))} | "
                         f"{cell(split, s, chosen, methods)} | {secs[0]:.1f} / {secs[1]:.1f} |")
    lines += ["", "Mean Dice per method, validation / test:", "",
              "| method | " + " | ".join(name(s) for s in settings) + " |", "|---|" + "---|" * len(settings)]
    for m in methods:
        cells = [" / ".join(f"{statistics.mean(v for k, v in dice[(sp, s)].items() if k[0] == m):.3f}" for sp in SPLITS)
                 for s in settings]
        lines.append(f"| `{m}` | " + " | ".join(cells) + " |")
    lines += ["", f"Choice (`choose`: one factor at a time from the setting before, each only on a gain whose whole "
              f"interval on the validation pairs lies above 0): overlap **{chosen[0]:g}** with **{chosen[1]}** "
              "blending."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import fire

    stop_stages_on_sigterm()  # `kill` stops the running stages with the benchmark
    fire.Fire(main)
