r"""Ignite wiring of voxel-wise calibration (reliability diagram, ECE) and "uncertainty predicts error" AUC.

:class:`SegmentationCalibrationHandler` reads every evaluated case out of a MONAI evaluator's output, restricts it to
a mask (by default the voxels where the input image is positive in any channel, i.e. the brain, not the zero padding
of the crop box), feeds it to a :class:`~monai_dwp.metrics.VoxelCalibration` (fixed-size histograms, summed over the
cases and DDP ranks), publishes the overall values in ``engine.state.metrics`` and writes per-case and overall CSV
tables and a reliability diagram (:func:`~monai_dwp.visualize.save_reliability_diagram`).
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.data import MetaTensor, decollate_batch
from monai.utils import min_version, optional_import

from monai_dwp.metrics.calibration import CalibrationHistograms, VoxelCalibration
from monai_dwp.utils.io import atomic_write
from monai_dwp.visualize.calibration import save_reliability_diagram

idist, _ = optional_import("ignite.distributed", "0.4.11", min_version)
Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")

__all__ = ["SegmentationCalibrationHandler"]

_PROB_TOLERANCE = 1e-4
_CASE_COLUMNS = ("filename", "ece", "fg_ece", "{auc}", "n_voxels")
_SUMMARY_COLUMNS = ("n_cases", "n_voxels", "voxel_accuracy", "ece", "fg_ece", "{auc}", "ece_case_mean",
                    "fg_ece_case_mean", "mask")
_RELIABILITY_COLUMNS = ("curve", "bin", "lower", "upper", "count", "mean_confidence", "accuracy")


class SegmentationCalibrationHandler:
    r"""Calibration and uncertainty quality of a probabilistic segmentation, for MONAI's ``SupervisedEvaluator``.

    Every item of the decollated ``engine.state.output`` (one dict per case, after the evaluator's
    post-processing) must hold

    - ``prob_key`` (``"prob"``): class probabilities ``(K, *spatial)``, ``K >= 2`` (e.g. the Monte Carlo mean
      :math:`\bar p` of :class:`~monai_dwp.inferers.MCInferer`, kept by ``CopyItemsd(keys="pred",
      names="prob")`` before ``AsDiscreted`` turns ``"pred"`` into a one-hot mask);
    - ``label_key`` (``"label"``): the ground truth, one-hot ``(K, *spatial)`` (``AsDiscreted(keys="label",
      to_onehot=K)``) or class indices ``(1, *spatial)``;
    - optionally the uncertainty maps ``(1, *spatial)`` named by ``uncertainty_keys`` (default predictive
      ``"entropy"`` and ``"mutual_information"``, as produced by ``MCInferer(return_uncertainty=True)`` and
      ``FlattenMCOutputd``); a missing map is skipped for that case;
    - optionally ``pred_key``: a one-hot prediction ``(K, *spatial)`` to use as the predicted class instead of
      ``argmax(prob)`` (e.g. after connected-component clean-up); by default the prediction is
      :math:`\hat y = \arg\max_k p_k`, which is what ``AsDiscreted(argmax=True)`` gives;
    - ``mask_key`` (``"image"``): the tensor that selects the voxels, ``(C, *spatial)`` with the spatial shape
      of ``prob_key`` (``None`` for every voxel, see below).

    **Mask.** Voxel :math:`i` counts when :math:`\max_c m_{c,i} > 0` for the tensor :math:`m` under
    ``mask_key``: with the default ``"image"``, where the input image is positive in at least one channel. The
    images of :mod:`monai_dwp.data.decathlon` are scaled to ``[0, 1]`` per channel (``ScaleIntensityd``) and
    cropped by ``CropForegroundd`` with that same rule (then zero-padded by ``DivisiblePadd`` for evaluation), so
    the background (around the brain inside the crop box, often most of it, and the padding) is exactly 0 and is
    left out, and the statistics describe the brain only. An explicit mask works under ``mask_key`` too: a
    boolean ``(1, *spatial)`` tensor (``True`` = counted) or a ``0/1`` one. With intensities that can be
    negative (e.g. z-scored by ``NormalizeIntensityd``) the image is no mask: pass a boolean mask instead (a
    warning is logged when the image under ``mask_key`` has negative values). ``mask_key=None`` counts every
    voxel of the box (the behaviour before the mask existed). A case with no voxel in its mask gives ``nan``
    values and adds nothing to the overall histograms.

    Over the masked voxels :math:`i` (:math:`N` of them, of all cases pooled for the overall values, and of each
    case for the per-case table):

    **Top-label reliability.** Confidence :math:`\hat p_i = p_{i, \hat y_i}`, correctness
    :math:`c_i = 1[\hat y_i = y_i]`, ``n_bins`` equal-width bins over :math:`[0, 1]` (``top_label_range=
    "unit"``, as Guo et al. 2017 and MONAI) or over :math:`[1/K, 1]` (``"chance"``, where the confidence of an
    argmax lies; with ``K = 2`` and the unit range, the lower half of the bins stays empty). Bins are
    :math:`[l, u)`, the last one closed. With :math:`n_b`, :math:`\text{conf}_b`, :math:`\text{acc}_b` the
    count, mean confidence and accuracy of bin :math:`b` over the :math:`N` masked voxels:
    :math:`\text{ECE} = \sum_b \frac{n_b}{N} |\text{acc}_b - \text{conf}_b|
    = \frac{1}{N} \sum_b |\sum_{i \in b} c_i - \sum_{i \in b} \hat p_i|`
    (:func:`~monai_dwp.metrics.binned_calibration_error`).

    **Foreground reliability** (informative for a small lesion class, whose voxels are a tiny share of the
    top-label bins): :math:`p_{i, f}` of class ``f = foreground_channel`` against the frequency of
    :math:`y_i = f`, bins over :math:`[0, 1]`; its ECE is ``fg_ece``
    :math:`= \sum_b \frac{n_b}{N} |\text{freq}_b - \bar p_{f,b}|` over the same masked voxels. For ``K = 2``,
    ``n_bins`` and ``mask_key=None`` it equals MONAI's ``CalibrationErrorMetric(num_bins=n_bins,
    include_background=False)`` of that case (with a mask: of the masked voxels), and the
    top-label ECE with the unit range equals that metric applied to the one-channel pair (confidence,
    correctness), up to voxels that lie exactly on a bin edge (MONAI's edges are ``linspace(0, 1 + eps)`` and
    ``torch.bucketize`` puts an edge value in the lower bin).

    **Uncertainty predicts error.** For each uncertainty map :math:`u`, the ROC AUC of :math:`u_i` as a score
    for "voxel :math:`i` is misclassified" (:math:`c_i = 0`): 1 when every error is more uncertain than every
    correct voxel, 0.5 for an uninformative score (e.g. the all-zero mutual information of a deterministic
    network). It is computed by :func:`~monai_dwp.metrics.histogram_roc_auc` from two ``score_bins``-bin
    histograms of :math:`u` (errors, correct voxels) over :math:`[0, u_{max}]`, :math:`u_{max}` = ``score_max`` or
    :math:`\log K` (the bound of the entropy and of the mutual information of a softmax; larger values land in the
    last bin),
    errors and correct voxels being the masked ones.
    ``score_scale="log"`` (default) spaces the bins evenly in :math:`\log u` over
    :math:`[10^{-12}, u_{max}]` (everything below shares the first bin): the AUC only depends on the order of
    the scores, and the entropy and mutual information of confident voxels are tiny (:math:`10^{-9}` ..
    :math:`10^{-3}`) and would all tie in the first linear bin. The AUC is ``nan`` when a set has no error or
    no correct voxel.

    **Aggregates.** The overall ``ece``, ``fg_ece``, ``auc_<key>``, ``voxel_accuracy`` and ``n_voxels`` pool the
    masked voxels of all cases (one set of histograms summed over the cases, so a large brain weighs more than a
    small one). ``ece_case_mean`` and ``fg_ece_case_mean`` are the unweighted means of the per-case values over
    the cases (those with an empty mask, ``nan``, left out; ``nan`` when none is left).

    The maths is :class:`~monai_dwp.metrics.VoxelCalibration` (an Ignite metric whose state is the histograms;
    this handler reads the cases out of the evaluator's output, applies the mask, keeps the per-case rows and writes
    the files; the picture is :func:`~monai_dwp.visualize.save_reliability_diagram`). Memory is bounded: a case is
    processed in chunks of :math:`2^{21}` voxels on its own device and only the histograms (``3 * n_bins`` values
    for each reliability curve, ``2 * score_bins`` per map) are kept.

    **Events.** ``EPOCH_STARTED``: reset. ``ITERATION_COMPLETED``: accumulate every case; at the last
    iteration of the epoch (when ``engine.state.epoch_length`` is known) the histograms are summed over DDP
    ranks (Ignite's ``sync_all_reduce`` in :meth:`VoxelCalibration.compute_histograms
    <monai_dwp.metrics.VoxelCalibration.compute_histograms>`, and the per-case rows gathered; the collectives run
    once per rank and epoch, so it is safe with unequal numbers of iterations per rank; the masked histograms are
    sums like the unmasked ones) and the overall values
    are put into ``engine.state.metrics`` as ``ece``, ``fg_ece``, ``auc_<key>``, ``ece_case_mean`` and
    ``fg_ece_case_mean`` (prefixed by ``metric_prefix``). Because this happens before
    ``EPOCH_COMPLETED``, MONAI's ``StatsHandler`` (which logs the metrics at ``EPOCH_COMPLETED``),
    ``TensorBoardStatsHandler`` and ``CheckpointSaver`` see them whatever the order of the handlers. (When the
    epoch length is unknown or the epoch was cut short, the same happens at ``EPOCH_COMPLETED``; then list
    this handler before ``StatsHandler``.) ``COMPLETED``: rank 0 writes, each atomically, into
    ``output_dir``:

    - ``calibration.csv``: one row per case, ``filename, ece, fg_ece, auc_<key>..., n_voxels``, all over the
      case's masked voxels (``n_voxels`` is the masked count);
    - ``calibration_summary.csv``: one row, ``n_cases, n_voxels, voxel_accuracy, ece, fg_ece, auc_<key>...,
      ece_case_mean, fg_ece_case_mean, mask``: ``n_voxels`` is the number of masked voxels of all cases and
      ``mask`` the rule (``"image>0"`` for ``mask_key="image"``, ``"none"`` for ``mask_key=None``);
    - ``reliability.csv``: ``curve, bin, lower, upper, count, mean_confidence, accuracy`` per bin, for the
      ``top_label`` curve and the ``foreground`` curve (whose "confidence" is :math:`p_f` and "accuracy" the
      frequency of class f); ``nan`` for empty bins;
    - ``reliability.png``: both reliability curves with the diagonal, and the bin counts below
      (:func:`~monai_dwp.visualize.save_reliability_diagram`).

    Under DDP the per-case rows are gathered from all ranks. A case that a ``DistributedSampler`` repeats to
    even out the ranks counts twice, as in MONAI's own metrics (use ``even_divisible=False`` to avoid it).

    Args:
        output_dir: folder of the files (created if needed); ``None`` to only publish the metrics.
        prob_key: key of the class probabilities.
        label_key: key of the ground truth.
        uncertainty_keys: keys of the uncertainty maps, each scored by its AUC for the misclassified voxels.
        pred_key: key of a one-hot prediction to use instead of ``argmax(prob)``; ``None`` for the argmax.
        mask_key: key of the ``(C, *spatial)`` tensor whose voxels ``> 0`` in any channel are counted: the input
            image by default (the brain), or a boolean ``(1, *spatial)`` mask; ``None`` for every voxel.
        filename_key: key of the batch item whose ``.meta["filename_or_obj"]`` names the case.
        n_bins: number of reliability bins, at least 2.
        top_label_range: ``"unit"`` (bins over ``[0, 1]``) or ``"chance"`` (over ``[1/K, 1]``).
        foreground_channel: the class of the foreground reliability curve.
        score_bins: number of bins of the uncertainty histograms, at least 2.
        score_max: upper end of the uncertainty histograms; ``None`` for :math:`\log K`.
        score_scale: ``"log"`` or ``"linear"`` spacing of the uncertainty bins.
        metric_prefix: prepended to the names in ``engine.state.metrics``.
        log_summary: log the overall values with the engine's logger (rank 0).

    Raises:
        TypeError: when ``mask_key`` is neither a string nor ``None``.
        ValueError: on bad arguments; at run time, on missing keys (the mask's included), shape mismatches
            (between the mask and the probabilities included) or values that are not probabilities.

    Example (bundle config, ``validate#handlers`` or an evaluator's ``val_handlers``)::

        {"_target_": "monai_dwp.handlers.SegmentationCalibrationHandler", "output_dir": "@eval_dir"}
    """


    def __init__(
        self,
        output_dir: str | os.PathLike | None = None,
        prob_key: str = "prob",
        label_key: str = "label",
        uncertainty_keys: Sequence[str] | str = ("entropy", "mutual_information"),
        pred_key: str | None = None,
        mask_key: str | None = "image",
        filename_key: str = "image",
        n_bins: int = 15,
        top_label_range: str = "unit",
        foreground_channel: int = 1,
        score_bins: int = 4096,
        score_max: float | None = None,
        score_scale: str = "log",
        metric_prefix: str = "",
        log_summary: bool = True,
    ) -> None:
        # checks the numeric arguments and uncertainty_keys
        self.metric = VoxelCalibration(
            n_bins=n_bins,
            top_label_range=top_label_range,
            foreground_channel=foreground_channel,
            uncertainty_keys=uncertainty_keys,
            score_bins=score_bins,
            score_max=score_max,
            score_scale=score_scale,
        )
        """The :class:`~monai_dwp.metrics.VoxelCalibration` that holds the histograms of this process."""
        if mask_key is not None and not isinstance(mask_key, str):
            raise TypeError(
                f"mask_key must be a key name (str) or None, got {mask_key!r} ({type(mask_key).__name__}); use "
                "'image' for the voxels where the input image is > 0, or None for every voxel."
            )
        self.output_dir = None if output_dir is None else os.fspath(output_dir)
        self.prob_key = prob_key
        self.label_key = label_key
        self.uncertainty_keys = self.metric.uncertainty_keys
        self.pred_key = pred_key
        self.mask_key = mask_key
        self.filename_key = filename_key
        self.n_bins = n_bins
        self.top_label_range = top_label_range
        self.foreground_channel = foreground_channel
        self.score_bins = score_bins
        self.score_max = score_max
        self.score_scale = score_scale
        self.metric_prefix = metric_prefix
        self.log_summary = log_summary
        self.logger = logging.getLogger(__name__)
        self._warned_negative_mask = False
        self._reset()

    # ------------------------------------------------------------------ engine events
    def attach(self, engine: Engine) -> None:
        """Register the handler on ``engine`` (``EPOCH_STARTED``, ``ITERATION_COMPLETED``, ``EPOCH_COMPLETED``,
        ``COMPLETED``)."""
        engine.add_event_handler(Events.EPOCH_STARTED, self._on_epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._on_iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._on_epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self._on_completed)

    def _reset(self) -> None:
        self.metric.reset()
        self._pooled: CalibrationHistograms = self.metric.local_histograms()
        self._rows: list[dict[str, Any]] = []
        self._case_counter = 0
        self._finalized = False
        self.summary: dict[str, float | int] = {}
        self.case_rows: list[dict[str, Any]] = []

    def _on_epoch_started(self, engine: Engine) -> None:
        self._reset()

    def _on_iteration_completed(self, engine: Engine) -> None:
        output = engine.state.output
        if output is not None:
            items = self._items(output)
            batch_items = self._items(engine.state.batch) if engine.state.batch is not None else []
            for index, item in enumerate(items):
                batch_item = batch_items[index] if index < len(batch_items) else None
                self.update(item, name=self._case_name(item, batch_item))
        epoch_length = engine.state.epoch_length
        if epoch_length is not None and engine.state.iteration % epoch_length == 0:
            self._finalize(engine)

    def _on_epoch_completed(self, engine: Engine) -> None:
        if not self._finalized:
            self._finalize(engine)

    def _on_completed(self, engine: Engine) -> None:
        if self.output_dir is not None and idist.get_rank() == 0:
            self.write(self.output_dir)

    # ------------------------------------------------------------------ reading the cases
    @staticmethod
    def _items(data: Any) -> list[Mapping[Hashable, Any]]:
        if isinstance(data, Mapping):
            return list(decollate_batch(data, detach=True))
        if isinstance(data, Sequence) and not isinstance(data, str):
            return [d for d in data if isinstance(d, Mapping)]
        return []

    def _case_name(self, item: Mapping[Hashable, Any], batch_item: Mapping[Hashable, Any] | None) -> str:
        for source in (batch_item, item):
            if source is None:
                continue
            for key in (self.filename_key, self.prob_key):
                meta = getattr(source.get(key), "meta", None)
                if isinstance(meta, Mapping) and meta.get("filename_or_obj") not in (None, ""):
                    name = meta["filename_or_obj"]
                    return str(name[0] if isinstance(name, (list, tuple)) else name)
        return f"case_{self._case_counter}"

    def _check_item(self, item: Mapping[Hashable, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(item, Mapping):
            raise ValueError(f"every output item must be a dict, got {type(item).__name__}.")
        if self.prob_key not in item:
            raise ValueError(
                f"output item has no {self.prob_key!r} key (keys: {sorted(map(str, item))}); it holds the class "
                f"probabilities, kept by CopyItemsd(keys='pred', names={self.prob_key!r}) after "
                "Activationsd(keys='pred', softmax=True) (or after FlattenMCOutputd for MCInferer) and before "
                "AsDiscreted in the evaluator's postprocessing."
            )
        if self.label_key not in item:
            raise ValueError(
                f"output item has no {self.label_key!r} key (keys: {sorted(map(str, item))}); it holds the ground "
                f"truth, made one-hot by AsDiscreted(keys={self.label_key!r}, to_onehot=K) in the evaluator's "
                "postprocessing (the loader must load the label for evaluation)."
            )
        prob = _plain(item[self.prob_key], self.prob_key)
        label = _plain(item[self.label_key], self.label_key)
        if prob.ndim < 2 or prob.shape[0] < 2:
            raise ValueError(
                f"{self.prob_key!r} must have shape (K, *spatial) with K >= 2 classes, got {tuple(prob.shape)}; "
                "turn a one-channel sigmoid output into two channels (background, foreground) first."
            )
        num_classes = prob.shape[0]
        if label.shape != prob.shape and label.shape != (1, *prob.shape[1:]):
            raise ValueError(
                f"{self.label_key!r} must be one-hot {tuple(prob.shape)} or class indices {(1, *prob.shape[1:])} "
                f"like {self.prob_key!r}, got {tuple(label.shape)}."
            )
        if self.foreground_channel >= num_classes:
            raise ValueError(
                f"foreground_channel={self.foreground_channel} but {self.prob_key!r} has {num_classes} classes."
            )
        if self.metric.num_classes is not None and num_classes != self.metric.num_classes:
            raise ValueError(
                f"{self.prob_key!r} has {num_classes} classes, earlier cases had {self.metric.num_classes}."
            )
        if prob.numel() and (float(prob.min()) < -_PROB_TOLERANCE or float(prob.max()) > 1 + _PROB_TOLERANCE):
            raise ValueError(
                f"{self.prob_key!r} must hold probabilities in [0, 1], got values in [{float(prob.min()):.4g}, "
                f"{float(prob.max()):.4g}]; apply Activationsd(keys='pred', softmax=True) before copying it."
            )
        return prob, label

    def _spatial_map(self, item: Mapping[Hashable, Any], key: str, spatial: torch.Size, what: str) -> torch.Tensor:
        value = _plain(item[key], key)
        if value.shape != (1, *spatial):
            raise ValueError(f"{what} {key!r} must have shape {(1, *spatial)}, got {tuple(value.shape)}.")
        return value


    def update(self, item: Mapping[Hashable, Any], name: str | None = None) -> dict[str, Any]:
        """Add one case (a dict with the keys described in the class docstring) and return its row.

        Args:
            item: the case, tensors without batch dimension.
            name: the case name in ``calibration.csv``; ``None`` for ``case_<n>``.

        Returns:
            The per-case row: ``filename``, ``ece``, ``fg_ece``, ``auc_<key>`` per key and ``n_voxels``, over the
            case's masked voxels (``n_voxels`` is their number).
        """
        prob, label = self._check_item(item)
        self._finalized = False
        num_classes, spatial = prob.shape[0], prob.shape[1:]
        pred = None
        if self.pred_key is not None:
            if self.pred_key not in item:
                raise ValueError(f"output item has no {self.pred_key!r} key (keys: {sorted(map(str, item))}).")
            pred = _plain(item[self.pred_key], self.pred_key)
            if pred.shape != (num_classes, *spatial) and pred.shape != (1, *spatial):
                raise ValueError(
                    f"{self.pred_key!r} must be one-hot {(num_classes, *spatial)} or class indices "
                    f"{(1, *spatial)}, got {tuple(pred.shape)}."
                )
        mask = None if self.mask_key is None else self._mask(item, prob_shape=(num_classes, *spatial))
        maps = {
            key: self._spatial_map(item, key, spatial, "uncertainty map")
            for key in self.uncertainty_keys
            if key in item and item[key] is not None
        }
        case = self.metric.histograms(prob, label, pred=pred, mask=mask, scores=maps)
        self.metric.update(case)

        row: dict[str, Any] = {"filename": name if name is not None else f"case_{self._case_counter}"}
        row.update(case.values())
        row["n_voxels"] = case.n_voxels
        if mask is not None and case.n_voxels == 0:
            self.logger.warning(
                f"calibration: case {row['filename']!r} has no voxel inside the mask ({self._mask_rule()}); its "
                "values are nan and it adds nothing to the overall values."
            )
        self._rows.append(row)
        self._case_counter += 1
        return row

    def _mask_rule(self) -> str:
        """The mask rule as written in ``calibration_summary.csv``: ``"<mask_key>>0"`` or ``"none"``."""
        return "none" if self.mask_key is None else f"{self.mask_key}>0"

    def _mask(self, item: Mapping[Hashable, Any], prob_shape: tuple[int, ...]) -> torch.Tensor:
        """The flat boolean mask of a case: voxels where ``item[mask_key]`` is ``> 0`` in any channel."""
        key = self.mask_key
        if key not in item or item[key] is None:
            raise ValueError(
                f"output item has no mask key mask_key={key!r} (keys: {sorted(map(str, item))}); keep the input "
                "image in the evaluator's output (SupervisedEvaluator puts it under 'image'), give mask_key the "
                "key of a boolean (1, *spatial) mask, or pass mask_key=None to count every voxel of the box."
            )
        value = _plain(item[key], key)
        spatial = tuple(prob_shape[1:])
        if value.ndim != len(prob_shape) or tuple(value.shape[1:]) != spatial:
            raise ValueError(
                f"mask_key={key!r}: the item's {key!r} has shape {tuple(value.shape)} but {self.prob_key!r} has "
                f"shape {tuple(prob_shape)}; the mask must be (C, *spatial) with the spatial shape {spatial} of "
                f"{self.prob_key!r}: keep {key!r} on the grid of the prediction (no Invertd or resampling of only "
                "one of them in the postprocessing), or pass mask_key=None to count every voxel."
            )
        if value.dtype == torch.bool:
            return value.any(0).reshape(-1)
        if not self._warned_negative_mask and value.numel() and float(value.min()) < 0:
            self._warned_negative_mask = True
            self.logger.warning(
                f"calibration: mask_key={key!r} has negative values (min {float(value.min()):.4g}); only voxels > 0 "
                "are counted. With z-scored intensities pass a boolean brain mask as mask_key instead."
            )
        return (value > 0).any(0).reshape(-1)

    # ------------------------------------------------------------------ results
    def _finalize(self, engine: Engine | None = None) -> dict[str, float | int]:
        """Sum the histograms and gather the rows over ranks, compute the overall values, publish them."""
        pooled = self.metric.compute_histograms()  # summed over the DDP ranks
        if idist.get_world_size() > 1:
            gathered = idist.all_gather(list(self._rows))
            self.case_rows = [row for rank_rows in gathered for row in rank_rows]
        else:
            self.case_rows = list(self._rows)
        self._pooled = pooled
        values = pooled.values()
        summary: dict[str, float | int] = {
            "n_cases": len(self.case_rows),
            "n_voxels": pooled.n_voxels,
            "voxel_accuracy": pooled.voxel_accuracy,
        }
        summary.update(values)
        case_means = {f"{key}_case_mean": _nanmean([row.get(key, float("nan")) for row in self.case_rows])
                      for key in ("ece", "fg_ece")}
        summary.update(case_means)
        values.update(case_means)
        self.summary = summary
        self._finalized = True
        if engine is not None:
            seen = dict(zip(pooled.uncertainty_keys, pooled.seen.tolist()))
            for key, value in values.items():
                if key.startswith("auc_") and seen[key[4:]] <= 0:
                    continue  # the map never appeared: do not publish a metric for it
                engine.state.metrics[self.metric_prefix + key] = value
        if self.log_summary and idist.get_rank() == 0:
            text = ", ".join(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}" for k, v in summary.items())
            where = "all voxels" if self.mask_key is None else f"voxels with {self._mask_rule()}"
            (engine.logger if engine is not None else self.logger).info(f"calibration over {where}: {text}")
        return summary

    def compute(self) -> dict[str, float | int]:
        """The overall values of the cases added so far with :meth:`update`, without an engine.

        Under DDP it sums over the ranks (a collective: call it on every rank).
        """
        return self._finalize(None)

    def reliability_table(self) -> list[dict[str, Any]]:
        """Rows of ``reliability.csv``: ``curve, bin, lower, upper, count, mean_confidence, accuracy``
        (:meth:`CalibrationHistograms.reliability_table <monai_dwp.metrics.CalibrationHistograms.reliability_table>`
        of the last :meth:`compute`)."""
        return self._pooled.reliability_table()

    def write(self, output_dir: str | os.PathLike) -> None:
        """Write ``calibration.csv``, ``calibration_summary.csv``, ``reliability.csv`` and ``reliability.png``.

        Writes the values of the last :meth:`compute` (or of the engine's last epoch); if there is none yet it
        computes them first, which under DDP must then happen on every rank.
        """
        output_dir = os.fspath(output_dir)
        os.makedirs(output_dir, exist_ok=True)
        if not self._finalized:
            self._finalize(None)
        auc_cols = [f"auc_{key}" for key in self.uncertainty_keys]

        def write_table(filename: str, template: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
            cols = [name for c in template for name in (auc_cols if c == "{auc}" else [c])]

            def write_rows(f: Any) -> None:
                writer = csv.writer(f)
                writer.writerow(cols)
                writer.writerows([_format(row.get(c, float("nan"))) for c in cols] for row in rows)

            atomic_write(os.path.join(output_dir, filename), "w", write_rows)

        table = self.reliability_table()
        write_table("calibration.csv", _CASE_COLUMNS, self.case_rows)
        write_table("calibration_summary.csv", _SUMMARY_COLUMNS, [{**self.summary, "mask": self._mask_rule()}])
        write_table("reliability.csv", _RELIABILITY_COLUMNS, table)
        title = (
            f"ECE {self.summary.get('ece', float('nan')):.4f}, foreground ECE "
            f"{self.summary.get('fg_ece', float('nan')):.4f}\n"
            f"{self.summary.get('n_cases', 0)} cases, {self.summary.get('n_voxels', 0)} voxels"
            + ("" if self.mask_key is None else f" with {self._mask_rule()}")
        )
        save_reliability_diagram(
            table, os.path.join(output_dir, "reliability.png"), title=title, foreground_channel=self.foreground_channel
        )


def _plain(value: Any, key: str) -> torch.Tensor:
    """A detached plain tensor (a ``MetaTensor``'s meta tracking would slow the voxel-wise arithmetic)."""
    if isinstance(value, Mapping):
        raise ValueError(
            f"{key!r} is a dict (keys {sorted(map(str, value))}), not a tensor; with MCInferer(return_uncertainty="
            "True) add FlattenMCOutputd(keys='pred') at the start of the postprocessing."
        )
    if isinstance(value, MetaTensor):
        value = value.as_tensor()
    return torch.as_tensor(value).detach()


def _nanmean(values: Sequence[float]) -> float:
    """Mean of the non-``nan`` values; ``nan`` when there is none."""
    kept = [float(v) for v in values if not math.isnan(float(v))]
    return sum(kept) / len(kept) if kept else float("nan")


def _format(value: Any) -> Any:
    """A CSV cell: floats with 10 significant digits, ``nan`` as such."""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.10g}"
    return value
