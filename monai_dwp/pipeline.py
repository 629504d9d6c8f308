"""The whole Deep Weight Prior chain on the built-in phantoms, stage by stage, as the bundles run it.

``python -m monai_dwp pipeline`` runs: make source (MS) and target (tumour) phantoms → pretrain the source U-Nets
(``dwp_pretrain``; one by default) → fit the kernel-VAE prior (``dwp_prior``) → fine-tune on a few target cases with
each method (``dwp_finetune``; the paper's six by default) → Monte Carlo inference with uncertainty maps and
evaluation on the held-out target cases → ``report.md``. Every stage is a ``python -m monai.bundle run`` command,
printed before it runs and logged to ``<output_dir>/logs/`` (run in a child of a fork server that imported torch and
MONAI once, :mod:`monai_dwp.utils.preloaded`, where the platform has one); a stage is skipped when its outputs exist
(``--force`` redoes everything), and a failing stage names the command that reproduces it.

The pipeline writes the bundles' own layout, so that every bundle command runs afterwards with no path override:
the phantoms go to ``data/ms`` and ``data/tumour`` beside ``bundles/``, the source nets to
``bundles/dwp_pretrain/models/seed<S>/``, the prior to ``bundles/dwp_prior/models/``, the ``dwp`` model to
``bundles/dwp_finetune/models/`` (served in place by MONAI Label) and the baselines to
``<output_dir>/runs/<method>_n<N>_seed0/``. It works from any working directory.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path

from monai_dwp.transfer import METHODS, PAPER_METHODS
from monai_dwp.utils.preloaded import (
    can_preload,
    main_allows_preload,
    module_command,
    start_module,
    start_preloading,
    stop_process,
    wait_process,
)

__all__ = [
    "PipelineSettings",
    "PipelineStageError",
    "StageRunner",
    "default_bundles_dir",
    "fit_prior",
    "make_handoffs",
    "run_pipeline",
    "source_stages",
    "stop_stages_on_sigterm",
]

Stage = tuple[str, Sequence[str], Sequence[Path]]
"""One stage of a chain: its name (and log file), its command and the outputs whose existence skips it."""


@dataclasses.dataclass
class PipelineSettings:
    """Sizes of the pipeline; :meth:`default` is the README's main job, :meth:`quick` the one of the tests."""

    spacing: float = 3.0
    patch_size: int = 32
    num_source_cases: int = 30
    num_source_test: int = 4
    num_target_pool: int = 16
    num_target_test: int = 8
    num_train_cases: int = 5
    num_val_cases: int = 3
    # the source networks whose kernels the prior is fitted to; every source-started method starts from the first.
    # One: a prior fitted to one net's kernels gave `dwp` no resolved loss against two nets' (transfer benchmark,
    # ablation dwp_prior_one_source), and one net alone with both threads trains in 327 s against 545 s for two side
    # by side (benchmarks/results/make_demo.md)
    seeds: tuple[int, ...] = (0,)
    pretrain_epochs: int = 80
    pretrain_val_interval: int = 4
    swag_epochs: int = 20  # the last epochs of source pretraining whose weights make the SWAG moments (swag_prior)
    # the prior's fit: on one demo source net's kernels its best validation ELBO improved by < 0.05 nats per kernel
    # over the 10 epochs after epoch 29 (benchmarks/results/make_demo.md)
    prior_epochs: int = 30
    finetune_epochs: int = 40
    finetune_val_interval: int = 5
    # weight draws of the Bayesian methods' evaluation: the fewest whose per-case Dice, ECE and AUC of the mutual
    # information on the validation cases are equivalent to 10 draws' (benchmarks/results/mc_samples.md)
    mc_samples: int = 5
    batch_size: int = 2
    num_samples: int = 2
    vae_hidden: tuple[int, int, int] = (32, 64, 128)
    max_kernels: int | None = None  # a per-group subsample of the DWP term's kernels (None: see the next line)
    prior_refresh_interval: int = 8  # the DWP term re-estimates a rotating 1/R of the kernels per step
    prior_control_variate: bool = True  # ... as its residual against a Gaussian, the Gaussian part exact every step
    workers: int = 2  # target methods fine-tuned side by side, each with cpu_count // workers threads
    # the target methods: the paper's six (`--methods all` adds source_gaussian and swag_prior, 2.3 more minutes)
    methods: tuple[str, ...] = PAPER_METHODS

    @classmethod
    def default(cls) -> PipelineSettings:
        """The main job: a few minutes per stage on 2 CPU cores."""
        return cls()

    @classmethod
    def quick(cls) -> PipelineSettings:
        """The smallest chain that exercises every stage (tests): 6 mm phantoms, one epoch each (two of source
        pretraining, the fewest that give a SWAG variance), two source networks and every method."""
        return cls(spacing=6.0, patch_size=16, num_source_cases=3, num_source_test=1, num_target_pool=5,
                   num_target_test=2, num_train_cases=3, num_val_cases=1, seeds=(0, 1), pretrain_epochs=2, swag_epochs=2,
                   prior_epochs=1, finetune_epochs=1, finetune_val_interval=1, pretrain_val_interval=1, mc_samples=2, batch_size=1,
                   vae_hidden=(4, 8, 16),
                   max_kernels=256, prior_refresh_interval=1, methods=METHODS)


