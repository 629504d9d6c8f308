r"""Held-out likelihood of the kernel VAE prior against Gaussian baselines, per layer group.

The Deep Weight Prior is only worth its cost if its kernel VAE models the kernels of the source networks better
than a plain Gaussian does. For every group ``g`` this module scores the group's VAE and two Gaussians fitted on
the *training* kernels on the *held-out* kernels, all in nats per kernel on the normalised scale the VAE sees
(lower is better):

.. math::
    \underbrace{-\mathrm{ELBO}(w)}_{\texttt{vae\_nll}} \;\ge\; \underbrace{-\log \hat p_K(w)}_{\texttt{vae\_nll\_iw}}
    \;\ge\; -\log p_\theta(w),
    \qquad
    \texttt{iso\_gauss\_nll} = -\log \mathcal{N}(w; 0, s^2 I),
    \qquad
    \texttt{full\_gauss\_nll} = -\log \mathcal{N}(w; \mu, \Sigma).

A VAE that does not beat the full-covariance Gaussian (27×27 for 3×3×3 kernels) learned nothing a covariance
matrix could not hold; the latent KL, the number of active latent units and the flatness of the kernels'
covariance spectrum tell why (posterior collapse; kernels still near their random, isotropic initialisation).

Typical use, at the end of ``bundles/dwp_prior/configs/train.json``::

    "$monai_dwp.metrics.prior_report(@network, @kernel_split, @output_dir, @num_groups)"
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.distributions import MultivariateNormal
from torch.utils.data import Dataset, Subset

from monai_dwp.losses.kl import gaussian_log_prob, standard_normal_kl
from monai_dwp.networks.nets.kernel_vae import KernelVAE
from monai_dwp.networks.nets.kernel_vae_group import KernelVAEGroup
from monai_dwp.utils.io import atomic_write
from monai_dwp.utils.validation import check_int

__all__ = ["kernel_prior_report", "kernels_by_group", "participation_ratio", "prior_report", "write_kernel_prior_report"]

logger = logging.getLogger("monai_dwp.metrics")

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_ACTIVE_UNIT_KL = 0.01  # nats: a latent dimension whose mean KL exceeds this carries information about w
_COLLAPSE_KL = 0.1  # nats per kernel: below this the encoder's r(z|w) is (almost) the prior N(0, I)
_FLAT_SPECTRUM = 0.8  # spectrum flatness above this: the kernels are nearly isotropic, like at initialisation
_RIDGE = 1e-6  # the full covariance gets + _RIDGE * tr(Sigma) / d on its diagonal

# (row key, markdown header, format) of the markdown table, in order
_MD_COLUMNS: tuple[tuple[str, str], ...] = (
    ("group", "group"),
    ("kernels", "kernels train / held-out"),
    ("vae_nll", "VAE −ELBO"),
    ("vae_nll_iw", "VAE IWAE"),
    ("iso_gauss_nll", "isotropic Gaussian"),
    ("full_gauss_nll", "full-cov Gaussian"),
    ("gain_over_full", "gain over full-cov"),
    ("latent_kl", "latent KL"),
    ("active_units", "active units"),
    ("spectrum_flatness", "flatness"),
    ("participation", "effective dims: kernels / decoder means / prior samples"),
    ("rms_ratio", "RMS / kernels': decoder means / prior samples"),
)
_CSV_COLUMNS: tuple[str, ...] = (
    "group",
    "num_train",
    "num_heldout",
    "vae_nll",
    "vae_nll_iw",
    "vae_recon_nll",
    "iso_gauss_nll",
    "full_gauss_nll",
    "gain_over_iso",
    "gain_over_full",
    "latent_kl",
    "active_units",
    "latent_size",
    "spectrum_flatness",
    "pr_kernels",
    "pr_decoder_means",
    "pr_prior_samples",
    "rms_decoder_means",
    "rms_prior_samples",
    "beats_iso",
    "beats_full",
    "num_z_samples",
    "eigvals",
    "latent_kl_per_dim",
)
_REQUIRED_KEYS: tuple[str, ...] = (
    "group",
    "num_train",
    "num_heldout",
    "vae_nll",
    "iso_gauss_nll",
    "full_gauss_nll",
    "latent_kl",
    "active_units",
    "latent_size",
    "eigvals",
    "spectrum_flatness",
    "beats_iso",
    "beats_full",
)

# ----------------------------------------------------------------------------------------------------------------
# argument checks
# ----------------------------------------------------------------------------------------------------------------


def _as_vae_list(vaes: Sequence[KernelVAE] | KernelVAEGroup, name: str = "vaes") -> list[KernelVAE]:
    """The VAEs of a :class:`KernelVAEGroup` or a sequence (e.g. ``network.vaes``), checked."""
    if isinstance(vaes, KernelVAEGroup):
        vaes = list(vaes.vaes)
    elif isinstance(vaes, KernelVAE):
        raise TypeError(f"{name} must be a sequence of KernelVAE (one per group), got one KernelVAE; pass [vae].")
    elif isinstance(vaes, (str, bytes)) or not isinstance(vaes, (Sequence, torch.nn.ModuleList)):
        raise TypeError(
            f"{name} must be a KernelVAEGroup or a sequence of KernelVAE (e.g. network.vaes), "
            f"got {type(vaes).__name__}."
        )
    out = list(vaes)
    if not out:
        raise ValueError(f"{name} is empty; pass one fitted KernelVAE per group (network.vaes).")
    for g, vae in enumerate(out):
        if not isinstance(vae, KernelVAE):
            raise TypeError(f"{name}[{g}] must be a KernelVAE, got {type(vae).__name__}.")
    return out


def _as_group_dict(name: str, kernels: Any, num_groups: int) -> dict[int, Tensor]:
    """``{group: tensor}`` for ``group in range(num_groups)`` from a mapping or a per-group sequence."""
    if isinstance(kernels, Tensor):
        raise TypeError(
            f"{name} must map each group to its kernels ({{group: (K, 3, 3, 3) tensor}}) or be a list with one "
            f"tensor per group, got a single tensor of shape {tuple(kernels.shape)}; build the mapping with "
            "kernels_by_group(dataset)."
        )
    if isinstance(kernels, Mapping):
        try:
            out = {int(g): t for g, t in kernels.items()}
        except (TypeError, ValueError):
            raise TypeError(f"{name} must have int group keys, got keys {list(kernels)!r}.") from None
    elif isinstance(kernels, Sequence) and not isinstance(kernels, (str, bytes)):
        out = dict(enumerate(kernels))
    else:
        raise TypeError(
            f"{name} must be a mapping {{group: tensor}} or a sequence of tensors, got {type(kernels).__name__}; "
            "build it with kernels_by_group(dataset)."
        )
    if sorted(out) != list(range(num_groups)):
        raise ValueError(
            f"{name} has kernels for groups {sorted(out)} but there are {num_groups} VAEs "
            f"(groups 0..{num_groups - 1}); "
            f"pass one tensor per group, e.g. kernels_by_group(dataset, num_groups={num_groups})."
        )
    return out


def _flat_kernels(name: str, group: int, kernels: Any, kernel_shape: tuple[int, ...], min_count: int) -> Tensor:
    """Check one group's kernels ``(K, *kernel_size)`` or ``(K, 1, *kernel_size)`` and flatten them to ``(K, d)``."""
    spatial = kernel_shape[1:]
    if not isinstance(kernels, Tensor):
        raise TypeError(f"{name}[{group}] must be a torch.Tensor, got {type(kernels).__name__}.")
    if not kernels.is_floating_point():
        raise TypeError(f"{name}[{group}] must be a floating point tensor, got dtype {kernels.dtype}.")
    shape = tuple(kernels.shape)
    if shape[1:] not in (spatial, kernel_shape):
        dims = ", ".join(map(str, spatial))
        raise ValueError(
            f"{name}[{group}] must have shape (K, {dims}) or (K, 1, {dims}) to match the group's VAE, got {shape}; "
            f"reshape a convolution weight (out, in, {dims}) with W.reshape(-1, {dims})."
        )
    if shape[0] < min_count:
        raise ValueError(
            f"{name}[{group}] has {shape[0]} kernels, at least {min_count} needed; group {group} is "
            + ("empty" if shape[0] == 0 else "too small")
            + " - check the kernel split (val_fraction), the layer groups and the kernel filter (min_norm)."
        )
    flat = kernels.detach().reshape(shape[0], -1)
    if not bool(torch.isfinite(flat).all()):
        raise ValueError(f"{name}[{group}] holds NaN or infinite values; check the source checkpoints.")
    return flat


