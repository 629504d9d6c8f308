r"""Diagonal SWAG moments of a network's weights over the last epochs of its training, a hand-off of the
source bundle from which :meth:`~monai_dwp.losses.GaussianPrior.from_swag` builds a prior for the target task.

SWA-Gaussian (Maddox et al., NeurIPS 2019) summarises the iterates of SGD/Adam late in training by their running
first and second moments; "Pre-Train Your Loss" (Shwartz-Ziv et al., NeurIPS 2022) uses the resulting diagonal
Gaussian :math:`\mathcal{N}(\bar w, \lambda\,\mathrm{diag}(\overline{w^2} - \bar w^2))` of the source network as the
prior of the target task.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import min_version, optional_import
from torch import Tensor, nn

from monai_dwp.utils.io import atomic_write, load_checkpoint
from monai_dwp.utils.validation import check_int

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
idist, _ = optional_import("ignite.distributed", "0.4.11", min_version)
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")

__all__ = ["SWAG_FORMAT", "SWAGHandler", "load_swag"]

SWAG_FORMAT = "monai_dwp.swag/1"
"""The ``format`` entry of a SWAG moments file."""


class SWAGHandler:
    r"""Collect the running mean :math:`\bar w` and mean square :math:`\overline{w^2}` of every floating-point
    entry of ``network``'s state dict at the end of each epoch from ``start_epoch`` on, and write them to ``path``
    (atomically, after every update, so the file always holds the moments of the epochs finished so far).

    With :math:`n` epochs collected, :math:`\bar w_{n} = \bar w_{n-1} + (w - \bar w_{n-1}) / n` and likewise for
    :math:`w^2`, accumulated in float64 (late in training the weights move little, and in float32 the difference
    :math:`\overline{w^2} - \bar w^2`, the diagonal variance of :func:`load_swag`, would be mostly rounding).

    The moments are part of the training state (``state_dict``/``load_state_dict``), so a resumed run continues
    them instead of restarting.

    Args:
        network: the network being trained (the un-wrapped module under DDP).
        path: the moments file (``torch.save`` of ``{"format", "count", "start_epoch", "mean", "sq_mean"}``).
        start_epoch: the first epoch collected (1-based), e.g. the last quarter of the run.

    Example::

        SWAGHandler(net, "models/seed0/swag.pt", start_epoch=61).attach(trainer)
    """

    def __init__(self, network: nn.Module, path: str | os.PathLike, start_epoch: int) -> None:
        self.network = network
        self.path = Path(path)
        self.start_epoch = check_int(start_epoch, "start_epoch", minimum=1, hint="the first epoch to collect")
        self.count = 0
        self.mean: dict[str, Tensor] = {}
        self.sq_mean: dict[str, Tensor] = {}

    def attach(self, engine: Engine) -> None:
        """Register the handler on ``engine``'s ``EPOCH_COMPLETED``.

        Raises:
            ValueError: ``start_epoch`` lies after the engine's last epoch (nothing would be collected).
        """
        last = getattr(engine.state, "max_epochs", None)
        if last is not None and self.start_epoch > last:
            raise ValueError(f"swag_start_epoch {self.start_epoch} lies after the last epoch ({last}), so no SWAG "
                             f"moments would be collected; use a value in [1, {last - 1}] (at least 2 epochs).")
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _weights(self) -> dict[str, Tensor]:
        return {k: v.detach().double().cpu() for k, v in self.network.state_dict().items() if v.is_floating_point()}

    def update(self) -> None:
        """Add the network's current weights to the moments."""
        weights = self._weights()
        self.count += 1
        if self.count == 1:
            self.mean = {k: v.clone() for k, v in weights.items()}
            self.sq_mean = {k: v.square() for k, v in weights.items()}
            return
        for k, v in weights.items():
            self.mean[k] += (v - self.mean[k]) / self.count
            self.sq_mean[k] += (v.square() - self.sq_mean[k]) / self.count

    def __call__(self, engine: Engine) -> None:
        """At the end of an epoch from ``start_epoch`` on: :meth:`update` the moments and :meth:`save` them (on
        rank 0 only under ``torch.distributed``: the ranks hold the same weights, and one writer per file)."""
        if engine.state.epoch < self.start_epoch:
            return
        self.update()
        if idist.get_rank() == 0:
            self.save()

    def save(self) -> None:
        """Write the moments to ``path`` (atomically)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, "wb", lambda f: torch.save(self.state_dict(), f))

    def state_dict(self) -> dict[str, Any]:
        """The moments file's content: ``{"format", "count", "start_epoch", "mean", "sq_mean"}`` (float64)."""
        return {"format": SWAG_FORMAT, "count": self.count, "start_epoch": self.start_epoch, "mean": self.mean,
                "sq_mean": self.sq_mean}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the moments of a resumed run.

        Raises:
            ValueError: ``state`` was collected from another ``start_epoch`` (the windows would mix).
        """
        if int(state["start_epoch"]) != self.start_epoch:
            raise ValueError(f"swag_start_epoch {self.start_epoch} differs from the {state['start_epoch']} of the run "
                             "being resumed; resume with the same --swag_start_epoch.")
        self.count = int(state["count"])
        self.mean = {k: v.clone() for k, v in state["mean"].items()}
        self.sq_mean = {k: v.clone() for k, v in state["sq_mean"].items()}


def load_swag(path: str | os.PathLike, min_variance: float = 1e-12) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    r"""The SWAG mean and diagonal variance :math:`\max(\overline{w^2} - \bar w^2, \text{min\_variance})` per
    state-dict entry (float32, computed in float64), from a file written by :class:`SWAGHandler`.

    Raises:
        FileNotFoundError: ``path`` does not exist (names the bundle setting that writes it).
        ValueError: the file is not a SWAG moments file, or holds fewer than 2 epochs (no variance).
    """
    state = load_checkpoint(
        path, "swag_ckpt",
        missing="train the source network with `--swag_start_epoch N` (bundles/dwp_pretrain/configs/train.json)",
        expected="the swag.pt of a dwp_pretrain run",
    )
    if not isinstance(state, dict) or state.get("format") != SWAG_FORMAT:
        raise ValueError(f"swag_ckpt {str(path)!r} is not a SWAG moments file ({SWAG_FORMAT}); pass the swag.pt "
                         "written by the dwp_pretrain bundle with --swag_start_epoch.")
    if int(state["count"]) < 2:
        raise ValueError(f"swag_ckpt {str(path)!r} holds {state['count']} epoch(s); a variance needs at least 2: "
                         "start collecting earlier (--swag_start_epoch).")
    mean = {k: v.float() for k, v in state["mean"].items()}
    variance = {k: (state["sq_mean"][k] - v.square()).clamp_min(min_variance).float() for k, v in state["mean"].items()}
    return mean, variance
