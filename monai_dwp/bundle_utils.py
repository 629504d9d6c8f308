"""Small helpers that bundle configs call: hand-off checks between the stages and resuming from checkpoints."""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "PRODUCERS",
    "require_handoff",
    "require_handoffs",
    "latest_checkpoint",
    "resume_handlers",
    "save_prior",
]

PRODUCERS: dict[str, str] = {
    "source_ckpts": "python -m monai.bundle run --config_file bundles/dwp_pretrain/configs/train.json --seed 0",
    "source_ckpt": "python -m monai.bundle run --config_file bundles/dwp_pretrain/configs/train.json --seed 0",
    "prior_ckpt": "python -m monai.bundle run --config_file bundles/dwp_prior/configs/train.json",
    "model": "python -m monai.bundle run --config_file bundles/dwp_finetune/configs/train.json",
}
"""The bundle command that writes each hand-off key's file."""


def require_handoff(path: str | os.PathLike, key: str, command: str | None = None) -> str:
    """Return ``path`` if it is an existing file; otherwise raise an error naming the key and the producing command.

    Args:
        path: the hand-off file, e.g. the prior checkpoint.
        key: the bundle key that holds it (``"prior_ckpt"``, ``"source_ckpt"``, ...).
        command: the command that produces it; default from :data:`PRODUCERS`.

    Raises:
        FileNotFoundError: ``"prior_ckpt file 'runs/...' does not exist; make it with `python -m monai.bundle ...`"``.
    """
    if not Path(path).is_file():
        command = command or PRODUCERS.get(key, "the bundle that produces it")
        raise FileNotFoundError(
            f"{key} file {str(path)!r} does not exist; make it first with `{command}` "
            f"(or pass another file with --{key} PATH)."
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
        raise FileNotFoundError(
            f"{key} {patterns!r} matches no file; make them first with `{command}` (several seeds: --seed 0, "
            f"--seed 1, ...), or pass --{key} with the checkpoint paths."
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


def resume_handlers(ckpt_dir: str | os.PathLike, load_dict: Mapping[str, Any], resume: bool, map_location: Any = None) -> list:
    """``[CheckpointLoader]`` for the latest checkpoint of ``ckpt_dir`` when ``resume``, else ``[]``.

    The checkpoint must hold the trainer's state (``load_dict`` with a ``"trainer"`` entry), so training
    continues at the epoch after the last completed one.

    Raises:
        FileNotFoundError: ``resume`` is true but ``ckpt_dir`` has no checkpoint.
    """
    if not resume:
        return []
    from monai.handlers import CheckpointLoader

    path = latest_checkpoint(ckpt_dir)
    if path is None:
        raise FileNotFoundError(
            f"--resume true but {str(ckpt_dir)!r} holds no checkpoint_epoch=N.pt to resume from; "
            "run without --resume, or point --ckpt_dir at the interrupted run."
        )
    return [CheckpointLoader(load_path=path, load_dict=dict(load_dict), map_location=map_location)]


def save_prior(
    network: Any,
    kernel_dataset: Any,
    kernel_split: Sequence[Any],
    layer_groups: Mapping[str, int],
    prior_ckpt: str | os.PathLike,
    output_dir: str | os.PathLike,
    best_model: str | os.PathLike,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """The end of the ``dwp_prior`` bundle: best VAEs → prior report → prior checkpoint → kernel figure.

    Loads the best :class:`~monai_dwp.networks.nets.KernelVAEGroup` weights from ``best_model``, scores them on the
    held-out kernels against Gaussian baselines (:func:`monai_dwp.metrics.prior_report`: ``prior_report.md``,
    ``.csv``, ``.png`` in ``output_dir``), writes the self-describing :class:`~monai_dwp.losses.DeepWeightPrior`
    checkpoint with the per-layer scales of ``kernel_dataset`` and the report in its ``extra``, and draws real
    kernels next to prior samples (``kernels.png``).

    Returns:
        The path of the prior checkpoint.
    """
    import torch

    from monai_dwp.losses.deep_weight_prior import DeepWeightPrior
    from monai_dwp.metrics import prior_report
    from monai_dwp.visualize import save_kernel_figure

    device = next(network.parameters()).device
    network.load_state_dict(torch.load(require_handoff(best_model, "model"), map_location=device, weights_only=True))
    rows = prior_report(network, kernel_split, output_dir, len(network.vaes))
    summary = [
        {k: row[k] for k in ("group", "vae_nll", "iso_gauss_nll", "full_gauss_nll", "latent_kl", "beats_full")}
        for row in rows
    ]
    prior = DeepWeightPrior(
        list(network.vaes), kernel_dataset.scales, layer_groups, layer_scales=kernel_dataset.layer_scales
    )
    path = prior.save(prior_ckpt, extra={**dict(extra or {}), "prior_report": summary})
    save_kernel_figure(kernel_dataset, list(network.vaes), str(Path(output_dir) / "kernels.png"))
    print("wrote", path, "and", Path(output_dir) / "kernels.png")
    return path
