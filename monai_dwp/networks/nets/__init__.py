"""The networks of the paper: the residual U-Net (:class:`DWPUNet`) and the kernel VAE (:class:`KernelVAE`)."""

from __future__ import annotations

from .dwp_unet import DWPUNet
from .kernel_vae import KernelVAE, KernelVAEOutput
from .kernel_vae_group import KernelVAEGroup

__all__ = ["DWPUNet", "KernelVAE", "KernelVAEGroup", "KernelVAEOutput"]
