"""Memory-format conversions that keep both passes of autograd in one layout; the layout rule of CPU convolutions."""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from monai_dwp.utils.machine import cpu_capability

__all__ = [
    "ONEDNN_MIN_SINGLE_SAMPLE_SIZE",
    "channels_last_format",
    "randn_like",
    "to_memory_format",
    "use_channels_last",
]

_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}

ONEDNN_MIN_SINGLE_SAMPLE_SIZE = 20480
"""PyTorch (``use_mkldnn`` in ATen's ``Convolution.cpp``) runs a 3×3×3 CPU convolution of one sample in oneDNN only
when ``C·D·H`` of its input exceeds this; smaller single samples take its native path."""


class _ToMemoryFormat(torch.autograd.Function):
    """``x`` copied to ``memory_format``; the gradient copied back to ``x``'s own format.

    ``x.contiguous(memory_format=...)`` passes its gradient through unchanged, so a layer that runs in channels-last
    between two contiguous ones would hand a channels-last gradient to the contiguous layers before it, whose
    element-wise backward steps then run on mixed strides (several times slower on CPU).
    """

    @staticmethod
    def forward(ctx, x, memory_format):  # type: ignore[override]
        ctx.source_format = _format_of(x)
        return x.contiguous(memory_format=memory_format)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        return grad.contiguous(memory_format=ctx.source_format), None


def _format_of(x: Tensor) -> torch.memory_format:
    """``x``'s layout: channels-last when it is (and is not also contiguous), else contiguous."""
    if x.ndim in _CHANNELS_LAST and not x.is_contiguous() and x.is_contiguous(memory_format=_CHANNELS_LAST[x.ndim]):
        return _CHANNELS_LAST[x.ndim]
    return torch.contiguous_format


def channels_last_format(ndim: int) -> torch.memory_format:
    """``torch.channels_last`` for 4-D tensors, ``torch.channels_last_3d`` for 5-D ones.

    Raises:
        ValueError: for any other number of dimensions.
    """
    if ndim not in _CHANNELS_LAST:
        raise ValueError(f"channels-last layouts exist for 4-D and 5-D tensors only, got ndim={ndim!r}.")
    return _CHANNELS_LAST[ndim]


def to_memory_format(x: Tensor, memory_format: torch.memory_format) -> Tensor:
    """``x`` in ``memory_format`` (no copy when it already is), with the gradient returned in ``x``'s format.

    Args:
        x: any tensor.
        memory_format: ``torch.contiguous_format``, ``torch.channels_last`` (4-D) or ``torch.channels_last_3d``
            (5-D).

    Returns:
        A tensor equal to ``x`` laid out in ``memory_format``.
    """
    if x.is_contiguous(memory_format=memory_format):
        return x
    if not torch.is_grad_enabled() or not x.requires_grad:
        return x.contiguous(memory_format=memory_format)
    return _ToMemoryFormat.apply(x, memory_format)


def use_channels_last(x: Tensor, kernel_size: tuple[int, ...] | int, two_convolutions: bool = False) -> bool:
    """Whether a convolution of ``x`` is faster channels-last: in a training pass (gradients enabled) on CPU, for 5-D
    inputs of more than one channel and a kernel wider than 1, where PyTorch hands the convolution to oneDNN (from
    two samples on, or one sample with ``C·D·H > 20480``; below that it takes its native path), and, where PyTorch's
    CPU kernels use AVX-512, only for a layer that runs two convolutions of its input (``local`` mode).

    In PyTorch's default (contiguous) layout, oneDNN computes the weight gradient of a 3-D convolution as a GEMM
    over the plain ``NCDHW`` tensors, several times slower than over channels-last ones, and reorders activations
    to and from a blocked layout around the forward and the input gradient. Measured on a 2-core AVX2 CPU (``torch``
    2.13), forward and backward of a 3×3×3 convolution, batch 2: 16 → 16 channels at 64³ 353 → 202 ms, 16 → 32 at
    64³ stride 2 124 → 77 ms, 32 → 32 at 32³ 131 → 89 ms. A forward pass alone gains little from the layout and
    loses the two conversions around it (a whole-volume inference pass was ~20 % slower channels-last), hence the
    rule that gradients be enabled. With AVX-512 kernels (a 2-core AMD EPYC, ``torch`` 2.13) the layout made whole
    deterministic and ``sampled`` train steps of the appendix-B U-Net slower, interleaved in one process: 1.07×
    and 1.06× the time at 32³, batch 4 (2 threads; 1.05× with one), 1.03× at 64³, batch 2; ``local`` steps, whose
    layers convolve ``x`` and ``x²``, were faster channels-last there too (0.95× at 32³, batch 4 and at 64³,
    batch 2).

    Args:
        x: the convolution's input, ``(N, C, *spatial)``.
        kernel_size: the convolution's kernel size.
        two_convolutions: whether the layer convolves its input twice (a :class:`BayesianConv` in ``local`` mode).
    """
    sizes = (kernel_size,) if isinstance(kernel_size, int) else tuple(kernel_size)
    return (
        torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.ndim == 5
        and x.shape[1] > 1
        and max(sizes) > 1
        and (x.shape[0] > 1 or x.shape[1] * x.shape[2] * x.shape[3] > ONEDNN_MIN_SINGLE_SAMPLE_SIZE)
        and (two_convolutions or not _avx512_kernels())
    )


@functools.cache
def _avx512_kernels() -> bool:
    """Whether PyTorch's CPU kernels use AVX-512 here (asked once per process)."""
    return cpu_capability().startswith("AVX512")


def randn_like(x: Tensor) -> Tensor:
    """Standard normal draws shaped and laid out like ``x`` (contiguous, channels-last or any dense permutation).

    ``torch.randn_like`` of a channels-last tensor fills it element by element through a strided path, ~7× slower on
    CPU than filling the same memory in order; here the memory is filled in order through the permuted view in
    which it is contiguous. Every element is an independent draw either way.
    """
    if x.is_contiguous():
        return torch.randn_like(x)
    out = torch.empty_like(x)
    order = sorted(range(out.ndim), key=lambda d: -out.stride(d))
    view = out.permute(order)
    if view.is_contiguous():
        view.normal_()
    else:  # overlapping or gapped strides: the strided path
        out.normal_()
    return out
