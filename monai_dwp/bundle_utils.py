"""Small helpers that bundle configs call: hand-off checks between the stages and resuming from checkpoints."""

from __future__ import annotations

import glob
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable

from monai_dwp.utils.validation import (
    BundleInputError,
    InputFileError,
    InputValueError,
    as_bool,
    check_float,
    check_int,
    check_optional_float,
)

__all__ = [
    "BundleInputError",
    "InvalidKeyError",
    "MissingHandoffError",
    "KEY_RULES",
    "check_keys",
    "checked",
    "per_rank_batch_size",
    "is_secondary_rank",
    "end_distributed",
    "PRODUCERS",
    "PREREQUISITES",
    "bundle_path",
    "require_handoff",
    "require_handoffs",
    "latest_checkpoint",
    "resume_handlers",
    "save_prior",
    "run_name",
]

_PRETRAIN = "python -m monai.bundle run --config_file bundles/dwp_pretrain/configs/train.json"
PRODUCERS: dict[str, str] = {
    "source_ckpts": f"{_PRETRAIN} --seed 0",
    "source_ckpt": f"{_PRETRAIN} --seed 0",
    "prior_ckpt": "python -m monai.bundle run --config_file bundles/dwp_prior/configs/train.json",
    "swag_ckpt": f"{_PRETRAIN} --seed 0 --swag_start_epoch 61",
    "model": "python -m monai.bundle run --config_file bundles/dwp_finetune/configs/train.json",
}
"""The bundle command that writes each hand-off key's file (run from the repository root)."""

PREREQUISITES: dict[str, str] = {
    "prior_ckpt": f"which needs the source net of `{_PRETRAIN} --seed 0` first (a prior over several nets: also "
                  "`--seed 1`, ...)",
}
"""What the producing command of a hand-off needs before it can run."""

_WHOLE_CHAIN = "`make demo` makes every hand-off of the default layout at once"


class InvalidKeyError(InputValueError):
    """A top-level bundle key has a value its rule in :data:`KEY_RULES` rejects."""


class MissingHandoffError(InputFileError):
    """A file one stage hands to the next (source checkpoint, prior, model) does not exist."""


