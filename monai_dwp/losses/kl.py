r"""Closed-form Gaussian log-density, entropy and KL divergence, elementwise, in ``(loc, log_scale)`` form.

All functions broadcast like :mod:`torch.distributions.Normal` and return elementwise values; sum them over the
dimensions you need. Working in ``log_scale`` keeps them exact and differentiable for very small scales.
"""

from __future__ import annotations

import math

from torch import Tensor

__all__ = ["gaussian_log_prob", "gaussian_entropy", "gaussian_kl", "standard_normal_kl"]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def gaussian_log_prob(value: Tensor, loc: Tensor, log_scale: Tensor) -> Tensor:
    r""":math:`\log \mathcal{N}(x; \mu, \sigma^2) = -\tfrac{(x-\mu)^2}{2\sigma^2} - \log\sigma - \tfrac12\log 2\pi`."""
    return -0.5 * ((value - loc) * (-log_scale).exp()).square() - log_scale - _HALF_LOG_2PI


def gaussian_entropy(log_scale: Tensor) -> Tensor:
    r""":math:`H[\mathcal{N}(\mu, \sigma^2)] = \tfrac12 \log(2\pi e) + \log\sigma`."""
    return log_scale + (0.5 + _HALF_LOG_2PI)


def gaussian_kl(loc_q: Tensor, log_scale_q: Tensor, loc_p: Tensor | float, log_scale_p: Tensor | float) -> Tensor:
    r""":math:`\mathrm{KL}(\mathcal{N}(\mu_q, \sigma_q^2) \,\|\, \mathcal{N}(\mu_p, \sigma_p^2))
    = \log\tfrac{\sigma_p}{\sigma_q} + \tfrac{\sigma_q^2 + (\mu_q - \mu_p)^2}{2\sigma_p^2} - \tfrac12`."""
    inv_var_p = (-2.0 * log_scale_p).exp() if isinstance(log_scale_p, Tensor) else math.exp(-2.0 * log_scale_p)
    return (
        log_scale_p
        - log_scale_q
        + 0.5 * ((2.0 * log_scale_q).exp() + (loc_q - loc_p).square()) * inv_var_p
        - 0.5
    )


def standard_normal_kl(loc: Tensor, log_scale: Tensor) -> Tensor:
    r""":math:`\mathrm{KL}(\mathcal{N}(\mu, \sigma^2) \,\|\, \mathcal{N}(0, 1)) = \tfrac12(\sigma^2 + \mu^2 - 1) - \log\sigma`."""
    return 0.5 * ((2.0 * log_scale).exp() + loc.square() - 1.0) - log_scale
