"""The machine a figure was measured on, in words."""

from __future__ import annotations

import platform
from pathlib import Path

__all__ = ["cpu_capability", "cpu_label", "cpu_name"]


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
