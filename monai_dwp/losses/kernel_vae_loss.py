"""Negative ELBO of a kernel VAE on a batch of convolution kernels."""

from __future__ import annotations

from torch import Tensor, nn

from monai_dwp.losses.kl import gaussian_log_prob, standard_normal_kl
from monai_dwp.networks.nets.kernel_vae import KernelVAEOutput
from monai_dwp.utils.validation import check_float

__all__ = ["KernelVAELoss"]


class KernelVAELoss(nn.Module):
    r"""Negative ELBO of :class:`~monai_dwp.networks.nets.KernelVAE`, averaged over the kernels of a batch.

    For a kernel :math:`w` with encoder :math:`r(z|w) = \mathcal{N}(\mu_z, \sigma_z^2)` and decoder
    :math:`p(w|z) = \mathcal{N}(\mu_w, \sigma_w^2)`,

    .. math::
        -\text{ELBO}(w) = -\log p(w \mid z) + \beta\, \mathrm{KL}(r(z \mid w) \,\|\, \mathcal{N}(0, I)),
        \quad z \sim r(z \mid w),

    with the log-density summed over the kernel's values and the KL over latent dimensions.

    Args:
        beta: weight of the KL term (1 gives the ELBO).
        reduction: ``"mean"`` over kernels, ``"sum"``, or ``"none"`` for a ``(B,)`` tensor.

    Example::

        loss = KernelVAELoss()
        value = loss(vae(kernels), kernels)  # kernels: (B, 1, 3, 3, 3)
    """

    def __init__(self, beta: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        check_float(beta, "beta", minimum=0.0)
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
        self.beta = float(beta)
        self.reduction = reduction
        self.last_terms: dict[str, Tensor] = {}

    def forward(self, output: KernelVAEOutput, target: Tensor) -> Tensor:
        """Negative ELBO of ``target`` kernels ``(B, 1, *kernel_size)`` under the VAE ``output`` for them."""
        if not isinstance(output, KernelVAEOutput):
            raise TypeError(f"output must be the KernelVAEOutput of KernelVAE.forward, got {type(output).__name__}.")
        if target.shape != output.recon_loc.shape:
            raise ValueError(
                f"target shape {tuple(target.shape)} must equal the reconstruction shape "
                f"{tuple(output.recon_loc.shape)}; pass the kernels the VAE was applied to."
            )
        nll = -gaussian_log_prob(target, output.recon_loc, output.recon_log_scale).flatten(1).sum(1)
        kl = standard_normal_kl(output.z_loc, output.z_log_scale).flatten(1).sum(1)
        loss = nll + self.beta * kl
        self.last_terms = {"nll": nll.detach().mean(), "kl": kl.detach().mean()}
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss
