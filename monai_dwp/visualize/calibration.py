"""Reliability diagram: predicted probability against observed frequency per bin, with the bin counts below."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai_dwp.utils.io import atomic_write

__all__ = ["save_reliability_diagram"]

_CURVES = ("top_label", "foreground")


def save_reliability_diagram(
    table: Sequence[Mapping[str, Any]],
    output_file: str | os.PathLike,
    title: str | None = None,
    foreground_channel: int = 1,
) -> Path:
    """Draw the reliability curves of ``table`` with the diagonal, and the voxel count of every bin below.

    The top-label curve (confidence against accuracy) is blue, the foreground curve (probability of class
    ``foreground_channel`` against its frequency) red; empty bins are left out of the curves. In the lower panel
    (log scale) the two curves' counts stand side by side in each bin. Drawn on matplotlib's Agg canvas (no global
    matplotlib state changes), 600 × 700 pixels, and written atomically.

    Args:
        table: the rows of :meth:`monai_dwp.metrics.CalibrationHistograms.reliability_table` (or of the
            ``reliability.csv`` that :class:`~monai_dwp.handlers.SegmentationCalibrationHandler` writes, read back
            with ``csv.DictReader``): ``curve`` (``"top_label"`` or ``"foreground"``), ``lower``, ``upper``,
            ``count``, ``mean_confidence``, ``accuracy``.
        output_file: the PNG file to write (its folder is created if needed).
        title: the title of the upper panel; ``None`` for none.
        foreground_channel: the class of the foreground curve, for its legend.

    Returns:
        The path of the PNG file.

    Raises:
        ValueError: when a row lacks a column or names another curve.
    """
    required = ("curve", "lower", "upper", "count", "mean_confidence", "accuracy")
    rows = []
    for i, row in enumerate(table):
        missing = [c for c in required if c not in row]
        if missing:
            raise ValueError(f"table row {i} has no {missing} (a row of reliability_table() has {list(required)}).")
        if row["curve"] not in _CURVES:
            raise ValueError(f"table row {i} has curve {row['curve']!r}, expected one of {_CURVES}.")
        rows.append({"curve": row["curve"], **{c: float(row[c]) for c in required[1:]}})
    path = Path(output_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, "wb", lambda f: _plot(rows, f, title, foreground_channel))
    return path


def _plot(table: list[dict[str, Any]], fileobj: Any, title: str | None, foreground_channel: int) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 7.0), dpi=100)
    FigureCanvasAgg(fig)
    ax, ax_count = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    styles = {
        "top_label": ("tab:blue", "o", "top label (confidence vs accuracy)", 0.25),
        "foreground": ("tab:red", "s", f"class {foreground_channel} (probability vs frequency)", 0.75),
    }
    for curve, (color, marker, text, position) in styles.items():
        rows = [r for r in table if r["curve"] == curve]
        filled = [r for r in rows if r["count"] > 0]
        ax.plot(
            [r["mean_confidence"] for r in filled],
            [r["accuracy"] for r in filled],
            color=color,
            marker=marker,
            markersize=4,
            label=text,
        )
        # the two curves' counts side by side in each bin: left half top label, right half foreground
        ax_count.bar(
            [r["lower"] + (r["upper"] - r["lower"]) * position for r in rows],
            [r["count"] for r in rows],
            width=[(r["upper"] - r["lower"]) * 0.5 for r in rows],
            color=color,
            alpha=0.7,
            label=curve.replace("_", " "),
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("observed accuracy / frequency")
    ax.legend(loc="upper left", fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    if any(r["count"] > 0 for r in table):  # a log axis needs a positive count
        ax_count.set_yscale("log")
    ax_count.set_xlabel("predicted probability (bin)")
    ax_count.set_ylabel("voxels")
    fig.tight_layout()
    fig.savefig(fileobj, format="png")
