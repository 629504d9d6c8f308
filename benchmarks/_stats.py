"""Paired statistics shared by the benchmarks: the mean difference over seeds with its 95 % t-interval."""

from __future__ import annotations

import math
import statistics

__all__ = ["T_975", "paired_interval"]

T_975: dict[int, float] = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
                           9: 2.262}
"""Two-sided 97.5 % quantiles of Student's t by degrees of freedom (2.0 beyond 9)."""


def paired_interval(diffs: list[float]) -> tuple[float, float, float]:
    """``(mean, low, high)`` of paired differences: the mean and its 95 % t-interval (``nan`` bounds for one pair)."""
    mean = statistics.mean(diffs)
    if len(diffs) < 2:
        return mean, math.nan, math.nan
    half = T_975.get(len(diffs) - 1, 2.0) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return mean, mean - half, mean + half
