"""Switch the stochastic mode of a Bayesian network while an engine runs (e.g. ``"mean"`` for validation)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from monai.utils import min_version, optional_import
from torch import nn

from monai_dwp.networks.layers.bayesian_conv import STOCHASTIC_MODES, StochasticMode
from monai_dwp.networks.utils import stochastic_mode

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")

__all__ = ["StochasticModeHandler"]


class StochasticModeHandler:
    """Put every :class:`BayesianConv` of ``network`` in ``mode`` when the engine starts; restore on completion.

    Attach it to a validation evaluator to validate the posterior mean (``"mean"``) while the trainer keeps
    training in ``"local"`` or ``"sampled"`` mode. A network without Bayesian layers is left alone. The switch and
    the restore are :class:`~monai_dwp.networks.stochastic_mode`'s, entered on ``STARTED`` and exited on
    ``COMPLETED`` or ``EXCEPTION_RAISED``.

    Args:
        network: the network (the un-wrapped module under DDP).
        mode: ``"mean"``, ``"local"`` or ``"sampled"``.
    """

    def __init__(self, network: nn.Module, mode: StochasticMode = "mean") -> None:
        if mode not in STOCHASTIC_MODES:
            raise ValueError(f"mode must be one of {STOCHASTIC_MODES}, got {mode!r}.")
        self.network = network
        self.mode = mode
        self._context: stochastic_mode | None = None

    def attach(self, engine: Engine) -> None:
        """Register the handler on ``engine``."""
        engine.add_event_handler(Events.STARTED, self._enter)
        engine.add_event_handler(Events.COMPLETED, self._exit)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._exit_on_error)

    def _enter(self, engine: Engine) -> None:
        self._exit(engine)  # a run that ended without COMPLETED (e.g. an interrupted engine) restores first
        self._context = stochastic_mode(self.network, self.mode).__enter__()  # "sampled" draws fresh weights

    def _exit(self, engine: Engine) -> None:
        context, self._context = self._context, None
        if context is not None:
            context.__exit__(None, None, None)

    def _exit_on_error(self, engine: Engine, error: BaseException) -> None:
        self._exit(engine)
        raise error
