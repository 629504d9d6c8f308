r"""The Deep Weight Prior (Atanov et al., ICLR 2019): a kernel VAE as the prior over convolution kernels."""

from __future__ import annotations

import logging
import math
import os
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from monai_dwp.losses.gaussian_prior import GaussianPrior
from monai_dwp.losses.kl import gaussian_entropy, gaussian_log_prob, standard_normal_kl
from monai_dwp.networks.layers.bayesian_conv import BayesianConv
from monai_dwp.networks.nets.kernel_vae import KernelVAE
from monai_dwp.networks.utils import bayesian_modules
from monai_dwp.utils.io import atomic_write, load_checkpoint
from monai_dwp.utils.precision import check_compute_dtype, resolve_compute_dtype
from monai_dwp.utils.validation import check_int

__all__ = ["DeepWeightPrior", "dwp_initialize", "DWP_CHECKPOINT_FORMAT"]

logger = logging.getLogger(__name__)

DWP_CHECKPOINT_FORMAT = "monai_dwp.DeepWeightPrior/1"
_VAE_CONFIG_KEYS = ("spatial_dims", "kernel_size", "latent_size", "hidden_channels", "log_scale_bounds")


def _vae_config(vae: KernelVAE) -> dict[str, Any]:
    """The constructor arguments of a :class:`KernelVAE`, read back from its attributes."""
    return {key: getattr(vae, key) for key in _VAE_CONFIG_KEYS if hasattr(vae, key)}


def _as_tuple(kernel_size: Any, spatial_dims: int) -> tuple[int, ...]:
    return (int(kernel_size),) * spatial_dims if isinstance(kernel_size, int) else tuple(int(k) for k in kernel_size)


@dataclass
class _KernelCache:
    """The last estimate of each kernel's cross-entropy term of one group (``refresh_interval > 1``).

    ``loc`` and ``log_scale`` are the posterior parameters at which kernel ``j``'s ``value`` and gradients were
    estimated, all ``(K, *kernel_size)`` but ``value`` ``(K,)``; ``key`` describes the layers (names, shapes, device,
    dtype) and ``params`` refers weakly to their ``loc`` parameters, so the rows belong to those very tensors and to
    no network built later in their place; ``calls`` counts the refreshing calls, which pick the slice refreshed
    next. A refresh replaces the tensors (never writes into them): a graph returned earlier keeps its own.
    """

    key: tuple[Any, ...]
    params: tuple[weakref.ref, ...]
    loc: Tensor
    log_scale: Tensor
    value: Tensor
    grad_loc: Tensor
    grad_log_scale: Tensor
    calls: int = 0


def _check_group_layout(path: Path, payload: Mapping[str, Any]) -> None:
    """Raise when a prior checkpoint's VAEs, scales and layer -> group map describe different group layouts."""
    refit = "refit the prior with `python -m monai.bundle run --config_file bundles/dwp_prior/configs/train.json`"
    configs, states = payload.get("vae_configs"), payload.get("vae_state_dicts")
    scales, groups = payload.get("scales"), payload.get("layer_groups")
    if not isinstance(configs, list) or not isinstance(states, list) or len(configs) != len(states) or not configs:
        found = [len(v) if isinstance(v, list) else type(v).__name__ for v in (configs, states)]
        raise ValueError(
            f"prior checkpoint {str(path)!r} is incomplete, got {found[0]} VAE config(s) and {found[1]} VAE weight "
            f"set(s); {refit}."
        )
    num_vaes = len(configs)
    if not isinstance(scales, list) or len(scales) != num_vaes:
        raise ValueError(
            f"prior checkpoint {str(path)!r} holds {num_vaes} VAE(s), one per group, but its group scales do not "
            f"match, got scales={scales!r}; {refit}."
        )
    if not isinstance(groups, Mapping) or not groups:
        raise ValueError(f"prior checkpoint {str(path)!r} has no layer -> group map, got {groups!r}; {refit}.")
    used = sorted({g for g in groups.values() if isinstance(g, int)})
    if used != list(range(num_vaes)) or len(used) != len(set(groups.values())):
        raise ValueError(
            f"prior checkpoint {str(path)!r} holds {num_vaes} VAE(s), one per group 0..{num_vaes - 1}, but its "
            f"layer_groups do not use exactly these groups, got groups {sorted(set(map(str, groups.values())))}: "
            f"its VAEs and its layer -> group map come from different group layouts (num_groups); {refit} (one run "
            "writes both)."
        )


