"""Statistics shared by the benchmarks: a mean (of paired differences, of ratios) with its 95 % t-interval."""

from __future__ import annotations

import math
import statistics
from collections.abc import Hashable, Mapping

__all__ = ["T_975", "paired_diffs", "paired_interval", "t_975"]

T_975: dict[int, float] = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
                           9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120,
                           17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064,
                           25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042}
"""97.5 % quantiles of Student's t (two-sided 95 %) by degrees of freedom; :func:`t_975` goes beyond 30."""


def t_975(df: int) -> float:
    """The 97.5 % quantile of Student's t with ``df`` degrees of freedom (beyond 30: its value at 30, a slightly
    wider interval than the exact one)."""
    return T_975[min(df, 30)]


def paired_interval(diffs: list[float]) -> tuple[float, float, float]:
    """``(mean, low, high)`` of paired differences: the mean and its 95 % t-interval (``nan`` bounds for one pair)."""
    mean = statistics.mean(diffs)
    if len(diffs) < 2:
        return mean, math.nan, math.nan
    half = t_975(len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return mean, mean - half, mean + half


def paired_diffs(a: Mapping[Hashable, float], b: Mapping[Hashable, float]) -> list[float]:
    """``a[k] - b[k]`` over the keys the two share (e.g. ``(method, case)`` pairs), in sorted key order."""
    return [a[k] - b[k] for k in sorted(set(a) & set(b))]
