"""A ``spatial_dims``-generic Bayesian convolution with a fully factorized Gaussian posterior."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from monai_dwp.networks.layers.memory_format import ONEDNN_MIN_SINGLE_SAMPLE_SIZE, randn_like
from monai_dwp.utils.validation import check_float, check_int

__all__ = ["BayesianConv", "REDRAW_MAX_IN_CHANNELS", "StochasticMode", "STOCHASTIC_MODES", "hold_weights"]

StochasticMode = Literal["mean", "local", "sampled"]
STOCHASTIC_MODES: tuple[str, ...] = ("mean", "local", "sampled")

REDRAW_MAX_IN_CHANNELS = 4
"""Input channels per group up to which a ``local`` :class:`BayesianConv` redraws its noise in the backward by
default (``redraw_local_noise=None``) instead of keeping ``ξ / 2σ``: the recomputed variance convolution costs
``in_channels / groups`` multiply-adds per output element and kernel tap, against the 4 bytes per output element it
saves."""

_CONV: dict[tuple[int, bool], Callable[..., Tensor]] = {
    (1, False): F.conv1d,
    (2, False): F.conv2d,
    (3, False): F.conv3d,
    (1, True): F.conv_transpose1d,
    (2, True): F.conv_transpose2d,
    (3, True): F.conv_transpose3d,
}


class _LocalReparameterization(torch.autograd.Function):
    r"""``y = conv(x, W_loc) + b + sqrt(conv(x², W_var) + eps) ⊙ ξ``, ``ξ ~ N(0, 1)`` per output element, with a lean
    backward.

    Autograd of the plain expression keeps ``x²``, the standard deviation and ``ξ`` (three activation-sized tensors
    besides ``x``) and runs five element-wise backward steps. Here the forward keeps ``x`` and one output-sized
    tensor, :math:`r = \xi / (2 \sqrt{\text{var} + \epsilon})`, and the backward is

    .. math::
        \frac{\partial L}{\partial \text{var}} = g \odot r, \qquad
        \frac{\partial L}{\partial x} = \text{conv}^\top_{W_\text{loc}}(g)
        + 2 x \odot \text{conv}^\top_{W_\text{var}}(g \odot r),

    with the weight gradients from the same two ``convolution_backward`` calls (``x²`` recomputed there). Same
    values and gradients as the plain expression for the same ``ξ``; first-order only (no double backward).

    With ``redraw`` the forward keeps no output-sized tensor at all: it keeps the random generator's state from
    before the draw of ``ξ`` instead, and the backward draws the same ``ξ`` again (under
    :func:`torch.random.fork_rng`, so the caller's random stream is as if nothing had been drawn) and recomputes
    the standard deviation by the variance convolution. That trades the memory of ``r`` for one convolution and one
    normal draw, which is cheap where the input has few channels (a network's first layer).
    """

    @staticmethod
    def forward(ctx, x, loc, var_weight, bias, conv_args, eps, redraw):  # type: ignore[override]
        stride, padding, dilation, transposed, output_padding, groups = conv_args
        out = torch.convolution(x, loc, bias, stride, padding, dilation, transposed, output_padding, groups)
        std = _local_std(x, var_weight, conv_args, eps)
        rng_state = _rng_state(out.device) if redraw else None
        xi = randn_like(out)  # in out's layout (channels-last included) at the speed of a contiguous fill
        out.addcmul_(std, xi)
        if redraw:
            ctx.save_for_backward(x, loc, var_weight)
            ctx.rng_state, ctx.eps = rng_state, eps
            ctx.out_layout = (out.shape, out.stride(), out.dtype, out.device)
        else:
            ctx.save_for_backward(x, loc, var_weight, xi.div_(std).mul_(0.5))
            ctx.rng_state = None
        ctx.conv_args = conv_args
        ctx.bias_sizes = None if bias is None else list(bias.shape)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):  # type: ignore[override]
        if ctx.rng_state is None:
            x, loc, var_weight, r = ctx.saved_tensors
        else:
            x, loc, var_weight = ctx.saved_tensors
            r = _redraw_r(x, var_weight, ctx)
        stride, padding, dilation, transposed, output_padding, groups = ctx.conv_args
        need_x, need_loc, need_var, need_bias = ctx.needs_input_grad[:4]
        # The variance branch first, its weight and input gradients by two calls, so that at most two
        # activation-sized temporaries exist at a time (g ⊙ r with x², then with its input gradient) and none of
        # them outlives the branch: one backward call with both gradients, after the mean branch, held four.
        # (The input gradient of a convolution does not depend on the input's values, only on its shape.)
        var_args = (var_weight, None, stride, padding, dilation, transposed, output_padding, groups)
        grad_r = grad_out * r
        grad_var = torch.ops.aten.convolution_backward(grad_r, x * x, *var_args, [False, True, False])[1] \
            if need_var else None
        grad_x2 = torch.ops.aten.convolution_backward(grad_r, x, *var_args, [True, False, False])[0] \
            if need_x else None
        del grad_r
        if grad_x2 is not None:
            grad_x2 = grad_x2.mul_(x).mul_(2.0)
        grad_x1, grad_loc, grad_bias = torch.ops.aten.convolution_backward(
            grad_out, x, loc, ctx.bias_sizes, stride, padding, dilation, transposed, output_padding, groups,
            [need_x, need_loc, need_bias and ctx.bias_sizes is not None],
        )
        grad_x = grad_x1.add_(grad_x2) if need_x else None
        return grad_x, grad_loc, grad_var, grad_bias, None, None, None


def _local_std(x: Tensor, var_weight: Tensor, conv_args: tuple, eps: float) -> Tensor:
    """``sqrt(conv(x², W_var) + eps)``, the standard deviation of a ``local`` layer's output."""
    stride, padding, dilation, transposed, output_padding, groups = conv_args
    return torch.convolution(x * x, var_weight, None, stride, padding, dilation, transposed, output_padding,
                             groups).add_(eps).sqrt_()


def _rng_state(device: torch.device) -> Tensor:
    """The state of the default random generator of ``device`` (the one :func:`randn_like` draws from)."""
    if device.type == "cpu":
        return torch.get_rng_state()
    return torch.get_device_module(device.type).get_rng_state(device)


def _redraw_r(x: Tensor, var_weight: Tensor, ctx: Any) -> Tensor:
    """``r = ξ / 2σ`` of a ``redraw`` forward: the same ``ξ`` drawn again from the saved generator state, ``σ``
    recomputed; the caller's generator state is left as it was."""
    shape, stride, dtype, device = ctx.out_layout
    with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device], device_type=device.type):
        if device.type == "cpu":
            torch.set_rng_state(ctx.rng_state)
        else:
            torch.get_device_module(device.type).set_rng_state(ctx.rng_state, device)
        xi = randn_like(torch.empty_strided(shape, stride, dtype=dtype, device=device))
    return xi.div_(_local_std(x, var_weight, ctx.conv_args, ctx.eps)).mul_(0.5)


