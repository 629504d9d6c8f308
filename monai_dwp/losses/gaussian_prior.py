"""The plain factorized Gaussian prior N(loc, scale²) over the weights of the Bayesian layers of a network."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from monai_dwp.losses.kl import gaussian_kl
from monai_dwp.networks.layers.bayesian_conv import BayesianConv
from monai_dwp.networks.utils import bayesian_modules
from monai_dwp.utils.validation import check_float

__all__ = ["GaussianPrior"]


class GaussianPrior(nn.Module):
    r"""Closed-form :math:`\mathrm{KL}(q(w) \,\|\, \mathcal{N}(\text{loc}, \text{scale}^2))` summed over a network.

    For every :class:`~monai_dwp.networks.layers.BayesianConv` with posterior
    :math:`q(w) = \mathcal{N}(\mu, \sigma^2)` per weight,

    .. math::
        \mathrm{KL} = \sum_w \log\frac{s}{\sigma_w} + \frac{\sigma_w^2 + (\mu_w - m)^2}{2 s^2} - \frac12

    with prior location :math:`m` = ``loc`` and scale :math:`s` = ``scale``. Deterministic layers carry no
    posterior and contribute nothing. This is the ``gaussian_prior`` baseline and the explicit fallback of
    :class:`~monai_dwp.losses.DeepWeightPrior` for the layers its VAEs do not cover.

    Args:
        loc: prior mean of every weight.
        scale: prior standard deviation of every weight, > 0.

    Example::

        prior = GaussianPrior(scale=0.1)
        kl = prior(net)  # scalar tensor, differentiable in every loc / log_scale of net
    """

    def __init__(self, loc: float = 0.0, scale: float = 1.0) -> None:
        super().__init__()
        self.loc = check_float(loc, "loc")
        self.scale = check_float(scale, "scale", minimum=0.0, include_minimum=False)

    def layer_kl(self, layer: BayesianConv) -> Tensor:
        """KL of one layer's posterior to this prior (a scalar)."""
        return gaussian_kl(layer.loc, layer.log_scale, self.loc, math.log(self.scale)).sum()

    def kl_layers(self, layers: Iterable[BayesianConv]) -> Tensor:
        """KL summed over ``layers``; a zero scalar when there is none."""
        total: Tensor | None = None
        for layer in layers:
            kl = self.layer_kl(layer)
            total = kl if total is None else total + kl
        return total if total is not None else torch.zeros(())

    def forward(self, network: nn.Module) -> Tensor:
        """KL summed over every Bayesian layer of ``network``.

        Args:
            network: a network with :class:`BayesianConv` layers.

        Returns:
            A scalar tensor.
        """
        layers = bayesian_modules(network)
        if not layers:
            raise ValueError(
                f"{type(network).__name__} has no BayesianConv layer, so the prior has nothing to act on; "
                "convert it with monai_dwp.networks.convert_to_bayesian or build it with bayesian=True."
            )
        return self.kl_layers(layers.values())

    def extra_repr(self) -> str:
        return f"loc={self.loc}, scale={self.scale}"
