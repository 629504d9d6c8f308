"""Results over seeds as markdown tables and figures, shared by the benchmark scripts.

A *cell* summarises one (row, column) of a table, e.g. (method, N): the values of its seeds as ``mean ± sd (seeds)``,
or the paired difference of two rows over the seeds both ran as ``mean [95 % t-interval]``.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from _stats import paired_interval
from monai_dwp.utils.io import atomic_write

__all__ = ["mean_sd", "interval_text", "paired_cell", "mean_table", "size_axis", "save_figure"]

EMPTY = "–"
"""The cell of a (row, column) without results."""


def mean_sd(values: Sequence[float], digits: int = 3) -> str:
    """``mean ± sd (count)`` of ``values`` (population sd: 0 for one value), ``–`` when there are none."""
    if not values:
        return EMPTY
    return f"{statistics.mean(values):.{digits}f} ± {statistics.pstdev(values):.{digits}f} ({len(values)})"


def interval_text(diffs: Sequence[float], digits: int = 3) -> str:
    """``mean [low, high]``: paired differences with their 95 % t-interval (``(1 seed)`` for one pair), with
    ``digits`` decimals."""
    if not diffs:
        return EMPTY
    mean, lo, hi = paired_interval(list(diffs))
    f = f"+.{digits}f"
    return f"{mean:{f}} [{lo:{f}}, {hi:{f}}]" if len(diffs) > 1 else f"{mean:{f}} (1 seed)"


def paired_cell(a: Mapping[int, float], b: Mapping[int, float], digits: int = 3) -> str:
    """:func:`interval_text` of ``a − b`` over the seeds (the keys) both hold."""
    return interval_text([a[s] - b[s] for s in sorted(set(a) & set(b))], digits)


def mean_table(
    values: Callable[[str, int], Mapping[int, float]],
    names: Sequence[str],
    columns: Sequence[int],
    first: str = "method",
    column_label: Callable[[int], str] = lambda n: f"N = {n}",
    higher_is_better: bool = True,
) -> list[str]:
    """A markdown table of :func:`mean_sd` cells, one row per name and one column per entry of ``columns``.

    Args:
        values: ``values(name, column)`` -> ``{seed: value}`` of that cell.
        names: the rows, shown as code.
        columns: the columns (e.g. the training sizes N).
        first: the header of the first column.
        column_label: the header of a column.
        higher_is_better: which mean per column is set in bold (only when the column holds different means).

    Returns:
        the table's lines and a blank line.
    """
    lines = [f"| {first} | " + " | ".join(column_label(n) for n in columns) + " |", "|---|" + "---|" * len(columns)]
    cells = {(m, n): list(values(m, n).values()) for m in names for n in columns}
    means = {k: statistics.mean(v) for k, v in cells.items() if v}
    pick = max if higher_is_better else min
    best = {}
    for n in columns:
        column = [means[(m, n)] for m in names if (m, n) in means]
        if len({round(v, 12) for v in column}) > 1:
            best[n] = pick(column)
    for m in names:
        row = []
        for n in columns:
            text = mean_sd(cells[(m, n)])
            row.append(f"**{text}**" if (m, n) in means and means[(m, n)] == best.get(n) else text)
        lines.append(f"| `{m}` | " + " | ".join(row) + " |")
    return lines + [""]


def size_axis(ax: Any, sizes: Sequence[int], ylabel: str, xlabel: str = "target training cases N") -> None:
    """A matplotlib axis of some metric (``ylabel``) against the training size: ticks at ``sizes``, a light grid."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xticks(list(sizes))
    ax.grid(alpha=0.3)


def save_figure(fig: Any, path: Path) -> None:
    """Write the matplotlib figure ``fig`` to ``path`` as a PNG (atomically: never a half-written file) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    atomic_write(path, "wb", lambda f: fig.savefig(f, dpi=90, format="png"))
    plt.close(fig)
