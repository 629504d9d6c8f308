"""A picture of real convolution kernels next to kernels sampled from the fitted VAE prior, per group."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from monai_dwp.data.kernels import KernelDataset
from monai_dwp.networks.nets.kernel_vae import KernelVAE
from monai_dwp.utils.io import atomic_path

__all__ = ["save_kernel_figure"]


def _tile(kernels: torch.Tensor, per_row: int) -> np.ndarray:
    """``(n, 1, k, k, k)`` kernels as one image: each kernel's ``k`` axial slices side by side, NaN gaps."""
    n, _, k = kernels.shape[0], kernels.shape[1], kernels.shape[-1]
    width = k * k + (k - 1)
    rows = -(-n // per_row)
    out = np.full((rows * (k + 1) - 1, per_row * (width + 1) - 1), np.nan, dtype=np.float32)
    for i, kernel in enumerate(kernels.detach().cpu().numpy()):
        r, c = divmod(i, per_row)
        for s in range(k):
            x0 = c * (width + 1) + s * (k + 1)
            out[r * (k + 1) : r * (k + 1) + k, x0 : x0 + k] = kernel[0, s]
    return out


@torch.no_grad()
def save_kernel_figure(
    dataset: KernelDataset,
    vaes: Sequence[KernelVAE],
    output_file: str | os.PathLike,
    num_kernels: int = 16,
    seed: int = 0,
) -> Path:
    """Write a PNG with, for every group, ``num_kernels`` real kernels and as many VAE samples (decoder means).

    Kernels are shown on the VAE's normalised scale, each as its axial slices side by side, with one colour
    scale per group; a good prior's samples look like the real kernels (same structure, similar contrast).

    Args:
        dataset: the normalised kernels per group.
        vaes: the fitted VAE of each group.
        output_file: the PNG to write (written atomically).
        num_kernels: kernels shown per row pair.
        seed: seed of the random choice of real kernels and of the samples.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if len(vaes) != dataset.num_groups:
        raise ValueError(f"vaes has {len(vaes)} VAEs for {dataset.num_groups} groups; pass one per group.")
    generator = torch.Generator().manual_seed(seed)
    per_row = 8
    rows = -(-num_kernels // per_row)
    fig, axes = plt.subplots(dataset.num_groups, 2, figsize=(14, 0.5 + 0.6 * dataset.num_groups * rows), squeeze=False)
    for g, vae in enumerate(vaes):
        real = dataset.group_kernels(g)
        real = real[torch.randperm(real.shape[0], generator=generator)[:num_kernels]]
        vae_device = next(vae.parameters()).device
        sampled = vae.sample(num_kernels, generator=torch.Generator(vae_device).manual_seed(seed + g)).cpu()
        limit = float(real.abs().max())
        for ax, kernels, title in ((axes[g, 0], real, "real"), (axes[g, 1], sampled, "sampled")):
            ax.imshow(_tile(kernels, per_row), cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
            ax.set_title(f"group {g}: {title} (group RMS {dataset.scales[g]:.3g})", fontsize=9)
            ax.axis("off")
    fig.suptitle("normalised 3×3×3 kernels (each layer divided by its RMS; axial slices side by side): source networks "
                 "vs decoder means of the VAE prior", fontsize=11)
    fig.tight_layout()
    path = Path(output_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    return path
