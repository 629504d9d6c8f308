"""The plain factorized Gaussian prior N(loc, scale²) over the weights of the Bayesian layers of a network."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from monai_dwp.losses.kl import gaussian_kl
from monai_dwp.networks.layers.bayesian_conv import BayesianConv
from monai_dwp.networks.utils import bayesian_modules
from monai_dwp.utils.validation import check_float

_SEP = "::"  # stands for "." in buffer names, which may not contain dots

__all__ = ["GaussianPrior"]


class GaussianPrior(nn.Module):
    r"""Closed-form :math:`\mathrm{KL}(q(w) \,\|\, \mathcal{N}(m, s^2))` summed over a network.

    For every :class:`~monai_dwp.networks.layers.BayesianConv` with posterior
    :math:`q(w) = \mathcal{N}(\mu, \sigma^2)` per weight,

    .. math::
        \mathrm{KL} = \sum_w \log\frac{s_w}{\sigma_w} + \frac{\sigma_w^2 + (\mu_w - m_w)^2}{2 s_w^2} - \frac12

    with prior location :math:`m_w` and scale :math:`s_w`: the numbers ``loc`` and ``scale`` for every weight, or,
    for a layer named in ``layer_locs`` / ``layer_scales``, a tensor of the layer's weight shape (or a number) of its
    own. Deterministic layers carry no posterior and contribute nothing. This is the ``gaussian_prior`` baseline
    (``N(0, s²)``), the explicit fallback of :class:`~monai_dwp.losses.DeepWeightPrior` for the layers its VAEs do
    not cover, and, with the source network's weights as ``layer_locs`` (:meth:`from_source`), the Bayesian form of
    L2-SP (Li, Grandvalet & Davoine, ICML 2018): as :math:`\sigma_w \to 0` the terms that depend on :math:`\mu`
    are :math:`\sum_w (\mu_w - m_w)^2 / 2 s^2`, the L2-SP penalty with weight :math:`1 / 2 s^2`.

    Args:
        loc: prior mean of every weight of a layer without an entry in ``layer_locs``.
        scale: prior standard deviation of every weight of a layer without an entry in ``layer_scales``, > 0.
        layer_locs: per-layer prior means ``{layer name: tensor of its weight shape}``, names as in
            :func:`~monai_dwp.networks.utils.bayesian_modules` (``"down1.conv.0"``). When given, every Bayesian
            layer the prior meets must have an entry (a layer it does not know is an error, not a zero mean).
        layer_scales: per-layer prior standard deviations ``{layer name: tensor of its weight shape or number}``,
            all > 0; layers without an entry use ``scale``.

    Example::

        prior = GaussianPrior(scale=0.1)
        kl = prior(net)  # scalar tensor, differentiable in every loc / log_scale of net
        l2sp = GaussianPrior.from_source("bundles/dwp_pretrain/models/seed0/model.pt", scale=0.01)
    """

    def __init__(
        self,
        loc: float = 0.0,
        scale: float = 1.0,
        layer_locs: Mapping[str, Tensor] | None = None,
        layer_scales: Mapping[str, Tensor | float] | None = None,
    ) -> None:
        super().__init__()
        self.loc = check_float(loc, "loc")
        self.scale = check_float(scale, "scale", minimum=0.0, include_minimum=False)
        self.layer_names: tuple[str, ...] = tuple(layer_locs or ())
        self.scale_names: tuple[str, ...] = tuple(layer_scales or ())
        for name, value in (layer_locs or {}).items():
            if not isinstance(value, Tensor) or not value.is_floating_point():
                raise TypeError(f"layer_locs[{name!r}] must be a floating-point tensor, got {type(value).__name__}.")
            self.register_buffer(f"loc{_SEP}{name.replace('.', _SEP)}", value.detach().clone())
        for name, value in (layer_scales or {}).items():
            value = torch.as_tensor(value, dtype=torch.get_default_dtype()).detach().clone()
            if not bool(torch.isfinite(value).all()) or not bool((value > 0).all()):
                raise ValueError(f"layer_scales[{name!r}] must be finite and > 0 everywhere; got minimum "
                                 f"{value.min().item():.3g}.")
            self.register_buffer(f"log_scale{_SEP}{name.replace('.', _SEP)}", value.log())

    @classmethod
    def from_source(
        cls,
        source: str | os.PathLike | nn.Module | Mapping[str, Tensor],
        scale: float,
        min_ndim: int = 3,
        map_location: str | torch.device = "cpu",
    ) -> GaussianPrior:
        """The prior ``N(w_source, scale²)`` per weight: every convolution weight of a source network (its
        ``<layer>.weight`` of ``ndim >= min_ndim``) is the prior mean of the Bayesian layer ``<layer>``.

        Args:
            source: a network, its state dict, or a checkpoint file (``models/model.pt`` of ``dwp_pretrain``).
            scale: the prior standard deviation of every weight, > 0.
            min_ndim: the smallest weight rank taken (3: convolutions of any dimension, not norms or biases).
            map_location: the device of the prior's tensors (the network's).

        Raises:
            ValueError: the source holds no convolution weight.
        """
        from monai_dwp.data.kernels import load_state_dict  # data imports the losses

        state = load_state_dict(source)
        locs = {k[: -len(".weight")]: v.float() for k, v in state.items() if k.endswith(".weight") and v.ndim >= min_ndim}
        if not locs:
            raise ValueError(f"GaussianPrior.from_source: {source!r} holds no convolution weight (ndim >= {min_ndim}).")
        return cls(scale=scale, layer_locs=locs).to(map_location)

    @classmethod
    def from_swag(
        cls,
        swag_ckpt: str | os.PathLike,
        scale_factor: float = 1.0,
        min_ndim: int = 3,
        map_location: str | torch.device = "cpu",
    ) -> GaussianPrior:
        r"""The prior :math:`\mathcal{N}(\bar w, \lambda \sigma^2_{\text{SWAG}})` per weight of "Pre-Train Your Loss"
        (Shwartz-Ziv et al., NeurIPS 2022), diagonal: the SWAG mean and variance of every convolution weight of the
        source network (``<layer>.weight`` of ``ndim >= min_ndim``), from the ``swag.pt`` written by
        :class:`~monai_dwp.handlers.SWAGHandler` in the ``dwp_pretrain`` bundle.

        Args:
            swag_ckpt: the SWAG moments file.
            scale_factor: :math:`\lambda`, the variance's factor, > 0 (chosen on validation).
            min_ndim: the smallest weight rank taken (3: convolutions).
            map_location: the device of the prior's tensors.
        """
        from monai_dwp.handlers.swag import load_swag  # the handlers import the losses

        lam = check_float(scale_factor, "scale_factor", minimum=0.0, include_minimum=False)
        mean, variance = load_swag(swag_ckpt)
        names = [k[: -len(".weight")] for k, v in mean.items() if k.endswith(".weight") and v.ndim >= min_ndim]
        if not names:
            raise ValueError(f"GaussianPrior.from_swag: {str(swag_ckpt)!r} holds no convolution weight.")
        return cls(layer_locs={n: mean[f"{n}.weight"] for n in names},
                   layer_scales={n: (lam * variance[f"{n}.weight"]).sqrt() for n in names}).to(map_location)

    def _layer_params(self, name: str | None, layer: BayesianConv) -> tuple[Tensor | float, Tensor | float]:
        """``(loc, log_scale)`` of the prior of layer ``name``."""
        loc: Tensor | float = self.loc
        log_scale: Tensor | float = math.log(self.scale)
        if self.layer_names:
            if name is None:
                raise ValueError("GaussianPrior has per-layer locations: pass the layers by name, e.g. "
                                 "kl_layers(bayesian_modules(network)).")
            if name not in self.layer_names:
                raise ValueError(
                    f"GaussianPrior has per-layer locations for {len(self.layer_names)} layers but none for the "
                    f"Bayesian layer {name!r}; build it from a network with the same layer names."
                )
            loc = getattr(self, f"loc{_SEP}{name.replace('.', _SEP)}")
            if loc.shape != layer.loc.shape:
                raise ValueError(f"GaussianPrior: the prior location of {name!r} has shape {tuple(loc.shape)}, the "
                                 f"layer's weight {tuple(layer.loc.shape)}.")
        if self.scale_names and name is None:
            raise ValueError("GaussianPrior has per-layer scales: pass the layers by name, e.g. "
                             "kl_layers(bayesian_modules(network)).")
        if name is not None and name in self.scale_names:
            log_scale = getattr(self, f"log_scale{_SEP}{name.replace('.', _SEP)}")
            if log_scale.ndim and log_scale.shape != layer.loc.shape:
                raise ValueError(f"GaussianPrior: the prior scale of {name!r} has shape {tuple(log_scale.shape)}, the "
                                 f"layer's weight {tuple(layer.loc.shape)}.")
        return loc, log_scale

    def layer_kl(self, layer: BayesianConv, name: str | None = None) -> Tensor:
        """KL of one layer's posterior to this prior (a scalar); ``name`` selects its per-layer location and scale
        (needed when the prior has ``layer_locs``)."""
        loc, log_scale = self._layer_params(name, layer)
        return gaussian_kl(layer.loc, layer.log_scale, loc, log_scale).sum()

    def kl_layers(self, layers: Mapping[str, BayesianConv] | Iterable[BayesianConv]) -> Tensor:
        """KL summed over ``layers`` (``{name: layer}``, or layers without names for a prior without per-layer
        entries); a zero scalar when there is none."""
        named = layers.items() if isinstance(layers, Mapping) else ((None, layer) for layer in layers)
        total: Tensor | None = None
        for name, layer in named:
            kl = self.layer_kl(layer, name)
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
        return self.kl_layers(layers)

    def extra_repr(self) -> str:
        own = f", per-layer loc for {len(self.layer_names)} layers" if self.layer_names else ""
        own += f", per-layer scale for {len(self.scale_names)} layers" if self.scale_names else ""
        return f"loc={self.loc}, scale={self.scale}{own}"