class DeepWeightPrior(nn.Module):
    r"""Monte Carlo upper bound of :math:`\mathrm{KL}(q(w) \,\|\, p_\text{DWP}(w))` summed over a network.

    The prior over one kernel :math:`w` (a slice ``W[o, i]`` of a convolution weight, ``d`` values) is the
    marginal of a kernel VAE, :math:`p(w) = \int p(w \mid z)\, p(z)\, dz` with the decoder as
    :math:`p(w \mid z)` and :math:`p(z) = \mathcal{N}(0, I)`. With the encoder as the auxiliary
    :math:`r(z \mid w)`, for the factorized Gaussian posterior :math:`q(w)` of a kernel,

    .. math::
        \mathrm{KL}(q(w) \,\|\, p(w)) \le -H(q(w))
        + \mathbb{E}_{q(w)}\Big[\mathrm{KL}(r(z \mid w) \,\|\, p(z))
        - \mathbb{E}_{r(z \mid w)} \log p(w \mid z)\Big].

    The entropy is closed form; the expectations are estimated with ``num_samples`` reparameterized draws of
    :math:`w` and one of :math:`z` per draw, so the estimate is differentiable in the posterior's ``loc`` and
    ``log_scale``. The bound is summed over the kernels of every covered layer.

    **Groups and scales.** Layers are mapped to groups (``layer_groups``, one VAE per group). The VAE of layer
    :math:`l`'s group models its kernels on the normalised scale :math:`u = w / s_l`, with :math:`s_l` the
    layer's own scale (``layer_scales``, the RMS of its source kernels) or, without ``layer_scales``, the group's
    :math:`s_g`; the density on the raw scale carries the Jacobian,
    :math:`\log p(w) = \log p_\text{vae}(w / s_l) - d \log s_l`, hence the :math:`+ d \log s_l` per kernel in
    the cross-entropy term. Per-layer scales matter: layers of one group differ in weight scale by up to 4× (the
    image-facing ``init_conv`` against the wide inner layers), and one shared scale would make the VAE model
    those layers' kernels as too large or too small.

    **Cost.** Each VAE is evaluated once per step on all (or ``max_kernels``) kernels of its group, as one
    batch. With ``max_kernels`` set, a uniform subsample of ``m`` of a group's ``K`` kernels (without
    replacement) estimates the cross-entropy term, scaled by ``K / m``: unbiased, with more variance, and the
    gradient of a step reaches only the ``m`` sampled kernels (``K / m`` times too large), so its cosine to the
    all-kernel gradient falls like :math:`\sqrt{m / K}`.

    **Refreshing a rotating slice** (``refresh_interval = R > 1``). Every kernel keeps the last estimate of its
    cross-entropy term :math:`c_j`, of its gradient :math:`g_j` and the posterior parameters
    :math:`\theta_j^0 = (\mu_j^0, \log\sigma_j^0)` they were estimated at. Each call with gradients enabled
    re-estimates one slice of every group, the kernels ``j ≡ t (mod R)`` at the ``t``-th call (one VAE pass over
    ``K / R`` kernels), and the term of every kernel is its first-order expansion around its estimate,

    .. math::
        c_j + g_j^\top (\theta_j - \theta_j^0),

    exact in value for the refreshed slice (:math:`\theta_j = \theta_j^0`), with gradient :math:`g_j` for all.
    So every kernel gets a gradient at every step, at most ``R - 1`` steps old; at a fixed posterior each cached
    :math:`g_j` is a one-draw estimate at the current parameters, so the estimator is unbiased there, and its bias
    while training is the drift of the posterior over ``R`` steps (``benchmarks/speed.py`` measures the cosine
    to the all-kernel gradient along a training run). The first call, and the first for other layers (another
    network, other parameter tensors, device or dtype), estimates every kernel; after an edit of the parameters
    in place (``load_state_dict``) call :meth:`reset_cache`. Calls without gradients return the expansion and
    refresh nothing; every call with gradients refreshes a slice, except inside :meth:`cache_preserved` (a
    logging handler's estimate). Costs
    ``1 / R`` of the all-kernel VAE pass per step, plus a few element-wise operations over all kernels, and
    memory for five tensors the size of the covered kernels. With ``train_encoder`` the encoders get the
    refreshed slice's gradient scaled by ``K / |slice|`` (about ``R``), unbiased over a whole rotation; encoder
    updates also age the cached terms.

    **Gaussian control variate** (``control_variate=True``). Let
    :math:`h_j(w) = -\log \mathcal{N}(w; s_l m_g, s_l^2 \Sigma_g)` be the cross-entropy integrand of a Gaussian
    moment-matched to the group's VAE (``control_samples`` draws of :math:`p(w)`, with a fixed seed), whose
    expectation under :math:`q` is closed form,

    .. math::
        g_j = \mathbb{E}_{q(w_j)}[h_j(w_j)] = \tfrac{1}{2}\big[(\mu_j / s_l - m_g)^\top \Sigma_g^{-1}
        (\mu_j / s_l - m_g) + \operatorname{tr}(\Sigma_g^{-1} \operatorname{diag}(\sigma_j^2) / s_l^2)
        + \log\lvert 2\pi \Sigma_g \rvert\big] + d \log s_l .

    Kernel :math:`j`'s term is estimated as :math:`g_j + \big(\hat c_j(w_j) - h_j(w_j)\big)`, the residual at the
    *same* draw :math:`w_j = \mu_j + \sigma_j \odot \varepsilon_j` as the VAE's estimate :math:`\hat c_j`. Its
    expectation is unchanged (:math:`\mathbb{E}_q[h_j] = g_j`), and the part of the draw's noise that the Gaussian
    explains, :math:`\Sigma_g^{-1}(w_j / s_l - m_g)` in the gradient, cancels in the residual; :math:`g_j` is exact
    (a ``d × d`` quadratic form per kernel, negligible next to a VAE pass). So with every kernel estimated at every
    call it reduces the variance at the cost of two quadratic forms per kernel; with a refresh only the residual goes
    stale (the Gaussian part is evaluated for every kernel at every call), and with a subsample only the residual's
    variance is what the left-out kernels add. The closer the VAE's density is to its Gaussian, the more of the
    noise cancels.

    **Precision** (``compute_dtype``). The VAE passes are matrix products over tens of thousands of kernels. With
    ``compute_dtype="bfloat16"`` they run under :func:`torch.autocast` in bfloat16, while the VAE's output heads,
    the reparameterization and every log-density stay in float32 (:class:`~monai_dwp.networks.nets.KernelVAE`):
    the same estimator, with each product rounded to 8 significant bits. Measured over the 33,808 kernels of the
    appendix-B network with the transfer benchmark's prior (same draws): the gradient's cosine to the float32 one
    is 1.0000 and the bound moves by about 0.0006 nats per kernel, against a Monte Carlo spread of one draw of
    about 0.007; the pass is about 2 times faster on a CPU with native bfloat16 (``benchmarks/results/speed.md``).
    ``"auto"`` uses bfloat16 on a device that multiplies it in hardware (:func:`~monai_dwp.utils.native_bfloat16`:
    CUDA with bfloat16, AVX512-BF16 or AMX CPUs; decided once per device type) and float32 elsewhere, where
    bfloat16 would be emulated.

    **Uncovered layers.** Bayesian layers not in ``layer_groups`` (other kernel sizes, 1×1×1 convolutions, a
    new layer) get ``fallback_prior`` (by default an explicit :class:`GaussianPrior` ``N(0, 1)``), never a
    silent zero; ``strict=True`` makes them an error instead.

    **Trainable parts.** The decoders are always frozen; the encoders are fine-tuned with the posterior when
    ``train_encoder`` (then add ``prior.parameters()`` to the optimizer). The VAEs stay in eval mode.

    Args:
        vaes: one :class:`~monai_dwp.networks.nets.KernelVAE` per group.
        scales: the positive normalising scale :math:`s_g` of each group.
        layer_groups: ``{qualified layer name: group index}`` for the covered layers (names as
            ``network.named_modules()`` gives them).
        num_samples: number of Monte Carlo draws of :math:`w` per kernel and step.
        max_kernels: if set, the number of kernels per group sampled per step; ``None`` uses all.
        train_encoder: let the encoders (the auxiliary :math:`r(z|w)`) be fine-tuned.
        fallback_prior: the prior of uncovered Bayesian layers; a module ``f(network) -> Tensor`` with a
            ``kl_layers({name: layer}) -> Tensor`` method, like :class:`GaussianPrior`.
        strict: raise for uncovered Bayesian layers instead of using the fallback.
        layer_scales: ``{layer: s_l}`` for every layer of ``layer_groups`` (as
            :class:`~monai_dwp.data.KernelDataset` computes them); ``None`` uses the group scales.
        refresh_interval: re-estimate each kernel's term every ``refresh_interval`` calls, a rotating slice of
            ``1 / refresh_interval`` of every group per call, and use the cached expansion in between (see
            *Refreshing a rotating slice*); ``1`` estimates every kernel at every call. Not combined with
            ``max_kernels``.
        control_variate: estimate only the residual against a Gaussian fitted to each VAE, at the same draws, and
            the Gaussian part exactly for every kernel at every call (see *Gaussian control variate*).
        control_samples: the number of draws of each VAE's :math:`p(w)` the Gaussian is fitted to.
        compute_dtype: the precision of the VAE passes (see *Precision*): ``None`` or ``"float32"`` (the VAE's own
            dtype, under whatever autocast state the caller set), ``"bfloat16"``, or ``"auto"`` (bfloat16 where the
            device does it in hardware).

    Example::

        prior = DeepWeightPrior.load("runs/prior/dwp_prior.pt", max_kernels=4096)
        kl = prior(net)  # scalar upper bound of KL(q || p), differentiable
    """

    def __init__(
        self,
        vaes: Sequence[KernelVAE],
        scales: Sequence[float],
        layer_groups: Mapping[str, int],
        num_samples: int = 1,
        max_kernels: int | None = None,
        train_encoder: bool = False,
        fallback_prior: nn.Module | None = None,
        strict: bool = False,
        layer_scales: Mapping[str, float] | None = None,
        refresh_interval: int = 1,
        control_variate: bool = False,
        control_samples: int = 8192,
        compute_dtype: str | torch.dtype | None = None,
    ) -> None:
        super().__init__()
        vaes = list(vaes)
        if not vaes or not all(isinstance(v, KernelVAE) for v in vaes):
            raise TypeError(f"vaes must be a non-empty sequence of KernelVAE, got {vaes!r}.")
        scales = [float(s) for s in scales]
        if len(scales) != len(vaes):
            raise ValueError(f"scales must have one entry per VAE ({len(vaes)}), got {len(scales)}: {scales}.")
        if not all(math.isfinite(s) and s > 0 for s in scales):
            raise ValueError(f"every scale must be a finite float > 0, got {scales}.")
        if not isinstance(layer_groups, Mapping) or not layer_groups:
            raise ValueError(f"layer_groups must be a non-empty mapping name -> group index, got {layer_groups!r}.")
        bad = {n: g for n, g in layer_groups.items() if not isinstance(g, int) or not 0 <= g < len(vaes)}
        if bad:
            raise ValueError(f"layer_groups maps to group indices outside [0, {len(vaes)}): {bad}.")
        check_int(num_samples, "num_samples", minimum=1)
        if max_kernels is not None:
            check_int(max_kernels, "max_kernels", minimum=1, hint="or None for all kernels")
        check_int(refresh_interval, "refresh_interval", minimum=1, hint="1 re-estimates every kernel at every call")
        if not isinstance(control_variate, bool):
            raise TypeError(f"control_variate must be a bool, got {type(control_variate).__name__}: {control_variate!r}.")
        check_int(control_samples, "control_samples", minimum=2, hint="e.g. 8192 draws of each VAE's p(w)")
        compute_dtype = check_compute_dtype(
            compute_dtype,
            float16_hint="float16's largest value, 65504, cannot hold the log-densities' exp(-2 log_scale);",
            advice="use 'bfloat16' for fast VAE passes or None for float32.",
        )
        if max_kernels is not None and refresh_interval > 1:
            raise ValueError(
                f"max_kernels={max_kernels} and refresh_interval={refresh_interval} are two ways to cut the cost of "
                "the term; choose one: max_kernels=None (refresh a rotating slice) or refresh_interval=1 (subsample)."
            )
        if layer_scales is not None:
            layer_scales = {str(n): float(v) for n, v in dict(layer_scales).items()}
            missing = sorted(set(layer_groups) - set(layer_scales))
            if missing:
                raise ValueError(
                    f"layer_scales must give a scale for every layer of layer_groups; missing {missing[:5]}; "
                    "pass layer_scales=None to use the per-group scales."
                )
            bad_scales = {n: v for n, v in layer_scales.items() if not (math.isfinite(v) and v > 0)}
            if bad_scales:
                raise ValueError(f"every layer scale must be a finite float > 0, got {bad_scales}.")
        self.vaes = nn.ModuleList(vaes)
        self.register_buffer("scales", torch.tensor(scales, dtype=torch.float32))
        self.layer_scales: dict[str, float] | None = layer_scales
        self.layer_groups = dict(layer_groups)
        self.num_samples = num_samples
        self.max_kernels = max_kernels
        self.refresh_interval = int(refresh_interval)
        self._caches: dict[int, _KernelCache] = {}
        self.control_variate = control_variate
        self.control_samples = int(control_samples)
        self.compute_dtype: torch.dtype | str | None = compute_dtype
        self._auto_dtypes: dict[str, torch.dtype | None] = {}  # "auto" resolved per device type
        self._moments: dict[tuple[int, torch.device, torch.dtype], tuple[Tensor, Tensor, Tensor]] = {}
        self.train_encoder = bool(train_encoder)
        self.strict = bool(strict)
        self.fallback_prior = fallback_prior if fallback_prior is not None else GaussianPrior(0.0, 1.0)
        for vae in self.vaes:
            vae.eval()
            vae.decoder.requires_grad_(False)
            vae.encoder.requires_grad_(self.train_encoder)
        self._warned_uncovered = False

    def __getstate__(self) -> dict[str, Any]:
        # the kernel cache refers weakly to a network's parameters: a pickled copy starts without it
        state = super().__getstate__()
        state["_caches"] = {}
        state["_moments"] = {}
        return state

    def train(self, mode: bool = True) -> DeepWeightPrior:
        """Set the training flag of the fallback prior; the VAEs always stay in eval mode."""
        super().train(mode)
        self.vaes.eval()
        return self

    # ------------------------------------------------------------------ checks
    def kernel_size_of(self, group: int) -> tuple[int, ...]:
        """The kernel shape modelled by group ``group``'s VAE, e.g. ``(3, 3, 3)``."""
        vae = self.vaes[group]
        return _as_tuple(vae.kernel_size, getattr(vae, "spatial_dims", 3))

    def check_network(self, network: nn.Module) -> tuple[dict[str, BayesianConv], dict[str, BayesianConv]]:
        """Check that this prior fits ``network`` and split its Bayesian layers into covered and uncovered.

        Every covered layer must exist in ``network`` as a :class:`BayesianConv` whose kernel has the shape its
        group's VAE models. Channel counts may differ from the source network (the prior acts per kernel).

        Returns:
            ``(covered, uncovered)`` as ``{name: layer}``.

        Raises:
            ValueError: naming the layer, the expected and the found kernel shape; or the uncovered layers when
                ``strict``.
        """
        layers = bayesian_modules(network)
        modules = dict(network.named_modules())
        covered: dict[str, BayesianConv] = {}
        for name, group in self.layer_groups.items():
            expected = self.kernel_size_of(group)
            layer = layers.get(name)
            if layer is None:
                found = type(modules[name]).__name__ if name in modules else "no such module"
                raise ValueError(
                    f"the prior covers layer {name!r} (group {group}, kernel {expected}) but the network has "
                    f"{found} there, not a BayesianConv; build the network the prior was fitted for "
                    "(e.g. DWPUNet(bayesian=True)) or refit the prior on its layers."
                )
            if tuple(layer.kernel_size) != expected:
                raise ValueError(
                    f"layer {name!r}: the prior's VAE (group {group}) expects kernels of shape {expected}, "
                    f"found {tuple(layer.kernel_size)} (weight {tuple(layer.loc.shape)}); the checkpoint does "
                    "not fit this network."
                )
            covered[name] = layer
        uncovered = {n: m for n, m in layers.items() if n not in covered}
        if uncovered and self.strict:
            raise ValueError(
                f"strict=True but Bayesian layers {sorted(uncovered)} are not covered by the prior's "
                "layer_groups; add them to a group or set strict=False to use the fallback prior."
            )
        if uncovered and not self._warned_uncovered:
            logger.info("DeepWeightPrior: fallback prior %s for layers %s", self.fallback_prior, sorted(uncovered))
            self._warned_uncovered = True
        return covered, uncovered

    # ------------------------------------------------------------------ the bound
    def cross_entropy_term(
        self, group: int, loc: Tensor, log_scale: Tensor, scale: Tensor | None = None, reduction: str = "sum"
    ) -> Tensor:
        r"""Sum over kernels of :math:`\mathbb{E}_{q(w)}[\mathrm{KL}(r(z|w)\|p(z)) - \mathbb{E}_{r(z|w)}\log p(w|z)]`.

        Args:
            group: the VAE to use.
            loc: posterior locations of ``K`` kernels, ``(K, *kernel_size)`` on the raw scale.
            log_scale: posterior log-scales, same shape.
            scale: the normalising scale of each kernel, ``(K,)``; default the group's scale for all.
            reduction: ``"sum"`` over kernels, or ``"none"`` for one value per kernel.

        Returns:
            The Monte Carlo estimate (``num_samples`` draws of ``w``, one ``z`` each): a scalar summed over kernels,
            or ``(K,)`` with ``reduction="none"``.
        """
        if reduction not in ("sum", "none"):
            raise ValueError(f"reduction must be 'sum' or 'none', got {reduction!r}.")
        per_kernel, _ = self._sampled_terms(group, loc, log_scale, scale, gaussian=False)
        return per_kernel if reduction == "none" else per_kernel.sum()

    def _sampled_terms(self, group: int, loc: Tensor, log_scale: Tensor, scale: Tensor | None,
                       gaussian: bool) -> tuple[Tensor, Tensor | None]:
        r"""Per kernel ``(K,)``: the Monte Carlo cross-entropy term of :meth:`cross_entropy_term` and, with
        ``gaussian``, :math:`-\log \mathcal{N}(w; s\, m_g, s^2 \Sigma_g)` at the very same draws of :math:`w` (the
        sampled control variate, whose expectation is :meth:`gaussian_cross_entropy`), both averaged over the
        ``num_samples`` draws; ``None`` in place of the second without ``gaussian``."""
        vae = self.vaes[group]
        n, k = self.num_samples, loc.shape[0]
        d = loc[0].numel()
        if scale is None:
            scale = self.scales[group].expand(k)
        scale = scale.to(loc).reshape(k, *([1] * (loc.ndim - 1)))
        eps = torch.randn((n, *loc.shape), device=loc.device, dtype=loc.dtype)
        u = ((loc + log_scale.exp() * eps) / scale).reshape(n * k, 1, *loc.shape[1:])
        with self._precision(loc.device):
            z_loc, z_log_scale = vae.encode(u)
            z = z_loc + z_log_scale.exp() * torch.randn_like(z_loc)
            recon_loc, recon_log_scale = vae.decode(z)
        kl_z = standard_normal_kl(z_loc, z_log_scale).flatten(1).sum(1)
        nll = -gaussian_log_prob(u, recon_loc, recon_log_scale).flatten(1).sum(1)
        jacobian = d * scale.log().flatten()
        per_kernel = (kl_z + nll).view(n, k).mean(0) + jacobian
        if not gaussian:
            return per_kernel, None
        mean, precision, log_det = self.gaussian_moments(group)
        with torch.autocast(loc.device.type, enabled=False):  # a quadratic form: the residual needs full precision
            diff = u.reshape(n * k, d).to(precision.dtype) - mean
            quadratic = ((diff @ precision) * diff).sum(1).view(n, k).mean(0)
            control = 0.5 * (quadratic + d * math.log(2 * math.pi) + log_det) + jacobian.to(quadratic.dtype)
        return per_kernel, control.to(per_kernel.dtype)

    def autocast_dtype(self, device: torch.device | str) -> torch.dtype | None:
        """The dtype the VAE passes run in on ``device`` under ``compute_dtype`` (``"auto"`` resolved by
        :func:`~monai_dwp.utils.native_bfloat16`), or ``None`` for the VAE's own dtype."""
        return resolve_compute_dtype(self.compute_dtype, device, self._auto_dtypes)

    @contextmanager
    def _precision(self, device: torch.device) -> Iterator[None]:
        dtype = self.autocast_dtype(device)
        if dtype is None:
            yield
            return
        with torch.autocast(device.type, dtype=dtype):
            yield

    @torch.no_grad()
    def gaussian_moments(self, group: int) -> tuple[Tensor, Tensor, Tensor]:
        r"""The Gaussian of group ``group``'s control variate: mean :math:`m_g` ``(d,)``, precision
        :math:`\Sigma_g^{-1}` ``(d, d)`` and :math:`\log\lvert\Sigma_g\rvert` (0-d) of ``control_samples``
        draws of the VAE's :math:`p(w)` on its normalised scale (decoder mean plus decoder noise, seed 0: the same
        Gaussian at every call and in every process; the training's random stream is not touched). Computed once
        per group, device and dtype."""
        vae = self.vaes[group]
        ref = next(vae.parameters())
        key = (group, ref.device, ref.dtype)
        if key not in self._moments:
            generator = torch.Generator(ref.device).manual_seed(0)
            draws = vae.sample(self.control_samples, generator=generator, decoder_noise=True).flatten(1).double()
            mean = draws.mean(0)
            centred = draws - mean
            cov = centred.T @ centred / (draws.shape[0] - 1)
            cov = cov + 1e-6 * cov.diagonal().mean() * torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
            chol = torch.linalg.cholesky(cov)
            self._moments[key] = (mean.to(ref.dtype), torch.cholesky_inverse(chol).to(ref.dtype),
                                  (2 * chol.diagonal().log().sum()).to(ref.dtype))
        return self._moments[key]

    def gaussian_cross_entropy(self, group: int, loc: Tensor, log_scale: Tensor, scale: Tensor | None = None,
                               reduction: str = "sum") -> Tensor:
        r"""Closed-form :math:`\mathbb{E}_{q(w)}[-\log \mathcal{N}(w; s\, m_g, s^2 \Sigma_g)]` per kernel, the
        control variate of the cross-entropy term (:meth:`gaussian_moments`; see *Gaussian control variate*).

        Args:
            group: the VAE whose Gaussian to use.
            loc, log_scale: posterior parameters of ``K`` kernels, ``(K, *kernel_size)`` on the raw scale.
            scale: the normalising scale of each kernel, ``(K,)``; default the group's scale for all.
            reduction: ``"sum"`` over kernels, or ``"none"`` for one value per kernel.

        Returns:
            A scalar, or ``(K,)`` with ``reduction="none"``; differentiable in ``loc`` and ``log_scale``.
        """
        if reduction not in ("sum", "none"):
            raise ValueError(f"reduction must be 'sum' or 'none', got {reduction!r}.")
        mean, precision, log_det = (t.to(loc.dtype) for t in self.gaussian_moments(group))
        k, d = loc.shape[0], loc[0].numel()
        if scale is None:
            scale = self.scales[group].expand(k)
        scale = scale.to(loc).reshape(k, 1)
        diff = loc.reshape(k, d) / scale - mean  # (K, d) on the normalised scale
        variance = (2 * log_scale.reshape(k, d)).exp() / scale**2
        per_kernel = 0.5 * (((diff @ precision) * diff).sum(1) + variance @ precision.diagonal()
                            + d * math.log(2 * math.pi) + log_det) + d * scale.log().flatten()
        return per_kernel if reduction == "none" else per_kernel.sum()

    def _estimated_term(self, group: int, loc: Tensor, log_scale: Tensor, scale: Tensor,
                        reduction: str = "sum") -> Tensor:
        """What a Monte Carlo estimate (all kernels, a refresh or a subsample) takes of the cross-entropy term: the
        term itself, or with ``control_variate`` its residual against the Gaussian at the same draws (the caller adds
        the Gaussian's closed form, :meth:`gaussian_cross_entropy`, for every kernel)."""
        term, control = self._sampled_terms(group, loc, log_scale, scale, gaussian=self.control_variate)
        if control is not None:
            term = term - control
        return term if reduction == "none" else term.sum()

    def _cached_cross_entropy_term(
        self, group: int, layers: Mapping[str, BayesianConv], loc: Tensor, log_scale: Tensor, scale: Tensor
    ) -> Tensor:
        """The cross-entropy term of ``group`` from its cache, refreshing one rotating slice (``refresh_interval``).

        Args:
            group: the VAE to use.
            layers: the group's covered layers, in the order of the rows of ``loc``.
            loc, log_scale: the layers' kernels, ``(K, *kernel_size)``, attached to the network's parameters.
            scale: the normalising scale of each kernel, ``(K,)``.
        """
        num_kernels = loc.shape[0]
        key = (tuple((name, tuple(layer.loc.shape)) for name, layer in layers.items()), loc.device, loc.dtype)
        cache = self._caches.get(group)
        grad_enabled = torch.is_grad_enabled()
        same_layers = cache is not None and cache.key == key and all(
            ref() is layer.loc for ref, layer in zip(cache.params, layers.values()))
        if not same_layers:
            if not grad_enabled:  # nothing cached for these layers: a plain estimate, nothing kept
                return self._estimated_term(group, loc, log_scale, scale)
            zeros = loc.detach().new_zeros(loc.shape)
            cache = self._caches[group] = _KernelCache(
                key, tuple(weakref.ref(layer.loc) for layer in layers.values()), zeros, zeros,
                zeros.new_zeros(num_kernels), zeros, zeros,
            )
            index: Tensor | None = torch.arange(num_kernels, device=loc.device)
        elif grad_enabled:
            index = torch.arange(cache.calls % self.refresh_interval, num_kernels, self.refresh_interval,
                                 device=loc.device)
            cache.calls += 1
        else:
            index = None
        encoder_term = loc.new_zeros(())
        if index is not None and index.numel() > 0:
            sub_loc = loc.detach()[index].requires_grad_(True)
            sub_log_scale = log_scale.detach()[index].requires_grad_(True)
            encoder = [p for p in self.vaes[group].encoder.parameters() if p.requires_grad]
            # in the VAE's dtype whatever the caller's autocast state (compute_dtype sets its own inside): a float16
            # overflow would stay in the cache for R steps
            dtype = next(self.vaes[group].parameters()).dtype
            with torch.autocast(loc.device.type, enabled=False):
                values = self._estimated_term(group, sub_loc.to(dtype), sub_log_scale.to(dtype),
                                              scale.detach()[index].to(dtype), reduction="none")
                grads = torch.autograd.grad(values.sum(), [sub_loc, sub_log_scale, *encoder])
            # out of place: a graph returned by an earlier call keeps the tensors it was built with
            cache.value = cache.value.index_copy(0, index, values.detach().to(cache.value.dtype))
            cache.loc = cache.loc.index_copy(0, index, sub_loc.detach())
            cache.log_scale = cache.log_scale.index_copy(0, index, sub_log_scale.detach())
            cache.grad_loc = cache.grad_loc.index_copy(0, index, grads[0])
            cache.grad_log_scale = cache.grad_log_scale.index_copy(0, index, grads[1])
            weight = num_kernels / index.numel()  # the refreshed slice stands for the whole group (about R)
            for param, grad in zip(encoder, grads[2:]):
                encoder_term = encoder_term + weight * ((param - param.detach()) * grad).sum()
        drift = (cache.grad_loc * (loc - cache.loc)).sum() + (cache.grad_log_scale * (log_scale - cache.log_scale)).sum()
        return cache.value.sum() + drift + encoder_term

    def reset_cache(self) -> None:
        """Forget the cached kernel estimates of ``refresh_interval > 1``: the next call estimates every kernel.

        Needed after the posterior was changed other than by small training steps while keeping its parameter
        tensors (``load_state_dict``, ``copy_``, :meth:`initialize`, which calls it), since a cached kernel's term
        is a first-order expansion around the parameters it was estimated at.
        """
        self._caches.clear()

    @contextmanager
    def cache_preserved(self) -> Iterator[None]:
        """Calls inside the ``with`` block leave the cache of ``refresh_interval > 1`` as they found it.

        For an estimate outside training, e.g. a logging handler's extra gradient
        (:class:`~monai_dwp.handlers.GradientRatioHandler`): each call with gradients would otherwise refresh a
        slice and advance the rotation, so the training steps would refresh other kernels than without the handler.
        The calls inside still read (and, the first time, fill) the cache; on exit every group's cache is what it
        was (a shallow copy suffices: a refresh replaces the cached tensors, never writes into them).

        Example::

            with prior.cache_preserved():
                kl = prior(network)  # the training steps' rotation is unchanged
        """
        saved = {group: replace(cache) for group, cache in self._caches.items()}
        try:
            yield
        finally:
            self._caches.clear()
            self._caches.update(saved)

    def scale_of(self, layer: str) -> Tensor:
        """The normalising scale :math:`s_l` of a covered layer (its own, or its group's), a 0-d tensor."""
        if self.layer_scales is not None:
            return self.scales.new_tensor(self.layer_scales[layer])
        return self.scales[self.layer_groups[layer]]

    def forward(self, network: nn.Module) -> Tensor:
        """Upper bound of KL(q || p) summed over all Bayesian layers of ``network`` (a scalar tensor)."""
        covered, uncovered = self.check_network(network)
        device = next(iter(covered.values())).loc.device if covered else None
        if device is not None and self.scales.device != device:
            self.to(device)
        groups: dict[int, list[str]] = {}
        for name in covered:
            groups.setdefault(self.layer_groups[name], []).append(name)
        total: Tensor | None = None
        for group, names in groups.items():
            loc = torch.cat([covered[n].kernels[0] for n in names])
            log_scale = torch.cat([covered[n].kernels[1] for n in names])
            scale = torch.cat(
                [self.scale_of(n).to(loc).expand(covered[n].kernels[0].shape[0]) for n in names]
            )
            neg_entropy = -gaussian_entropy(log_scale).sum()
            num_kernels = loc.shape[0]
            subsampled = self.max_kernels is not None and num_kernels > self.max_kernels
            if self.refresh_interval > 1:
                cross = self._cached_cross_entropy_term(group, {n: covered[n] for n in names}, loc, log_scale, scale)
            elif subsampled:
                index = torch.randperm(num_kernels, device=loc.device)[: self.max_kernels]
                cross = self._estimated_term(group, loc[index], log_scale[index], scale[index]) * (
                    num_kernels / self.max_kernels
                )
            else:
                cross = self._estimated_term(group, loc, log_scale, scale)
            if self.control_variate:
                with torch.autocast(loc.device.type, enabled=False):  # a quadratic form: kept in full precision
                    cross = cross + self.gaussian_cross_entropy(group, loc.float(), log_scale.float(), scale.float())
            term = neg_entropy + cross
            total = term if total is None else total + term
        if uncovered:
            fallback = self.fallback_prior.kl_layers(uncovered)
            total = fallback if total is None else total + fallback
        if total is None:
            raise ValueError(
                f"{type(network).__name__} has no BayesianConv layer, so the prior has nothing to act on."
            )
        return total

    # ------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def initialize(self, network: nn.Module, generator: torch.Generator | None = None,
                   decoder_noise: bool = False) -> list[str]:
        r"""Set the covered kernels of ``network`` to VAE samples: :math:`z \sim \mathcal{N}(0, I)`,
        :math:`w = s_l \cdot \text{decoder mean}(z)` with :math:`s_l` the layer's scale (see :meth:`scale_of`),
        or with ``decoder_noise=True`` :math:`w = s_l (\mu_\phi(z) + \sigma_\phi(z) \odot \varepsilon)`, a
        sample of the prior :math:`p(w)` itself (:meth:`KernelVAE.sample`).

        A covered layer may be a :class:`BayesianConv` (its ``loc`` is set; ``log_scale`` is left alone) or an
        ordinary ``nn.ConvNd`` of the same name (its ``weight`` is set: the deterministic ``dwp_init``
        baseline).

        Args:
            network: the network whose covered layers are set.
            generator: optional :class:`torch.Generator` for reproducible draws.
            decoder_noise: draw from the whole generative model instead of taking the decoder means.

        Returns:
            The names of the initialised layers.
        """
        self.reset_cache()
        modules = dict(network.named_modules())
        done = []
        for name, group in self.layer_groups.items():
            layer = modules.get(name)
            if isinstance(layer, BayesianConv):
                target = layer.loc
            elif isinstance(layer, nn.modules.conv._ConvNd):
                target = layer.weight
            else:
                found = type(layer).__name__ if layer is not None else "no such module"
                raise ValueError(
                    f"cannot DWP-initialise layer {name!r}: expected a convolution, found {found}; the prior "
                    "does not fit this network."
                )
            expected = self.kernel_size_of(group)
            if tuple(target.shape[2:]) != expected:
                raise ValueError(
                    f"layer {name!r}: the prior's VAE (group {group}) samples kernels of shape {expected}, "
                    f"found weight {tuple(target.shape)}."
                )
            samples = self.sample_kernels(target.shape[0] * target.shape[1], group, generator=generator,
                                          decoder_noise=decoder_noise)
            samples = samples / self.scales[group] * self.scale_of(name)
            target.copy_(samples.reshape(target.shape).to(target))
            done.append(name)
        return done

    @torch.no_grad()
    def sample_kernels(self, num_kernels: int, group: int, generator: torch.Generator | None = None,
                       decoder_noise: bool = False) -> Tensor:
        """``num_kernels`` kernels of group ``group`` on the raw scale, ``s_g`` × decoder mean at ``z ~ N(0, I)``
        (with ``decoder_noise``: ``s_g`` × a draw of ``p(w|z)``, see :meth:`KernelVAE.sample`).

        Returns:
            ``(num_kernels, *kernel_size)``.
        """
        if not 0 <= group < len(self.vaes):
            raise ValueError(f"group must be in [0, {len(self.vaes)}), got {group!r}.")
        samples = self.vaes[group].sample(num_kernels, generator=generator,
                                          decoder_noise=decoder_noise) * self.scales[group]
        return samples.squeeze(1)

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> Path:
        """Write a self-describing checkpoint (VAE configs and weights, scales, layer->group map), atomically.

        Args:
            path: the file to write.
            extra: optional metadata to store with it (e.g. the source checkpoints, training ELBO per group).
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": DWP_CHECKPOINT_FORMAT,
            "vae_configs": [_vae_config(v) for v in self.vaes],
            "vae_state_dicts": [{k: t.detach().cpu() for k, t in v.state_dict().items()} for v in self.vaes],
            "scales": self.scales.cpu().tolist(),
            "layer_groups": dict(self.layer_groups),
            "layer_scales": None if self.layer_scales is None else dict(self.layer_scales),
            "extra": dict(extra or {}),
        }
        atomic_write(path, "wb", lambda f: torch.save(payload, f))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu", **kwargs: Any) -> DeepWeightPrior:
        """Build a prior from a checkpoint written by :meth:`save`.

        Args:
            path: the checkpoint file.
            map_location: device to load the VAEs on.
            kwargs: the other constructor arguments (``num_samples``, ``max_kernels``, ``refresh_interval``,
                ``control_variate``, ``compute_dtype``, ``train_encoder``, ``fallback_prior``, ``strict``).
        """
        path = Path(path)
        payload = load_checkpoint(
            path,
            "prior checkpoint",
            missing="fit it with `python -m monai.bundle run --config_file bundles/dwp_prior/configs/train.json`",
            expected="the dwp_prior.pt written by the dwp_prior bundle",
            map_location=map_location,
        )
        if not isinstance(payload, dict) or payload.get("format") != DWP_CHECKPOINT_FORMAT:
            found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
            raise ValueError(
                f"{str(path)!r} is not a DeepWeightPrior checkpoint (format {found!r}, expected "
                f"{DWP_CHECKPOINT_FORMAT!r}); write it with DeepWeightPrior.save."
            )
        _check_group_layout(path, payload)
        vaes = []
        for i, (config, state) in enumerate(zip(payload["vae_configs"], payload["vae_state_dicts"])):
            vae = KernelVAE(**config)
            try:
                vae.load_state_dict(state)
            except RuntimeError as err:
                raise ValueError(f"{str(path)!r}: VAE {i} weights do not fit its config {config}: {err}") from err
            vaes.append(vae.to(map_location))
        kwargs.setdefault("layer_scales", payload.get("layer_scales"))
        prior = cls(vaes, payload["scales"], payload["layer_groups"], **kwargs)
        prior.extra = payload.get("extra", {})
        return prior.to(map_location)

    def extra_repr(self) -> str:
        return (
            f"groups={len(self.vaes)}, layers={len(self.layer_groups)}, num_samples={self.num_samples}, "
            f"max_kernels={self.max_kernels}, refresh_interval={self.refresh_interval}, "
            f"control_variate={self.control_variate}, compute_dtype={self.compute_dtype}, "
            f"train_encoder={self.train_encoder}, strict={self.strict}"
        )


def dwp_initialize(network: nn.Module, prior: DeepWeightPrior, generator: torch.Generator | None = None,
                   decoder_noise: bool = False) -> nn.Module:
    """DWP initialisation: the covered kernels of ``network`` become VAE samples (decoder means, or with
    ``decoder_noise`` samples of the prior itself; see :meth:`DeepWeightPrior.initialize`). Returns ``network`` so it
    can be used inline in a bundle config."""
    if not isinstance(prior, DeepWeightPrior):
        raise TypeError(f"prior must be a DeepWeightPrior, got {type(prior).__name__}.")
    prior.initialize(network, generator=generator, decoder_noise=decoder_noise)
    return network