def _tuple(value: int | Sequence[int], spatial_dims: int, name: str) -> tuple[int, ...]:
    """Expand an int to a ``spatial_dims``-tuple, checking a sequence's length."""
    if isinstance(value, (bool, str)) or not isinstance(value, (int, Sequence)):
        raise TypeError(f"{name} must be an int or a sequence of {spatial_dims} ints, got {value!r}.")
    if isinstance(value, int):
        return (value,) * spatial_dims
    out = tuple(int(v) for v in value)
    if len(out) != spatial_dims:
        raise ValueError(
            f"{name} must have spatial_dims={spatial_dims} entries, got {value!r}; "
            f"pass one int or {spatial_dims} ints."
        )
    return out


class BayesianConv(nn.Module):
    r"""Convolution (1D/2D/3D, optionally transposed) with a factorized Gaussian posterior over its weight.

    Every scalar weight has the variational posterior :math:`q(w) = \mathcal{N}(\text{loc}, \text{scale}^2)`
    with ``scale = exp(log_scale)``; the bias (if any) is a deterministic parameter. The prior is *not* part of
    this layer: it is a loss term (see :class:`monai_dwp.losses.GaussianPrior` and
    :class:`monai_dwp.losses.DeepWeightPrior`), and ``forward`` returns the activations only.

    The stochastic behaviour is an explicit switch, ``mode``, independent of ``.train()``/``.eval()``:

    - ``"mean"``: :math:`y = \text{conv}(x, W_\text{loc}) + b` (deterministic, the cheap prediction);
    - ``"local"``: local reparameterization (Kingma et al., 2015), for training:
      :math:`y = \text{conv}(x, W_\text{loc}) + b + \sqrt{\text{conv}(x^2, W_\text{scale}^2) + \epsilon}
      \odot \xi`, :math:`\xi \sim \mathcal{N}(0, 1)` drawn per output element;
    - ``"sampled"``: one weight draw :math:`W = W_\text{loc} + W_\text{scale} \odot \varepsilon`, with
      :math:`\varepsilon` held until :meth:`resample` is called, so that every call (e.g. every sliding window
      of a volume) sees the same weights. The draw is differentiable in ``loc`` and ``log_scale``; resampling
      once per training step gives an unbiased ELBO gradient at the cost of one convolution instead of two.
      Every call forms :math:`W` afresh from the current ``loc``, ``log_scale`` and :math:`\varepsilon` (one
      elementwise operation, negligible next to the convolution), so it can never be stale; to form it once for
      many calls (every window of a volume), run them inside :class:`hold_weights`.

    Shapes follow :mod:`torch.nn.functional`: ``loc`` and ``log_scale`` are
    ``(out_channels, in_channels // groups, *kernel_size)`` for a convolution and
    ``(in_channels, out_channels // groups, *kernel_size)`` when ``is_transposed``; the input is
    ``(N, in_channels, *spatial)``.

    Args:
        spatial_dims: number of spatial dimensions, 1, 2 or 3.
        in_channels: number of input channels.
        out_channels: number of output channels.
        kernel_size: convolution kernel size (int or ``spatial_dims`` ints).
        stride: convolution stride.
        padding: implicit zero padding, as in :mod:`torch.nn`.
        dilation: kernel dilation.
        groups: blocked connections from input to output channels.
        bias: whether to add a learnable (deterministic) bias.
        is_transposed: a transposed convolution instead of a convolution.
        output_padding: extra size added to one side of the output, transposed convolutions only.
        init_log_scale: initial value of every ``log_scale`` entry. The default ``-5`` gives a posterior
            standard deviation of about 6.7e-3, small against PyTorch's default weight scale, so a fresh layer
            behaves almost like its mean while the variance can still grow during training.
        mode: initial stochastic mode, ``"mean"``, ``"local"`` or ``"sampled"``.
        eps: added to the output variance before the square root in ``"local"`` mode, for a finite gradient.
        fuse_local: compute the two convolutions of ``"local"`` mode as one grouped convolution of
            ``cat(x, x²)`` with ``cat(W_loc, W_scale²)`` (same result). ``None`` (default) fuses exactly where
            PyTorch would otherwise leave its fast oneDNN kernels for a slow fallback: on CPU, for a 3D
            convolution of one sample (``N = 1``) whose input is small (``N·C·D·H <= 20480``; a grouped
            convolution always takes oneDNN). Measured on a 2-core CPU, batch 1: 16 channels at 32³, fused 1.07×
            a deterministic convolution's forward+backward against 2.34× unfused. From two samples on PyTorch
            takes oneDNN for both convolutions anyway, and the unfused path keeps the lean backward
            (:class:`_LocalReparameterization`): a whole DWPUNet ``local`` step at 64³, batch 2, was 8 % faster
            unfused than with the earlier rule that fused by size alone, and equal at 32³.
        redraw_local_noise: in ``"local"`` training (the unfused path), keep the random generator's state instead of
            the output-sized ``ξ / 2σ`` for the backward, which draws the same ``ξ`` again and recomputes ``σ`` by
            the variance convolution (same values and gradients, the caller's random stream untouched).
            ``None`` (default) redraws exactly where that convolution is cheap: at most
            ``REDRAW_MAX_IN_CHANNELS`` input channels per group, a network's first layer on one- or few-channel
            images. Measured on a 2-core CPU, the appendix-B DWPUNet at 64³, batch 2 (first layer 1 → 16
            channels): peak memory of a ``local`` train step 1.33× → 1.27× a deterministic step's, for about 2 %
            more time per step.

    Example::

        conv = BayesianConv(3, 4, 8, kernel_size=3, padding=1)
        y = conv(torch.randn(2, 4, 16, 16, 16))  # local reparameterization, (2, 8, 16, 16, 16)
        conv.mode = "sampled"; conv.resample()   # one weight draw, held
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        bias: bool = True,
        is_transposed: bool = False,
        output_padding: int | Sequence[int] = 0,
        init_log_scale: float = -5.0,
        mode: StochasticMode = "local",
        eps: float = 1e-8,
        fuse_local: bool | None = None,
        redraw_local_noise: bool | None = None,
    ) -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims!r}.")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            check_int(value, name, minimum=1)
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"in_channels={in_channels} and out_channels={out_channels} must both be divisible by "
                f"groups={groups}."
            )
        check_float(init_log_scale, "init_log_scale")
        check_float(eps, "eps", minimum=0.0)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _tuple(kernel_size, spatial_dims, "kernel_size")
        self.stride = _tuple(stride, spatial_dims, "stride")
        self.padding = _tuple(padding, spatial_dims, "padding")
        self.dilation = _tuple(dilation, spatial_dims, "dilation")
        self.output_padding = _tuple(output_padding, spatial_dims, "output_padding")
        if any(k < 1 for k in self.kernel_size):
            raise ValueError(f"kernel_size must be positive, got {kernel_size!r}.")
        if not is_transposed and any(self.output_padding):
            raise ValueError(
                f"output_padding={output_padding!r} is only valid with is_transposed=True; pass 0."
            )
        self.groups = groups
        self.is_transposed = bool(is_transposed)
        self.init_log_scale = float(init_log_scale)
        self.eps = float(eps)
        self.fuse_local = fuse_local
        if redraw_local_noise is not None and not isinstance(redraw_local_noise, bool):
            raise TypeError(f"redraw_local_noise must be True, False or None, got {redraw_local_noise!r}.")
        self.redraw_local_noise = redraw_local_noise
        self._conv = _CONV[(spatial_dims, self.is_transposed)]

        if self.is_transposed:
            shape = (in_channels, out_channels // groups, *self.kernel_size)
        else:
            shape = (out_channels, in_channels // groups, *self.kernel_size)
        self.loc = nn.Parameter(torch.empty(shape))
        self.log_scale = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        # epsilon of the held weight draw ("sampled" mode); not part of the state dict
        self.register_buffer("_epsilon", None, persistent=False)
        # the weight formed once inside a ``hold_weights`` context (``None`` outside one), the grad/inference mode
        # it was formed under, and how many ``hold_weights`` contexts hold this layer now
        self._held_weight: Tensor | None = None
        self._held_key: tuple[bool, bool] | None = None
        self._hold_depth = 0
        self.mode = mode
        self.reset_parameters()

    # ------------------------------------------------------------------ parameters
    def reset_parameters(self) -> None:
        """Initialise ``loc`` and ``bias`` as :class:`torch.nn.Conv3d` does, and ``log_scale`` to ``init_log_scale``."""
        nn.init.kaiming_uniform_(self.loc, a=math.sqrt(5))
        nn.init.constant_(self.log_scale, self.init_log_scale)
        if self.bias is not None:
            fan_in, _ = nn.init._calculate_fan_in_and_fan_out(self.loc)
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            nn.init.uniform_(self.bias, -bound, bound)
        self._epsilon = None
        self._drop_held_weight()

    @property
    def mode(self) -> str:
        """The stochastic mode: ``"mean"``, ``"local"`` or ``"sampled"``."""
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in STOCHASTIC_MODES:
            raise ValueError(f"mode must be one of {STOCHASTIC_MODES}, got {value!r}.")
        self._mode = value

    @property
    def scale(self) -> Tensor:
        """Posterior standard deviation ``exp(log_scale)``, same shape as ``loc``."""
        return self.log_scale.exp()

    @property
    def kernels(self) -> tuple[Tensor, Tensor]:
        """``(loc, log_scale)`` viewed as a batch of kernels, each ``(num_kernels, *kernel_size)``.

        A kernel is one slice ``W[o, i]`` (``W[i, o]`` when transposed); ``num_kernels`` is the product of the
        two leading dimensions.
        """
        return self.loc.flatten(0, 1), self.log_scale.flatten(0, 1)

    def resample(self, generator: torch.Generator | None = None) -> None:
        r"""Draw a new :math:`\varepsilon \sim \mathcal{N}(0, I)` for ``"sampled"`` mode and hold it."""
        self._epsilon = torch.randn(
            self.loc.shape, generator=generator, device=self.loc.device, dtype=self.loc.dtype
        )
        self._drop_held_weight()

    @property
    def epsilon(self) -> Tensor | None:
        r"""The held :math:`\varepsilon` of ``"sampled"`` mode (``None`` before the first draw); settable, e.g. to
        put back a draw saved earlier."""
        return self._epsilon

    @epsilon.setter
    def epsilon(self, value: Tensor | None) -> None:
        if value is not None and tuple(value.shape) != tuple(self.loc.shape):
            raise ValueError(f"epsilon must have the weight's shape {tuple(self.loc.shape)}, got {tuple(value.shape)}.")
        self._epsilon = value
        self._drop_held_weight()

    def sample_weight(self) -> Tensor:
        """The held weight draw ``loc + scale * epsilon`` (``epsilon`` drawn first if none is held); differentiable.

        Formed afresh from the current parameters on every call, so an edit of ``loc``/``log_scale`` (also one
        through ``.data`` that no version counter sees) is always in effect, also under
        :func:`torch.inference_mode`. Inside a :class:`hold_weights` context the weight is formed once, on the
        first call, and that tensor is returned by every later call until :meth:`resample`, a new ``epsilon``,
        a change of grad/inference mode, or the end of the context.

        Returns:
            The weight, shaped like ``loc``.
        """
        eps = self._epsilon
        if eps is None or eps.shape != self.loc.shape or eps.device != self.loc.device:
            self.resample()
            eps = self._epsilon
        if eps.is_inference() and not torch.is_inference_mode_enabled():
            # drawn under inference mode: a normal copy (same values), which autograd may save for backward
            eps = self._epsilon = eps.clone()
        if self._hold_depth == 0:
            return self._form_weight(eps)
        key = (torch.is_grad_enabled(), torch.is_inference_mode_enabled())
        if self._held_weight is None or self._held_key != key:
            self._held_weight, self._held_key = self._form_weight(eps), key
        return self._held_weight

    def _form_weight(self, eps: Tensor) -> Tensor:
        """``loc + scale * eps``, shaped like ``loc``."""
        return self.loc + self.scale * eps.to(self.loc.dtype)

    @property
    def held_weight(self) -> Tensor | None:
        """The weight formed inside the current :class:`hold_weights` context (``None`` outside one or before
        the first ``"sampled"`` call in it)."""
        return self._held_weight

    def _drop_held_weight(self) -> None:
        self._held_weight = None
        self._held_key = None

    def __getstate__(self) -> dict[str, Any]:
        # a copy (deepcopy, pickle) is not inside the original's hold_weights context: it holds nothing
        state = super().__getstate__()
        state.update(_held_weight=None, _held_key=None, _hold_depth=0)
        return state

    def _apply(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> BayesianConv:
        # ``.to()``, ``.cuda()``, ``.half()``... replace the parameters: a held weight would be of the old ones
        self._drop_held_weight()
        return super()._apply(fn, *args, **kwargs)

    # ------------------------------------------------------------------ forward
    def _apply_conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if self.is_transposed:
            return self._conv(
                x, weight, bias, self.stride, self.padding, self.output_padding, self.groups, self.dilation
            )
        return self._conv(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the convolution in the current ``mode``.

        Args:
            x: input of shape ``(N, in_channels, *spatial)`` with ``spatial_dims`` spatial dimensions.

        Returns:
            Output of shape ``(N, out_channels, *spatial_out)``.
        """
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"BayesianConv expects input of shape (N, {self.in_channels}, *{self.spatial_dims} spatial dims), "
                f"got {tuple(x.shape)}."
            )
        mode = self._mode
        if mode == "mean":
            return self._apply_conv(x, self.loc, self.bias)
        if mode == "sampled":
            return self._apply_conv(x, self.sample_weight(), self.bias)
        var_weight = (2.0 * self.log_scale).exp()
        if self._fuse(x):
            # one grouped convolution: groups [x-groups | x²-groups] against [loc | scale²]
            stacked = self._conv_grouped(torch.cat([x, x * x], 1), torch.cat([self.loc, var_weight], 0))
            mean, var = stacked.chunk(2, dim=1)
            if self.bias is not None:
                mean = mean + self.bias.view(1, -1, *([1] * self.spatial_dims))
        elif torch.is_autocast_enabled(x.device.type) or not torch.is_grad_enabled():
            # mixed dtypes (autograd of the plain expression), or nothing to keep for a backward
            mean = self._apply_conv(x, self.loc, self.bias)
            var = self._apply_conv(x * x, var_weight, None)
        else:
            conv_args = (self.stride, self.padding, self.dilation, self.is_transposed,
                         self.output_padding if self.is_transposed else (0,) * self.spatial_dims, self.groups)
            return _LocalReparameterization.apply(x, self.loc, var_weight, self.bias, conv_args, self.eps,
                                                  self._redraw())
        return mean + (var + self.eps).sqrt() * randn_like(mean)

    def _fuse(self, x: Tensor) -> bool:
        if self.fuse_local is not None:
            return self.fuse_local
        return (
            x.device.type == "cpu"
            and self.spatial_dims == 3
            and not self.is_transposed
            and x.shape[0] == 1
            and x.shape[1] * x.shape[2] * x.shape[3] <= ONEDNN_MIN_SINGLE_SAMPLE_SIZE
        )

    def _redraw(self) -> bool:
        if self.redraw_local_noise is not None:
            return self.redraw_local_noise
        return self.in_channels // self.groups <= REDRAW_MAX_IN_CHANNELS

    def _conv_grouped(self, x: Tensor, weight: Tensor) -> Tensor:
        if self.is_transposed:
            return self._conv(
                x, weight, None, self.stride, self.padding, self.output_padding, 2 * self.groups, self.dilation
            )
        return self._conv(x, weight, None, self.stride, self.padding, self.dilation, 2 * self.groups)

    @classmethod
    def from_conv(
        cls,
        conv: nn.Module,
        init_log_scale: float = -5.0,
        copy_weights: bool = True,
        mode: StochasticMode = "local",
    ) -> BayesianConv:
        """Build a :class:`BayesianConv` with the hyper-parameters of a :mod:`torch.nn` convolution.

        Args:
            conv: an ``nn.Conv{1,2,3}d`` or ``nn.ConvTranspose{1,2,3}d`` with zero padding mode.
            init_log_scale: initial ``log_scale``.
            copy_weights: copy ``conv.weight`` into ``loc`` and ``conv.bias`` into ``bias`` (fine-tune start);
                otherwise keep the fresh initialisation.
            mode: initial stochastic mode.
        """
        if not isinstance(conv, nn.modules.conv._ConvNd):
            raise TypeError(f"conv must be a torch.nn convolution, got {type(conv).__name__}.")
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(
                f"conv has padding={conv.padding!r}, padding_mode={conv.padding_mode!r}; only explicit "
                "zero padding is supported."
            )
        spatial_dims = len(conv.kernel_size)
        layer = cls(
            spatial_dims,
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            is_transposed=conv.transposed,
            output_padding=conv.output_padding if conv.transposed else 0,
            init_log_scale=init_log_scale,
            mode=mode,
        ).to(device=conv.weight.device, dtype=conv.weight.dtype)
        if copy_weights:
            with torch.no_grad():
                layer.loc.copy_(conv.weight)
                if conv.bias is not None and layer.bias is not None:
                    layer.bias.copy_(conv.bias)
        return layer

    def extra_repr(self) -> str:
        s = (
            f"spatial_dims={self.spatial_dims}, {self.in_channels}, {self.out_channels}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
        )
        if any(d != 1 for d in self.dilation):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.is_transposed:
            s += f", is_transposed=True, output_padding={self.output_padding}"
        if self.bias is None:
            s += ", bias=False"
        return s + f", mode={self._mode!r}"


