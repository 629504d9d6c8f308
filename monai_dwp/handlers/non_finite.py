"""Stop training at the first non-finite loss, saying which term, which layers and which iteration."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import min_version, optional_import
from torch import nn

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")

__all__ = ["NonFiniteLossError", "NonFiniteLossHandler"]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


def _non_finite(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return not bool(torch.isfinite(value.detach()).all())
    return isinstance(value, float) and not math.isfinite(value)


class NonFiniteLossHandler:
    """Raise :class:`NonFiniteLossError` at the end of the first iteration whose loss is NaN or infinite.

    Ignite's ``TerminateOnNan`` ends the run quietly; here the run stops with one message that names the
    iteration and epoch, the non-finite terms of an :class:`~monai_dwp.losses.ELBOLoss` (``nll``, ``aux``,
    ``data``, ``kl``, ...), the layers whose parameters are no longer finite and whether the batch itself was.
    It fires before the epoch's checkpoint and validation handlers, so the last checkpoint on disk (and
    ``model.pt``) stays the last good one.

    Args:
        loss: the training loss; its ``last_terms`` (if any) are searched for the offending term.
        network: the trained network; its parameters are searched for non-finite values.
        image_key: the batch key of the input volume.

    Example::

        NonFiniteLossHandler(loss, network).attach(trainer)
    """

    def __init__(self, loss: Any = None, network: nn.Module | None = None, image_key: str = "image") -> None:
        self.loss = loss
        self.network = network
        self.image_key = image_key

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda e: setattr(self, "_checked", False))
        engine.add_event_handler(Events.ITERATION_STARTED, self.check_parameters)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def _bad_layers(self) -> str | None:
        if self.network is None:
            return None
        layers = sorted({name.rsplit(".", 1)[0] for name, p in self.network.named_parameters() if _non_finite(p)})
        if not layers:
            return None
        shown = ", ".join(layers[:8]) + (f" and {len(layers) - 8} more" if len(layers) > 8 else "")
        return f"non-finite parameters in {len(layers)} layer(s): {shown}"

    def check_parameters(self, engine: Engine) -> None:
        """Before the first step of a run (after the source, prior or resumed checkpoint was loaded): raise if a
        parameter is already NaN or infinite, naming the layers (a NaN step would spread it to every layer)."""
        if getattr(self, "_checked", False):
            return
        self._checked = True
        bad = self._bad_layers()
        if bad:
            raise NonFiniteLossError(
                f"before the first training step (iteration {engine.state.iteration}): {bad}. The network was "
                "loaded that way: check the source checkpoint (source_ckpt) or the checkpoint resumed from."
            )

    def __call__(self, engine: Engine) -> None:
        output = engine.state.output
        value = output.get("loss") if isinstance(output, dict) else output
        if value is None or not _non_finite(value):
            return
        parts = [f"training loss is {float(value)} at iteration {engine.state.iteration} (epoch {engine.state.epoch})"]
        terms = getattr(self.loss, "last_terms", None) or {}
        bad_terms = [name for name, term in terms.items() if _non_finite(term)]
        if bad_terms:
            parts.append("non-finite terms: " + ", ".join(f"{n} = {float(terms[n])}" for n in bad_terms))
        bad = self._bad_layers()
        if bad:
            parts.append(bad)
        batch = engine.state.batch
        image = batch.get(self.image_key) if isinstance(batch, dict) else None
        if isinstance(image, torch.Tensor) and _non_finite(image):
            parts.append(f"the input batch '{self.image_key}' holds {int((~torch.isfinite(image)).sum())} non-finite voxels")
        raise NonFiniteLossError(
            "; ".join(parts) + ". Training stopped before this step was saved: the last checkpoint_epoch=N.pt and "
            "model.pt are the last good ones. Lower learning_rate (or kl_temperature), or check the data and the "
            "checkpoints named above."
        )
