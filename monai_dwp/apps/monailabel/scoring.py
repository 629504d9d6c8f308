"""MONAI Label scoring of unlabeled studies by the mean mutual information of ONE Monte Carlo call."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.tasks.infer.basic_infer import BasicInferTask

from monai_dwp.utils.validation import check_int

__all__ = ["MutualInformationScoring", "MI_SCORE_KEY", "MI_SCORE_TS_KEY", "UNCERTAINTY_INFO_KEY"]

logger = logging.getLogger(__name__)

MI_SCORE_KEY = "dwp_mutual_information"
"""Datastore key of the score (mean voxel-wise mutual information, nats); rank with ``Epistemic(key=MI_SCORE_KEY)``."""

MI_SCORE_TS_KEY = "dwp_mutual_information_ts"
"""Datastore key of the model timestamp the score was computed with (studies are rescored after training)."""

UNCERTAINTY_INFO_KEY = "dwp_uncertainty"
"""Datastore key of the whole uncertainty summary (``data["result"]`` entries of the bundle, when present)."""


def _mean(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().double().mean())
    return float(np.mean(np.asarray(value, dtype=np.float64)))


class MutualInformationScoring(ScoringMethod):
    r"""Score every unlabeled study by the mean voxel-wise mutual information between label and weights.

    For each unlabeled study the infer task runs ONCE: the bundle's :class:`~monai_dwp.inferers.MCInferer` draws
    ``T`` weight samples of the Bayesian network and returns the mutual information map
    :math:`I[y, w \mid x] = H[\bar p] - \frac{1}{T}\sum_t H[p_t]` with the predictive mean. The score is its mean
    over the voxels, stored in the datastore under :data:`MI_SCORE_KEY`; ``Epistemic(key=MI_SCORE_KEY)`` (MONAI
    Label's strategy) then serves the study with the highest score first.

    Compared with MONAI Label's ``EpistemicScoring`` (``simulation_size`` full inference calls per study, each
    thresholded into a label map, then the entropy of the label frequencies), this needs one call and scores the
    epistemic part of the uncertainty only, from probabilities rather than hard labels: a study that is ambiguous
    for every weight draw (high aleatoric entropy, e.g. a blurred tumour border) does not outrank one on which the
    posterior's draws disagree.

    The score is read from the task's output data: the mean of the map under ``map_key`` (default
    ``"mutual_information"``, put at the top level by :class:`~monai_dwp.transforms.FlattenMCOutputd`), or else
    ``data[result_key]["mean_mutual_information"]`` (:class:`~monai_dwp.transforms.UncertaintySummaryd`).

    Args:
        infer_task: a MONAI Label infer task built with ``skip_writer=True`` (it must return the data dict), e.g.
            ``DWPBundleInferTask(path, conf, skip_writer=True, post_filter=[SaveImaged, Invertd])``: no label file,
            no inversion (the score is taken on the preprocessed grid).
        max_samples: score at most this many studies per call (0: all); a request's ``max_samples`` overrides it.
        num_samples: ``mc_samples`` (weight draws ``T``) of the scoring calls; ``None``: the task's default. A
            request's ``mc_samples`` overrides it.
        map_key: key of the mutual-information map in the task's output data.
        result_key: key of the result dict holding ``mean_mutual_information``, used when the map is absent.
        key_output: datastore key of the score.
        key_output_ts: datastore key of the model timestamp.

    Raises:
        ValueError: when ``infer_task`` would write label files instead of returning its data (no ``skip_writer``),
            or for a ``max_samples < 0`` / ``num_samples < 1``.
        TypeError: for a non-int ``max_samples`` / ``num_samples``.
    """

    def __init__(
        self,
        infer_task: BasicInferTask,
        max_samples: int = 0,
        num_samples: int | None = None,
        map_key: str = "mutual_information",
        result_key: str = "result",
        key_output: str = MI_SCORE_KEY,
        key_output_ts: str = MI_SCORE_TS_KEY,
    ) -> None:
        if not getattr(infer_task, "skip_writer", False):
            raise ValueError(
                "infer_task must be built with skip_writer=True so that it returns its data (the uncertainty maps), "
                "e.g. DWPBundleInferTask(path, conf, skip_writer=True, post_filter=[SaveImaged, Invertd])."
            )
        check_int(max_samples, "max_samples", minimum=0, hint="0 scores every unlabeled study")
        if num_samples is not None:
            check_int(num_samples, "num_samples", minimum=1, hint="or None for the infer task's own")
        super().__init__(f"Mean mutual information of one Monte Carlo call - {infer_task.description}")
        self.infer_task = infer_task
        self.max_samples = max_samples
        self.num_samples = num_samples
        self.map_key = map_key
        self.result_key = result_key
        self.key_output = key_output
        self.key_output_ts = key_output_ts

    def info(self) -> dict[str, Any]:
        return {"description": self.description, "key": self.key_output, "num_samples": self.num_samples}

    def score(self, image: str, request: Mapping[str, Any] | None = None) -> dict[str, float]:
        """The uncertainty summary of one image (a path or URI): ``mean_mutual_information`` and, when the bundle
        provides them, ``mean_entropy`` and ``uncertain_fraction``.

        Raises:
            RuntimeError: the bundle's output has no mutual information (its inferer is not
                ``MCInferer(return_uncertainty=True)`` followed by ``FlattenMCOutputd``).
        """
        request = dict(request or {})
        req: dict[str, Any] = {"image": image, "logging": request.get("logging", "error"), "cache_transforms": False}
        samples = request.get("mc_samples", self.num_samples)
        if samples:
            req["mc_samples"] = samples
        for key in ("device",):
            if request.get(key):
                req[key] = request[key]
        _, data = self.infer_task(request=req)
        result = data.get(self.result_key) if isinstance(data, Mapping) else None
        result = dict(result) if isinstance(result, Mapping) else {}
        summary = {k: float(v) for k, v in result.items() if k in ("mean_entropy", "uncertain_fraction")}
        if isinstance(data, Mapping) and data.get(self.map_key) is not None:
            summary["mean_mutual_information"] = _mean(data[self.map_key])
            if "mean_entropy" not in summary and data.get("entropy") is not None:
                summary["mean_entropy"] = _mean(data["entropy"])
        elif "mean_mutual_information" in result:
            summary["mean_mutual_information"] = float(result["mean_mutual_information"])
        else:
            keys = sorted(str(k) for k in data) if isinstance(data, Mapping) else type(data).__name__
            raise RuntimeError(
                f"the infer task returned no mutual information for {image!r} (no data[{self.map_key!r}] nor "
                f"data[{self.result_key!r}]['mean_mutual_information']; data keys: {keys}); the bundle's inferer must "
                "be monai_dwp.inferers.MCInferer(return_uncertainty=True) and its postprocessing start with "
                "monai_dwp.transforms.FlattenMCOutputd(keys='pred')."
            )
        return summary

    def __call__(self, request: Mapping[str, Any], datastore: Datastore) -> dict[str, Any]:
        """Score the unlabeled studies of ``datastore`` not yet scored with the current model.

        Request options: ``max_samples``, ``mc_samples``, ``device``, and ``force`` (rescore every study).

        Returns:
            ``{"total", "skipped", "executed", "latency", "scores": {image_id: score}}``.
        """
        request = dict(request or {})
        model_file = self.infer_task.get_path()
        model_ts = int(os.stat(model_file).st_mtime) if model_file and os.path.exists(model_file) else 1
        self.infer_task.clear_cache()  # reload the model: training may have rewritten it

        unlabeled = datastore.get_unlabeled_images()
        force = bool(request.get("force", False))
        image_ids = [i for i in unlabeled if force or datastore.get_image_info(i).get(self.key_output_ts) != model_ts]
        skipped = len(unlabeled) - len(image_ids)
        max_samples = int(request.get("max_samples", self.max_samples) or 0)
        image_ids = image_ids[:max_samples] if max_samples else image_ids
        logger.info("MUTUAL INFORMATION:: unlabeled: %d; to score: %d", len(unlabeled), len(image_ids))

        start = time.time()
        scores: dict[str, float] = {}
        for image_id in image_ids:  # one at a time: the Monte Carlo passes share the network
            t0 = time.time()
            summary = self.score(datastore.get_image_uri(image_id), request)
            scores[image_id] = summary["mean_mutual_information"]
            datastore.update_image_info(
                image_id, {self.key_output: scores[image_id], self.key_output_ts: model_ts, UNCERTAINTY_INFO_KEY: summary}
            )
            logger.info("MUTUAL INFORMATION:: %s => %.6g (%.2f s)", image_id, scores[image_id], time.time() - t0)
        self.infer_task.clear_cache()
        return {
            "total": len(unlabeled),
            "skipped": skipped,
            "executed": len(image_ids),
            "latency": round(time.time() - start, 3),
            "scores": scores,
        }
