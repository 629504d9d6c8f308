"""Monte Carlo inference for Bayesian networks: mean probabilities and voxel-wise uncertainty maps."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.inferers import Inferer, SlidingWindowInferer
from monai.utils import BlendMode, PytorchPadMode
from torch import Tensor, nn

from monai_dwp.networks.layers.bayesian_conv import BayesianConv, hold_weights
from monai_dwp.networks.utils import bayesian_modules, stochastic_mode
from monai_dwp.utils.validation import check_int

__all__ = ["MCInferer", "UNCERTAINTY_KEYS", "MC_PROBS_KEY", "MC_ACTIVATIONS"]

UNCERTAINTY_KEYS: tuple[str, ...] = ("entropy", "expected_entropy", "mutual_information")
"""Names of the uncertainty maps :class:`MCInferer` can return next to :data:`MC_PROBS_KEY`."""

MC_PROBS_KEY: str = "probs"
"""Key of the mean probabilities in the dict output of :class:`MCInferer` (``torch.distributions``' name, as in
``Categorical(probs=...)``). Not ``"pred"``: an evaluator stores the whole output under ``"pred"``, and a sub-key of the
same name would clash with it in MONAI's :class:`~monai.transforms.FlattenSubKeysd`."""

MC_ACTIVATIONS: tuple[str, ...] = ("softmax", "sigmoid")
"""Output activations :class:`MCInferer` supports."""


def _network_spatial_dims(network: nn.Module) -> int | None:
    """The number of spatial dimensions ``network`` expects, when it can be read off the module, else ``None``."""
    dims = getattr(network, "spatial_dims", None)
    if isinstance(dims, int) and not isinstance(dims, bool):
        return dims
    for module in network.modules():
        if isinstance(module, BayesianConv):
            return module.spatial_dims
        if isinstance(module, nn.modules.conv._ConvNd):
            return len(module.kernel_size)
    return None


def _check_roi_size(roi_size: Any) -> None:
    """Raise when ``roi_size`` is not an int or a non-empty sequence of ints."""
    fix = "pass the training patch size, e.g. roi_size=32 or roi_size=(32, 32, 32), or None for whole volumes"
    if isinstance(roi_size, int) and not isinstance(roi_size, bool):
        return
    if not isinstance(roi_size, Sequence) or isinstance(roi_size, str):
        raise TypeError(f"roi_size must be None, an int or a sequence of ints, got {roi_size!r}; {fix}.")
    if len(roi_size) == 0:
        raise ValueError(f"roi_size must have one entry per spatial dimension, got {roi_size!r}; {fix}.")
    if any(isinstance(r, bool) or not isinstance(r, int) for r in roi_size):
        raise TypeError(f"roi_size must be None, an int or a sequence of ints, got {roi_size!r}; {fix}.")


def _check_sliding_window(sw_batch_size: Any, overlap: Any, mode: Any) -> None:
    """Raise on a ``sw_batch_size``, ``overlap`` or blending ``mode`` that the sliding window would reject."""
    check_int(sw_batch_size, "sw_batch_size", minimum=1, hint="e.g. sw_batch_size=4")
    overlaps = overlap if isinstance(overlap, Sequence) and not isinstance(overlap, str) else (overlap,)
    if len(overlaps) == 0 or any(isinstance(o, bool) or not isinstance(o, (int, float)) for o in overlaps):
        raise TypeError(
            f"overlap must be a float in [0, 1) or one per spatial dimension, got {overlap!r}; e.g. overlap=0.25."
        )
    if not all(0.0 <= float(o) < 1.0 for o in overlaps):
        raise ValueError(f"overlap must be >= 0 and < 1, got {overlap!r}; e.g. overlap=0.25 or 0.5.")
    allowed = tuple(m.value for m in BlendMode)
    if str(mode) not in allowed and not isinstance(mode, BlendMode):
        raise ValueError(
            f"mode must be one of {allowed} (blending of overlapping windows), got {mode!r}; use 'constant' for "
            "a plain average or 'gaussian' to weight window centres more."
        )


