"""Log the terms of a composite loss (e.g. the ELBO's data and KL terms) as epoch metrics."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from monai.utils import min_version, optional_import

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
    from ignite.metrics import Average
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")
    Average, _ = optional_import("ignite.metrics", "0.4.11", min_version, "Average")

__all__ = ["LossTermsHandler"]

logger = logging.getLogger(__name__)


class LossTermsHandler:
    """Average the ``last_terms`` of a loss over each epoch and publish them in ``engine.state.metrics``.

    Losses such as :class:`~monai_dwp.losses.ELBOLoss` keep their last terms (detached tensors) in a dict
    ``last_terms``; after every iteration this handler updates their means over the current epoch (one Ignite
    :class:`~ignite.metrics.Average` per term, reset when an epoch starts) in ``engine.state.metrics[prefix +
    name]``, so at the end of the epoch MONAI's ``StatsHandler`` and ``TensorBoardStatsHandler`` log the epoch means
    with the other epoch metrics, whatever the handler order. Under ``torch.distributed`` the means are over all
    ranks (Ignite reduces the sums), so every rank must attach the handler. The terms of the first iteration of a
    run, this process's own, are also logged once (``loss terms at iteration 1: ...``).

    Args:
        loss: the loss object with a ``last_terms`` mapping.
        prefix: prepended to every metric name (default ``"loss_"``: ``loss_data``, ``loss_kl``, ...).
    """

    def __init__(self, loss: object, prefix: str = "loss_") -> None:
        if not isinstance(getattr(loss, "last_terms", None), Mapping):
            raise TypeError(
                f"loss must keep its terms in a `last_terms` dict (like ELBOLoss), got {type(loss).__name__}."
            )
        self.loss = loss
        self.prefix = prefix
        self._averages: dict[str, Average] = {}
        self._first = True

    def attach(self, engine: Engine) -> None:
        """Register the handler on ``engine``."""
        engine.add_event_handler(Events.STARTED, lambda e: setattr(self, "_first", True))
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._accumulate)

    def _reset(self, engine: Engine) -> None:
        for average in self._averages.values():
            average.reset()

    def _accumulate(self, engine: Engine) -> None:
        terms = {
            name: value.item() if isinstance(value, torch.Tensor) else float(value)
            for name, value in self.loss.last_terms.items()  # type: ignore[attr-defined]
        }
        for name, value in terms.items():
            self._averages.setdefault(name, Average()).update(value)
        for name, average in self._averages.items():
            if average.num_examples > 0:
                engine.state.metrics[self.prefix + name] = float(average.compute())
        if self._first:  # the first step of a run, logged once (e.g. to compare a distributed run with one process)
            self._first = False
            logger.info(
                "loss terms at iteration %d: %s",
                engine.state.iteration,
                " ".join(f"{self.prefix}{n}: {v:.6g}" for n, v in terms.items()),
            )
