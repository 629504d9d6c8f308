r"""Voxel-wise calibration of a probabilistic segmentation, and how well an uncertainty map ranks its errors.

Everything here works on fixed-size histograms, so memory does not grow with the number or size of the volumes and
the state of several processes is combined by summing:

- :func:`binned_calibration_error`: the expected calibration error (ECE) from per-bin counts and sums;
- :func:`histogram_roc_auc`: the ROC AUC of a score from its binned histograms for the positives and negatives;
- :func:`reliability_histogram` and :func:`score_histogram`: those histograms, from voxel values;
- :class:`CalibrationHistograms`: the histograms of one case or of many, with their values and reliability table;
- :class:`VoxelCalibration`: an Ignite ``Metric`` that accumulates them over the cases of an epoch and sums them
  over DDP ranks (Ignite's ``sync_all_reduce``).

:class:`~monai_dwp.handlers.SegmentationCalibrationHandler` feeds :class:`VoxelCalibration` from a MONAI evaluator
and writes the tables and the reliability diagram.

MONAI's ``monai.metrics.CalibrationErrorMetric`` computes the same plain ECE of one case (see
``tests/metrics/test_calibration.py``, which checks that the numbers agree), but it keeps one finished value per
case and channel: the ECE pooled over the voxels of all cases, the per-bin counts of a reliability diagram, a mask
and the ``"chance"`` range cannot be had from it, and its bin edges (``linspace(0, 1 + eps)``) put a value on an
inner edge into the lower bin, whereas the bins here are :math:`[l, u)` as in Guo et al. 2017.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from monai.utils import min_version, optional_import

from monai_dwp.utils.validation import check_int

Metric, _ = optional_import("ignite.metrics", "0.4.11", min_version, "Metric")
reinit__is_reduced, _ = optional_import("ignite.metrics.metric", "0.4.11", min_version, "reinit__is_reduced")
sync_all_reduce, _ = optional_import("ignite.metrics.metric", "0.4.11", min_version, "sync_all_reduce")

__all__ = [
    "CalibrationHistograms",
    "VoxelCalibration",
    "binned_calibration_error",
    "histogram_roc_auc",
    "reliability_histogram",
    "score_histogram",
]

TOP_LABEL_RANGES = ("unit", "chance")
SCORE_SCALES = ("log", "linear")
LOG_SCORE_FLOOR = 1e-12
"""Scores at or below this value share the lowest bin of a ``"log"`` score histogram."""
_CHUNK = 1 << 21
"""Voxels processed at once: bounds the temporary memory of one case to a few tens of MB."""
_PROB_TOLERANCE = 1e-4


# ----------------------------------------------------------------------------------------------------------------
# values from histograms
# ----------------------------------------------------------------------------------------------------------------


def binned_calibration_error(counts: torch.Tensor, sum_confidence: torch.Tensor, sum_correct: torch.Tensor) -> float:
    r"""Expected calibration error from per-bin sums.

    With :math:`B` bins, :math:`n_b` samples in bin :math:`b`, :math:`N = \sum_b n_b`, mean confidence
    :math:`\text{conf}_b = \frac{1}{n_b} \sum_{i \in b} \hat p_i` and accuracy
    :math:`\text{acc}_b = \frac{1}{n_b} \sum_{i \in b} c_i` (:math:`c_i \in \{0, 1\}` the "correct" or
    "is class k" indicator):

    .. math::
        \text{ECE} = \sum_b \frac{n_b}{N} \left| \text{acc}_b - \text{conf}_b \right|
                   = \frac{1}{N} \sum_b \Big| \sum_{i \in b} c_i - \sum_{i \in b} \hat p_i \Big| .

    Args:
        counts: ``(B,)`` number of samples per bin.
        sum_confidence: ``(B,)`` sum of the predicted probabilities per bin.
        sum_correct: ``(B,)`` sum of the indicators per bin.

    Returns:
        The ECE in ``[0, 1]``; ``nan`` when there are no samples.
    """
    total = float(counts.sum())
    if total <= 0:
        return float("nan")
    return float((sum_correct.double() - sum_confidence.double()).abs().sum()) / total


def histogram_roc_auc(positive_counts: torch.Tensor, negative_counts: torch.Tensor) -> float:
    r"""ROC AUC of a score from its binned histograms for the positive and the negative class.

    With bins ordered by increasing score, :math:`a_j` positives and :math:`b_j` negatives in bin :math:`j`,
    :math:`N_1 = \sum_j a_j`, :math:`N_0 = \sum_j b_j`:

    .. math::
        \text{AUC} = \frac{1}{N_1 N_0} \sum_j a_j \Big( \sum_{i < j} b_i + \tfrac{1}{2} b_j \Big),

    the Mann-Whitney statistic of the binned scores (pairs in the same bin count as ties, one half), which is
    the trapezoidal area under the ROC curve traced by thresholds at the bin edges. It differs from the exact
    AUC of the raw scores by at most :math:`\frac{1}{2 N_1 N_0} \sum_j a_j b_j` (the tied pairs).

    Args:
        positive_counts: ``(M,)`` histogram of the score of the positives (e.g. misclassified voxels).
        negative_counts: ``(M,)`` histogram of the score of the negatives, over the same bins.

    Returns:
        The AUC in ``[0, 1]``; ``nan`` when either class is empty.
    """
    pos = positive_counts.double().flatten()
    neg = negative_counts.double().flatten()
    if pos.shape != neg.shape:
        raise ValueError(
            f"positive_counts and negative_counts must have the same shape, got {pos.shape} and {neg.shape}."
        )
    n_pos, n_neg = float(pos.sum()), float(neg.sum())
    if n_pos <= 0 or n_neg <= 0:
        return float("nan")
    below = torch.cumsum(neg, 0) - neg  # negatives in strictly lower bins
    return float((pos * (below + 0.5 * neg)).sum()) / (n_pos * n_neg)


# ----------------------------------------------------------------------------------------------------------------
# histograms from voxel values
# ----------------------------------------------------------------------------------------------------------------


def reliability_histogram(value: torch.Tensor, target: torch.Tensor, n_bins: int, low: float = 0.0) -> torch.Tensor:
    """Count, sum of ``value`` and sum of ``target`` per equal-width bin of ``value`` over ``[low, 1]``.

    Bins are :math:`[l, u)`, the last one closed; values outside ``[low, 1]`` land in the first or last bin.

    Args:
        value: ``(N,)`` predicted probabilities (confidences).
        target: ``(N,)`` the 0/1 indicators they predict (correct, or "is class k").
        n_bins: the number of bins.
        low: the lower end of the first bin.

    Returns:
        ``(3, n_bins)`` float64 on ``value``'s device: rows count, sum of ``value``, sum of ``target``.
    """
    value, target = value.reshape(-1).double(), target.reshape(-1).double()
    idx = ((value - low) * (n_bins / (1.0 - low))).floor().clamp_(0, n_bins - 1).long()
    out = torch.zeros(3, n_bins, dtype=torch.float64, device=value.device)
    out[0].scatter_add_(0, idx, torch.ones_like(value))
    out[1].scatter_add_(0, idx, value)
    out[2].scatter_add_(0, idx, target)
    return out


def score_histogram(
    score: torch.Tensor, correct: torch.Tensor, n_bins: int, score_max: float, scale: str = "log"
) -> torch.Tensor:
    r"""Histograms of a score for the misclassified (row 0) and the correctly classified (row 1) voxels.

    The bins cover :math:`[0, \text{score\_max}]` (larger scores land in the last bin), evenly spaced in the score
    (``scale="linear"``) or in its logarithm over :math:`[10^{-12}, \text{score\_max}]` (``"log"``; smaller
    scores share the first bin). Feed the rows to :func:`histogram_roc_auc` for the AUC of "the score predicts the
    error".

    Args:
        score: ``(N,)`` the score of every voxel, e.g. its predictive entropy.
        correct: ``(N,)`` 1 where the voxel is correctly classified, 0 where it is not.
        n_bins: the number of bins.
        score_max: the upper end of the bins, ``> 1e-12``.
        scale: ``"log"`` or ``"linear"``.

    Returns:
        ``(2, n_bins)`` float64 on ``score``'s device.
    """
    if scale not in SCORE_SCALES:
        raise ValueError(f"score_scale must be one of {SCORE_SCALES}, got {scale!r}.")
    score = score.reshape(-1).double()
    if scale == "log":
        low, high = math.log(LOG_SCORE_FLOOR), math.log(score_max)
        t = (score.clamp(min=LOG_SCORE_FLOOR).log() - low) / (high - low)
    else:
        t = score / score_max
    idx = (t * n_bins).floor().nan_to_num(0.0).clamp_(0, n_bins - 1).long()
    idx = idx + correct.reshape(-1).long() * n_bins
    out = torch.zeros(2 * n_bins, dtype=torch.float64, device=score.device)
    out.scatter_add_(0, idx, torch.ones_like(score))
    return out.view(2, n_bins)


# ----------------------------------------------------------------------------------------------------------------
# the histograms of a case or of many
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class CalibrationHistograms:
    """The histograms of one case, or summed over cases: everything :class:`VoxelCalibration` keeps.

    Attributes:
        top: ``(3, n_bins)`` top-label reliability bins over ``[top_low, 1]``: count, sum of confidence, sum of
            correct.
        fg: ``(3, n_bins)`` foreground reliability bins over ``[0, 1]``: count, sum of :math:`p_f`, number of
            voxels of class f.
        scores: ``(S, 2, score_bins)`` per uncertainty map: histogram over the misclassified (row 0) and the
            correct (row 1) voxels.
        seen: ``(S,)`` number of cases that had each map.
        uncertainty_keys: the ``S`` map names.
        num_classes: the number of classes ``K`` of the cases; ``None`` before any case.
        top_label_range: ``"unit"`` or ``"chance"`` (the top-label bins start at ``1 / K``).
    """

    top: torch.Tensor
    fg: torch.Tensor
    scores: torch.Tensor
    seen: torch.Tensor
    uncertainty_keys: tuple[str, ...]
    num_classes: int | None = None
    top_label_range: str = "unit"

    @property
    def n_voxels(self) -> int:
        """Number of voxels counted."""
        return int(round(float(self.top[0].sum())))

    @property
    def voxel_accuracy(self) -> float:
        """Share of the counted voxels whose predicted class is right; ``nan`` without voxels."""
        n = float(self.top[0].sum())
        return float(self.top[2].sum()) / n if n > 0 else float("nan")

    @property
    def top_low(self) -> float:
        """The lower end of the top-label bins: 0, or :math:`1 / K` for ``"chance"`` (``K = 2`` before any case)."""
        return 0.0 if self.top_label_range == "unit" else 1.0 / (self.num_classes or 2)

    def values(self) -> dict[str, float]:
        """``ece``, ``fg_ece`` and ``auc_<key>`` for every uncertainty map (``nan`` for a map never seen)."""
        out = {
            "ece": binned_calibration_error(self.top[0], self.top[1], self.top[2]),
            "fg_ece": binned_calibration_error(self.fg[0], self.fg[1], self.fg[2]),
        }
        for s, key in enumerate(self.uncertainty_keys):
            hist = self.scores[s]
            out[f"auc_{key}"] = histogram_roc_auc(hist[0], hist[1]) if float(self.seen[s]) > 0 else float("nan")
        return out

    def reliability_table(self) -> list[dict[str, Any]]:
        """One row per bin of the ``top_label`` and the ``foreground`` curve: ``curve, bin, lower, upper, count,
        mean_confidence, accuracy`` (``nan`` for an empty bin); for the foreground curve the "confidence" is
        :math:`p_f` and the "accuracy" the frequency of class f."""
        rows = []
        for curve, hist, low in (("top_label", self.top, self.top_low), ("foreground", self.fg, 0.0)):
            n_bins = hist.shape[1]
            width = (1.0 - low) / n_bins
            for b in range(n_bins):
                count = float(hist[0, b])
                rows.append(
                    {
                        "curve": curve,
                        "bin": b,
                        "lower": low + b * width,
                        "upper": low + (b + 1) * width,
                        "count": int(round(count)),
                        "mean_confidence": float(hist[1, b]) / count if count else float("nan"),
                        "accuracy": float(hist[2, b]) / count if count else float("nan"),
                    }
                )
        return rows


# ----------------------------------------------------------------------------------------------------------------
# the Ignite metric
# ----------------------------------------------------------------------------------------------------------------


class VoxelCalibration(Metric):
    r"""Voxel-wise calibration and "uncertainty predicts error" of a probabilistic segmentation, as an Ignite metric.

    For the voxels :math:`i` of every case (those of its mask, when one is given), with class probabilities
    :math:`p_{k,i}`, predicted class :math:`\hat y_i` (``argmax`` of the probabilities unless a prediction is
    given) and true class :math:`y_i`:

    - **top label**: confidence :math:`\hat p_i = p_{\hat y_i, i}` against correctness
      :math:`c_i = 1[\hat y_i = y_i]` in ``n_bins`` equal-width bins over :math:`[0, 1]` (``top_label_range=
      "unit"``, as Guo et al. 2017 and MONAI) or :math:`[1/K, 1]` (``"chance"``, where an argmax's confidence
      lies); ``ece`` is :func:`binned_calibration_error` of these bins;
    - **foreground**: :math:`p_{f,i}` of class ``f = foreground_channel`` against :math:`1[y_i = f]`, bins over
      :math:`[0, 1]`; ``fg_ece``;
    - **uncertainty predicts error**: for every map :math:`u` of ``uncertainty_keys``, ``auc_<key>`` is the ROC
      AUC of :math:`u_i` as a score for "voxel :math:`i` is misclassified", from two ``score_bins``-bin histograms
      (:func:`score_histogram`, :func:`histogram_roc_auc`) over :math:`[0, u_{max}]`, :math:`u_{max}` =
      ``score_max`` or :math:`\log K` (the bound of the entropy and the mutual information of a softmax);
    - ``voxel_accuracy`` and ``n_voxels``.

    The values pool the voxels of all cases: the state is the :class:`CalibrationHistograms` summed over the cases
    and, in :meth:`compute`, over the DDP ranks (Ignite's ``sync_all_reduce``: the state is sums, so the result is
    that of all cases in one process; call :meth:`compute` on every rank). Memory does not grow with the cases:
    a case is processed in chunks of :math:`2^{21}` voxels on its own device.

    **Input** of :meth:`update`: ``(y_pred, y)`` with ``y_pred`` the probabilities ``(B, K, *spatial)``,
    ``K >= 2``, and ``y`` one-hot ``(B, K, *spatial)`` or class indices ``(B, 1, *spatial)``, each batch item a
    case (what Ignite's ``iteration_completed`` gives from ``output_transform=from_engine(["prob", "label"])``
    on a MONAI evaluator); or a :class:`CalibrationHistograms` made by :meth:`histograms`, which also takes a
    mask, a prediction and the uncertainty maps of one case.

    Args:
        n_bins: number of reliability bins, at least 2.
        top_label_range: ``"unit"`` or ``"chance"``.
        foreground_channel: the class ``f`` of the foreground reliability curve.
        uncertainty_keys: names of the uncertainty maps given to :meth:`histograms`.
        score_bins: number of bins of the uncertainty histograms, at least 2.
        score_max: upper end of the uncertainty histograms; ``None`` for :math:`\log K`.
        score_scale: ``"log"`` (bins evenly spaced in :math:`\log u` over :math:`[10^{-12}, u_{max}]`: the
            entropies of confident voxels are tiny and would all tie in the first linear bin) or ``"linear"``.
        output_transform: Ignite's transform of ``engine.state.output`` into the input of :meth:`update`.
        device: where the histograms are accumulated.

    Raises:
        ValueError: on bad arguments.

    Example::

        from monai.handlers import from_engine

        metric = VoxelCalibration(output_transform=from_engine(["prob", "label"]))
        metric.attach(evaluator, "calibration")  # engine.state.metrics["ece"], ["fg_ece"], ...
    """

    def __init__(
        self,
        n_bins: int = 15,
        top_label_range: str = "unit",
        foreground_channel: int = 1,
        uncertainty_keys: Sequence[str] | str = (),
        score_bins: int = 4096,
        score_max: float | None = None,
        score_scale: str = "log",
        output_transform: Callable = lambda x: x,
        device: str | torch.device = "cpu",
    ) -> None:
        check_int(n_bins, "n_bins", minimum=2, hint="e.g. n_bins=15")
        check_int(score_bins, "score_bins", minimum=2, hint="e.g. score_bins=100")
        if top_label_range not in TOP_LABEL_RANGES:
            raise ValueError(f"top_label_range must be one of {TOP_LABEL_RANGES}, got {top_label_range!r}.")
        if score_scale not in SCORE_SCALES:
            raise ValueError(f"score_scale must be one of {SCORE_SCALES}, got {score_scale!r}.")
        if score_max is not None and not (math.isfinite(score_max) and score_max > LOG_SCORE_FLOOR):
            raise ValueError(f"score_max must be a finite number > {LOG_SCORE_FLOOR}, got {score_max!r}.")
        check_int(foreground_channel, "foreground_channel", minimum=0, hint="1 for the tumour class of a binary net")
        keys = (uncertainty_keys,) if isinstance(uncertainty_keys, str) else tuple(uncertainty_keys)
        if len(set(keys)) != len(keys):
            raise ValueError(f"uncertainty_keys must be distinct, got {keys}.")
        self.n_bins = n_bins
        self.top_label_range = top_label_range
        self.foreground_channel = foreground_channel
        self.uncertainty_keys = keys
        self.score_bins = score_bins
        self.score_max = score_max
        self.score_scale = score_scale
        super().__init__(output_transform=output_transform, device=device)

    # ------------------------------------------------------------------ state
    @reinit__is_reduced
    def reset(self) -> None:
        zeros = dict(dtype=torch.float64, device=self._device)
        self._top = torch.zeros(3, self.n_bins, **zeros)
        self._fg = torch.zeros(3, self.n_bins, **zeros)
        self._scores = torch.zeros(len(self.uncertainty_keys), 2, self.score_bins, **zeros)
        self._seen = torch.zeros(len(self.uncertainty_keys), **zeros)
        self._num_classes = torch.zeros((), **zeros)  # 0: no case yet

    @property
    def num_classes(self) -> int | None:
        """The number of classes of the cases added in this process; ``None`` before any."""
        return int(self._num_classes) or None

    def _empty(self, num_classes: int | None = None) -> CalibrationHistograms:
        return CalibrationHistograms(
            top=torch.zeros(3, self.n_bins, dtype=torch.float64),
            fg=torch.zeros(3, self.n_bins, dtype=torch.float64),
            scores=torch.zeros(len(self.uncertainty_keys), 2, self.score_bins, dtype=torch.float64),
            seen=torch.zeros(len(self.uncertainty_keys), dtype=torch.float64),
            uncertainty_keys=self.uncertainty_keys,
            num_classes=num_classes,
            top_label_range=self.top_label_range,
        )

    # ------------------------------------------------------------------ one case
    def histograms(
        self,
        y_pred: torch.Tensor,
        y: torch.Tensor,
        pred: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        scores: Mapping[str, torch.Tensor] | None = None,
    ) -> CalibrationHistograms:
        """The histograms of one case; the state is not changed (add them with :meth:`update`).

        Args:
            y_pred: class probabilities ``(K, *spatial)``, ``K >= 2``.
            y: the ground truth, one-hot ``(K, *spatial)`` or class indices ``(1, *spatial)``.
            pred: the predicted class, one-hot ``(K, *spatial)`` or indices ``(1, *spatial)``; ``None`` for
                ``argmax(y_pred)``.
            mask: boolean (or 0/1), one value per voxel (e.g. ``(1, *spatial)``): only the voxels where it is true
                count; ``None`` for every voxel.
            scores: uncertainty maps by name (each a key of ``uncertainty_keys``), one value per voxel (e.g.
                ``(1, *spatial)``); a map not given is skipped for this case.

        Raises:
            ValueError: on shapes that do not fit, probabilities outside ``[0, 1]``, an unknown map name, or a
                ``foreground_channel`` or number of classes that differs from the earlier cases.
        """
        y_pred, y = torch.as_tensor(y_pred).detach(), torch.as_tensor(y).detach()
        if y_pred.ndim < 2 or y_pred.shape[0] < 2:
            raise ValueError(f"y_pred must have shape (K, *spatial) with K >= 2 classes, got {tuple(y_pred.shape)}.")
        num_classes, spatial = y_pred.shape[0], tuple(y_pred.shape[1:])
        if tuple(y.shape) not in ((num_classes, *spatial), (1, *spatial)):
            raise ValueError(
                f"y must be one-hot {(num_classes, *spatial)} or class indices {(1, *spatial)}, got {tuple(y.shape)}."
            )
        if self.foreground_channel >= num_classes:
            raise ValueError(f"foreground_channel={self.foreground_channel} but y_pred has {num_classes} classes.")
        if self.num_classes is not None and num_classes != self.num_classes:
            raise ValueError(f"y_pred has {num_classes} classes, earlier cases had {self.num_classes}.")
        if y_pred.numel() and (float(y_pred.min()) < -_PROB_TOLERANCE or float(y_pred.max()) > 1 + _PROB_TOLERANCE):
            raise ValueError(
                f"y_pred must hold probabilities in [0, 1], got values in [{float(y_pred.min()):.4g}, "
                f"{float(y_pred.max()):.4g}]; apply a softmax first."
            )
        n_vox = math.prod(spatial)
        device = y_pred.device if y_pred.device.type in ("cpu", "cuda") else torch.device("cpu")
        prob = y_pred.to(device).reshape(num_classes, n_vox)
        label = y.to(device).reshape(y.shape[0], n_vox)
        if pred is not None:
            pred = torch.as_tensor(pred).detach()
            if tuple(pred.shape) not in ((num_classes, *spatial), (1, *spatial)):
                raise ValueError(
                    f"pred must be one-hot {(num_classes, *spatial)} or class indices {(1, *spatial)}, "
                    f"got {tuple(pred.shape)}."
                )
            pred = pred.to(device).reshape(pred.shape[0], n_vox)
        if mask is not None:
            mask = torch.as_tensor(mask).detach()
            if mask.numel() != n_vox:
                raise ValueError(f"mask must have one value per voxel ({n_vox}), got shape {tuple(mask.shape)}.")
            mask = mask.to(device).reshape(-1).bool()
        maps: dict[int, torch.Tensor] = {}
        for key, value in (scores or {}).items():
            if key not in self.uncertainty_keys:
                raise ValueError(f"scores has the map {key!r}, not one of uncertainty_keys={self.uncertainty_keys}.")
            value = torch.as_tensor(value).detach()
            if value.numel() != n_vox:
                raise ValueError(f"uncertainty map {key!r} must have one value per voxel ({n_vox}), "
                                 f"got shape {tuple(value.shape)}.")
            maps[self.uncertainty_keys.index(key)] = value.to(device).reshape(-1)

        case = self._empty(num_classes)
        score_max = self.score_max if self.score_max is not None else math.log(num_classes)
        top_low = case.top_low
        for start in range(0, n_vox, _CHUNK):
            sl = slice(start, min(start + _CHUNK, n_vox))
            p = prob[:, sl].double()
            true_cls = label[:, sl].argmax(0) if label.shape[0] > 1 else label[0, sl].round().long()
            if pred is None:
                pred_cls = p.argmax(0)
            else:
                pred_cls = pred[:, sl].argmax(0) if pred.shape[0] > 1 else pred[0, sl].round().long()
            conf = p.gather(0, pred_cls[None])[0]
            correct = (pred_cls == true_cls).double()
            fg_p = p[self.foreground_channel]
            fg_y = (true_cls == self.foreground_channel).double()
            chunk_maps = {s: m[sl] for s, m in maps.items()}
            if mask is not None:
                keep = mask[sl]
                conf, correct, fg_p, fg_y = conf[keep], correct[keep], fg_p[keep], fg_y[keep]
                chunk_maps = {s: m[keep] for s, m in chunk_maps.items()}
            case.top += reliability_histogram(conf, correct, self.n_bins, top_low).cpu()
            case.fg += reliability_histogram(fg_p, fg_y, self.n_bins, 0.0).cpu()
            for s, score in chunk_maps.items():
                case.scores[s] += score_histogram(score, correct, self.score_bins, score_max, self.score_scale).cpu()
        for s in maps:
            case.seen[s] = 1.0
        return case

    # ------------------------------------------------------------------ Ignite interface
    @reinit__is_reduced
    def update(self, output: CalibrationHistograms | Sequence[torch.Tensor]) -> None:
        """Add the cases of a batch ``(y_pred, y)``, or the :class:`CalibrationHistograms` of :meth:`histograms`."""
        if isinstance(output, CalibrationHistograms):
            self._add(output)
            return
        if not isinstance(output, Sequence) or len(output) != 2:
            raise TypeError(
                "VoxelCalibration.update takes (y_pred, y) batches or the CalibrationHistograms of histograms(), "
                f"got {type(output).__name__}."
            )
        y_pred, y = output
        if y_pred.ndim < 3 or y.ndim != y_pred.ndim or y.shape[0] != y_pred.shape[0]:
            raise ValueError(
                "y_pred and y must be batches (B, K, *spatial) and (B, K or 1, *spatial), got shapes "
                f"{tuple(y_pred.shape)} and {tuple(y.shape)}."
            )
        for b in range(y_pred.shape[0]):
            self._add(self.histograms(y_pred[b], y[b]))

    def _add(self, case: CalibrationHistograms) -> None:
        if case.uncertainty_keys != self.uncertainty_keys or tuple(case.top.shape) != (3, self.n_bins) or (
            case.scores.shape[-1] != self.score_bins
        ):
            raise ValueError("the histograms were made by a VoxelCalibration with other bins or uncertainty_keys.")
        if case.num_classes is not None:
            if self.num_classes is not None and case.num_classes != self.num_classes:
                raise ValueError(f"the case has {case.num_classes} classes, earlier cases had {self.num_classes}.")
            self._num_classes.fill_(case.num_classes)
        self._top += case.top.to(self._device)
        self._fg += case.fg.to(self._device)
        self._scores += case.scores.to(self._device)
        self._seen += case.seen.to(self._device)

    def local_histograms(self) -> CalibrationHistograms:
        """The histograms of the cases added in this process (no collective)."""
        return CalibrationHistograms(
            top=self._top.double().cpu().clone(),
            fg=self._fg.double().cpu().clone(),
            scores=self._scores.double().cpu().clone(),
            seen=self._seen.double().cpu().clone(),
            uncertainty_keys=self.uncertainty_keys,
            num_classes=self.num_classes,
            top_label_range=self.top_label_range,
        )

    @sync_all_reduce("_top", "_fg", "_scores", "_seen", "_num_classes:MAX")
    def compute_histograms(self) -> CalibrationHistograms:
        """The histograms summed over the DDP ranks (a collective: call it on every rank)."""
        return self.local_histograms()

    def compute(self) -> dict[str, float | int]:
        """``ece``, ``fg_ece``, ``auc_<key>`` (for the maps seen), ``voxel_accuracy`` and ``n_voxels`` of all cases
        of all ranks; ``nan`` values when there are no voxels."""
        hist = self.compute_histograms()
        values: dict[str, float | int] = {}
        for key, value in hist.values().items():
            if not key.startswith("auc_") or float(hist.seen[self.uncertainty_keys.index(key[4:])]) > 0:
                values[key] = value
        values["voxel_accuracy"] = hist.voxel_accuracy
        values["n_voxels"] = hist.n_voxels
        return values