class MCInferer(Inferer):
    r"""Monte Carlo predictive mean and uncertainty maps of a Bayesian network, optionally by sliding window.

    For a network with :class:`~monai_dwp.networks.layers.BayesianConv` layers and an input ``x`` of shape
    ``(B, C, *spatial)``, sample ``t = 1..T`` draws *all* weights once, :math:`W_t = \text{loc} + \text{scale}
    \odot \varepsilon_t` (``"sampled"`` mode), and runs the whole volume with them: with a sliding window,
    every window (and every batch of windows) of the volume sees the same :math:`W_t`, so a sample is coherent
    across window borders (local reparameterization is for training only). Each layer forms its :math:`W_t`
    once per sample, not once per window (the windows of a sample run inside
    :class:`~monai_dwp.networks.layers.bayesian_conv.hold_weights`).

    Sliding windows: a network trained on patches (e.g. 32³ with instance normalisation) should be evaluated on
    windows of the training patch size, ``roi_size=patch_size``: a whole volume gives the normalisation layers
    other statistics than training did. The windowing, blending and padding are MONAI's
    :class:`~monai.inferers.SlidingWindowInferer`, built from the arguments ``roi_size`` to
    ``cache_roi_weight_map``; ``roi_size=None`` runs the whole volume in one network call per sample.

    With :math:`p_t = \sigma(f_{W_t}(x))`, ``σ`` the softmax over the ``K`` channels:

    - ``"probs"``: mean probabilities :math:`\bar p = \frac{1}{T} \sum_t p_t`, shape ``(B, K, *spatial)``;
    - ``"entropy"``: predictive entropy :math:`H[\bar p] = -\sum_k \bar p_k \log \bar p_k` (nats, total
      uncertainty), ``(B, 1, *spatial)``, in ``[0, log K]``;
    - ``"expected_entropy"``: :math:`\frac{1}{T} \sum_t H[p_t]` (aleatoric part), ``(B, 1, *spatial)``;
    - ``"mutual_information"``: :math:`H[\bar p] - \frac{1}{T} \sum_t H[p_t]`, clamped at 0, the mutual
      information between the label and the weights (epistemic part), ``(B, 1, *spatial)``, in
      ``[0, H[p̄]]``.

    With ``activation="sigmoid"`` every channel is an independent Bernoulli label with probability
    :math:`p = \text{sigmoid}(\text{logit})` (``K = C``, e.g. one channel for a binary foreground),
    :math:`H[p] = -p \log p - (1 - p) \log(1 - p)` per channel, and the maps sum the channels' entropies
    (the entropy of the factorized predictive; for one channel exactly the binary formulas), in
    ``[0, K log 2]``.

    Only running sums are kept (:math:`\sum_t p_t` and :math:`\sum_t H[p_t]`): memory does not grow with
    ``T``. Every layer's stochastic mode and held weight draw are restored afterwards, also when the network
    raises. A network without ``BayesianConv`` layers, or ``mean_only=True``, is run *once* (``"mean"`` mode,
    i.e. ``loc`` only, the cheap deterministic prediction); its mutual information is exactly 0 and its
    expected entropy equals its entropy. (Dropout layers are not treated as stochastic: put the network in
    ``eval()`` mode, as :class:`monai.engines.SupervisedEvaluator` does.)

    Run it under ``torch.no_grad()`` (the evaluator does); like MONAI's inferers, it keeps the caller's
    gradient mode.

    Output: by default ``__call__`` returns the mean probabilities tensor only, so that the inferer drops into any
    MONAI pipeline in place of :class:`~monai.inferers.SlidingWindowInferer`. With
    ``return_uncertainty=True`` it returns ``{"probs": ..., **maps}`` (the mean probabilities under
    :data:`MC_PROBS_KEY`, maps named by ``uncertainty_keys``); in a :class:`monai.engines.SupervisedEvaluator` the
    dict lands under the batch's ``"pred"`` key, is decollated per item, and
    :class:`~monai_dwp.transforms.FlattenMCOutputd` in the post-processing puts the probabilities back under
    ``"pred"`` and moves the maps to top-level keys.

    Example::

        net = DWPUNet(bayesian=True).eval()
        inferer = MCInferer(num_samples=10, roi_size=(32, 32, 32), overlap=0.5, return_uncertainty=True, seed=0)
        with torch.no_grad():
            out = inferer(image, net)  # image (1, 1, 96, 112, 96), 32³ windows in batches of 4
        out["probs"].shape, out["mutual_information"].shape  # (1, 2, 96, 112, 96), (1, 1, 96, 112, 96)

    Args:
        num_samples: number of weight draws ``T`` (>= 1). Unused (one forward pass) for a network without
            Bayesian layers or with ``mean_only=True``.
        roi_size: window size of a sliding-window forward, an int for every spatial dimension or one int per
            dimension (an entry ``<= 0`` takes the input's size along that dimension, as in MONAI), usually the
            training patch size; ``None`` runs the whole volume at once. The arguments ``sw_batch_size`` to
            ``cache_roi_weight_map`` are :class:`~monai.inferers.SlidingWindowInferer`'s and are used only with
            a ``roi_size``.
        sw_batch_size: number of windows per network call (>= 1). All windows of a sample, in every batch, use
            the same weights, and the result does not depend on it (up to float rounding). The default 4 is
            faster than 1 on CPU and GPU: on CPU, PyTorch runs a 3D convolution of a small input (one 32³
            window, and more so the deeper, smaller levels of a U-Net) on a slow fallback path instead of its
            oneDNN kernels, which a batch of windows reaches again; on a GPU fewer, larger calls use the device
            better. Memory for activations grows linearly with it.
        overlap: overlap of neighbouring windows as a fraction of ``roi_size``, in ``[0, 1)``, one float for all
            spatial dimensions or one per dimension. More overlap averages more windows per voxel (smoother
            seams) at more windows per sample: on a large volume 0.5 runs about ``2^spatial_dims`` times as many
            as 0. The default 0.25 is :class:`~monai.inferers.SlidingWindowInferer`'s; the bundles use 0.5, which
            scored about 0.05 higher Dice than 0.25 on validation cases of patch-trained U-Nets with InstanceNorm,
            whose window predictions depend on the window's content (``benchmarks/results/sw_overlap.md``).
        mode: blending of overlapping windows' logits, ``"constant"`` (plain average) or ``"gaussian"``
            (weights falling off from the window centre, ``sigma_scale``), as in
            :class:`~monai.inferers.SlidingWindowInferer`.
        sigma_scale: standard deviation of the Gaussian blending, relative to ``roi_size``.
        padding_mode: padding when ``roi_size`` is larger than the input.
        cval: fill value of ``"constant"`` padding.
        sw_device: device of the window data (by default that of ``inputs``).
        device: device where windows are stitched and the outputs accumulated (by default that of ``inputs``);
            e.g. ``"cpu"`` to bound GPU memory on large volumes.
        progress: show a progress bar over the windows of each sample.
        cache_roi_weight_map: precompute the window blending map once.
        activation: ``"softmax"`` (``K >= 2`` channels of multi-class logits) or ``"sigmoid"`` (independent
            Bernoulli channels, e.g. one channel of binary logits).
        return_uncertainty: return a dict ``{"probs", *uncertainty_keys}`` instead of the probabilities tensor.
        uncertainty_keys: the maps of the dict, any of :data:`UNCERTAINTY_KEYS` (default all three). Leaving
            out ``"expected_entropy"`` and ``"mutual_information"`` skips the per-sample entropies.
        mean_only: one forward pass in ``"mean"`` mode (posterior locations only) instead of ``T`` samples.
        seed: seed of the weight draws. With a seed, every call draws the same ``T`` weight samples (from a
            :class:`torch.Generator` per device, not from the global RNG), so two calls on the same input give
            identical outputs; ``None`` draws from the global RNG. (Entering ``"sampled"`` mode through
            :class:`~monai_dwp.networks.stochastic_mode` still advances the global RNG by one unused draw.)

    Raises:
        ValueError: on ``num_samples < 1``, ``sw_batch_size < 1``, an ``overlap`` outside ``[0, 1)``, an unknown
            blending ``mode``, ``activation`` or uncertainty key, or an empty ``roi_size``.
        TypeError: on a non-int ``num_samples``, ``sw_batch_size`` or ``seed``, a ``roi_size`` that is not
            ints, or an ``overlap`` that is not floats.
    """

    def __init__(
        self,
        num_samples: int = 10,
        roi_size: Sequence[int] | int | None = None,
        sw_batch_size: int = 4,
        overlap: Sequence[float] | float = 0.25,
        mode: BlendMode | str = BlendMode.CONSTANT,
        sigma_scale: Sequence[float] | float = 0.125,
        padding_mode: PytorchPadMode | str = PytorchPadMode.CONSTANT,
        cval: float = 0.0,
        sw_device: torch.device | str | None = None,
        device: torch.device | str | None = None,
        progress: bool = False,
        cache_roi_weight_map: bool = False,
        activation: str = "softmax",
        return_uncertainty: bool = False,
        uncertainty_keys: Sequence[str] = UNCERTAINTY_KEYS,
        mean_only: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        check_int(
            num_samples,
            "num_samples",
            minimum=1,
            hint="e.g. num_samples=10, or num_samples=1 with mean_only=True for the cheap deterministic prediction",
        )
        if activation not in MC_ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {MC_ACTIVATIONS}, got {activation!r}; use 'softmax' for multi-class "
                "logits and 'sigmoid' for single-channel binary logits."
            )
        if isinstance(uncertainty_keys, str):
            uncertainty_keys = (uncertainty_keys,)
        unknown = [k for k in uncertainty_keys if k not in UNCERTAINTY_KEYS]
        if unknown:
            raise ValueError(f"uncertainty_keys must be a subset of {UNCERTAINTY_KEYS}, got unknown {unknown!r}.")
        if seed is not None:
            check_int(seed, "seed", hint="or None to draw from the global RNG")
        if roi_size is not None:
            _check_roi_size(roi_size)
        _check_sliding_window(sw_batch_size, overlap, mode)
        self.num_samples = num_samples
        self.roi_size = roi_size
        self.sw_batch_size = sw_batch_size
        self.overlap = overlap
        self.device = device
        self.activation = activation
        self.return_uncertainty = bool(return_uncertainty)
        self.uncertainty_keys: tuple[str, ...] = tuple(dict.fromkeys(uncertainty_keys))
        self.mean_only = bool(mean_only)
        self.seed = seed
        self.sliding_window: SlidingWindowInferer | None = None
        if roi_size is not None:
            self.sliding_window = SlidingWindowInferer(
                roi_size=roi_size,
                sw_batch_size=sw_batch_size,
                overlap=overlap,
                mode=mode,
                sigma_scale=sigma_scale,
                padding_mode=padding_mode,
                cval=cval,
                sw_device=sw_device,
                device=device,
                progress=progress,
                cache_roi_weight_map=cache_roi_weight_map,
            )

    # ------------------------------------------------------------------ public
    def __call__(  # type: ignore[override]
        self, inputs: Tensor, network: nn.Module, *args: Any, **kwargs: Any
    ) -> Tensor | dict[str, Tensor]:
        """Run Monte Carlo inference of ``network`` on ``inputs``.

        Args:
            inputs: images, shape ``(B, C, *spatial)``.
            network: the network, a :class:`torch.nn.Module` returning logits ``(B, K, *spatial)``; its
                :class:`~monai_dwp.networks.layers.BayesianConv` layers (if any) are sampled.
            args: optional positional arguments passed to ``network`` (and to the sliding window).
            kwargs: optional keyword arguments passed to ``network`` (and to the sliding window).

        Returns:
            The mean probabilities ``(B, K, *spatial)``, or with ``return_uncertainty`` a dict with ``"probs"``
            and the maps named by ``uncertainty_keys``, each ``(B, 1, *spatial)``.

        Raises:
            TypeError: when ``inputs`` is not a tensor, ``network`` not a module, or the network returns no
                tensor.
            ValueError: when ``inputs`` does not have the network's ``spatial_dims + 2`` dimensions, or a
                softmax is asked of a single-channel output.
        """
        self._check_call(inputs, network)
        need_sample_entropy = self.return_uncertainty and any(
            k in self.uncertainty_keys for k in ("expected_entropy", "mutual_information")
        )
        layers = bayesian_modules(network)
        if not layers or self.mean_only:
            with stochastic_mode(network, "mean"):
                logits = self._forward(inputs, network, *args, **kwargs)
            prob, _ = self._probabilities(logits, need_entropy=False)
            return self._finalize(prob, None, 1)

        held = {name: layer._epsilon for name, layer in layers.items()}
        generators: dict[torch.device, torch.Generator] = {}
        prob_sum: Tensor | None = None
        entropy_sum: Tensor | None = None
        try:
            with stochastic_mode(network, "sampled"):
                for _ in range(self.num_samples):
                    self._resample(layers.values(), generators)
                    with hold_weights(layers.values()):  # one weight tensor per layer for all windows
                        logits = self._forward(inputs, network, *args, **kwargs)
                    prob, sample_entropy = self._probabilities(logits, need_entropy=need_sample_entropy)
                    del logits
                    prob_sum = prob if prob_sum is None else prob_sum + prob
                    if sample_entropy is not None:
                        entropy_sum = sample_entropy if entropy_sum is None else entropy_sum + sample_entropy
                    del prob, sample_entropy
        finally:
            for name, layer in layers.items():
                layer._epsilon = held[name]
        return self._finalize(prob_sum, entropy_sum, self.num_samples)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ helpers
    def _check_call(self, inputs: Any, network: Any) -> None:
        if not isinstance(network, nn.Module):
            raise TypeError(
                f"network must be a torch.nn.Module, got {type(network).__name__}; MCInferer needs the module to "
                "find and sample its BayesianConv layers (wrap extra arguments in an nn.Module)."
            )
        if not isinstance(inputs, torch.Tensor):
            raise TypeError(f"inputs must be a torch.Tensor of shape (B, C, *spatial), got {type(inputs).__name__}.")
        if inputs.ndim < 3:
            raise ValueError(
                f"inputs must have shape (B, C, *spatial) with at least one spatial dimension, got shape "
                f"{tuple(inputs.shape)}; add the missing batch/channel axis."
            )
        dims = _network_spatial_dims(network)
        if dims is not None and inputs.ndim != dims + 2:
            raise ValueError(
                f"inputs must be {dims + 2}D (B, C and the network's {dims} spatial dims), got shape "
                f"{tuple(inputs.shape)}; add the missing batch/channel axis."
            )
        if isinstance(self.roi_size, Sequence) and len(self.roi_size) != inputs.ndim - 2:
            raise ValueError(
                f"roi_size={tuple(self.roi_size)!r} has {len(self.roi_size)} entries but inputs of shape "
                f"{tuple(inputs.shape)} have {inputs.ndim - 2} spatial dims; give one size per spatial dim."
            )
        if self.roi_size is not None and isinstance(self.overlap, Sequence) and len(self.overlap) != inputs.ndim - 2:
            raise ValueError(
                f"overlap={tuple(self.overlap)!r} has {len(self.overlap)} entries but inputs of shape "
                f"{tuple(inputs.shape)} have {inputs.ndim - 2} spatial dims; give one float, or one per spatial dim."
            )

    def _resample(self, layers: Iterable[BayesianConv], generators: dict[torch.device, torch.Generator]) -> None:
        """One draw of all weights: a new held epsilon in every layer, from the seeded generators if any."""
        for layer in layers:
            if self.seed is None:
                layer.resample()
                continue
            dev = layer.loc.device
            if dev not in generators:
                generators[dev] = torch.Generator(device=dev).manual_seed(self.seed + len(generators))
            layer.resample(generators[dev])

    def _forward(self, inputs: Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> Tensor:
        if self.sliding_window is not None:
            logits = self.sliding_window(inputs, network, *args, **kwargs)
        else:
            logits = network(inputs, *args, **kwargs)
            if self.device is not None and isinstance(logits, torch.Tensor):
                logits = logits.to(self.device)
        if not isinstance(logits, torch.Tensor):
            raise TypeError(
                f"network must return one tensor of logits (B, K, *spatial), got {type(logits).__name__}; wrap it "
                "to select the segmentation output."
            )
        if self.activation == "softmax" and logits.shape[1] == 1:
            raise ValueError(
                f"network returned a single channel (shape {tuple(logits.shape)}): a softmax over one channel is "
                "always 1; use activation='sigmoid' for single-channel binary logits."
            )
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()  # entropies in half precision lose most of their digits
        return logits

    def _probabilities(self, logits: Tensor, need_entropy: bool) -> tuple[Tensor, Tensor | None]:
        """Probabilities ``(B, K, *spatial)`` and, if asked, their entropy ``(B, 1, *spatial)``, from logits."""
        if self.activation == "softmax":
            log_prob = F.log_softmax(logits, dim=1)
            prob = log_prob.exp()
            entropy = -(prob * log_prob).sum(1, keepdim=True) if need_entropy else None
            return prob, entropy
        prob = torch.sigmoid(logits)
        if not need_entropy:
            return prob, None
        entropy = -(prob * F.logsigmoid(logits) + (1.0 - prob) * F.logsigmoid(-logits)).sum(1, keepdim=True)
        return prob, entropy

    def _entropy_of(self, prob: Tensor) -> Tensor:
        """Entropy ``(B, 1, *spatial)`` of probabilities (``0 log 0 = 0``), clamped at 0 against rounding."""
        if self.activation == "softmax":
            entropy = -torch.special.xlogy(prob, prob).sum(1, keepdim=True)
        else:
            q = 1.0 - prob
            entropy = -(torch.special.xlogy(prob, prob) + torch.special.xlogy(q, q)).sum(1, keepdim=True)
        return entropy.clamp_min(0.0)

    def _finalize(self, prob_sum: Tensor, entropy_sum: Tensor | None, count: int) -> Tensor | dict[str, Tensor]:
        pred = prob_sum / count if count > 1 else prob_sum
        if not self.return_uncertainty:
            return pred
        out: dict[str, Tensor] = {MC_PROBS_KEY: pred}
        keys = self.uncertainty_keys
        if not keys:
            return out
        entropy = self._entropy_of(pred)
        if entropy_sum is None:  # one deterministic pass: no spread between samples
            expected = entropy.clone()
            mutual_information = torch.zeros_like(entropy)
        else:
            expected = (entropy_sum / count).clamp_min(0.0)
            mutual_information = (entropy - expected).clamp_min(0.0)
        maps = {"entropy": entropy, "expected_entropy": expected, "mutual_information": mutual_information}
        out.update((k, maps[k]) for k in keys)
        return out

