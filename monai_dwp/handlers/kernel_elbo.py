"""Ignite metric: the ELBO of kernel VAEs on held-out kernels, overall and per layer group."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from monai.utils import min_version, optional_import

from monai_dwp.losses.kernel_vae_loss import KernelVAELoss

Metric, _ = optional_import("ignite.metrics", "0.4.11", min_version, "Metric")
reinit__is_reduced, _ = optional_import("ignite.metrics.metric", "0.4.11", min_version, "reinit__is_reduced")
sync_all_reduce, _ = optional_import("ignite.metrics.metric", "0.4.11", min_version, "sync_all_reduce")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")

__all__ = ["KernelELBO", "kernel_elbo_metrics"]


class KernelELBO(Metric):
    """Mean ELBO per kernel (higher is better) of a :class:`~monai_dwp.networks.nets.KernelVAEGroup`.

    Reads the engine's batched output (``output["pred"]``: the :class:`KernelVAEOutput`, ``output["label"]``:
    the kernels) and the batch's ``"group"``; run the engine with ``decollate=False``. With ``group`` set, only
    the kernels of that group count. The value is ``-KernelVAELoss`` averaged over kernels and synchronised
    across processes.

    Args:
        group: the group to score, or ``None`` for all kernels.
        beta: KL weight, as in :class:`~monai_dwp.losses.KernelVAELoss`.
        device: where the running sums live.
    """

    def __init__(self, group: int | None = None, beta: float = 1.0, device: str | torch.device = "cpu") -> None:
        self.group = group
        self._loss = KernelVAELoss(beta=beta, reduction="none")
        super().__init__(output_transform=lambda x: x, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._sum = torch.zeros((), dtype=torch.float64, device=self._device)
        self._count = torch.zeros((), dtype=torch.float64, device=self._device)

    def iteration_completed(self, engine: Engine) -> None:
        output, batch = engine.state.output, engine.state.batch
        elbo = -self._loss(output["pred"], output["label"]).detach()
        if self.group is not None:
            elbo = elbo[batch["group"].to(elbo.device) == self.group]
        self.update(elbo)

    @reinit__is_reduced
    def update(self, output: torch.Tensor) -> None:
        self._sum += output.double().sum().to(self._device)
        self._count += output.numel()

    @sync_all_reduce("_sum", "_count")
    def compute(self) -> float:
        return (self._sum / self._count.clamp(min=1)).item()


def kernel_elbo_metrics(num_groups: int, prefix: str = "val_elbo_group") -> dict[str, Any]:
    """``{f"{prefix}{g}": KernelELBO(group=g)}`` for every group, to pass as an evaluator's ``additional_metrics``."""
    return {f"{prefix}{g}": KernelELBO(group=g) for g in range(num_groups)}


