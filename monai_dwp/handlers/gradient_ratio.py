"""Which term drives training: the ratio of the data gradient to the KL gradient, per Bayesian layer."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import min_version, optional_import
from torch import nn

from monai_dwp.networks.utils import bayesian_modules
from monai_dwp.utils.validation import check_int

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
SummaryWriter, _ = optional_import("torch.utils.tensorboard", name="SummaryWriter")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")

__all__ = ["GradientRatioHandler"]

logger = logging.getLogger(__name__)


class GradientRatioHandler:
    r"""Log :math:`\|\nabla \text{data}\| / \|\nabla \text{KL}\|` per Bayesian layer for ``loc`` and ``log_scale``.

    Every ``interval`` iterations, before the optimiser step, the handler takes the trainer's batch, recomputes the two parts of an
    :class:`~monai_dwp.losses.ELBOLoss` separately (the data terms and the scaled KL,
    ``temperature · KL / (N·V̄)``) and their gradients with respect to every Bayesian layer's ``loc`` and
    ``log_scale``, without touching the parameters' ``.grad``. A ratio far below 1 means the prior, not the
    data, moves that layer (e.g. the posterior scales pinned to the prior); far above 1, the data dominate.
    Values go to TensorBoard as ``grad_ratio/<loc|log_scale>/<layer>``, to :attr:`last_ratios`, and their
    median over layers to the log. It costs one extra forward and two backward passes per logged iteration. A
    :class:`~monai_dwp.losses.DeepWeightPrior` with a rotating refresh keeps its rotation: the extra KL estimate runs
    under its :meth:`~monai_dwp.losses.DeepWeightPrior.cache_preserved`.

    Args:
        loss: the trainer's :class:`~monai_dwp.losses.ELBOLoss` (with a prior).
        network: the Bayesian network (the un-wrapped module under DDP).
        interval: log every ``interval`` iterations (> 0).
        log_dir: TensorBoard folder; ``None`` logs to the Python log only.
    """

    def __init__(self, loss: Any, network: nn.Module, interval: int = 50, log_dir: str | None = None) -> None:
        if not (callable(getattr(loss, "nll", None)) and hasattr(loss, "prior")):
            raise TypeError(f"loss must be an ELBOLoss, got {type(loss).__name__}.")
        check_int(interval, "interval", minimum=1, hint="a number of iterations")
        self.loss = loss
        self.network = network
        self.interval = interval
        self.log_dir = log_dir
        self._writer: Any = None
        self.last_ratios: dict[str, dict[str, float]] = {}

    def attach(self, engine: Engine) -> None:
        """Register the handler on ``engine`` (a MONAI ``SupervisedTrainer``); a no-op without a prior."""
        if self.loss.prior is None or not bayesian_modules(self.network):
            return
        engine.add_event_handler(Events.ITERATION_STARTED(every=self.interval), self)
        engine.add_event_handler(Events.COMPLETED, self._close)

    def ratios(self, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, dict[str, float]]:
        """``{"loc": {layer: ratio}, "log_scale": {layer: ratio}}`` for one batch."""
        layers = bayesian_modules(self.network)
        params = [p for layer in layers.values() for p in (layer.loc, layer.log_scale)]
        with torch.enable_grad():
            logits = self.network(inputs)
            loss = self.loss
            data = loss.nll(logits, targets)
            if loss.aux_loss is not None and loss.aux_weight > 0:
                data = data + loss.aux_weight * loss.aux_loss(logits, targets)
            g_data = torch.autograd.grad(data, params, allow_unused=True)
            # a Deep Weight Prior's rotating refresh must not advance for a logged estimate
            preserved = getattr(loss.prior, "cache_preserved", contextlib.nullcontext)
            with preserved():
                kl = loss.prior(self.network) * loss.kl_weight
            g_kl = torch.autograd.grad(kl, params, allow_unused=True)
        out: dict[str, dict[str, float]] = {"loc": {}, "log_scale": {}}
        for i, name in enumerate(layers):
            for j, kind in enumerate(("loc", "log_scale")):
                gd, gk = g_data[2 * i + j], g_kl[2 * i + j]
                nd = float(gd.norm()) if gd is not None else 0.0
                nk = float(gk.norm()) if gk is not None else 0.0
                out[kind][name] = nd / nk if nk > 0 else float("inf")
        return out

    def __call__(self, engine: Engine) -> None:
        batch = engine.state.batch
        inputs, targets = engine.prepare_batch(batch, engine.state.device, engine.non_blocking)[:2]
        self.last_ratios = self.ratios(inputs, targets)
        step = engine.state.iteration
        if self.log_dir is not None:
            if self._writer is None:
                self._writer = SummaryWriter(log_dir=self.log_dir)
            for kind, values in self.last_ratios.items():
                for name, value in values.items():
                    self._writer.add_scalar(f"grad_ratio/{kind}/{name}", value, step)
            self._writer.flush()
        medians = {k: float(torch.tensor(list(v.values())).median()) for k, v in self.last_ratios.items() if v}
        logger.info(
            "iteration %d: |grad data| / |grad KL|, median over layers: loc %.3g, log_scale %.3g",
            step, medians.get("loc", float("nan")), medians.get("log_scale", float("nan")),
        )

    def _close(self, engine: Engine) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
