"""The machine a figure was measured on, in words."""

from __future__ import annotations

import platform
from pathlib import Path

__all__ = ["cpu_name"]


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