# ----------------------------------------------------------------------------------------------------------------
# kernels per group from a dataset
# ----------------------------------------------------------------------------------------------------------------


def _resolve_subset(dataset: Dataset) -> tuple[Dataset, Tensor | None]:
    """The innermost dataset under (nested) ``Subset`` s and the indices into it (``None``: all of it)."""
    indices: Tensor | None = None
    while isinstance(dataset, Subset):
        idx = torch.as_tensor(list(dataset.indices) if not isinstance(dataset.indices, Tensor) else dataset.indices)
        idx = idx.long().reshape(-1)
        indices = idx if indices is None else idx[indices]
        dataset = dataset.dataset
    return dataset, indices


def _item_fields(item: Any, kernel_key: str, group_key: str) -> tuple[Tensor, int]:
    if not isinstance(item, Mapping) or kernel_key not in item or group_key not in item:
        keys = sorted(map(str, item)) if isinstance(item, Mapping) else type(item).__name__
        raise TypeError(
            f"dataset items must be dicts with the normalised kernel under kernel_key={kernel_key!r} and its group "
            f"under group_key={group_key!r} (as KernelDataset yields), got {keys}."
        )
    return torch.as_tensor(item[kernel_key]), int(item[group_key])


def kernels_by_group(
    dataset: Dataset, num_groups: int | None = None, kernel_key: str = "image", group_key: str = "group"
) -> dict[int, Tensor]:
    """Split the normalised kernels of a kernel dataset (or of a ``Subset`` of it) by group.

    Only the item contract of :class:`~monai_dwp.data.KernelDataset` is relied on: ``dataset[i]`` is a dict with
    the normalised kernel ``(1, *kernel_size)`` under ``kernel_key`` and its group index under ``group_key``. When
    the underlying dataset also exposes all items as tensors ``kernels`` ``(N, 1, *kernel_size)`` and ``groups``
    ``(N,)``, those are indexed directly (one gather instead of ``N`` item calls), after checking on a few items
    that they are what ``__getitem__`` returns; otherwise every item is read.

    Args:
        dataset: a kernel dataset, or a (nested) ``torch.utils.data.Subset`` of one, e.g. an entry of
            ``random_split(kernel_dataset, [0.9, 0.1])``.
        num_groups: the number of groups; default ``max(group) + 1``. Groups without kernels map to empty
            ``(0, *kernel_size)`` tensors, which :func:`kernel_prior_report` rejects with the group's name.
        kernel_key: the item key of the kernel.
        group_key: the item key of the group index.

    Returns:
        ``{group: kernels}`` for ``group in range(num_groups)``, kernels of shape ``(K_g, *kernel_size)`` (the
        singleton channel dropped), in dataset order.

    Raises:
        TypeError: when ``dataset`` is not a map-style dataset of such dicts.
        ValueError: on an empty dataset, or group indices outside ``[0, num_groups)``.
    """
    if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise TypeError(
            f"dataset must be a map-style dataset (KernelDataset or a Subset of one), got {type(dataset).__name__}."
        )
    if num_groups is not None:
        check_int(num_groups, "num_groups", minimum=1)
    size = len(dataset)
    if size == 0:
        raise ValueError("dataset is empty; pass the kernel dataset or a non-empty split of it.")

    base, indices = _resolve_subset(dataset)
    kernels: Tensor | None = None
    groups: Tensor | None = None
    all_kernels, all_groups = getattr(base, "kernels", None), getattr(base, "groups", None)
    if (
        isinstance(all_kernels, Tensor)
        and isinstance(all_groups, Tensor)
        and all_kernels.shape[0] == all_groups.shape[0] == len(base)  # type: ignore[arg-type]
    ):
        positions = indices if indices is not None else torch.arange(len(base))  # type: ignore[arg-type]
        probe = {int(positions[0]), int(positions[len(positions) // 2]), int(positions[-1])}
        consistent = True
        for i in probe:
            item_kernel, item_group = _item_fields(base[i], kernel_key, group_key)
            if not (
                item_kernel.shape == all_kernels[i].shape
                and torch.equal(item_kernel, all_kernels[i])
                and item_group == int(all_groups[i])
            ):
                consistent = False
                break
        if consistent:
            kernels, groups = all_kernels[positions], all_groups[positions].long()
    if kernels is None or groups is None:  # the item contract only: read every item
        fields = [_item_fields(dataset[i], kernel_key, group_key) for i in range(size)]
        kernels = torch.stack([k for k, _ in fields])
        groups = torch.tensor([g for _, g in fields], dtype=torch.long)

    if kernels.ndim >= 3 and kernels.shape[1] == 1:
        kernels = kernels.squeeze(1)
    low, high = int(groups.min()), int(groups.max())
    if num_groups is None:
        num_groups = high + 1
    if low < 0 or high >= num_groups:
        raise ValueError(
            f"dataset has group indices in [{low}, {high}], outside [0, num_groups={num_groups}); pass the "
            "num_groups the kernel dataset was built with."
        )
    return {g: kernels[groups == g] for g in range(num_groups)}


# ----------------------------------------------------------------------------------------------------------------
# the scores
# ----------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def _vae_scores(
    vae: KernelVAE, heldout: Tensor, num_z_samples: int, batch_size: int, generator: torch.Generator
) -> dict[str, Any]:
    """Negative ELBO, importance-weighted bound, reconstruction term and per-dimension KL, means over ``heldout``."""
    param = next(vae.parameters())
    device, dtype = param.device, param.dtype
    num = heldout.shape[0]
    neg_elbo = torch.zeros((), dtype=torch.float64, device=device)
    neg_iw = torch.zeros((), dtype=torch.float64, device=device)
    recon = torch.zeros((), dtype=torch.float64, device=device)
    kl_per_dim = torch.zeros(vae.latent_size, dtype=torch.float64, device=device)
    log_k = math.log(num_z_samples)
    for start in range(0, num, batch_size):
        w = heldout[start : start + batch_size].to(device=device, dtype=dtype).reshape(-1, *vae.kernel_shape)
        z_loc, z_log_scale = vae.encode(w)
        kl = standard_normal_kl(z_loc, z_log_scale)  # (B, latent): KL(r(z|w) || N(0, I)) per dimension
        z_scale = z_log_scale.exp()
        log_weights = []
        recon_batch = torch.zeros(w.shape[0], dtype=torch.float64, device=device)
        for _ in range(num_z_samples):
            eps = torch.randn(z_loc.shape, generator=generator, device=device, dtype=dtype)
            z = z_loc + z_scale * eps
            recon_loc, recon_log_scale = vae.decode(z)
            log_lik = gaussian_log_prob(w, recon_loc, recon_log_scale).flatten(1).sum(1)  # log p(w|z), (B,)
            recon_batch -= log_lik.double()
            # log p(w|z) + log N(z; 0, I) - log r(z|w), with z - z_loc = scale * eps
            log_prior = -0.5 * z.square().sum(1)
            log_posterior = -0.5 * eps.square().sum(1) - z_log_scale.sum(1)
            log_weights.append(log_lik.double() + (log_prior - log_posterior).double())
        recon_batch /= num_z_samples
        kl_batch = kl.double()
        neg_elbo += (recon_batch + kl_batch.sum(1)).sum()
        recon += recon_batch.sum()
        kl_per_dim += kl_batch.sum(0)
        neg_iw += (log_k - torch.logsumexp(torch.stack(log_weights), 0)).sum()
    kl_per_dim /= num
    return {
        "vae_nll": float(neg_elbo) / num,
        "vae_nll_iw": float(neg_iw) / num,
        "vae_recon_nll": float(recon) / num,
        "latent_kl": float(kl_per_dim.sum()),
        "active_units": int((kl_per_dim > _ACTIVE_UNIT_KL).sum()),
        "latent_kl_per_dim": kl_per_dim.cpu().tolist(),
    }


@torch.no_grad()
def _gaussian_scores(group: int, train: Tensor, heldout: Tensor, batch_size: int) -> dict[str, Any]:
    """The isotropic and the full-covariance Gaussian baselines and the train covariance spectrum (float64)."""
    x = train.double()
    num_train, dim = x.shape
    mean = x.mean(0)
    centred = x - mean
    cov = centred.T @ centred / num_train  # ML covariance, (d, d)
    trace = float(cov.diagonal().sum())
    var_iso = float(x.square().mean())  # ML s^2 of N(0, s^2 I)
    if not (trace > 0 and var_iso > 0):
        raise ValueError(
            f"the train kernels of group {group} have zero variance (all {num_train} are identical); the Gaussian "
            "baselines are undefined - check the kernel collection (min_norm, source checkpoints)."
        )
    eigvals = torch.linalg.eigvalsh(cov).flip(0).clamp_min(0.0)  # descending
    clamped = eigvals.clamp_min(1e-12 * float(eigvals.mean()))
    flatness = float(clamped.log().mean().exp() / eigvals.mean())

    cov_ridge = cov + (_RIDGE * trace / dim) * torch.eye(dim, dtype=cov.dtype, device=cov.device)
    full = MultivariateNormal(mean, covariance_matrix=cov_ridge)
    log_var_iso = math.log(var_iso)
    iso_sum = 0.0
    full_sum = 0.0
    for start in range(0, heldout.shape[0], batch_size):
        w = heldout[start : start + batch_size].to(device=x.device, dtype=torch.float64)
        iso_sum += float((0.5 * w.square().sum(1) / var_iso).sum()) + w.shape[0] * dim * (
            _HALF_LOG_2PI + 0.5 * log_var_iso
        )
        full_sum -= float(full.log_prob(w).sum())
    num = heldout.shape[0]
    return {
        "iso_gauss_nll": iso_sum / num,
        "full_gauss_nll": full_sum / num,
        "eigvals": eigvals.cpu().tolist(),
        "spectrum_flatness": flatness,
    }


def participation_ratio(kernels: Tensor) -> float:
    r"""The effective number of directions of a set of kernels: the participation ratio
    :math:`(\sum_i \lambda_i)^2 / \sum_i \lambda_i^2` of the eigenvalues of their ML covariance (``d`` for
    isotropic kernels, 1 when they vary along one direction only), in float64.

    Args:
        kernels: ``(K, ...)`` with ``K >= 2``; each kernel is flattened to ``d`` numbers.

    Raises:
        ValueError: fewer than 2 kernels, or kernels without variance.
    """
    x = kernels.reshape(kernels.shape[0], -1).double()
    if x.shape[0] < 2:
        raise ValueError(f"participation_ratio needs at least 2 kernels, got {x.shape[0]}.")
    centred = x - x.mean(0)
    eigvals = torch.linalg.eigvalsh(centred.T @ centred / x.shape[0]).clamp_min(0.0)
    if not float(eigvals.sum()) > 0:
        raise ValueError(f"the {x.shape[0]} kernels have no variance (all identical); no participation ratio.")
    return _participation(eigvals)


def _participation(eigvals: Tensor) -> float:
    """``(Σλ)² / Σλ²`` of non-negative covariance eigenvalues with a positive sum."""
    return float(eigvals.sum()) ** 2 / float(eigvals.square().sum())


@torch.no_grad()
def _sample_spread(vae: KernelVAE, train: Tensor, eigvals: Tensor, generator: torch.Generator) -> dict[str, float]:
    """How the VAE's draws spread against the train kernels (whose covariance eigenvalues ``eigvals``
    :func:`_gaussian_scores` computed): participation ratios and RMS ratios of as many decoder means and samples of
    the prior (decoder noise included, :meth:`KernelVAE.sample`) as there are train kernels (at most 20,000)."""
    num = min(max(int(train.shape[0]), 2), 20_000)
    means = vae.sample(num, generator=generator).double().cpu()
    draws = vae.sample(num, generator=generator, decoder_noise=True).double().cpu()
    kernels = train.double().cpu()
    rms = float(kernels.square().mean().sqrt())
    return {
        "pr_kernels": _participation(eigvals),
        "pr_decoder_means": participation_ratio(means),
        "pr_prior_samples": participation_ratio(draws),
        "rms_decoder_means": float(means.square().mean().sqrt()) / rms,
        "rms_prior_samples": float(draws.square().mean().sqrt()) / rms,
    }


def kernel_prior_report(
    vaes: Sequence[KernelVAE] | KernelVAEGroup,
    train_kernels: Mapping[int, Tensor] | Sequence[Tensor],
    heldout_kernels: Mapping[int, Tensor] | Sequence[Tensor],
    num_z_samples: int = 8,
    batch_size: int = 4096,
    seed: int = 0,
) -> list[dict[str, Any]]:
    r"""Score each group's kernel VAE and two Gaussian baselines on the group's held-out kernels.

    All values are means over the held-out kernels ``w`` (``d = k^3`` values each, 27 for 3×3×3) of group ``g``,
    in nats per kernel on the normalised scale (lower is better):

    - ``vae_nll``: the negative ELBO of :class:`~monai_dwp.losses.KernelVAELoss` (``beta = 1``), with the
      reconstruction term averaged over ``S = num_z_samples`` draws ``z_s ~ r(z|w)``:

      .. math::
          -\mathrm{ELBO}(w) = \frac1S \sum_{s=1}^S -\log p(w \mid z_s)
          + \mathrm{KL}\big(r(z \mid w) \,\|\, \mathcal{N}(0, I)\big) \;\ge\; -\log p(w);

    - ``vae_nll_iw``: the importance-weighted bound (IWAE, Burda et al., 2016) on the same draws, tighter:
      :math:`-\log \frac1S \sum_s p(w|z_s)\, \mathcal{N}(z_s; 0, I) / r(z_s|w) \ge -\log p(w)` in expectation;
    - ``vae_recon_nll``: the reconstruction term alone (``vae_nll - latent_kl``);
    - ``iso_gauss_nll``: :math:`-\log \mathcal{N}(w; 0, s^2 I)` with the ML :math:`s^2 = \mathrm{mean}(w^2)` over
      the group's *train* kernels;
    - ``full_gauss_nll``: :math:`-\log \mathcal{N}(w; \mu, \Sigma + \epsilon I)` with the ML mean and ``d × d``
      covariance of the train kernels and the ridge :math:`\epsilon = 10^{-6}\, \mathrm{tr}\,\Sigma / d`;
    - ``latent_kl``: the mean of :math:`\mathrm{KL}(r(z|w) \,\|\, \mathcal{N}(0, I))` (≈ 0: posterior collapse,
      the decoder ignores ``z``); ``latent_kl_per_dim`` per latent dimension and ``active_units`` the number of
      dimensions whose mean KL exceeds 0.01 nats, out of ``latent_size``;
    - ``eigvals``: the eigenvalues of the train kernels' ML covariance :math:`\Sigma`, descending (``d`` floats),
      and ``spectrum_flatness`` :math:`= \exp(\overline{\log\lambda}) / \bar\lambda \in (0, 1]` (1: isotropic,
      as i.i.d. random initial kernels are - nothing to learn beyond a scale);
    - ``pr_kernels``, ``pr_decoder_means``, ``pr_prior_samples``: the :func:`participation_ratio` (effective
      number of directions, at most ``d``) of the train kernels, of as many decoder means at
      :math:`z \sim \mathcal{N}(0, I)` and of as many samples of the prior (decoder noise included); and
      ``rms_decoder_means``, ``rms_prior_samples`` their RMS over the train kernels' RMS. The DWP initialisation
      draws decoder means by default (``dwp_init_noise`` draws prior samples): a ``pr_decoder_means`` far below
      ``pr_kernels`` means those start kernels span fewer directions than the kernels the prior was fitted to;
    - ``gain_over_iso``, ``gain_over_full``: baseline minus ``vae_nll`` (> 0: the VAE is better), and
      ``beats_iso``, ``beats_full`` whether ``vae_nll`` is below each baseline. ``vae_nll`` is an upper bound
      of the VAE's ``-log p``, so ``beats_*`` is a conservative verdict;
    - ``group``, ``num_train``, ``num_heldout``, ``latent_size``, ``num_z_samples``.

    The VAEs run in eval mode under :func:`torch.no_grad` on their own device and dtype, ``batch_size`` kernels
    at a time (each batch is decoded ``num_z_samples`` times); their train/eval mode is restored afterwards. The
    Gaussians are fitted and scored in float64 on the kernels' device.

    Args:
        vaes: the fitted VAE of each group: a :class:`~monai_dwp.networks.nets.KernelVAEGroup` or a sequence
            such as ``network.vaes``.
        train_kernels: ``{group: (K, k, k, k)}`` normalised training kernels (``(K, 1, k, k, k)`` is accepted
            too), or a list with one tensor per group; see :func:`kernels_by_group`. At least 2 per group.
        heldout_kernels: the held-out kernels, same layout; at least 1 per group.
        num_z_samples: the number ``S`` of latent draws per held-out kernel.
        batch_size: kernels per VAE forward pass.
        seed: seed of the latent draws (a :class:`torch.Generator` on each VAE's device), for reproducible
            reports. With ``num_z_samples=1`` and one batch on the CPU, ``vae_nll`` is exactly
            ``KernelVAELoss()(vae(w), w)`` after ``torch.manual_seed(seed)``.

    Returns:
        One dict per group, in group order, with the keys above (Python floats, ints, bools and lists).

    Raises:
        TypeError: on a ``vaes`` that is not KernelVAEs, kernels that are not float tensors, kernels given as
            one tensor instead of one per group, or a non-int count or ``seed``.
        ValueError: on a count < 1, when the groups of ``train_kernels`` / ``heldout_kernels`` are not
            ``0 .. len(vaes) - 1``, a kernel shape does not match its VAE, a group has too few kernels, kernels are
            not finite, or a group's train kernels have zero variance.
    """
    vae_list = _as_vae_list(vaes)
    check_int(num_z_samples, "num_z_samples", minimum=1)
    check_int(batch_size, "batch_size", minimum=1)
    check_int(seed, "seed")
    num_groups = len(vae_list)
    train = _as_group_dict("train_kernels", train_kernels, num_groups)
    heldout = _as_group_dict("heldout_kernels", heldout_kernels, num_groups)
    flat_train = [_flat_kernels("train_kernels", g, train[g], vae.kernel_shape, 2) for g, vae in enumerate(vae_list)]
    flat_held = [_flat_kernels("heldout_kernels", g, heldout[g], vae.kernel_shape, 1) for g, vae in enumerate(vae_list)]

    rows: list[dict[str, Any]] = []
    for g, vae in enumerate(vae_list):
        device = next(vae.parameters()).device
        generator = torch.Generator(device=device).manual_seed(seed + g)
        gauss = _gaussian_scores(g, flat_train[g], flat_held[g], batch_size)  # first: it checks the variance
        was_training = vae.training
        vae.eval()
        try:
            vae_scores = _vae_scores(vae, flat_held[g], num_z_samples, batch_size, generator)
            spread = _sample_spread(vae, flat_train[g], torch.tensor(gauss["eigvals"], dtype=torch.float64),
                                    generator)
        finally:
            vae.train(was_training)
        row: dict[str, Any] = {
            "group": g,
            "num_train": int(flat_train[g].shape[0]),
            "num_heldout": int(flat_held[g].shape[0]),
            **{k: vae_scores[k] for k in ("vae_nll", "vae_nll_iw", "vae_recon_nll")},
            "iso_gauss_nll": gauss["iso_gauss_nll"],
            "full_gauss_nll": gauss["full_gauss_nll"],
            "gain_over_iso": gauss["iso_gauss_nll"] - vae_scores["vae_nll"],
            "gain_over_full": gauss["full_gauss_nll"] - vae_scores["vae_nll"],
            "latent_kl": vae_scores["latent_kl"],
            "active_units": vae_scores["active_units"],
            "latent_size": int(vae.latent_size),
            "spectrum_flatness": gauss["spectrum_flatness"],
            **spread,
            "beats_iso": bool(vae_scores["vae_nll"] < gauss["iso_gauss_nll"]),
            "beats_full": bool(vae_scores["vae_nll"] < gauss["full_gauss_nll"]),
            "num_z_samples": num_z_samples,
            "eigvals": gauss["eigvals"],
            "latent_kl_per_dim": vae_scores["latent_kl_per_dim"],
        }
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------------------------
# writing the report
# ----------------------------------------------------------------------------------------------------------------


def _check_rows(rows: Any) -> list[Mapping[str, Any]]:
    if isinstance(rows, Mapping) or isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence):
        raise TypeError(
            f"rows must be the list of per-group dicts kernel_prior_report() returns, got {type(rows).__name__}."
        )
    if not rows:
        raise ValueError("rows is empty; pass the list kernel_prior_report() returns (one dict per group).")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"rows[{i}] must be a dict (a row of kernel_prior_report()), got {type(row).__name__}.")
        missing = [k for k in _REQUIRED_KEYS if k not in row]
        if missing:
            raise ValueError(f"rows[{i}] lacks the keys {missing}; pass the rows kernel_prior_report() returns.")
    return list(rows)