def _bundle_excepthook(kind: type[BaseException], error: BaseException, traceback: Any) -> None:
    """Print an uncaught :class:`BundleInputError` as one line, also when MONAI's config parser wrapped it
    ("Failed to evaluate ConfigExpression ..."); hand anything else to the previous hook."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, BundleInputError):
            print(f"monai_dwp: {cause}", file=sys.stderr)
            return
        cause = cause.__cause__ or cause.__context__
    _previous_excepthook(kind, error, traceback)


_previous_excepthook = sys.excepthook
if getattr(sys.excepthook, "__name__", "") != _bundle_excepthook.__name__:
    sys.excepthook = _bundle_excepthook


def _positive_int(value: Any, name: str) -> int:
    return check_int(value, name, minimum=1)


def _optional_positive_int(value: Any, name: str) -> int | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
        return None
    return check_int(value, name, minimum=1)


def _positive_float(value: Any, name: str) -> float:
    return check_float(value, name, minimum=0.0, include_minimum=False)


def _nonnegative_float(value: Any, name: str) -> float:
    return check_float(value, name, minimum=0.0)


def _lr_schedule(value: Any, name: str) -> str:
    from monai_dwp.transfer import LR_SCHEDULES  # transfer imports this module

    if value not in LR_SCHEDULES:
        raise ValueError(f"{name} must be one of {', '.join(LR_SCHEDULES)}, got {value!r}.")
    return str(value)


def _compute_dtype(value: Any, name: str) -> str:
    if value not in ("auto", "float32", "bfloat16"):
        raise ValueError(f"{name} must be 'auto', 'float32' or 'bfloat16', got {value!r}; 'auto' uses bfloat16 where "
                         "the device multiplies it in hardware.")
    return str(value)


KEY_RULES: dict[str, Callable[[Any, str], Any]] = {
    # booleans: fire passes `--amp false` as the string 'false'
    "amp": as_bool,
    "resume": as_bool,
    "train_encoder": as_bool,
    "prior_control_variate": as_bool,
    "dwp_init": as_bool,
    "dwp_init_noise": as_bool,
    "source_init": as_bool,
    # counts
    "epochs": _positive_int,
    "val_interval": _positive_int,
    "batch_size": _positive_int,
    "num_samples": _positive_int,
    "in_channels": _positive_int,
    "out_channels": lambda v, n: check_int(v, n, minimum=2),
    "sw_batch_size": _positive_int,
    "num_val_cases": _positive_int,
    "num_train_cases": _optional_positive_int,
    "swag_start_epoch": _optional_positive_int,
    "grad_ratio_interval": _positive_int,
    "max_kernels": _optional_positive_int,
    "prior_refresh_interval": _positive_int,
    "prior_samples": _positive_int,
    "mc_samples": _positive_int,
    "num_kernels": _positive_int,
    "num_groups": _positive_int,
    "latent_size": _positive_int,
    "seed": lambda v, n: check_int(v, n, minimum=0),
    "split_seed": lambda v, n: check_int(v, n, minimum=0),
    "num_workers": lambda v, n: check_int(v, n, minimum=0),
    # real numbers
    "learning_rate": _positive_float,
    "log_scale_lr": lambda v, n: check_optional_float(v, n, minimum=0.0, include_minimum=False),
    "cache_rate": lambda v, n: check_float(v, n, minimum=0.0, maximum=1.0),
    "sw_overlap": lambda v, n: check_float(v, n, minimum=0.0, maximum=1.0, include_maximum=False),
    "init_scale_ratio": _positive_float,
    "kl_temperature": _nonnegative_float,
    "aux_weight": _nonnegative_float,
    "prior_scale": _positive_float,
    "swag_scale_factor": _positive_float,
    "min_norm": _nonnegative_float,
    # names
    "lr_schedule": _lr_schedule,
    "prior_compute_dtype": _compute_dtype,
    "compute_dtype": _compute_dtype,
    "val_fraction": lambda v, n: check_float(v, n, minimum=0.0, maximum=1.0, include_minimum=False,
                                             include_maximum=False),
    "lr_final_fraction": lambda v, n: check_float(v, n, minimum=0.0, maximum=1.0,
                                                  hint="the cosine's last rate over the first"),
}
"""How each top-level bundle key is checked (and, for booleans, converted) at start-up by :func:`check_keys`."""


def check_keys(**values: Any) -> dict[str, Any]:
    """Check the top-level keys of a bundle before anything is built; the first ``initialize`` step of every config.

    ``python -m monai.bundle run`` hands command-line overrides over as ``fire`` parses them: numbers become
    numbers, but ``--amp false`` arrives as the *string* ``'false'`` (truthy) and ``--epochs five`` as a string
    deep inside a trainer. Each key is checked by its rule in :data:`KEY_RULES`; the configs read booleans through
    :func:`as_bool`, which accepts ``true/false/True/False/1/0``.

    Args:
        values: ``key=value`` for every scalar top-level key of the config.

    Returns:
        The checked (converted) values.

    Raises:
        InvalidKeyError: (a ``ValueError``) a value breaks its key's rule: ``"--epochs must be an integer, got 'five' (str)."``
        KeyError: a key without a rule (a config error, not a user error).
    """
    checked = {}
    for key, value in values.items():
        if key not in KEY_RULES:
            raise KeyError(f"check_keys: no rule for the bundle key {key!r}; add one to KEY_RULES.")
        try:
            checked[key] = KEY_RULES[key](value, f"--{key}")
        except (TypeError, ValueError) as error:
            raise InvalidKeyError(f"{error} Fix the override or the config value of {key!r}.") from None
    return checked


def checked(key: str, value: Any) -> Any:
    """One top-level key checked and converted by its rule in :data:`KEY_RULES`; how the configs read booleans,
    e.g. ``"amp": "$monai_dwp.bundle_utils.checked('amp', @amp)"`` (``'false'`` → ``False``)."""
    return check_keys(**{key: value})[key]


def is_secondary_rank() -> bool:
    """Whether this process is a ``torch.distributed`` rank other than 0: the ``_disabled_`` flag of the handlers
    that write files (TensorBoard), so that only rank 0 writes (a disabled handler is not even built: MONAI's
    ``TensorBoardStatsHandler`` opens its event file when it is built)."""
    import torch.distributed as dist

    return bool(dist.is_available() and dist.is_initialized() and dist.get_rank() > 0)


def end_distributed() -> None:
    """The ``finalize`` of a ``multi_gpu_train.json``: wait for every rank, destroy the default process group, then
    wait for this process's gloo workers to let go of their last work (:func:`_wait_for_gloo_workers`).

    Without the barrier a rank that finishes first (rank 0 still writes its checkpoints and logs) tears its
    connections down while the others may still be talking to it; without the last wait a gloo worker can release
    the barrier's work while the interpreter is finalising. Either way a gloo rank can abort at exit ("terminate
    called without an active exception") after all its work is done. Nothing happens where ``torch.distributed``
    is not initialised, so a single-process run may call it too.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        _wait_for_gloo_workers()


