r"""The doubly stochastic ELBO of a Bayesian network, as a per-case loss for MONAI/Ignite trainers."""

from __future__ import annotations

import math

import torch
from monai.losses import DiceCELoss
from torch import Tensor, nn

__all__ = ["ELBOLoss"]


class ELBOLoss(nn.Module):
    r"""Negative ELBO per training case: ``data_loss(input, target) + kl_weight * prior(network) / dataset_size``.

    With ``N`` training cases and a minibatch of ``M``, the doubly stochastic ELBO (Atanov et al., 2019,
    appendix A) is :math:`\mathcal{L} = \tfrac{N}{M}\sum_{i=1}^M \log p(y_i \mid x_i, w) - \mathrm{KL}(q(w)\|p(w))`;
    dividing by :math:`-N` gives the per-case loss minimised here, with the data term a batch mean (any MONAI
    loss, e.g. Dice + cross-entropy as in Kuzina et al., 2019, where the data term is ``0.01 CE + 0.99 Dice``).

    ``N`` is the number of training *cases* the data loss averages over per epoch: volumes, or patches when
    every step sees patches and you count patches per epoch. Under DDP pass the global ``N``, not the
    per-rank share: each rank's data term is already a mean.

    The call signature is a MONAI loss's, ``loss(y_pred, y)``, so it drops into ``SupervisedTrainer``; the
    network is held by reference (not registered as a submodule, so this loss's state dict and parameters do not
    duplicate it). The last data and KL terms are kept, detached, in :attr:`last_terms` for logging.

    Args:
        network: the Bayesian network being trained (its un-wrapped module under DDP).
        prior: ``prior(network) -> KL`` such as :class:`~monai_dwp.losses.GaussianPrior` or
            :class:`~monai_dwp.losses.DeepWeightPrior`; ``None`` drops the KL term (maximum likelihood, for the
            deterministic baselines, which then log the same ``last_terms`` as the Bayesian methods).
        dataset_size: ``N``, the number of training cases (> 0).
        data_loss: the data term; default ``DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=0.99,
            lambda_ce=0.01)``.
        kl_weight: multiplier of the KL term (1 is the ELBO; < 1 tempers it, e.g. for KL annealing).

    Example::

        loss = ELBOLoss(net, GaussianPrior(scale=0.1), dataset_size=10)
        value = loss(net(x), y)
        loss.last_terms  # {"data": ..., "kl": ..., "kl_scaled": ...}
    """

    def __init__(
        self,
        network: nn.Module,
        prior: nn.Module | None,
        dataset_size: int,
        data_loss: nn.Module | None = None,
        kl_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if not isinstance(network, nn.Module):
            raise TypeError(f"network must be a torch.nn.Module, got {type(network).__name__}.")
        if prior is not None and not callable(prior):
            raise TypeError(f"prior must be callable prior(network) -> Tensor, got {type(prior).__name__}.")
        if isinstance(dataset_size, bool) or not isinstance(dataset_size, int) or dataset_size < 1:
            raise ValueError(
                f"dataset_size must be the number of training cases, a positive int, got {dataset_size!r}."
            )
        if not (math.isfinite(kl_weight) and kl_weight >= 0):
            raise ValueError(f"kl_weight must be a finite float >= 0, got {kl_weight!r}.")
        object.__setattr__(self, "network", network)  # a reference, not a submodule
        self.prior = prior
        self.dataset_size = dataset_size
        self.kl_weight = float(kl_weight)
        self.data_loss = (
            data_loss
            if data_loss is not None
            else DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=0.99, lambda_ce=0.01)
        )
        self.last_terms: dict[str, Tensor] = {}

    def forward(self, input: Tensor, target: Tensor) -> Tensor:  # noqa: A002 (MONAI loss signature)
        """The per-case negative ELBO (a scalar).

        Args:
            input: network output, e.g. logits ``(B, C, *spatial)``.
            target: ground truth accepted by ``data_loss``, e.g. labels ``(B, 1, *spatial)``.
        """
        data = self.data_loss(input, target)
        if self.prior is None:
            self.last_terms = {"data": data.detach()}
            return data
        kl = self.prior(self.network)
        kl_scaled = self.kl_weight * kl / self.dataset_size
        with torch.no_grad():
            self.last_terms = {"data": data.detach(), "kl": kl.detach(), "kl_scaled": kl_scaled.detach()}
        return data + kl_scaled.to(data.dtype)

    def extra_repr(self) -> str:
        return f"dataset_size={self.dataset_size}, kl_weight={self.kl_weight}"