def _md_cell(row: Mapping[str, Any], key: str) -> str:
    if key == "participation":
        keys = ("pr_kernels", "pr_decoder_means", "pr_prior_samples")
        return " / ".join(f"{row[k]:.1f}" for k in keys) if all(k in row for k in keys) else "–"
    if key == "rms_ratio":
        keys = ("rms_decoder_means", "rms_prior_samples")
        return " / ".join(f"{row[k]:.2f}" for k in keys) if all(k in row for k in keys) else "–"
    if key == "group":
        return str(row["group"])
    if key == "kernels":
        return f"{row['num_train']} / {row['num_heldout']}"
    if key == "active_units":
        return f"{row['active_units']} / {row['latent_size']}"
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if key == "gain_over_full":
        return f"{value:+.2f}"
    if key == "spectrum_flatness":
        return f"{value:.3f}"
    return f"{value:.2f}"


def _markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    samples = rows[0].get("num_z_samples", "?")
    lines = [
        "# Kernel prior report",
        "",
        "Held-out kernels of each group, **nats per kernel on the normalised scale, lower is better**. "
        f"VAE −ELBO: the kernel VAE's negative ELBO (an upper bound of −log p, {samples} latent draws per kernel); "
        "VAE IWAE: the importance-weighted bound on the same draws. The Gaussians are fitted (maximum likelihood) "
        "on the group's training kernels. Gain over full-cov: full-cov Gaussian − VAE −ELBO (> 0: the VAE "
        "learned structure a covariance matrix cannot hold). Latent KL: mean KL(r(z|w) ‖ N(0, I)) in nats "
        "(≈ 0: posterior collapse); active units: latent dimensions with mean KL > 0.01 nats. Flatness: "
        "exp(mean log λ) / mean λ of the training kernels' covariance spectrum (1: isotropic, like random "
        "initial kernels). Effective dims: the participation ratio (Σλ)² / Σλ² of the covariance of the training "
        "kernels, of as many decoder means at z ~ N(0, I) (what the DWP initialisation draws by default) and of as "
        "many samples of the prior itself (decoder noise included, `dwp_init_noise`); RMS: their RMS over the "
        "training kernels'.",
        "",
        "| " + " | ".join(header for _, header in _MD_COLUMNS) + " |",
        "|" + "|".join("---:" for _ in _MD_COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(_md_cell(row, key) for key, _ in _MD_COLUMNS) + " |" for row in rows]
    failing = [str(r["group"]) for r in rows if not (r["beats_full"] and r["beats_iso"])]
    lines += [
        "",
        (
            f"The VAE beats both Gaussians in all {len(rows)} groups."
            if not failing
            else f"**The VAE does not beat both Gaussians in group(s) {', '.join(failing)}** (see the log warnings)."
        ),
        "",
        "![nats per kernel and covariance spectra](prior_report.png)",
        "",
    ]
    return "\n".join(lines)


def _csv_value(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return ";".join(f"{float(v):.8g}" for v in value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.10g}"
    return value


def _plot(rows: Sequence[Mapping[str, Any]], fileobj: Any) -> None:
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12.0, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    ax_nll, ax_eig = fig.subplots(1, 2)
    groups = np.arange(len(rows))
    models = (
        ("vae_nll", "VAE −ELBO", "tab:blue"),
        ("iso_gauss_nll", "isotropic Gaussian", "tab:gray"),
        ("full_gauss_nll", "full-cov Gaussian", "tab:orange"),
    )
    width = 0.8 / len(models)
    for i, (key, label, color) in enumerate(models):
        ax_nll.bar(groups + (i - 1) * width, [float(r[key]) for r in rows], width=width, label=label, color=color)
    ax_nll.axhline(0.0, color="black", linewidth=0.8)
    ax_nll.set_xticks(groups)
    ax_nll.set_xticklabels([str(r["group"]) for r in rows])
    ax_nll.set_xlabel("layer group")
    ax_nll.set_ylabel("held-out nats per kernel (lower is better)")
    ax_nll.set_title("negative log-likelihood of held-out kernels", fontsize=10)
    ax_nll.legend(fontsize=8)

    for r in rows:
        eig = np.asarray(r["eigvals"], dtype=float)
        floor = max(float(eig.max()), 1e-300) * 1e-12
        ax_eig.plot(
            np.arange(1, eig.size + 1),
            np.maximum(eig, floor),
            marker="o",
            markersize=3,
            linewidth=1,
            label=f"group {r['group']} (flatness {float(r['spectrum_flatness']):.2f})",
        )
    ax_eig.set_yscale("log")
    ax_eig.set_xlabel("eigenvalue rank")
    ax_eig.set_ylabel("eigenvalue of the train kernels' covariance")
    ax_eig.set_title("covariance spectrum per group (flat = isotropic, nothing to learn)", fontsize=10)
    ax_eig.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(fileobj, format="png")


def _failure_reasons(row: Mapping[str, Any]) -> list[str]:
    reasons = []
    if float(row["spectrum_flatness"]) >= _FLAT_SPECTRUM:
        reasons.append(
            f"the kernels are still close to their random initialisation (covariance spectrum flatness "
            f"{float(row['spectrum_flatness']):.2f} ≈ 1: nearly isotropic, little structure to learn; train the "
            "source networks longer)"
        )
    if float(row["latent_kl"]) < _COLLAPSE_KL or int(row["active_units"]) == 0:
        reasons.append(
            f"posterior collapse or an untrained encoder (latent KL {float(row['latent_kl']):.3f} nats per kernel "
            f"≈ 0, {row['active_units']} of {row['latent_size']} latent units above 0.01 nats: r(z|w) ≈ N(0, I), z "
            "carries no information about w and the decoder acts as one factorised Gaussian, which cannot beat a "
            "full-covariance one; try a KL warm-up)"
        )
    if row["beats_iso"] and float(row["latent_kl"]) >= _COLLAPSE_KL:
        reasons.append(
            f"the kernels are close to Gaussian: the full-covariance Gaussian is already "
            f"{float(row['iso_gauss_nll']) - float(row['full_gauss_nll']):.2f} nats/kernel better than the isotropic "
            f"one, and a VAE with {row['latent_size']} latent units and a factorised decoder (a nonlinear factor "
            "model) holds fewer correlated directions than the 27×27 covariance; its −ELBO is also only an upper "
            f"bound (importance-weighted: {float(row['vae_nll_iw']):.3f}). A larger `latent_size` or a Gaussian prior "
            "with the kernels' covariance may serve as well"
        )
    reasons.append(
        "too few epochs for the prior (raise `epochs` in bundles/dwp_prior/configs/train.json and check that the "
        "validation ELBO had stopped improving)"
    )
    return reasons


def _log_verdict(rows: Sequence[Mapping[str, Any]], where: Path) -> None:
    failing = [r for r in rows if not (r["beats_full"] and r["beats_iso"])]
    for r in failing:
        worse = [
            name
            for name, beaten in (("full-covariance", r["beats_full"]), ("isotropic", r["beats_iso"]))
            if not beaten
        ]
        logger.warning(
            "kernel prior, group %s: the VAE (-ELBO %.3f nats/kernel) does not beat the %s Gaussian (full-cov "
            "%.3f, isotropic %.3f nats/kernel) on %d held-out kernels; likely reasons: %s. Report: %s",
            r["group"],
            float(r["vae_nll"]),
            " and the ".join(worse),
            float(r["full_gauss_nll"]),
            float(r["iso_gauss_nll"]),
            int(r["num_heldout"]),
            "; ".join(_failure_reasons(r)),
            where,
        )
    if not failing:
        gains = [float(r["gain_over_full"]) for r in rows]
        logger.info(
            "kernel prior: the VAE beats the isotropic and the full-covariance Gaussian in all %d groups "
            "(gain over full-cov %.3f to %.3f nats/kernel). Report: %s",
            len(rows),
            min(gains),
            max(gains),
            where,
        )


def write_kernel_prior_report(
    rows: Sequence[Mapping[str, Any]], output_dir: str | os.PathLike
) -> dict[str, Path]:
    """Write the rows of :func:`kernel_prior_report` as ``prior_report.md``, ``.csv`` and ``.png``, and log a verdict.

    - ``prior_report.md``: one table row per group (kernels train / held-out, VAE −ELBO, VAE IWAE, isotropic
      Gaussian, full-cov Gaussian, gain over full-cov, latent KL, active units, flatness) and a verdict;
    - ``prior_report.csv``: every key of the rows, one line per group (``eigvals`` and ``latent_kl_per_dim``
      as ``;``-separated numbers);
    - ``prior_report.png``: left the held-out nats per kernel of the three models per group (grouped bars),
      right the covariance eigenvalue spectrum of each group (log y-axis). Drawn with matplotlib's Agg canvas;
      no global matplotlib state changes.

    Every file is written to a temporary file in ``output_dir`` and moved over the target with ``os.replace``,
    so a reader never sees a partial file. On the ``"monai_dwp.metrics"`` logger, a WARNING names every group
    whose VAE does not beat both Gaussians, with both numbers and the likely reasons (kernels still near their
    random initialisation, posterior collapse, too few epochs); an INFO line says when all groups beat both.

    Args:
        rows: the list :func:`kernel_prior_report` returns.
        output_dir: the folder to write to (created if missing).

    Returns:
        ``{"md": path, "csv": path, "png": path}``.

    Raises:
        TypeError: when ``rows`` is not a list of dicts.
        ValueError: when ``rows`` is empty or a row lacks a key of :func:`kernel_prior_report`.
    """
    checked = _check_rows(rows)
    if not isinstance(output_dir, (str, os.PathLike)):
        raise TypeError(f"output_dir must be a str or os.PathLike, got {type(output_dir).__name__}.")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "prior_report.md", "csv": out / "prior_report.csv", "png": out / "prior_report.png"}

    atomic_write(paths["md"], "w", lambda f: f.write(_markdown(checked)))

    columns = list(_CSV_COLUMNS) + sorted({k for r in checked for k in r} - set(_CSV_COLUMNS))

    def write_csv(f: io.TextIOBase) -> None:
        writer = csv.writer(f)
        writer.writerow(columns)
        for r in checked:
            writer.writerow([_csv_value(r.get(c, "")) for c in columns])

    atomic_write(paths["csv"], "w", write_csv)
    atomic_write(paths["png"], "wb", lambda f: _plot(checked, f))
    _log_verdict(checked, paths["md"])
    return paths


# ----------------------------------------------------------------------------------------------------------------
# the bundle entry point
# ----------------------------------------------------------------------------------------------------------------


def prior_report(
    network: KernelVAEGroup | Sequence[KernelVAE],
    kernel_split: Sequence[Dataset],
    output_dir: str | os.PathLike,
    num_groups: int | None = None,
    num_z_samples: int = 8,
    batch_size: int = 4096,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Score the fitted kernel prior on the held-out kernels and write ``prior_report.{md,csv,png}``.

    The one call for the ``finalize`` section of ``bundles/dwp_prior/configs/train.json``, after the best
    checkpoint is loaded into ``network``::

        "$monai_dwp.metrics.prior_report(@network, @kernel_split, @output_dir, @num_groups)"

    It splits both parts of the split by group (:func:`kernels_by_group`), runs :func:`kernel_prior_report`
    and :func:`write_kernel_prior_report` (which logs the verdict on the ``"monai_dwp.metrics"`` logger).

    Args:
        network: the :class:`~monai_dwp.networks.nets.KernelVAEGroup` (or its ``.vaes``).
        kernel_split: ``[train_subset, heldout_subset]``, what ``torch.utils.data.random_split`` returns for
            the kernel dataset.
        output_dir: the folder of the report files.
        num_groups: the expected number of groups (checked against the VAEs); default ``len(network.vaes)``.
        num_z_samples: latent draws per held-out kernel.
        batch_size: kernels per VAE forward pass.
        seed: seed of the latent draws.

    Returns:
        The rows of :func:`kernel_prior_report`, one dict per group.

    Raises:
        TypeError: when ``kernel_split`` is not a pair of datasets or ``network`` holds no KernelVAEs.
        ValueError: when ``num_groups`` differs from the number of VAEs, or as the functions above.
    """
    vae_list = _as_vae_list(network, "network")
    if num_groups is None:
        num_groups = len(vae_list)
    check_int(num_groups, "num_groups", minimum=1)
    if num_groups != len(vae_list):
        raise ValueError(
            f"num_groups is {num_groups} but network has {len(vae_list)} VAEs; pass the num_groups the prior was "
            "built with (@num_groups)."
        )
    if isinstance(kernel_split, (str, bytes, Mapping)) or not isinstance(kernel_split, Sequence):
        raise TypeError(
            "kernel_split must be the [train_subset, heldout_subset] list of torch.utils.data.random_split, got "
            f"{type(kernel_split).__name__}."
        )
    if len(kernel_split) != 2:
        raise ValueError(
            f"kernel_split must have two parts [train, held-out], got {len(kernel_split)}; split the kernel dataset "
            "with random_split(dataset, [1 - val_fraction, val_fraction])."
        )
    train = kernels_by_group(kernel_split[0], num_groups)
    heldout = kernels_by_group(kernel_split[1], num_groups)
    rows = kernel_prior_report(vae_list, train, heldout, num_z_samples=num_z_samples, batch_size=batch_size, seed=seed)
    write_kernel_prior_report(rows, output_dir)
    return rows