class hold_weights:  # noqa: N801 (a context manager used like torch.no_grad)
    r"""Form each :class:`BayesianConv`'s sampled weight once and reuse it, for the duration of a ``with`` block.

    Outside this context, every ``"sampled"`` forward forms :math:`W = \text{loc} + \text{scale} \odot
    \varepsilon` anew. Inside it, each layer forms :math:`W` on its first ``"sampled"`` call and returns that
    same tensor to every later call (e.g. every sliding window, and every window batch, of one Monte Carlo
    sample), until :meth:`BayesianConv.resample` or a new ``epsilon`` (which form it anew on the next call). On
    exit, also by an exception, the held weights are released. Contexts nest: a layer's weight is released
    when the outermost context holding it exits.

    Contract: ``loc`` and ``log_scale`` must not be changed inside the context (an optimiser step, an edit
    through ``.data``); the held weight would not see the change. Changing the grad or inference mode inside
    the context is fine: the weight is formed anew for the new mode. With gradients enabled every forward
    inside the context shares one weight tensor and its graph, so take one ``backward`` of all of them (or
    pass ``retain_graph=True``).

    Example::

        with torch.no_grad(), stochastic_mode(net, "sampled"), hold_weights(net):
            out = SlidingWindowInferer(roi_size=32, sw_batch_size=4)(image, net)  # one W per layer

    Args:
        net: a module (its :class:`BayesianConv` submodules, itself included, are held) or an iterable of
            :class:`BayesianConv` layers.

    Raises:
        TypeError: when ``net`` is neither a module nor an iterable of :class:`BayesianConv`.
    """

    def __init__(self, net: nn.Module | Iterable[BayesianConv]) -> None:
        if isinstance(net, nn.Module):
            layers = [m for m in net.modules() if isinstance(m, BayesianConv)]
        elif isinstance(net, Iterable) and not isinstance(net, (str, bytes, Tensor)):
            layers = list(net)
            wrong = [type(m).__name__ for m in layers if not isinstance(m, BayesianConv)]
            if wrong:
                raise TypeError(
                    f"net must be a torch.nn.Module or an iterable of BayesianConv layers, got an iterable holding "
                    f"{sorted(set(wrong))}; pass the network itself or bayesian_modules(net).values()."
                )
        else:
            raise TypeError(
                f"net must be a torch.nn.Module or an iterable of BayesianConv layers, got {type(net).__name__}; "
                "pass the network itself."
            )
        self._layers: list[BayesianConv] = list({id(m): m for m in layers}.values())

    @property
    def layers(self) -> list[BayesianConv]:
        """The held layers."""
        return list(self._layers)

    def __enter__(self) -> hold_weights:
        for layer in self._layers:
            layer._hold_depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        for layer in self._layers:
            layer._hold_depth = max(layer._hold_depth - 1, 0)
            if layer._hold_depth == 0:
                layer._drop_held_weight()
