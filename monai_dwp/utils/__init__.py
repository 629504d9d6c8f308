"""Small helpers shared across monai_dwp."""

from __future__ import annotations

from .allocator import tune_allocator
from .io import atomic_directory, atomic_path, atomic_write
from .machine import cpu_capability, cpu_label, cpu_name, native_bfloat16
from .precision import check_compute_dtype, resolve_compute_dtype
from .validation import (
    BundleInputError,
    InputFileError,
    InputValueError,
    as_bool,
    check_float,
    check_int,
    check_optional_float,
)

__all__ = [
    "BundleInputError",
    "InputFileError",
    "InputValueError",
    "atomic_directory",
    "atomic_path",
    "atomic_write",
    "as_bool",
    "check_compute_dtype",
    "check_float",
    "check_int",
    "check_optional_float",
    "cpu_capability",
    "cpu_label",
    "cpu_name",
    "native_bfloat16",
    "resolve_compute_dtype",
    "tune_allocator",
]
