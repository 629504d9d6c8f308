"""Draw a new weight sample of a Bayesian network at every iteration (training in ``"sampled"`` mode)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from monai.utils import min_version, optional_import
from torch import nn

from monai_dwp.networks.utils import bayesian_modules, resample_weights

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")

__all__ = ["ResampleWeightsHandler"]


class ResampleWeightsHandler:
    """Call :func:`~monai_dwp.networks.resample_weights` on ``network`` at the start of every iteration.

    Training a Bayesian network in ``"sampled"`` mode with a fresh weight draw per step gives an unbiased ELBO
    gradient with one convolution per layer (``"local"`` mode needs two, with less variance).

    Args:
        network: the Bayesian network (the un-wrapped module under DDP).
    """

    def __init__(self, network: nn.Module) -> None:
        if not bayesian_modules(network):
            raise ValueError(
                f"{type(network).__name__} has no BayesianConv layer to resample; build it with bayesian=True."
            )
        self.network = network

    def attach(self, engine: Engine) -> None:
        """Register the handler on ``engine``."""
        engine.add_event_handler(Events.ITERATION_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        resample_weights(self.network)
