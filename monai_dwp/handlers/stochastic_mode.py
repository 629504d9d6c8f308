"""Switch the stochastic mode of a Bayesian network while an engine runs (e.g. ``"mean"`` for validation)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from monai.utils import min_version, optional_import
from torch import nn

from monai_dwp.networks.layers.bayesian_conv import STOCHASTIC_MODES, StochasticMode
from monai_dwp.networks.utils import bayesian_modules

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")

__all__ = ["StochasticModeHandler"]


class StochasticModeHandler:
    """Put every :class:`BayesianConv` of ``network`` in ``mode`` when the engine starts; restore on completion.

    Attach it to a validation evaluator to validate the posterior mean (``"mean"``) while the trainer keeps
    training in ``"local"`` or ``"sampled"`` mode. A network without Bayesian layers is left alone.

    Args:
        network: the network (the un-wrapped module under DDP).
        mode: ``"mean"``, ``"local"`` or ``"sampled"``.
    """

    def __init__(self, network: nn.Module, mode: StochasticMode = "mean") -> None:
        if mode not in STOCHASTIC_MODES:
            raise ValueError(f"mode must be one of {STOCHASTIC_MODES}, got {mode!r}.")
        self.network = network
        self.mode = mode
        self._previous: dict[str, str] = {}

    def attach(self, engine: Engine) -> None:
        """Register the handler on ``engine``."""
        engine.add_event_handler(Events.STARTED, self._enter)
        engine.add_event_handler(Events.COMPLETED, self._exit)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._exit_on_error)

    def _enter(self, engine: Engine) -> None:
        layers = bayesian_modules(self.network)
        self._previous = {name: layer.mode for name, layer in layers.items()}
        for layer in layers.values():
            layer.mode = self.mode
            if self.mode == "sampled":
                layer.resample()

    def _exit(self, engine: Engine) -> None:
        for name, layer in bayesian_modules(self.network).items():
            layer.mode = self._previous.get(name, layer.mode)

    def _exit_on_error(self, engine: Engine, error: BaseException) -> None:
        self._exit(engine)
        raise error
