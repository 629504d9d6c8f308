"""Layers of Bayesian neural networks."""

from __future__ import annotations

from .bayesian_conv import REDRAW_MAX_IN_CHANNELS, STOCHASTIC_MODES, BayesianConv, StochasticMode, hold_weights
from .memory_format import channels_last_format, randn_like, to_memory_format, use_channels_last

__all__ = [
    "BayesianConv",
    "REDRAW_MAX_IN_CHANNELS",
    "StochasticMode",
    "STOCHASTIC_MODES",
    "hold_weights",
    "channels_last_format",
    "randn_like",
    "to_memory_format",
    "use_channels_last",
]
