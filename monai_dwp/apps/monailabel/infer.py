"""MONAI Label infer task for Bayesian bundles: a per-request number of Monte Carlo samples, thread-safe sampling."""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Mapping
from typing import Any

import torch

from monai.inferers import Inferer
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.tasks.infer.bundle import BundleInferTask

from monai_dwp.apps.monailabel.checks import check_request_image
from monai_dwp.inferers import MCInferer
from monai_dwp.transforms import FlattenMCOutputd, UncertaintySummaryd
from monai_dwp.utils.allocator import tune_allocator
from monai_dwp.utils.validation import check_int

__all__ = ["DWPBundleInferTask"]

logger = logging.getLogger(__name__)


class DWPBundleInferTask(BundleInferTask):
    """MONAI Label's ``BundleInferTask`` for bundles whose inferer is :class:`~monai_dwp.inferers.MCInferer`.

    Everything the stock task does is kept: the bundle's ``network_def``, ``preprocessing``, ``inferer`` and
    ``postprocessing`` from ``configs/inference.json``, ``models/model.pt``, labels from ``metadata.json``,
    ``SaveImaged`` filtered out and the prediction restored to the input image's grid and affine; whatever the
    post-processing puts in ``data["result"]`` (:class:`~monai_dwp.transforms.UncertaintySummaryd`'s mean entropy,
    mean mutual information and uncertain-voxel fraction) comes back in the response JSON. On top:

    - ``mc_samples``: the number of weight draws ``T`` of the Monte Carlo inferer, an option of every request
      (shown in the clients' options panel; default ``num_samples`` or the bundle's own value). ``1`` is one weight
      draw, the cheapest stochastic prediction.
    - The uncertainty summary: when the bundle's post-processing flattens the Monte Carlo output
      (:class:`~monai_dwp.transforms.FlattenMCOutputd`) but has no :class:`~monai_dwp.transforms.UncertaintySummaryd`,
      one (default threshold) is added right after it, so the response JSON always carries ``mean_entropy``,
      ``mean_mutual_information`` and ``uncertain_fraction``.
    - ``image_path`` is kept away from the bundle's pre-transforms: MONAI Label stores the input's path under
      ``data["image_path"]``, and MONAI >= 1.5's ``Spacingd`` updates every ``image_*`` entry as a metadata dict
      (``'str' object has no attribute 'update'``). (Bundles served with :func:`package_bundle` carry the same fix
      in their configs, for the stock task.)
    - glibc's ``malloc`` is tuned (:func:`~monai_dwp.utils.tune_allocator`) when the task is built, as every bundle
      process does first: the app does not run the bundle's ``initialize``, and without it each large activation of
      a 3D pass is mapped and page-faulted in anew.
    - Thread safety: a Monte Carlo pass switches the network's Bayesian layers to ``"sampled"`` mode and redraws
      their weights, so two requests on the same (cached) network must not interleave; this task serialises its
      inference calls (MONAI Label's scoring runs two threads by default).

    The stock task works with our bundles too (the stock ``monaibundle`` app uses it); this class only adds the
    above.

    Args:
        path: the served bundle folder (``<app>/model/<name>``).
        conf: the app's ``--conf`` dict.
        num_samples: default ``mc_samples`` of the requests; ``None`` keeps the bundle's.
        kwargs: the stock task's arguments (``train_mode``, ``skip_writer``, ``dropout``, ``post_filter``, ...).

    Raises:
        ValueError: for a ``num_samples < 1``.
        TypeError: for a non-int ``num_samples``.
    """

    def __init__(self, path: str, conf: dict[str, str], num_samples: int | None = None, **kwargs: Any) -> None:
        if num_samples is not None:
            check_int(num_samples, "num_samples", minimum=1, hint="or None for the bundle's own")
        tune_allocator()
        self._lock = threading.Lock()
        self.num_samples = num_samples
        super().__init__(path, conf, **kwargs)
        if not self.is_valid():
            return
        bundle_inferer = self._bundle_inferer()
        if isinstance(bundle_inferer, MCInferer):
            self._config["mc_samples"] = num_samples or bundle_inferer.num_samples
            if bundle_inferer.seed is not None:
                logger.warning(
                    "%s: the bundle's MCInferer has seed=%s, so every call repeats the same weight draws; stock "
                    "epistemic scoring (several calls per study) then sees no spread. Leave the seed out of a served "
                    "inference.json.", path, bundle_inferer.seed,
                )

    def __call__(self, request: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        """The stock inference, after checking that the request's image exists (an unknown study id reaches the
        task as an empty path).

        Raises:
            MONAILabelException: ``INVALID_INPUT`` for an image that does not exist, before anything is loaded.
        """
        try:
            check_request_image(request.get("image") if isinstance(request, dict) else None)
        except FileNotFoundError as err:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, str(err)) from err
        return super().__call__(request, *args, **kwargs)

    def _bundle_inferer(self) -> Inferer | None:
        for key in self.const.key_inferer():
            if self.bundle_config.get(key):
                return self.bundle_config.get_parsed_content(key, instantiate=True)
        return None

    def inferer(self, data: dict[str, Any] | None = None) -> Inferer:
        """The bundle's inferer; an :class:`MCInferer` gets the request's ``mc_samples``."""
        inferer = super().inferer(data)
        requested = (data or {}).get("mc_samples") or self.num_samples
        if isinstance(inferer, MCInferer) and requested:
            try:
                samples = int(requested)
            except (TypeError, ValueError):
                samples = 0
            if samples < 1 or str(samples) != str(requested).strip():
                raise MONAILabelException(
                    MONAILabelError.INVALID_INPUT, f"mc_samples must be an int >= 1, got {requested!r}."
                )
            if samples != inferer.num_samples:
                inferer = copy.copy(inferer)  # the bundle config caches its instance: leave that one alone
                inferer.num_samples = samples
        return inferer

    def post_transforms(self, data: dict[str, Any] | None = None) -> list[Any]:
        """The stock post-transforms, with an :class:`UncertaintySummaryd` after ``FlattenMCOutputd`` if missing."""
        post = list(super().post_transforms(data))
        if not any(isinstance(t, UncertaintySummaryd) for t in post):
            flatten = [i for i, t in enumerate(post) if isinstance(t, FlattenMCOutputd)]
            if flatten:
                post.insert(flatten[0] + 1, UncertaintySummaryd(allow_missing_keys=True))
        return post

    def run_pre_transforms(self, data: dict[str, Any], transforms: Any) -> dict[str, Any]:
        """The stock pre-transforms, with the non-dict ``image_*`` entries (``image_path``) set aside meanwhile."""
        prefix = f"{self.input_key}_"
        aside = {k: v for k, v in data.items() if isinstance(k, str) and k.startswith(prefix) and not isinstance(v, dict)}
        for key in aside:
            del data[key]
        try:
            out = super().run_pre_transforms(data, transforms)
        finally:
            data.update(aside)
        out.update({k: v for k, v in aside.items() if k not in out})
        return out

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cuda") -> dict[str, Any]:
        """The stock inference, one request at a time (Monte Carlo sampling changes the shared network's state),
        with the batch dimension of a dict output removed item by item.

        The stock task adds the batch dimension with ``image[None]``, which leaves the image's metadata unbatched
        (an ``affine`` of shape ``(4, 4)``), and takes a dict output apart with ``decollate_batch``, which splits
        that metadata too: every map would carry the first row of the affine, and the stock ``Restored``
        post-transform fails (``affine must be a square matrix``) as soon as the pre-processing changed the image's
        size (``CropForegroundd``, ``DivisiblePadd``). Here the stock call runs on the batched image with
        ``convert_to_batch=False`` and each entry of a dict output is indexed ``[0]`` as the stock task indexes a
        tensor output, which keeps its metadata whole.
        """
        with self._lock:
            if not convert_to_batch or self.input_key not in data:
                return super().run_inferer(data, convert_to_batch=convert_to_batch, device=device)
            image = data[self.input_key]
            data[self.input_key] = (image if torch.is_tensor(image) else torch.from_numpy(image))[None]
            try:
                data = super().run_inferer(data, convert_to_batch=False, device=device)
            finally:
                data[self.input_key] = image
            output = data.get(self.output_label_key)
            if isinstance(output, Mapping):
                data[self.output_label_key] = {k: v[0] if torch.is_tensor(v) else v for k, v in output.items()}
            elif torch.is_tensor(output):
                data[self.output_label_key] = output[0]
            return data
