"""The residual U-Net of Kuzina, Egorov & Burnaev (2019), appendix B, deterministic or Bayesian."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from monai.networks.layers.factories import Conv, Dropout
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from torch import Tensor, nn

from monai_dwp.networks.layers.memory_format import channels_last_format, to_memory_format, use_channels_last
from monai_dwp.networks.utils import DEFAULT_SCALE_RATIO, convert_to_bayesian
from monai_dwp.utils.precision import check_compute_dtype, resolve_compute_dtype
from monai_dwp.utils.validation import check_float, check_int

__all__ = ["DWPUNet"]

_UPSAMPLE_MODE = {2: "bilinear", 3: "trilinear"}


class _PreActConv(nn.Sequential):
    """Pre-activation unit ``norm -> act -> conv`` (He et al., 2016, "Identity mappings in deep residual networks").

    Children are named ``norm``, ``act`` and ``conv`` so that kernels have stable names such as
    ``down1.conv1.conv.weight``. The convolution runs channels-last when :attr:`channels_last` says so (``None``:
    where :func:`~monai_dwp.networks.layers.use_channels_last` finds it faster): the unit's input and output, and
    the normalisation, stay in PyTorch's default layout, while the activation runs channels-last too, so that the
    one tensor it saves for its backward is the one the convolution saves (converted after the activation, a
    second, channels-last copy of every activation would live until the backward).
    """

    channels_last: bool | None = None

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        strides: int,
        act: str | tuple,
        norm: str | tuple,
        bias: bool,
    ) -> None:
        super().__init__()
        self.add_module("norm", get_norm_layer(norm, spatial_dims=spatial_dims, channels=in_channels))
        self.add_module("act", get_act_layer(act))
        self.add_module(
            "conv",
            Conv[Conv.CONV, spatial_dims](
                in_channels, out_channels, kernel_size, stride=strides, padding=kernel_size // 2, bias=bias
            ),
        )

    def forward(self, x: Tensor) -> Tensor:
        conv = self.conv
        if self.channels_last or (
            self.channels_last is None
            and use_channels_last(x, conv.kernel_size, two_convolutions=getattr(conv, "mode", None) == "local")
        ):
            # the layout changes before the activation, so that the tensor the activation saves for its backward
            # is the one the convolution saves, not a second, contiguous copy of it
            h = self.act(to_memory_format(self.norm(x), channels_last_format(x.ndim)))
            return to_memory_format(conv(h), torch.contiguous_format)
        return conv(self.act(self.norm(x)))


class _ResidualDownBlock(nn.Module):
    """Encoder block ``y = conv2(conv1(x)) + shortcut(x)`` of two pre-activated 3×3×3 units.

    When ``strides == 2`` (or the channel count changes) the shortcut is a projection, a pre-activated
    convolution with the same stride and a ``projection_kernel_size`` kernel (3 in the paper's appendix B, the
    ``down`` ``ConvBlock``; 1 in the authors' later code); otherwise it is the identity.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        strides: int,
        projection_kernel_size: int,
        act: str | tuple,
        norm: str | tuple,
        bias: bool,
    ) -> None:
        super().__init__()
        self.conv1 = _PreActConv(spatial_dims, in_channels, out_channels, 3, strides, act, norm, bias)
        self.conv2 = _PreActConv(spatial_dims, out_channels, out_channels, 3, 1, act, norm, bias)
        self.projection: nn.Module = (
            _PreActConv(spatial_dims, in_channels, out_channels, projection_kernel_size, strides, act, norm, bias)
            if strides != 1 or in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x)) + self.projection(x)