class PipelineStageError(RuntimeError):
    """A stage failed; the message names the command that reproduces it and its log file."""


def _python() -> str:
    return sys.executable


def default_bundles_dir() -> Path:
    """The ``bundles/`` folder of the repository this package runs from.

    Raises:
        FileNotFoundError: the package is not run from a clone of the repository (installed as a wheel); pass
            ``bundles_dir``.
    """
    bundles = Path(__file__).resolve().parents[1] / "bundles"
    if not (bundles / "dwp_finetune" / "configs" / "train.json").is_file():
        raise FileNotFoundError(
            f"no bundles beside the package ({bundles}); pass bundles_dir (--bundles-dir) with the repository's "
            "bundles/ folder."
        )
    return bundles


class StageRunner:
    """Runs the stages of a chain as logged subprocesses: each stage is skipped when its outputs exist, a failing
    stage raises :class:`PipelineStageError` with the command that reproduces it, and bundle commands are built
    with absolute config paths and ``--bundle_root`` (so they run from any working directory).

    Args:
        output_dir: ``<output_dir>/logs/<stage>.log`` holds each stage's command and output.
        device: the ``--device`` of every bundle command (``None``: the bundles' default).
        force: redo stages whose outputs exist.
        bundles_dir: the ``bundles/`` folder whose configs run (and whose ``models/`` receive the hand-offs).
        preload: run ``python -m`` commands of this interpreter in children of a fork server that imported torch
            and MONAI once (:mod:`monai_dwp.utils.preloaded`), which saves each stage the 6–15 s of those imports
            on a 2-core machine; other commands, and every command when ``False``, run as subprocesses.
            ``None``: where the platform has a fork server (Linux, macOS) and the children need not import the
            main module again (:func:`~monai_dwp.utils.preloaded.main_allows_preload`: ``python -m monai_dwp``,
            the REPL); a script passes ``True`` once its entry point is under ``if __name__ == "__main__":``.
    """

    def __init__(self, output_dir: Path, device: str | None, force: bool, bundles_dir: Path,
                 preload: bool | None = None) -> None:
        self.output_dir = output_dir
        self.bundles_dir = bundles_dir
        self.device = device
        self.force = force
        self.preload = can_preload() and (main_allows_preload() if preload is None else bool(preload))
        if self.preload:
            start_preloading()  # it imports torch and MONAI while the first stage is prepared
        self.log_dir = output_dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.running: set[BaseProcess | subprocess.Popen] = set()  # stages started and not yet finished
        self._lock = threading.Lock()

    def run(
        self, name: str, cmd: Sequence[str], outputs: Sequence[Path], bar: object | None = None,
        threads: int | None = None, force: bool = False,
    ) -> bool:
        """Run ``cmd`` unless every path in ``outputs`` exists (and neither ``force`` nor the runner's ``force`` is
        set); returns whether it ran. ``threads`` caps the stage's PyTorch/OpenMP threads (``OMP_NUM_THREADS``).

        ``outputs`` are what only a *finished* stage leaves: for a training stage its last
        ``checkpoint_epoch=<epochs>.pt`` besides ``model.pt``, which the best-metric saver writes mid-run, so that a
        training killed part-way is run again rather than taken as done."""
        if not (self.force or force) and outputs and all(Path(p).exists() for p in outputs):
            self.say(bar, f"[skip] {name}: outputs exist")
            return False
        log = self.log_dir / f"{name}.log"
        printable = " ".join(shlex.quote(str(c)) for c in cmd)
        self.say(bar, f"[run ] {name}: {printable}")
        start = time.perf_counter()
        with open(log, "w") as f:
            f.write(printable + "\n\n")
            f.flush()
            env = dict(os.environ, PYTHONWARNINGS="ignore")
            if threads is not None:
                env["OMP_NUM_THREADS"] = str(threads)
            module = module_command(cmd) if self.preload else None
            if module is None:
                proc = subprocess.Popen([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, env=env,
                                        cwd=self.bundles_dir.parent)
                returncode = self._wait(proc)
        if module is not None:  # the same command in a child of the fork server that imported torch and MONAI
            returncode = self._wait(start_module(*module, log, env, self.bundles_dir.parent))
        if returncode != 0:
            tail = log.read_text().splitlines()[-15:]
            raise PipelineStageError(
                f"stage {name!r} failed (exit {returncode}); reproduce it with:\n  {printable}\n"
                f"full log: {log}\nlast lines:\n" + "\n".join("  " + t for t in tail)
            )
        missing = [str(p) for p in outputs if not Path(p).exists()]
        if missing:
            raise PipelineStageError(f"stage {name!r} ran but did not write {missing}; see {log}")
        self.say(bar, f"[done] {name} in {time.perf_counter() - start:.0f} s")
        return True

    def _wait(self, process: BaseProcess | subprocess.Popen) -> int:
        """Wait for a started stage, listed in :attr:`running` meanwhile, and return its exit status; an exception
        while waiting (``KeyboardInterrupt``) stops the stage before it propagates, as :func:`subprocess.run` does."""
        with self._lock:
            self.running.add(process)
        try:
            return wait_process(process)
        except BaseException:
            stop_process(process)
            raise
        finally:
            with self._lock:
                self.running.discard(process)

    def stop(self) -> None:
        """Stop every running stage (``SIGTERM``, ``SIGKILL`` after a grace period); each raises
        :class:`PipelineStageError` in its own chain. Its outputs stay incomplete, so a later run redoes it."""
        with self._lock:
            running = list(self.running)
        for process in running:
            stop_process(process)

    def run_parallel(self, stages: Sequence[Stage], bar: object | None = None) -> None:
        """Run independent stages ``(name, cmd, outputs)`` all at the same time (:meth:`run_chains` of one stage
        each)."""
        self.run_chains([[stage] for stage in stages], bar)

    def run_chains(
        self,
        chains: Sequence[Sequence[Stage]],
        bar: object | None = None,
        workers: int | None = None,
        on_done: Callable[[int, list[float]], None] | None = None,
    ) -> None:
        """Run chains of stages side by side: the stages of a chain in order (once a stage runs, the later stages
        of its chain run too, as their outputs came from the old input), up to ``workers`` chains at a time
        (default: all), each with an equal share of the CPU cores as its thread count. Several PyTorch processes
        that each use every core spin against each other and run slower than one after the other, while one
        thread each keeps every core busy, through the single-threaded parts of a run too.

        Args:
            chains: lists of ``(name, cmd, outputs)`` stages.
            bar: a tqdm bar advanced after every stage.
            workers: chains at a time.
            on_done: called as ``on_done(i, seconds)`` when chain ``i`` has finished, with each stage's wall time
                (0 for a skipped stage); calls may come from several threads at once.

        Raises:
            PipelineStageError: a stage failed; no chain starts after it, the running ones finish.
            KeyboardInterrupt: (or ``SystemExit``) raised while waiting; the running stages are stopped first
                (:meth:`stop`) instead of being waited for.
        """
        from concurrent.futures import ThreadPoolExecutor, as_completed

        if not chains:
            return
        workers = max(1, min(len(chains), workers or len(chains)))
        threads = max(1, (os.cpu_count() or 1) // workers)

        failed = threading.Event()

        def run_chain(index: int) -> None:
            if failed.is_set():  # a stage failed: start nothing new
                return
            seconds = []
            upstream_ran = False  # a stage that ran makes the later stages of its chain stale
            for name, cmd, outputs in chains[index]:
                start = time.perf_counter()
                try:
                    ran = self.run(name, cmd, outputs, bar, threads, force=upstream_ran)
                    upstream_ran = upstream_ran or ran
                except BaseException:
                    failed.set()
                    raise
                seconds.append(time.perf_counter() - start if ran else 0.0)
                _advance(bar)
            if on_done is not None:
                on_done(index, seconds)

        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(run_chain, i) for i in range(len(chains))]
            try:
                for future in as_completed(futures):
                    future.result()
            except BaseException as error:
                for future in futures:
                    future.cancel()
                if not isinstance(error, Exception):  # KeyboardInterrupt, SystemExit: stop, do not wait
                    self.stop()
                raise

    @staticmethod
    def say(bar: object | None, text: str) -> None:
        """Print ``text`` above the progress bar ``bar`` (or plainly without one)."""
        if bar is not None and hasattr(bar, "write"):
            bar.write(text)  # type: ignore[attr-defined]
        else:
            print(text, flush=True)

    def bundle(self, bundle: str, configs: Sequence[str], **overrides: object) -> list[str]:
        root = self.bundles_dir / bundle
        files = [str(root / "configs" / f"{c}.json") for c in configs]
        config = files[0] if len(files) == 1 else "[" + ",".join(f"'{f}'" for f in files) + "]"
        cmd = [_python(), "-m", "monai.bundle", "run", "--config_file", config, "--bundle_root", str(root)]
        if self.device:
            overrides.setdefault("device", self.device)
        for key, value in overrides.items():
            if value is not None:
                cmd += [f"--{key}", _cli(value)]
        return cmd


def stop_stages_on_sigterm() -> None:
    """Make ``SIGTERM`` raise ``SystemExit(143)`` in the main thread, as ``SIGINT`` raises ``KeyboardInterrupt``.

    For the entry points that run a :class:`StageRunner` (``python -m monai_dwp``, the benchmarks): a plain
    ``kill`` of the parent then stops its running stages (:meth:`StageRunner.run_chains` stops them on
    ``SystemExit``) instead of leaving them running without it. Call it from the main thread.
    """
    import signal

    def _exit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


def _cli(value: object) -> str:
    if isinstance(value, (list, tuple)):  # fire reads [1,2] as numbers and ['a','b'] as strings
        return "[" + ",".join(repr(str(v)) if isinstance(v, (str, os.PathLike)) else _cli(v) for v in value) + "]"
    if isinstance(value, bool):
        return "True" if value else "False"  # fire reads True/False as booleans, "false" as a (truthy) string
    return str(value)


def run_pipeline(
    output_dir: str | os.PathLike = "outputs/pipeline",
    quick: bool = False,
    force: bool = False,
    device: str | None = None,
    methods: Sequence[str] | None = None,
    settings: PipelineSettings | None = None,
    bundles_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
) -> Path:
    """Run the chain and write ``<output_dir>/report.md``; returns its path.

    Args:
        output_dir: where the logs, the baselines' runs and the report go.
        quick: tiny settings (:meth:`PipelineSettings.quick`), for tests.
        force: redo stages whose outputs exist.
        device: ``"cpu"`` or ``"cuda"``; default CUDA when available.
        methods: the fine-tuning methods (default the settings' ``methods``: the paper's six,
            :data:`monai_dwp.transfer.PAPER_METHODS`; ``["all"]`` for every one of :data:`~monai_dwp.transfer.METHODS`).
        settings: explicit sizes (overrides ``quick``).
        bundles_dir: the ``bundles/`` folder whose ``models/`` receive the hand-offs (default: the repository's,
            :func:`default_bundles_dir`).
        data_dir: where the phantoms go (default: ``data/`` beside ``bundles_dir``, the bundles' default
            ``dataset_dir``).

    Raises:
        PipelineStageError: a stage failed; the message holds the command that reproduces it.
    """
    from tqdm import tqdm

    from monai_dwp.bundle_utils import run_name
    from monai_dwp.report import write_report

    s = settings or (PipelineSettings.quick() if quick else PipelineSettings.default())
    methods = _resolve_methods(methods, s.methods)
    out = Path(output_dir).resolve()
    bundles = Path(bundles_dir).resolve() if bundles_dir is not None else default_bundles_dir()
    data = Path(data_dir).resolve() if data_dir is not None else bundles.parent / "data"
    runner = StageRunner(out, device, force, bundles)
    models = {name: bundles / name / "models" for name in ("dwp_pretrain", "dwp_prior", "dwp_finetune")}
    patch = [s.patch_size] * 3
    spacing = [s.spacing] * 3
    common = {"spacing": spacing, "patch_size": patch, "batch_size": s.batch_size, "num_samples": s.num_samples}
    stages = 2 + len(s.seeds) + 1 + 2 * len(methods) + 1
    bar = tqdm(total=stages, desc="pipeline", unit="stage")
    started = time.perf_counter()

    handoffs = make_handoffs(runner, s, data, bar, swag="swag_prior" in methods)
    prior_ckpt = handoffs["prior_ckpt"]
    # 4.-5. fine-tune every method, then Monte Carlo inference + evaluation on the held-out target cases
    finetune = {"dataset_dir": data / "tumour", "num_train_cases": s.num_train_cases,
                "num_val_cases": s.num_val_cases, "source_ckpt": handoffs["source_ckpt"],
                "prior_ckpt": prior_ckpt, "swag_ckpt": handoffs["swag_ckpt"], "max_kernels": s.max_kernels,
                "prior_refresh_interval": s.prior_refresh_interval,
                "prior_control_variate": s.prior_control_variate, **common}
    ckpt_dirs: dict[str, Path] = {}
    chains = []
    for method in methods:
        # the bundle's own method goes to its models/ (served in place); the baselines to runs of their own
        ckpt_dir = models["dwp_finetune"] if method == "dwp" else out / "runs" / run_name(method, s.num_train_cases, 0)
        ckpt_dirs[method] = ckpt_dir
        train = runner.bundle("dwp_finetune", ["train"], method=method, epochs=s.finetune_epochs,
                              val_interval=s.finetune_val_interval, ckpt_dir=ckpt_dir, **finetune)
        evaluate = runner.bundle("dwp_finetune", ["train", "evaluate"], method=method, mc_samples=s.mc_samples,
                                 ckpt_dir=ckpt_dir, **finetune)
        done = [ckpt_dir / "model.pt", ckpt_dir / f"checkpoint_epoch={s.finetune_epochs}.pt"]  # a finished run
        chains.append([(f"finetune_{method}", train, done),
                       (f"evaluate_{method}", evaluate, [ckpt_dir / "eval" / "metrics.csv"])])
    runner.run_chains(chains, bar, workers=s.workers)
    # 6. report
    report = write_report(out, ckpt_dirs, s.num_train_cases, elapsed=time.perf_counter() - started)
    bar.update()
    bar.close()
    print(f"report: {report}")
    return report


def _resolve_methods(methods: Sequence[str] | None, default: Sequence[str]) -> list[str]:
    """``methods`` (``default`` when empty; ``["all"]``: every one of :data:`~monai_dwp.transfer.METHODS`), checked."""
    chosen = list(methods or default)
    if chosen == ["all"]:
        return list(METHODS)
    unknown = [m for m in chosen if m not in METHODS]
    if unknown:
        raise ValueError(f"methods {unknown} are not fine-tuning methods; choose from {METHODS}, or pass 'all'.")
    return chosen


def make_handoffs(runner: StageRunner, s: PipelineSettings, data: Path, bar: object | None = None,
                  swag: bool = True, source_dir: Path | None = None, prior_dir: Path | None = None,
                  tag: str = "") -> dict[str, Path]:
    """Stages 1–3 of the chain: the source (MS) and target (tumour) phantoms in ``data``, the source networks
    (``dwp_pretrain``, seeds ``s.seeds`` side by side, with the SWAG moments of their last ``s.swag_epochs``
    epochs) and the kernel prior (``dwp_prior``), into the bundles' ``models/`` of ``runner``. Stages whose outputs
    exist are skipped, so the hand-offs are made once and reused; the source phantoms are not made when every source
    network they would train exists (unless the runner forces every stage).

    Args:
        swag: whether ``swag.pt`` is a needed output of the source stage (method ``swag_prior``). Source nets that
            exist without it are not trained again behind the user's back: that stops with the ways out.
        source_dir: where the source nets go, ``<source_dir>/seed<S>/`` (default: ``dwp_pretrain``'s ``models/``),
            and ``prior_dir`` the prior fitted to them (default: ``dwp_prior``'s ``models/``): a variant of the
            hand-offs (other source settings in ``s``) goes into folders of its own, so the bundles' stay the
            ones the methods use.
        tag: appended to the names (and log files) of the source and prior stages of such a variant.

    Returns:
        ``{"source_data", "target_data", "source_ckpt" (the first seed's net), "swag_ckpt" (its SWAG moments),
        "prior_ckpt"}`` paths.
    """
    stages = source_stages(runner, s, data, swag=swag, source_dir=source_dir, tag=tag)
    sources = {seed: Path(stage[2][0]).parent for seed, stage in zip(s.seeds, stages)}
    trained = not runner.force and all(p.is_file() for _, _, outputs in stages for p in outputs)
    # 1. data, side by side (the source phantoms only for source networks still to train)
    data_stages = []
    for disease, num, test in (("ms", s.num_source_cases, s.num_source_test),
                               ("tumour", s.num_target_pool, s.num_target_test)):
        if disease == "ms" and trained:
            runner.say(bar, "[skip] data_ms: the source networks it would train exist")
            _advance(bar)
        else:
            cmd = [_python(), "-m", "monai_dwp", "make-data", "--disease", disease, "--num-cases", str(num),
                   "--num-test", str(test), "--spacing", str(s.spacing), "--output-dir", str(data / disease)]
            data_stages.append((f"data_{disease}", cmd, [data / disease / "dataset.json"]))
    runner.run_parallel(data_stages, bar)
    # 2. source networks, trained side by side (with their SWAG moments, written whether needed or not)
    runner.run_parallel(stages, bar)
    # 3. prior
    prior_ckpt = fit_prior(runner, s, bar, output_dir=prior_dir, name=f"prior_{tag}" if tag else "prior",
                           source_dir=source_dir)
    _advance(bar)
    return {"source_data": data / "ms", "target_data": data / "tumour",
            "source_ckpt": sources[s.seeds[0]] / "model.pt", "swag_ckpt": sources[s.seeds[0]] / "swag.pt",
            "prior_ckpt": prior_ckpt}


def source_stages(runner: StageRunner, s: PipelineSettings, data: Path, swag: bool = True,
                  source_dir: Path | None = None, tag: str = "") -> list[Stage]:
    """The stages that train the source networks of seeds ``s.seeds`` (``dwp_pretrain`` on ``<data>/ms``, SWAG
    moments over the last ``s.swag_epochs`` epochs), as ``(name, command, outputs)`` for
    :meth:`StageRunner.run_parallel`: stage 2 of :func:`make_handoffs`, and a source net of another seed beside
    those (a benchmark's check of how much a result owes to one source net).

    Args:
        swag: whether ``swag.pt`` is a needed output (method ``swag_prior``).
        source_dir: where the nets go, ``<source_dir>/seed<S>/`` (default: ``dwp_pretrain``'s ``models/``).
        tag: appended to the stage names (and log files).

    Raises:
        ValueError: ``s.swag_epochs`` outside ``[2, s.pretrain_epochs]``, or ``swag`` is needed and a finished net
            lacks its ``swag.pt`` (unless the runner forces every stage).
    """
    source_root = source_dir if source_dir is not None else runner.bundles_dir / "dwp_pretrain" / "models"
    suffix = f"_{tag}" if tag else ""
    common = {"spacing": [s.spacing] * 3, "patch_size": [s.patch_size] * 3, "batch_size": s.batch_size,
              "num_samples": s.num_samples}
    if not 2 <= s.swag_epochs <= s.pretrain_epochs:
        raise ValueError(f"swag_epochs must lie in [2, pretrain_epochs={s.pretrain_epochs}] (a variance needs two "
                         f"epochs), got {s.swag_epochs}.")
    sources = {seed: source_root / f"seed{seed}" for seed in s.seeds}
    done = [f"checkpoint_epoch={s.pretrain_epochs}.pt", "model.pt"]
    lacking = [str(d) for d in sources.values() if all((d / f).is_file() for f in done) and not (d / "swag.pt").is_file()]
    if swag and lacking and not runner.force:
        raise ValueError(
            f"method swag_prior needs the SWAG moments (swag.pt) of the source networks, but {lacking} were trained "
            "without them. Leave swag_prior out (--methods), retrain the source nets with --force (and every later "
            "stage with them), or continue a source run with `python -m monai.bundle run --config_file "
            "bundles/dwp_pretrain/configs/train.json --resume true --epochs <more> --swag_start_epoch <its next epoch> "
            "--ckpt_dir <a copy of its folder>` and copy its swag.pt beside model.pt."
        )
    return [
        (f"pretrain_seed{seed}{suffix}",
         runner.bundle("dwp_pretrain", ["train"], dataset_dir=data / "ms", seed=seed, epochs=s.pretrain_epochs,
                       val_interval=s.pretrain_val_interval, num_val_cases=s.num_source_test,
                       swag_start_epoch=s.pretrain_epochs - s.swag_epochs + 1,
                       **({"ckpt_dir": sources[seed]} if source_dir is not None else {}), **common),
         [sources[seed] / name for name in (*done, *(("swag.pt",) if swag else ()))])
        for seed in s.seeds
    ]


def is_stale(output: Path, inputs: Sequence[Path]) -> bool:
    """Whether ``output`` exists but is older than one of the existing ``inputs`` it was made from."""
    if not output.is_file():
        return False
    made = output.stat().st_mtime
    return any(p.is_file() and p.stat().st_mtime > made for p in inputs)


def fit_prior(runner: StageRunner, s: PipelineSettings, bar: object | None = None, output_dir: Path | None = None,
              name: str = "prior", source_dir: Path | None = None, **overrides: object) -> Path:
    """Stage 3 of the chain: the kernel prior (``dwp_prior``) fitted to the source networks of seeds ``s.seeds`` in
    the bundles' ``models/`` of ``runner``, skipped when its ``dwp_prior.pt`` exists and is newer than every source
    network (a prior older than a net it is fitted to is stale: the nets were trained again).

    Args:
        output_dir: where the prior goes (default: ``dwp_prior``'s ``models/``); a variant fitted with
            ``overrides`` goes into a folder of its own, so the bundles' prior stays the one the methods use.
        name: the stage's name (and log file).
        source_dir: the folder of the source nets, ``<source_dir>/seed<S>/model.pt`` (default: ``dwp_pretrain``'s
            ``models/``).
        overrides: of ``dwp_prior``'s ``train.json`` (e.g. ``latent_size=16``), for an ablation's prior.

    Returns:
        the path of the fitted ``dwp_prior.pt``.
    """
    source_dir = Path(source_dir) if source_dir is not None else runner.bundles_dir / "dwp_pretrain" / "models"
    sources = [source_dir / f"seed{seed}" / "model.pt" for seed in s.seeds]
    out = Path(output_dir) if output_dir is not None else runner.bundles_dir / "dwp_prior" / "models"
    prior_ckpt = out / "dwp_prior.pt"
    where = {"output_dir": out} if output_dir is not None else {}
    cmd = runner.bundle("dwp_prior", ["train"], source_ckpts=sources, epochs=s.prior_epochs,
                        hidden_channels=list(s.vae_hidden), **where, **overrides)
    runner.run(name, cmd, [prior_ckpt], bar, force=is_stale(prior_ckpt, sources))
    return prior_ckpt


def _advance(bar: object | None) -> None:
    if bar is not None and hasattr(bar, "update"):
        bar.update()  # type: ignore[attr-defined]