def _wait_for_gloo_workers(timeout: float = 10.0, interval: float = 0.002) -> None:
    """Wait (at most ``timeout`` seconds) until no gloo worker thread of this process is runnable.

    ``dist.barrier()`` returns as soon as gloo marks its work complete, but the worker thread that ran it still
    holds the work, and the work holds a copy of the caller's ``at::ThreadLocalState`` with Python objects in it.
    If the worker is descheduled until the interpreter is finalising (a loaded machine, ranks on shared cores),
    its late release takes the GIL, Python ends the thread, and the process aborts ("terminate called without an
    active exception"; PyTorch 2.13, in ``ProcessGroupGloo::AsyncWork::~AsyncWork``). A worker is done with its
    work once it sleeps on its queue again. Linux only (``/proc``); elsewhere nothing is waited for.
    """
    if not Path("/proc/self/task").is_dir():
        return
    deadline, quiet = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        quiet = 0 if "R" in _gloo_workers().values() else quiet + 1
        if quiet >= 2:  # two looks in a row, so a worker between two states is not taken for a sleeping one
            return
        time.sleep(interval)


def _gloo_workers() -> dict[int, str]:
    """``{thread id: scheduler state}`` (``"R"`` runnable, ``"S"`` sleeping, ...) of every gloo worker thread of this
    process, read from ``/proc/self/task`` (Linux)."""
    workers = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            if (task / "comm").read_text().strip() == "pt_gloo_runloop":
                workers[int(task.name)] = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # the thread ended meanwhile
            continue
    return workers


def per_rank_batch_size(batch_size: Any) -> int:
    """The batch each process loads under ``torch.distributed`` so that all of them together see ``batch_size``
    cases per step, as one process does (the global batch, and so the gradient's scale, does not change with the
    number of processes).

    Raises:
        InvalidKeyError: ``batch_size`` is not divisible by the number of processes.
    """
    import torch.distributed as dist

    batch_size = checked("batch_size", batch_size)
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if batch_size % world:
        raise InvalidKeyError(
            f"--batch_size {batch_size} is the global batch of all {world} processes and must be divisible by "
            f"{world}; pass --batch_size {max(world, batch_size // world * world)} (or run {batch_size} processes)."
        )
    return batch_size // world


def bundle_path(bundle_root: str | os.PathLike, relative: str) -> str:
    """A path given relative to a bundle folder: the configs' defaults for data and hand-offs.

    ``bundle_path("bundles/dwp_finetune", "../dwp_prior/models/dwp_prior.pt")`` is
    ``"bundles/dwp_prior/models/dwp_prior.pt"``. Symbolic links in ``bundle_root`` are resolved first, so a bundle
    linked into a MONAI Label app (``<app>/model/dwp_finetune`` → the bundle) still finds its sibling bundles and the
    data beside them; the result is relative to the working directory when it lies inside it (shorter messages),
    absolute otherwise.

    Args:
        bundle_root: the bundle folder (the configs' ``bundle_root``).
        relative: the path from that folder, e.g. ``"../../data/tumour"``.
    """
    path = Path(os.path.normpath(Path(os.path.realpath(bundle_root)) / relative))
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def require_handoff(path: str | os.PathLike, key: str, command: str | None = None) -> str:
    """Return ``path`` if it is an existing file; otherwise raise an error naming the key and the producing command.

    Args:
        path: the hand-off file, e.g. the prior checkpoint.
        key: the bundle key that holds it (``"prior_ckpt"``, ``"source_ckpt"``, ...).
        command: the command that produces it; default from :data:`PRODUCERS`.

    Raises:
        MissingHandoffError: (a ``FileNotFoundError``) ``"prior_ckpt file 'runs/...' does not exist; make it with `python -m monai.bundle ...`"``.
    """
    if not Path(path).is_file():
        command = command or PRODUCERS.get(key, "the bundle that produces it")
        needs = f", {PREREQUISITES[key]}" if key in PREREQUISITES else ""
        raise MissingHandoffError(
            f"{key} file {str(path)!r} does not exist; make it first with `{command}`{needs} "
            f"(or pass another file with --{key} PATH; {_WHOLE_CHAIN})."
        )
    return str(path)


