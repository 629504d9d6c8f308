"""The machine a figure was measured on, in words."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["cpu_capability", "cpu_label", "cpu_name", "native_bfloat16"]


def cpu_name(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The processor's model name (the first ``model name`` of ``cpuinfo`` where Linux tells it), else
    :func:`platform.processor`, else the architecture (:func:`platform.machine`), e.g. ``"AMD EPYC"``."""
    try:
        for line in Path(cpuinfo).read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_capability() -> str:
    """The vector instruction set PyTorch's CPU kernels use on this machine (``"AVX512"``, ``"AVX2"``, ``"DEFAULT"``,
    ...; :func:`torch.backends.cpu.get_cpu_capability`), or ``""`` where PyTorch cannot tell.

    Two machines sold under one model name (``"AMD EPYC"``) may differ here, and CPU timings with it: a figure
    measured with AVX-512 kernels is not comparable with one measured with AVX2 kernels.
    """
    try:
        import torch

        return str(torch.backends.cpu.get_cpu_capability())
    except (ImportError, AttributeError, RuntimeError):
        return ""


def cpu_label() -> str:
    """:func:`cpu_name` with :func:`cpu_capability` where PyTorch tells it, e.g. ``"AMD EPYC, AVX2 kernels"``: the
    processor of a results file's machine line."""
    isa = cpu_capability()
    return f"{cpu_name()}, {isa} kernels" if isa else cpu_name()


def native_bfloat16(device: str | torch.device, cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether ``device`` multiplies bfloat16 matrices in hardware, so that a bfloat16 matrix product is faster
    than a float32 one there: a CUDA device with bfloat16 support (:func:`torch.cuda.is_bf16_supported`), or a CPU
    whose PyTorch kernels use AVX-512 (:func:`cpu_capability`) and whose flags in ``cpuinfo`` include
    ``avx512_bf16`` or ``amx_bf16`` (Linux; elsewhere ``False``). Where this is ``False`` bfloat16 is emulated and
    may be slower than float32.

    Args:
        device: a ``torch.device`` or its name, e.g. ``"cpu"``, ``"cuda:0"``.
        cpuinfo: the file the CPU's flags are read from.
    """
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type != "cpu" or not cpu_capability().startswith("AVX512"):
        return False
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return bool({"avx512_bf16", "amx_bf16"} & set(value.split()))
    return False
