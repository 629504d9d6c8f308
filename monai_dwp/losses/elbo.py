r"""The doubly stochastic ELBO of a Bayesian segmentation network, per voxel, for MONAI/Ignite trainers."""

from __future__ import annotations

import logging
import math

import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import Tensor, nn

from monai_dwp.utils.validation import check_float, check_int
__all__ = ["ELBOLoss"]

logger = logging.getLogger(__name__)


class ELBOLoss(nn.Module):
    r"""Negative ELBO per voxel: ``NLL + aux_weight · aux + temperature · KL / (N · V̄)``.

    With ``N`` training volumes of ``V_i`` voxels each, the ELBO of a voxel-wise categorical likelihood is
    (Atanov et al., 2019; Kuzina et al., 2019, appendix A)

    .. math::
        \mathcal{L} = \sum_{i=1}^{N} \sum_{v=1}^{V_i} \log p(y_{iv} \mid x_i, w) - \mathrm{KL}(q(w) \,\|\, p(w)).

    A minibatch of patches estimates the data sum by the mean voxel cross-entropy times :math:`N \bar V`
    (:math:`\bar V` the mean number of voxels of a preprocessed training volume), so dividing by
    :math:`-N \bar V` gives the loss minimised here, an unbiased estimate of the per-voxel negative ELBO:

    .. math::
        \ell = \underbrace{\overline{\mathrm{CE}}}_{\text{NLL per voxel}}
        + \beta \, \frac{\mathrm{KL}(q \,\|\, p)}{N \bar V}
        \;\; [+\; \lambda \cdot \text{aux}].

    Only the cross-entropy is a likelihood. ``aux_loss`` (default MONAI's soft Dice) is an auxiliary term
    that sharpens small-structure segmentation, as the paper's Dice term does; it is not part of the ELBO, and
    ``aux_weight=0`` gives the ELBO alone. :math:`\beta` (``temperature``) is 1 for the true ELBO; any other
    value is a tempered posterior and must be chosen on validation data.

    :math:`\bar V` is the number of voxels of a whole training volume, not of a patch: with the patch size
    instead, the KL is over-weighted by :math:`\bar V / V_\text{patch}` (about 5× for 32³ patches of the 3 mm
    phantoms). Compute it from the training data (:func:`monai_dwp.data.mean_voxels`); when ``voxels_per_case``
    is ``None`` the voxels of the first target seen are used, and logged, which is right only for whole-volume
    training. Under DDP pass the global ``N``; each rank's terms are already means.

    The call signature is a MONAI loss's, ``loss(y_pred, y)``, so it drops into ``SupervisedTrainer``; the
    network is held by reference (not a submodule). The last terms are kept, detached, in :attr:`last_terms`:
    ``nll``, ``aux``, ``data`` (``nll + aux_weight·aux``), and for Bayesian networks ``kl`` and ``kl_scaled``
    (``temperature · KL / (N·V̄)``).

    Args:
        network: the Bayesian network being trained (its un-wrapped module under DDP).
        prior: ``prior(network) -> KL`` such as :class:`~monai_dwp.losses.GaussianPrior` or
            :class:`~monai_dwp.losses.DeepWeightPrior`; ``None`` drops the KL term (maximum likelihood, for the
            deterministic baselines, which then log the same data terms as the Bayesian methods).
        dataset_size: ``N``, the number of training volumes (> 0).
        voxels_per_case: :math:`\bar V`, the mean number of voxels of a preprocessed training volume; ``None``
            takes the voxels of the first target seen.
        temperature: :math:`\beta \ge 0`, the weight of the KL term (1: the ELBO).
        aux_loss: the auxiliary term ``aux_loss(logits, labels)``; default ``DiceLoss(to_onehot_y=True,
            softmax=True)``; ``None`` for none.
        aux_weight: :math:`\lambda \ge 0`.

    Example::

        # 10 training volumes of 64×80×64 voxels after preprocessing
        loss = ELBOLoss(net, GaussianPrior(scale=0.1), dataset_size=10, voxels_per_case=64 * 80 * 64)
        value = loss(net(x), y)   # x (B, 1, *spatial), y (B, 1, *spatial) class indices
        loss.last_terms           # {"nll": ..., "aux": ..., "data": ..., "kl": ..., "kl_scaled": ...}
    """

    def __init__(
        self,
        network: nn.Module,
        prior: nn.Module | None,
        dataset_size: int,
        voxels_per_case: float | None = None,
        temperature: float = 1.0,
        aux_loss: nn.Module | None | str = "dice",
        aux_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if not isinstance(network, nn.Module):
            raise TypeError(f"network must be a torch.nn.Module, got {type(network).__name__}.")
        if prior is not None and not callable(prior):
            raise TypeError(f"prior must be callable prior(network) -> Tensor, got {type(prior).__name__}.")
        check_int(dataset_size, "dataset_size", minimum=1, hint="the number of training volumes")
        if voxels_per_case is not None:
            voxels_per_case = check_float(voxels_per_case, "voxels_per_case", minimum=0.0, include_minimum=False)
        self.voxels_per_case = voxels_per_case
        self.temperature = check_float(temperature, "temperature", minimum=0.0)
        self.aux_weight = check_float(aux_weight, "aux_weight", minimum=0.0)
        if isinstance(aux_loss, str):
            if aux_loss != "dice":
                raise ValueError(f"aux_loss must be a loss module, None or 'dice', got {aux_loss!r}.")
            aux_loss = DiceLoss(to_onehot_y=True, softmax=True)
        if aux_loss is not None and not callable(aux_loss):
            raise TypeError(f"aux_loss must be callable aux_loss(input, target) or None, got {type(aux_loss).__name__}.")
        object.__setattr__(self, "network", network)  # a reference, not a submodule
        self.prior = prior
        self.dataset_size = dataset_size
        self.aux_loss = aux_loss
        self.last_terms: dict[str, Tensor] = {}
        self._logged = False

    @property
    def kl_weight(self) -> float:
        """The factor of the KL in the per-voxel loss, ``temperature / (N · V̄)`` (``nan`` before V̄ is known)."""
        if self.voxels_per_case is None:
            return float("nan")
        return self.temperature / (self.dataset_size * self.voxels_per_case)

    @staticmethod
    def nll(input: Tensor, target: Tensor) -> Tensor:  # noqa: A002
        """Mean voxel cross-entropy of logits ``(B, C, *spatial)`` against class indices ``(B, 1, *spatial)``
        (or ``(B, *spatial)``) or one-hot labels ``(B, C, *spatial)``."""
        if target.shape == input.shape and input.shape[1] > 1:
            target = target.argmax(1)
        elif target.ndim == input.ndim:
            if target.shape[1] != 1:
                raise ValueError(
                    f"target must be class indices (B, 1, *spatial) or one-hot {tuple(input.shape)}, got "
                    f"{tuple(target.shape)}."
                )
            target = target[:, 0]
        return F.cross_entropy(input.float(), target.long())

    def forward(self, input: Tensor, target: Tensor) -> Tensor:  # noqa: A002 (MONAI loss signature)
        """The per-voxel negative ELBO plus the auxiliary term (a scalar).

        Args:
            input: logits ``(B, C, *spatial)``.
            target: class indices ``(B, 1, *spatial)`` (or one-hot ``(B, C, *spatial)``).
        """
        nll = self.nll(input, target)
        aux = self.aux_loss(input, target) if self.aux_loss is not None and self.aux_weight > 0 else nll.new_zeros(())
        data = nll + self.aux_weight * aux
        terms = {"nll": nll.detach(), "aux": aux.detach(), "data": data.detach()}
        if self.prior is None:
            self.last_terms = terms
            return data
        if self.voxels_per_case is None:
            self.voxels_per_case = float(math.prod(target.shape[2:]))
            logger.info(
                "ELBOLoss: voxels_per_case not given; using the %d voxels of the first target. Pass the mean "
                "voxels of a whole training volume (monai_dwp.data.mean_voxels) when training on patches.",
                int(self.voxels_per_case),
            )
        if not self._logged:
            logger.info(
                "ELBO per voxel: N = %d training volumes, V̄ = %.0f voxels per volume, temperature %g: KL weight "
                "%.3g; auxiliary Dice weight %g.", self.dataset_size, self.voxels_per_case, self.temperature,
                self.kl_weight, self.aux_weight,
            )
            self._logged = True
        kl = self.prior(self.network)
        kl_scaled = kl * self.kl_weight
        terms.update(kl=kl.detach(), kl_scaled=kl_scaled.detach())
        self.last_terms = terms
        return data + kl_scaled.to(data.dtype)

    def extra_repr(self) -> str:
        return (
            f"dataset_size={self.dataset_size}, voxels_per_case={self.voxels_per_case}, "
            f"temperature={self.temperature}, aux_weight={self.aux_weight}"
        )