def require_handoffs(pattern: str | Sequence[str], key: str = "source_ckpts", command: str | None = None) -> list[str]:
    """Expand a glob pattern (or a list of paths/patterns) and require at least one existing file.

    Returns:
        The sorted list of matching files.
    """
    patterns = [pattern] if isinstance(pattern, (str, os.PathLike)) else list(pattern)
    files = sorted({f for p in patterns for f in glob.glob(str(p)) if Path(f).is_file()})
    if not files:
        command = command or PRODUCERS.get(key, "the bundle that produces them")
        raise MissingHandoffError(
            f"{key} {patterns!r} matches no file; make them first with `{command}` (several seeds: --seed 0, "
            f"--seed 1, ...), or pass --{key} with the checkpoint paths ({_WHOLE_CHAIN})."
        )
    return files


def latest_checkpoint(ckpt_dir: str | os.PathLike, prefix: str = "checkpoint") -> str | None:
    """The checkpoint of the highest epoch in ``ckpt_dir`` written by MONAI's ``CheckpointSaver``
    (``{prefix}_epoch=N.pt``), or ``None`` when there is none."""
    best: tuple[int, str] | None = None
    for f in glob.glob(os.path.join(str(ckpt_dir), f"{prefix}_epoch=*.pt")):
        match = re.search(r"_epoch=(\d+)\.pt$", f)
        if match and (best is None or int(match.group(1)) > best[0]):
            best = (int(match.group(1)), f)
    return best[1] if best else None


def resume_handlers(
    ckpt_dir: str | os.PathLike,
    load_dict: Mapping[str, Any],
    resume: bool | str,
    map_location: Any = None,
    saver: Any = None,
) -> list:
    """``[CheckpointLoader]`` for the latest checkpoint of ``ckpt_dir`` when ``resume``, else ``[]``.

    The checkpoint must hold the trainer's state (``load_dict`` with a ``"trainer"`` entry), so training
    continues at the epoch after the last completed one; the bundles load everything of
    :func:`monai_dwp.handlers.training_state` (random generators and best-metric bookkeeping included).

    Args:
        ckpt_dir: the run folder.
        load_dict: the objects to restore, as saved.
        resume: whether to resume (``true/false`` words accepted, see :func:`checked`).
        map_location: where to load tensors.
        saver: the interval ``CheckpointSaver`` of the run: it takes over the ``checkpoint_epoch=N.pt`` files
            already in ``ckpt_dir``, so it keeps deleting the oldest as before the interruption.

    Raises:
        MissingHandoffError: ``resume`` is true but ``ckpt_dir`` has no checkpoint.
        ValueError: the checkpoint was written with other settings (see :func:`_loadable`).
    """
    if not as_bool(resume, "--resume"):
        return []
    from ignite.handlers import Checkpoint
    from monai.handlers import CheckpointLoader

    path = latest_checkpoint(ckpt_dir)
    if path is None:
        raise MissingHandoffError(
            f"--resume true but {str(ckpt_dir)!r} holds no checkpoint_epoch=N.pt to resume from; "
            "run without --resume, or point --ckpt_dir at the interrupted run."
        )
    load_dict = _loadable(path, dict(load_dict))
    interval = getattr(saver, "_interval_checkpoint", None)
    if interval is not None:
        found = []
        for f in glob.glob(os.path.join(str(ckpt_dir), "checkpoint_epoch=*.pt")):
            match = re.search(r"checkpoint_epoch=(\d+)\.pt$", f)
            if match:
                found.append(Checkpoint.Item(int(match.group(1)), os.path.basename(f)))
        interval.load_state_dict({"_saved": sorted(found, key=lambda item: item.priority)})
    return [CheckpointLoader(load_path=path, load_dict=load_dict, map_location=map_location)]


