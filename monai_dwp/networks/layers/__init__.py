"""Layers of Bayesian neural networks."""

from __future__ import annotations

from .bayesian_conv import STOCHASTIC_MODES, BayesianConv, StochasticMode, hold_weights

__all__ = ["BayesianConv", "StochasticMode", "STOCHASTIC_MODES", "hold_weights"]
