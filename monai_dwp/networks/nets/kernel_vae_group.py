"""One kernel VAE per group of layers, trained together as one network."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from monai_dwp.networks.nets.kernel_vae import KernelVAE, KernelVAEOutput
from monai_dwp.utils.validation import check_int

__all__ = ["KernelVAEGroup"]


class KernelVAEGroup(nn.Module):
    """``num_groups`` independent :class:`KernelVAE` s behind one ``forward(kernels, group)``.

    The Deep Weight Prior fits one VAE per group of consecutive layers (7 groups in Kuzina et al., 2019). Holding
    them in one module lets one MONAI ``SupervisedTrainer`` fit all of them on a dataset whose items carry their
    group (``PrepareBatchExtraInput({"group": "group"})`` passes it to ``forward``): every kernel of a batch goes
    through its own group's VAE, and the VAEs share nothing.

    Args:
        num_groups: number of VAEs.
        vae_kwargs: arguments of every :class:`KernelVAE` (``kernel_size``, ``latent_size``, ``hidden_channels``, ...).

    Example::

        net = KernelVAEGroup(7, latent_size=6)
        out = net(kernels, group)  # kernels (B, 1, 3, 3, 3), group (B,) ints in [0, 7)
    """

    def __init__(self, num_groups: int, **vae_kwargs: Any) -> None:
        super().__init__()
        check_int(num_groups, "num_groups", minimum=1)
        self.vaes = nn.ModuleList(KernelVAE(**vae_kwargs) for _ in range(num_groups))

    @property
    def num_groups(self) -> int:
        """Number of VAEs."""
        return len(self.vaes)

    def forward(self, kernels: Tensor, group: Tensor | int | Sequence[int]) -> KernelVAEOutput:
        """Apply each kernel's group VAE.

        Args:
            kernels: ``(B, 1, *kernel_size)`` on the normalised scale.
            group: ``(B,)`` group indices (or one int for the whole batch).

        Returns:
            The :class:`KernelVAEOutput` of every kernel, in input order.
        """
        group = torch.as_tensor(group, device=kernels.device).long().reshape(-1)
        if group.numel() == 1:
            group = group.expand(kernels.shape[0])
        if group.shape[0] != kernels.shape[0]:
            raise ValueError(
                f"group has {group.shape[0]} entries for {kernels.shape[0]} kernels; pass one group index per kernel."
            )
        if group.numel() and (group.min() < 0 or group.max() >= self.num_groups):
            raise ValueError(
                f"group indices must lie in [0, {self.num_groups}), got [{group.min().item()}, {group.max().item()}]."
            )
        parts: list[tuple[Tensor, KernelVAEOutput]] = []
        for g in torch.unique(group).tolist():
            index = (group == g).nonzero(as_tuple=True)[0]
            parts.append((index, self.vaes[g](kernels[index])))
        order = torch.argsort(torch.cat([index for index, _ in parts]))
        return KernelVAEOutput(*(torch.cat(fields)[order] for fields in zip(*(out for _, out in parts))))
