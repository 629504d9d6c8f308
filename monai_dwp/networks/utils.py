"""Utilities over the Bayesian layers of a network: listing, mode switching, resampling and conversion."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Callable

import torch
from torch import nn

from monai_dwp.networks.layers.bayesian_conv import STOCHASTIC_MODES, BayesianConv, StochasticMode
from monai_dwp.utils.validation import check_float

__all__ = [
    "bayesian_modules",
    "stochastic_mode",
    "resample_weights",
    "convert_to_bayesian",
    "init_relative_scale",
    "DEFAULT_SCALE_RATIO",
]

DEFAULT_SCALE_RATIO: float = 0.1
"""Default posterior scale of a Bayesian layer relative to the RMS of its weights (see :func:`init_relative_scale`)."""


def bayesian_modules(net: nn.Module) -> dict[str, BayesianConv]:
    """All :class:`BayesianConv` layers of ``net``, by qualified name, in registration order.

    Args:
        net: any module.

    Returns:
        ``{name: layer}`` as ``net.named_modules()`` names them (``""`` if ``net`` itself is Bayesian).
    """
    if not isinstance(net, nn.Module):
        raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}.")
    return {name: m for name, m in net.named_modules() if isinstance(m, BayesianConv)}


class stochastic_mode:  # noqa: N801 (used like torch.no_grad: a setter and a context manager)
    """Set the stochastic mode of every :class:`BayesianConv` in a network; restore it as a context manager.

    ``mode`` is ``"mean"``, ``"local"`` or ``"sampled"`` (see :class:`BayesianConv`); it is independent of
    ``.train()``/``.eval()``. Entering ``"sampled"`` mode draws one fresh weight sample per layer unless
    ``resample=False`` (then the held draws stay, e.g. ones drawn with a seeded generator).

    Example::

        stochastic_mode(net, "local")          # a setter: stays in effect
        with stochastic_mode(net, "sampled"):  # a context: restores the previous modes on exit
            y = net(x)

    Args:
        net: the network.
        mode: the new mode.
        resample: draw new weights when entering ``"sampled"`` mode.
    """

    def __init__(self, net: nn.Module, mode: StochasticMode, resample: bool = True) -> None:
        if mode not in STOCHASTIC_MODES:
            raise ValueError(f"mode must be one of {STOCHASTIC_MODES}, got {mode!r}.")
        self._layers = bayesian_modules(net)
        self._previous = {name: layer.mode for name, layer in self._layers.items()}
        for layer in self._layers.values():
            layer.mode = mode
            if mode == "sampled" and (resample or layer.epsilon is None):
                layer.resample()

    def __enter__(self) -> stochastic_mode:
        return self

    def __exit__(self, *exc: object) -> None:
        for name, layer in self._layers.items():
            layer.mode = self._previous[name]


def resample_weights(net: nn.Module, generator: torch.Generator | None = None) -> int:
    """Draw a new held weight sample in every :class:`BayesianConv` of ``net`` (used by ``"sampled"`` mode).

    Args:
        net: the network.
        generator: optional random generator (on the weights' device) for reproducible draws.

    Returns:
        The number of layers resampled.
    """
    layers = bayesian_modules(net)
    for layer in layers.values():
        layer.resample(generator)
    return len(layers)


@torch.no_grad()
def init_relative_scale(net: nn.Module, ratio: float = DEFAULT_SCALE_RATIO) -> dict[str, float]:
    r"""Set every posterior scale relative to its layer's weights: :math:`\sigma_l = r \cdot \mathrm{RMS}(\text{loc}_l)`.

    A constant initial ``log_scale`` ignores fan-in: the same :math:`\sigma` is tiny for ``init_conv`` (weights of
    RMS ≈ 0.1) and as large as the weights themselves in the widest layers. Relative to each layer's own weight
    scale, every layer starts with the same signal-to-noise ratio :math:`|\text{loc}| / \sigma \approx 1/r`,
    whatever the initialisation (PyTorch's, the source network's or DWP samples). Call it again after the
    locations change (e.g. after DWP initialisation).

    Args:
        net: a network with :class:`BayesianConv` layers.
        ratio: :math:`r > 0`.

    Returns:
        ``{layer name: sigma}`` as set.
    """
    ratio = check_float(ratio, "ratio", minimum=0.0, include_minimum=False, hint=f"e.g. {DEFAULT_SCALE_RATIO}")
    scales = {}
    for name, layer in bayesian_modules(net).items():
        rms = float(layer.loc.detach().square().mean().sqrt())
        sigma = ratio * rms if rms > 0 else ratio
        layer.log_scale.fill_(math.log(sigma))
        scales[name] = sigma
    return scales


def _kernel_filter(kernel_size: int | Sequence[int] | None) -> Callable[[nn.modules.conv._ConvNd], bool]:
    if kernel_size is None:
        return lambda conv: True
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, (int, Sequence)):
        raise TypeError(f"kernel_size must be None, an int or a sequence of ints, got {kernel_size!r}.")

    def accept(conv: nn.modules.conv._ConvNd) -> bool:
        wanted = (kernel_size,) * len(conv.kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        return tuple(conv.kernel_size) == wanted

    return accept


def convert_to_bayesian(
    net: nn.Module,
    kernel_size: int | Sequence[int] | None = None,
    layer_filter: Callable[[str, nn.Module], bool] | None = None,
    inplace: bool = False,
    init_log_scale: float | None = None,
    copy_weights: bool = True,
    mode: StochasticMode = "local",
    init_scale_ratio: float = DEFAULT_SCALE_RATIO,
) -> nn.Module:
    """Replace the :mod:`torch.nn` convolutions of a network by :class:`BayesianConv` layers.

    Works on any network built from ``nn.Conv{1,2,3}d`` / ``nn.ConvTranspose{1,2,3}d`` (MONAI's ``UNet`` and
    ``BasicUNet``, :class:`~monai_dwp.networks.nets.DWPUNet`, ...). With ``copy_weights`` the posterior
    locations start at the original weights (the fine-tune start), so the converted network in ``"mean"``
    mode computes exactly what the original computed.

    Args:
        net: the network to convert.
        kernel_size: convert only convolutions with this kernel size (e.g. ``3`` for the paper's 3×3×3
            kernels); ``None`` converts all.
        layer_filter: optional ``(qualified_name, conv) -> bool``; a convolution is converted only if it passes
            both filters.
        inplace: modify ``net`` itself; otherwise convert a deep copy and leave ``net`` untouched.
        init_log_scale: initial posterior ``log_scale`` of the new layers, one value for all; ``None`` (default)
            sets each layer's scale relative to its weights, ``init_scale_ratio × RMS(loc)`` (see
            :func:`init_relative_scale`).
        copy_weights: initialise ``loc`` (and ``bias``) from the original weights.
        mode: stochastic mode of the new layers.
        init_scale_ratio: the ratio used when ``init_log_scale`` is ``None``.

    Returns:
        The converted network (``net`` itself when ``inplace``).

    Raises:
        ValueError: when no convolution matches the filters (so a typo never yields a silently deterministic
            "Bayesian" network).
    """
    if not isinstance(net, nn.Module):
        raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}.")
    if layer_filter is not None and not callable(layer_filter):
        raise TypeError(f"layer_filter must be callable (name, module) -> bool, got {layer_filter!r}.")
    accept_kernel = _kernel_filter(kernel_size)
    target = net if inplace else copy.deepcopy(net)
    chosen = [
        name
        for name, m in target.named_modules()
        if isinstance(m, nn.modules.conv._ConvNd)
        and accept_kernel(m)
        and (layer_filter is None or layer_filter(name, m))
    ]
    if not chosen:
        raise ValueError(
            f"convert_to_bayesian found no convolution with kernel_size={kernel_size!r} passing layer_filter in "
            f"{type(net).__name__}; check the filters."
        )
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = target.get_submodule(parent_name) if parent_name else target
        conv = getattr(parent, child)
        layer = BayesianConv.from_conv(conv, -5.0 if init_log_scale is None else init_log_scale, copy_weights, mode)
        if init_log_scale is None:
            init_relative_scale(layer, init_scale_ratio)
        setattr(parent, child, layer)
    return target
