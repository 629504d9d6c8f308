"""The ``compute_dtype`` argument shared by the modules that can run their matrix products in bfloat16."""

from __future__ import annotations

from typing import Any

import torch

from monai_dwp.utils.machine import native_bfloat16

__all__ = ["COMPUTE_DTYPES", "check_compute_dtype", "resolve_compute_dtype"]

COMPUTE_DTYPES: dict[Any, torch.dtype | str | None] = {
    None: None,
    "float32": None,
    torch.float32: None,
    "bfloat16": torch.bfloat16,
    torch.bfloat16: torch.bfloat16,
    "auto": "auto",
}
"""The accepted ``compute_dtype`` values and what each means: ``None`` (the module's own float32), ``torch.bfloat16``
(:func:`torch.autocast` in bfloat16) or ``"auto"`` (bfloat16 where :func:`~monai_dwp.utils.native_bfloat16` says the
device multiplies it in hardware, else float32)."""


def check_compute_dtype(
    value: Any,
    name: str = "compute_dtype",
    float16_hint: str = "",
    advice: str = "use 'bfloat16' for fast matrix products, 'auto' for bfloat16 where the device multiplies it in "
    "hardware, or None for float32.",
) -> torch.dtype | str | None:
    """``value`` as one of :data:`COMPUTE_DTYPES`' meanings.

    Args:
        value: ``None``, ``"float32"``, ``"bfloat16"``, ``"auto"`` or the ``torch.dtype`` of the first two.
        name: the argument's name, for the error message.
        float16_hint: why float16 is not offered (the message adds it when ``value`` is float16).
        advice: the fix the message suggests.

    Raises:
        TypeError: ``value`` is not a str, a ``torch.dtype`` or ``None``.
        ValueError: any other value.
    """
    if not isinstance(value, (str, torch.dtype, type(None))):
        raise TypeError(f"{name} must be a str, a torch.dtype or None, got {type(value).__name__}: {value!r}.")
    if value not in COMPUTE_DTYPES:
        hint = f" {float16_hint}" if value in ("float16", torch.float16) and float16_hint else ""
        raise ValueError(
            f"{name} must be None, 'float32', 'bfloat16' or 'auto', got {value!r};{hint} {advice}"
        )
    return COMPUTE_DTYPES[value]


def resolve_compute_dtype(
    compute_dtype: torch.dtype | str | None, device: torch.device | str, cache: dict[str, torch.dtype | None]
) -> torch.dtype | None:
    """The dtype a module of ``compute_dtype`` (a value of :data:`COMPUTE_DTYPES`) computes in on ``device``.

    ``"auto"`` is decided by :func:`~monai_dwp.utils.native_bfloat16` once per device type and remembered in
    ``cache`` (the module's own dict; clear it when ``compute_dtype`` is set again).

    Args:
        compute_dtype: ``None``, ``torch.bfloat16`` or ``"auto"``, as :func:`check_compute_dtype` returns.
        device: the device the computation runs on.
        cache: ``{device type: resolved dtype}`` of earlier calls; updated in place.

    Returns:
        ``torch.bfloat16``, or ``None`` for the module's own dtype.
    """
    if compute_dtype != "auto":
        return compute_dtype  # type: ignore[return-value]
    device_type = torch.device(device).type
    if device_type not in cache:
        cache[device_type] = torch.bfloat16 if native_bfloat16(device) else None
    return cache[device_type]
