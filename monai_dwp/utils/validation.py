"""Argument validators shared by the library and the bundle configs.

Every validator names the argument, shows the value it got and says what it accepts, so that a bad setting fails
where it is given rather than deep inside a trainer. ``bool`` is never accepted as a number (``True`` is an ``int``
in Python).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "BundleInputError",
    "InputValueError",
    "InputFileError",
    "BOOL_WORDS",
    "as_bool",
    "check_int",
    "check_float",
    "check_optional_float",
]


class BundleInputError(Exception):
    """An expected problem with what a user gave (a setting, a file, a dataset), with a message that names it, the
    value found and the fix.

    A bundle run from the command line that stops on one prints only ``monai_dwp: <message>`` and exits with
    status 1, also when MONAI wrapped it (``Failed to evaluate``, ``applying transform``): no traceback for an
    expected situation (the hook is installed by :mod:`monai_dwp.bundle_utils`, which every bundle imports).
    """


class InputValueError(BundleInputError, ValueError):
    """A bad value or file content (a ``ValueError``)."""


class InputFileError(BundleInputError, FileNotFoundError):
    """A missing file or folder (a ``FileNotFoundError``)."""

BOOL_WORDS: dict[str, bool] = {"true": True, "false": False, "1": True, "0": False}
"""Spellings accepted for a boolean given on a command line (case-insensitive): ``python -m monai.bundle run`` passes
``--amp false`` as the *string* ``'false'``, which Python treats as true."""


def as_bool(value: Any, name: str) -> bool:
    """Convert a boolean setting, accepting the spellings of a command line.

    Args:
        value: ``True``/``False``, ``1``/``0`` or a string ``true/false/True/False/1/0`` (any case).
        name: the argument's name, for the error message.

    Returns:
        The boolean.

    Raises:
        ValueError: any other value, e.g. ``"flase"`` or ``2``.

    Example::

        >>> as_bool("false", "amp")
        False
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in BOOL_WORDS:
        return BOOL_WORDS[value.strip().lower()]
    raise ValueError(f"{name} must be true or false (true/false/True/False/1/0), got {value!r}.")


def check_int(
    value: Any, name: str, minimum: int | None = None, maximum: int | None = None, hint: str = ""
) -> int:
    """Return ``value`` if it is an integer in ``[minimum, maximum]``.

    Args:
        value: the setting.
        name: the argument's name, for the error message.
        minimum, maximum: bounds (``None``: unbounded).
        hint: the fix, appended to the error message after a semicolon (e.g. ``"e.g. sw_batch_size=4"``).

    Raises:
        TypeError: ``value`` is not an ``int`` (``bool`` and ``float`` included, e.g. ``5.5`` or ``"five"``).
        ValueError: ``value`` is outside the range.
    """
    end = f"; {hint}." if hint else "."
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__}){end}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be ≥ {minimum}, got {value}{end}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be ≤ {maximum}, got {value}{end}")
    return value


def check_float(
    value: Any,
    name: str,
    minimum: float | None = None,
    maximum: float | None = None,
    include_minimum: bool = True,
    include_maximum: bool = True,
    hint: str = "",
) -> float:
    """Return ``float(value)`` if ``value`` is a finite real number in the given interval.

    Args:
        value: the setting.
        name: the argument's name, for the error message.
        minimum, maximum: bounds (``None``: unbounded).
        include_minimum, include_maximum: whether each bound itself is allowed.
        hint: the fix, appended to the error message after a semicolon.

    Raises:
        TypeError: ``value`` is not a real number (``bool`` and strings included).
        ValueError: ``value`` is NaN, infinite or outside the interval.
    """
    end = f"; {hint}." if hint else "."
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__}){end}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}{end}")
    low = "[" if include_minimum else "("
    high = "]" if include_maximum else ")"
    interval = f"{low}{'-inf' if minimum is None else minimum}, {'inf' if maximum is None else maximum}{high}"
    if minimum is not None and (value < minimum or (value == minimum and not include_minimum)):
        raise ValueError(f"{name} must lie in {interval}, got {value}{end}")
    if maximum is not None and (value > maximum or (value == maximum and not include_maximum)):
        raise ValueError(f"{name} must lie in {interval}, got {value}{end}")
    return value


def check_optional_float(value: Any, name: str, **bounds: Any) -> float | None:
    """:func:`check_float`, also accepting ``None`` and the command-line words ``none``/``null`` (any case)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
        return None
    return check_float(value, name, **bounds)