def _loadable(path: str, load_dict: dict[str, Any]) -> dict[str, Any]:
    """``load_dict`` without the objects a resumed run may start afresh, after checking the checkpoint holds the rest.

    An object with a ``start_epoch`` after the checkpoint's epoch (a :class:`~monai_dwp.handlers.SWAGHandler` whose
    window has not begun) has nothing to restore, so a run may switch it on at resume. Any other object missing from
    the checkpoint means the run is resumed with other settings than it was started with (a learning-rate schedule
    switched on, another method), which would mix two runs: that stops with the key and the fix, not Ignite's error;
    so does a checkpoint entry this run has no object for (a schedule switched off) and a cosine schedule (``T_max``)
    over another number of iterations than the checkpoint's. A single object may be saved bare, as Ignite does.

    Raises:
        ValueError: the checkpoint and the run's objects do not match.
    """
    import torch

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"--resume: {path!r} is not a training checkpoint (a dict of states); resume from the "
                         "checkpoint_epoch=N.pt files the bundle writes.")
    if len(load_dict) == 1 and next(iter(load_dict)) not in checkpoint:
        return load_dict  # Ignite saves a single object as its bare state dict
    extra = sorted(set(checkpoint) - set(load_dict))
    if extra:
        raise ValueError(
            f"--resume: {path!r} holds the state of {extra}, which this run does not have, so the interrupted run was "
            "made with other settings (e.g. a learning-rate schedule); resume with the settings it was started "
            "with, or start a new run in another --ckpt_dir."
        )
    trainer = checkpoint.get("trainer", {})
    epoch = int(trainer.get("epoch") or int(trainer.get("iteration", 0)) // max(int(trainer.get("epoch_length") or 1), 1))
    kept = {}
    for name, obj in load_dict.items():
        if name in checkpoint:
            saved = checkpoint[name].get("T_max") if isinstance(checkpoint[name], Mapping) else None
            if saved is not None and getattr(obj, "T_max", saved) != saved:  # a cosine schedule over another length
                raise ValueError(
                    f"--resume: the learning-rate schedule of {path!r} anneals over {saved} iterations, this run over "
                    f"{obj.T_max}: resume with the --epochs (and data) the run was started with, or start a new run "
                    "in another --ckpt_dir."
                )
            kept[name] = obj
            continue
        start = getattr(obj, "start_epoch", None)
        if isinstance(start, int) and start > epoch:
            continue  # its window begins after the resumed epoch: nothing was collected yet
        raise ValueError(
            f"--resume: {path!r} holds no {name!r} state, so the interrupted run was made without it (checkpoint "
            f"entries: {sorted(checkpoint)}); resume with the settings it was started with, or start a new run "
            "in another --ckpt_dir."
        )
    return kept


def save_prior(
    network: Any,
    kernel_dataset: Any,
    kernel_split: Sequence[Any],
    layer_groups: Mapping[str, int],
    prior_ckpt: str | os.PathLike,
    output_dir: str | os.PathLike,
    best_model: str | os.PathLike,
    source_files: Sequence[str] | None = None,
    min_norm: float | None = None,
    evaluator: Any | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """The end of the ``dwp_prior`` bundle: best VAEs → prior report → prior checkpoint → kernel figure.

    Loads the best :class:`~monai_dwp.networks.nets.KernelVAEGroup` weights from ``best_model``, scores them on the
    held-out kernels against Gaussian baselines (:func:`monai_dwp.metrics.prior_report`: ``prior_report.md``,
    ``.csv``, ``.png`` in ``output_dir``), writes the self-describing :class:`~monai_dwp.losses.DeepWeightPrior`
    checkpoint with the per-layer scales of ``kernel_dataset`` and the report in its ``extra``, and draws real
    kernels next to prior samples (``kernels.png``).

    Args:
        network: the trained :class:`~monai_dwp.networks.nets.KernelVAEGroup` (its best weights are reloaded).
        kernel_dataset: the :class:`~monai_dwp.data.KernelDataset` it was fitted to (scales per group and layer).
        kernel_split: ``(train, held_out)`` subsets of ``kernel_dataset``; the report scores the held-out kernels.
        layer_groups: layer name → VAE group.
        prior_ckpt: where the prior checkpoint goes.
        output_dir: where the report and the kernel figure go.
        best_model: the best VAE weights (the key-metric checkpoint).
        source_files: the source checkpoints, recorded in the prior's ``extra``.
        min_norm: the kernel-norm filter, recorded.
        evaluator: the validation engine; its best ``val_elbo`` and the per-group values are recorded.
        extra: anything else to record.

    Returns:
        The path of the prior checkpoint.
    """
    from monai_dwp.losses.deep_weight_prior import DeepWeightPrior
    from monai_dwp.metrics import prior_report
    from monai_dwp.utils.io import load_checkpoint
    from monai_dwp.visualize import save_kernel_figure

    device = next(network.parameters()).device
    state = load_checkpoint(require_handoff(best_model, "model"), "best VAE checkpoint", "train the prior first",
                            "the model.pt the prior's validation writes", map_location=device)
    network.load_state_dict(state)
    rows = prior_report(network, kernel_split, output_dir, len(network.vaes))
    summary = [
        {k: row[k] for k in ("group", "vae_nll", "iso_gauss_nll", "full_gauss_nll", "latent_kl", "beats_full")}
        for row in rows
    ]
    prior = DeepWeightPrior(
        list(network.vaes), kernel_dataset.scales, layer_groups, layer_scales=kernel_dataset.layer_scales
    )
    record: dict[str, Any] = {"num_kernels": len(kernel_dataset)}
    if source_files is not None:
        record["source_ckpts"] = list(source_files)
    if min_norm is not None:
        record["min_norm"] = min_norm
    if evaluator is not None:
        record["val_elbo"] = evaluator.state.best_metric
        record["val_elbo_per_group"] = {k: v for k, v in evaluator.state.metrics.items() if k.startswith("val_elbo_group")}
    path = prior.save(prior_ckpt, extra={**record, **dict(extra or {}), "prior_report": summary})
    save_kernel_figure(kernel_dataset, list(network.vaes), str(Path(output_dir) / "kernels.png"))
    print("wrote", path, "and", Path(output_dir) / "kernels.png")
    return path


def run_name(method: str | None, num_train_cases: int | None, seed: int) -> str:
    """The name of a run folder: ``<method>_n<N>_seed<S>``, the one rule of the project's run folders.

    A part that is ``None`` is left out: ``run_name("dwp", 5, 0) == "dwp_n5_seed0"`` (a finetune run),
    ``run_name(None, None, 1) == "seed1"`` (a source net of ``dwp_pretrain``), ``run_name("dwp", None, 0) ==
    "dwp_seed0"``.

    Args:
        method: the target method (e.g. ``"dwp"``, ``"gaussian_prior"``), or ``None``; a non-empty name without
            path separators.
        num_train_cases: the number of target training cases ``N`` (>= 1), or ``None``.
        seed: the run's seed (>= 0).

    Raises:
        TypeError: a non-int ``num_train_cases`` or ``seed``, a ``method`` that is not a string.
        ValueError: ``num_train_cases < 1``, ``seed < 0``, an empty ``method`` or one with a path separator.
    """
    parts = []
    if method is not None:
        if not isinstance(method, str):
            raise TypeError(f"method must be a string or None, got {method!r} ({type(method).__name__}).")
        if not method or "/" in method or os.sep in method:
            raise ValueError(f"method must be a non-empty name without path separators, got {method!r}.")
        parts.append(method)
    if num_train_cases is not None:
        parts.append(f"n{check_int(num_train_cases, 'num_train_cases', minimum=1)}")
    parts.append(f"seed{check_int(seed, 'seed', minimum=0)}")
    return "_".join(parts)