class _ResidualUpBlock(nn.Module):
    """Decoder block: ``u = upsample(projection(x)) + skip``, then ``y = conv2(conv1(u)) + u``.

    The projection is a pre-activated convolution with a ``projection_kernel_size`` kernel (3 in appendix B,
    the ``ConvBlock`` before ``Upsample``; 1 in the authors' later code) that maps ``in_channels`` to
    ``out_channels``; the upsampling is parameter-free (``scale_factor=2``, trilinear in 3D, ``align_corners=True``).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        projection_kernel_size: int,
        act: str | tuple,
        norm: str | tuple,
        bias: bool,
    ) -> None:
        super().__init__()
        self.projection = _PreActConv(
            spatial_dims, in_channels, out_channels, projection_kernel_size, 1, act, norm, bias
        )
        self.upsample = nn.Upsample(scale_factor=2, mode=_UPSAMPLE_MODE[spatial_dims], align_corners=True)
        self.conv1 = _PreActConv(spatial_dims, out_channels, out_channels, 3, 1, act, norm, bias)
        self.conv2 = _PreActConv(spatial_dims, out_channels, out_channels, 3, 1, act, norm, bias)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        u = self.upsample(self.projection(x)) + skip
        return self.conv2(self.conv1(u)) + u


class DWPUNet(nn.Module):
    r"""Residual 3D U-Net of the Deep Weight Prior segmentation experiments, deterministic or Bayesian.

    The network of appendix B of Kuzina, Egorov & Burnaev, "Bayesian Generative Models for Knowledge Transfer
    in MRI Semantic Segmentation Problems", *Frontiers in Neuroscience* 13:844 (2019), arXiv:2005.12639,
    used there for the source (multiple sclerosis) and target (BraTS 2018) tasks and as the Bayesian network
    whose 3×3×3 kernels get the Deep Weight Prior (Atanov et al., "The Deep Weight Prior", ICLR 2019). The
    defaults build that network exactly.

    Every convolution but ``init_conv`` and ``out`` is a *pre-activation* unit (appendix B's ``ConvBlock``)
    ``InstanceNorm -> ReLU -> Conv``. Encoder blocks are residual, ``y = conv2(conv1(x)) + shortcut(x)``; the
    blocks that halve the resolution do it with a stride-2 ``conv1`` and a stride-2 pre-activated *projection*
    shortcut (appendix B's ``down``), identity shortcut elsewhere. Decoder blocks project the input with a
    pre-activated convolution (the ``ConvBlock`` before ``Upsample``), upsample it ×2 (trilinear,
    ``align_corners=True``), **add** the encoder skip (additive skips: appendix B's ``up`` blocks keep the
    width after upsampling) and apply a residual pair of 3×3×3 units. The output is a plain 1×1×1 convolution
    (logits). All convolutions are bias-free unless ``bias=True``; InstanceNorm has no affine parameters
    (PyTorch's default), so the parameters are the convolution kernels only. Where the appendix is terse
    (residual sums, ``align_corners``, biases) the layers follow the authors' public code.

    Defaults (``channels=(16, 32, 32, 64)``, ``projection_kernel_size=3``), a 128³ input, ``in_channels=1``:

    ============  ========  =====================================  ======  ===========
    block         channels  3×3×3 convolutions                     stride  output size
    ============  ========  =====================================  ======  ===========
    init_conv     1 → 16    1                                      1       128³
    down1         16 → 32   conv1, conv2 + projection (``down``)   2       64³
    down2         32 → 32   conv1, conv2 (identity shortcut)       1       64³
    down3         32 → 32   conv1, conv2 + projection (``down``)   2       32³
    down4         32 → 32   conv1, conv2 (identity shortcut)       1       32³
    down5         32 → 64   conv1, conv2 + projection (``down``)   2       16³
    down6         64 → 64   conv1, conv2 (identity shortcut)       1       16³
    up1           64 → 32   projection, ×2, + down4, conv1, conv2  ×2 up   32³
    up2           32 → 32   projection, ×2, + down2, conv1, conv2  ×2 up   64³
    up3           32 → 16   projection, ×2, + init, conv1, conv2   ×2 up   128³
    dropout       16        optional ``Dropout3d``                 --      128³
    out           16 → 2    1×1×1 convolution                      1       128³
    ============  ========  =====================================  ======  ===========

    That is **25** convolutions with 3×3×3 kernels (the ones the Deep Weight Prior covers and ``bayesian=True``
    makes Bayesian) holding **33,808** kernels (``in × out`` slices) and the 1×1×1 output. Parameter count for
    ``in_channels=1, out_channels=2``: **912,848** (912,816 in the 3×3×3 kernels, 32 in the output), 913,746
    with ``bias=True``; with ``bayesian=True`` every 3×3×3 kernel also carries a ``log_scale``:
    912,848 + 912,816 = 1,825,664. The total downsampling factor is :attr:`downsample_factor` ``= 8``.

    Other layouts, as options: ``projection_kernel_size=1`` gives the 1×1×1 projections of the authors' later
    code (19 3×3×3 convolutions), and ``channels=(16, 32, 64, 128)`` the wider widths (with
    ``projection_kernel_size=1``: 2,344,400 parameters, 86,032 3×3×3 kernels).

    **Precision.** With ``compute_dtype="bfloat16"`` the forward pass runs under :func:`torch.autocast` in
    bfloat16 (the convolutions and their gradients multiply bfloat16 values and accumulate in float32, the
    parameters and the optimiser stay float32) and returns float32 logits, so a loss, a softmax or a sliding-window
    sum outside the network stays float32. Where the device multiplies bfloat16 in hardware this is much faster:
    a training step of the defaults at 32³, batch 4, one thread, took 0.28 s against 0.48 s in float32 on a 2-core
    AVX512-BF16 CPU, a 64×80×64 inference pass 0.25 s against 0.62 s. bfloat16 keeps 8 significant bits (relative
    rounding up to ``2^-8``), and it costs accuracy: the source nets of ``make demo`` trained so (three seeds,
    ``benchmarks/results/source_precision.md``) were 1.33× faster per epoch but lower in test Dice in every seed,
    by 0.027 [0.007, 0.046]; and a Bayesian layer's noise smaller than that fraction of an activation (a narrow
    posterior in ``"local"`` mode) is rounded away in the forward pass. So the default, and every bundle's, stays
    float32; bfloat16 is for users who trade that accuracy for speed.

    Weights use PyTorch's default initialisation (Kaiming-uniform with ``a=sqrt(5)``); with ``bayesian=True``
    the posterior locations start at those weights and the posterior scales as
    :func:`~monai_dwp.networks.utils.convert_to_bayesian` sets them (``init_log_scale``).

    Example::

        net = DWPUNet(spatial_dims=3, in_channels=1, out_channels=2)
        logits = net(torch.randn(2, 1, 64, 64, 64))  # (2, 2, 64, 64, 64)

        bnet = DWPUNet(bayesian=True)  # 25 BayesianConv layers, "local" mode

    Args:
        spatial_dims: number of spatial dimensions, 3 (the paper's) or 2 (the same architecture with 3×3
            kernels and bilinear upsampling).
        in_channels: number of input channels (image modalities).
        out_channels: number of output channels (classes, logits).
        channels: the four feature widths ``(c0, c1, c2, c3)``: ``init_conv`` and ``up3`` have ``c0``,
            ``down1/2`` and ``up2`` ``c1``, ``down3/4`` and ``up1`` ``c2``, ``down5/6`` ``c3``. Appendix B:
            ``(16, 32, 32, 64)``.
        projection_kernel_size: kernel size of the projection shortcuts of ``down1/3/5`` and of the projection
            before each upsampling: 3 (appendix B) or 1 (the authors' later code).
        act: activation of the pre-activation units, as MONAI's ``get_act_layer`` takes it (the paper:
            ReLU). Do not make it in-place when ``norm`` is ``None``: the shortcut reads the same input.
        norm: normalisation of the pre-activation units, as MONAI's ``get_norm_layer`` takes it (the
            paper: InstanceNorm without affine parameters).
        dropout: probability of the channel dropout (``Dropout3d`` in 3D) applied to the last features, just
            before the output convolution; ``None`` or ``0`` disables it (the paper has none). Present so
            that MONAI Label's epistemic (MC dropout) scoring can set it in a bundle's network definition.
        bias: add a bias to every convolution (the paper: no bias anywhere).
        bayesian: replace every 3×3×3 convolution by a :class:`~monai_dwp.networks.layers.BayesianConv`
            (factorized Gaussian posterior, see :func:`~monai_dwp.networks.utils.convert_to_bayesian`); 1×1×1
            convolutions stay deterministic.
        init_log_scale: initial posterior ``log_scale`` of the Bayesian kernels, passed to
            :func:`~monai_dwp.networks.utils.convert_to_bayesian` (a float, or ``None`` for its scale relative
            to each layer's weights); unused when ``bayesian`` is ``False``.
        bayesian_mode: initial stochastic mode of the Bayesian kernels, ``"local"`` (training), ``"sampled"`` or
            ``"mean"`` (e.g. to export the posterior-mean network with ``ckpt_export --use_trace true``); switch it
            later with :func:`~monai_dwp.networks.stochastic_mode`.
        init_scale_ratio: with ``init_log_scale=None``, each Bayesian layer's posterior scale starts at this
            fraction of the RMS of its weights (signal-to-noise ratio ``1 / init_scale_ratio``).
        channels_last: layout of the pre-activated convolutions: ``None`` (default) channels-last where
            :func:`~monai_dwp.networks.layers.use_channels_last` finds it faster (CPU training passes in 3D; with
            AVX-512 kernels only for ``local``-mode layers), ``True`` always, ``False`` never. The function computed
            is the same either way; settable later through the :attr:`channels_last` property.
        compute_dtype: precision of the forward pass (see *Precision*): ``None`` or ``"float32"`` (default),
            ``"bfloat16"``, or ``"auto"`` (bfloat16 where :func:`~monai_dwp.utils.native_bfloat16` says the input's
            device multiplies it in hardware, float32 elsewhere); settable later through the
            :attr:`compute_dtype` property.

    Raises:
        ValueError: on an unsupported ``spatial_dims``, non-positive channel counts, a ``channels`` that is
            not four positive ints, a ``projection_kernel_size`` other than 1 or 3, a ``dropout`` outside
            ``[0, 1)``, or a ``compute_dtype`` other than those above.
        TypeError: on a non-int ``in_channels`` / ``out_channels``, a non-numeric ``dropout``, a
            ``channels_last`` other than ``None``, ``True`` or ``False``, or a ``compute_dtype`` that is not a str,
            a ``torch.dtype`` or ``None``.
    """

    downsample_factor: ClassVar[int] = 8
    """Total downsampling factor of the encoder: every spatial size of the input must be a multiple of it."""

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        channels: Sequence[int] = (16, 32, 32, 64),
        projection_kernel_size: int = 3,
        act: str | tuple = "relu",
        norm: str | tuple = "instance",
        dropout: float | None = None,
        bias: bool = False,
        bayesian: bool = False,
        init_log_scale: float | None = None,
        bayesian_mode: str = "local",
        init_scale_ratio: float = DEFAULT_SCALE_RATIO,
        channels_last: bool | None = None,
        compute_dtype: str | torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if spatial_dims not in _UPSAMPLE_MODE:
            raise ValueError(
                f"spatial_dims must be 3 (the paper's 3D U-Net) or 2, got {spatial_dims!r}; "
                "use spatial_dims=3 for volumes."
            )
        check_int(in_channels, "in_channels", minimum=1)
        check_int(out_channels, "out_channels", minimum=1)
        widths = tuple(channels) if isinstance(channels, Sequence) and not isinstance(channels, str) else ()
        if len(widths) != 4 or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in widths):
            raise ValueError(
                f"channels must be four positive ints (c0, c1, c2, c3), got {channels!r}; "
                "appendix B of the paper uses (16, 32, 32, 64)."
            )
        if projection_kernel_size not in (1, 3) or isinstance(projection_kernel_size, bool):
            raise ValueError(
                f"projection_kernel_size must be 3 (appendix B) or 1 (1×1×1 projections), got "
                f"{projection_kernel_size!r}."
            )
        if dropout is not None:
            check_float(dropout, "dropout", 0.0, 1.0, include_maximum=False, hint="use None or 0 to disable it")

        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.channels = widths
        self.projection_kernel_size = int(projection_kernel_size)
        self.bayesian = bool(bayesian)
        c0, c1, c2, c3 = widths
        args = (self.projection_kernel_size, act, norm, bias)

        self.init_conv = Conv[Conv.CONV, spatial_dims](in_channels, c0, 3, padding=1, bias=bias)
        self.down1 = _ResidualDownBlock(spatial_dims, c0, c1, 2, *args)
        self.down2 = _ResidualDownBlock(spatial_dims, c1, c1, 1, *args)
        self.down3 = _ResidualDownBlock(spatial_dims, c1, c2, 2, *args)
        self.down4 = _ResidualDownBlock(spatial_dims, c2, c2, 1, *args)
        self.down5 = _ResidualDownBlock(spatial_dims, c2, c3, 2, *args)
        self.down6 = _ResidualDownBlock(spatial_dims, c3, c3, 1, *args)
        self.up1 = _ResidualUpBlock(spatial_dims, c3, c2, *args)
        self.up2 = _ResidualUpBlock(spatial_dims, c2, c1, *args)
        self.up3 = _ResidualUpBlock(spatial_dims, c1, c0, *args)
        self.dropout: nn.Module = (
            Dropout[Dropout.DROPOUT, spatial_dims](float(dropout)) if dropout else nn.Identity()
        )
        self.out = Conv[Conv.CONV, spatial_dims](c0, out_channels, 1, bias=bias)

        self.channels_last = channels_last
        self.compute_dtype = compute_dtype
        if self.bayesian:
            convert_to_bayesian(
                self,
                kernel_size=3,
                init_log_scale=init_log_scale,
                inplace=True,
                mode=bayesian_mode,
                init_scale_ratio=init_scale_ratio,
            )

    @property
    def channels_last(self) -> bool | None:
        """Layout of the pre-activated convolutions: ``None`` channels-last where it is faster (CPU, 3D, where
        PyTorch uses oneDNN), ``True`` always, ``False`` never. Setting it sets every unit."""
        return self._channels_last

    @channels_last.setter
    def channels_last(self, value: bool | None) -> None:
        if value is not None and not isinstance(value, bool):
            raise TypeError(
                f"channels_last must be None (channels-last where it is faster), True or False, got {value!r}."
            )
        self._channels_last = value
        for m in self.modules():
            if isinstance(m, _PreActConv):
                m.channels_last = value

    @property
    def compute_dtype(self) -> torch.dtype | str | None:
        """Precision of the forward pass: ``None`` (float32), ``torch.bfloat16`` or ``"auto"``; set it with any
        value the constructor takes."""
        return self._compute_dtype

    @compute_dtype.setter
    def compute_dtype(self, value: str | torch.dtype | None) -> None:
        self._compute_dtype = check_compute_dtype(
            value, float16_hint="float16 training needs a gradient scaler (the bundles' amp on CUDA);"
        )
        self._auto_dtypes: dict[str, torch.dtype | None] = {}  # "auto" resolved once per device type

    def autocast_dtype(self, device: torch.device | str) -> torch.dtype | None:
        """The dtype the forward pass runs in on ``device`` (``"auto"`` resolved by
        :func:`~monai_dwp.utils.native_bfloat16`), or ``None`` for the parameters' own dtype."""
        return resolve_compute_dtype(self._compute_dtype, device, self._auto_dtypes)

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"DWPUNet input must be a torch.Tensor, got {type(x).__name__}.")
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"DWPUNet input must be {self.spatial_dims + 2}D (batch, channel, {self.spatial_dims} spatial "
                f"dims), got shape {tuple(x.shape)}; add the missing batch/channel axis, or give {self.spatial_dims}D "
                f"images (a network for 2D slices is DWPUNet(spatial_dims=2))."
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"DWPUNet input has {x.shape[1]} channels (shape {tuple(x.shape)}) but in_channels="
                f"{self.in_channels}; select {self.in_channels} modalit{'y' if self.in_channels == 1 else 'ies'} "
                f"(e.g. --modality FLAIR) or build the network with in_channels={x.shape[1]}."
            )
        spatial = tuple(x.shape[2:])
        if any(s % self.downsample_factor for s in spatial):
            raise ValueError(
                f"DWPUNet input spatial size {spatial} (shape {tuple(x.shape)}) must be a multiple of "
                f"{self.downsample_factor} in every dimension; pad or crop it (e.g. monai.transforms."
                f"DivisiblePadd(k={self.downsample_factor})) or use a sliding window with such an roi_size."
            )

    def forward(self, x: Tensor) -> Tensor:
        """Segmentation logits.

        Args:
            x: images, shape ``(B, in_channels, *spatial)`` with every spatial size a multiple of
                :attr:`downsample_factor`. With InstanceNorm the 1/8-resolution map needs more than one voxel,
                so at least one spatial size must be 16 or more (PyTorch raises otherwise).

        Returns:
            Logits of shape ``(B, out_channels, *spatial)``, in ``x``'s dtype whatever :attr:`compute_dtype`.

        Raises:
            TypeError: when ``x`` is not a tensor.
            ValueError: when ``x`` is not ``(spatial_dims + 2)``-D, has other than ``in_channels`` channels, or
                has a spatial size that is not a multiple of :attr:`downsample_factor`.
        """
        self._check_input(x)
        dtype = self.autocast_dtype(x.device)
        if dtype is None:
            return self._logits(x)
        with torch.autocast(x.device.type, dtype=dtype):
            logits = self._logits(x)
        return logits.to(x.dtype)

    def _logits(self, x: Tensor) -> Tensor:
        x1 = self.init_conv(x)
        x2 = self.down2(self.down1(x1))
        x3 = self.down4(self.down3(x2))
        y = self.down6(self.down5(x3))
        y = self.up1(y, x3)
        y = self.up2(y, x2)
        y = self.up3(y, x1)
        return self.out(self.dropout(y))
