"""The target-finetune methods of the paper and its baselines: network preparation, prior and loss per method.

=================  ==========  ======================================================================
method             network     start and prior
=================  ==========  ======================================================================
``dwp``            Bayesian    Deep Weight Prior over the 3×3×3 kernels (optionally DWP-initialised)
``gaussian_prior`` Bayesian    factorized ``N(0, prior_scale²)`` prior
``source_gaussian`` Bayesian   ``N(w_source, prior_scale²)`` per weight (L2-SP), posterior at the source network
``swag_prior``     Bayesian    ``N(w_SWAG, swag_scale_factor·σ²_SWAG)`` per weight (Pre-Train Your Loss), posterior at the
                               source network
``random_init``    plain       PyTorch's default initialisation
``finetune``       plain       the source network's weights, all trained
``finetune_frozen`` plain      the source network's weights, encoder (``init_conv``, ``down1..6``) frozen
``dwp_init``       plain       3×3×3 kernels sampled from the VAE prior (Atanov et al., 2019)
=================  ==========  ======================================================================
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

import torch
from torch import nn

from monai_dwp.bundle_utils import require_handoff
from monai_dwp.data.kernels import load_state_dict
from monai_dwp.losses.deep_weight_prior import DeepWeightPrior
from monai_dwp.losses.elbo import ELBOLoss
from monai_dwp.losses.gaussian_prior import GaussianPrior
from monai_dwp.networks.utils import bayesian_modules, init_relative_scale
from monai_dwp.utils.validation import check_float, check_int

__all__ = [
    "METHODS",
    "PAPER_METHODS",
    "BAYESIAN_METHODS",
    "SOURCE_START_METHODS",
    "ENCODER_PREFIXES",
    "HANDOFFS",
    "check_handoffs",
    "is_bayesian_method",
    "make_prior",
    "prepare_network",
    "make_loss",
    "trainable_parameters",
    "parameter_groups",
    "LR_SCHEDULES",
    "make_lr_scheduler",
]

METHODS: tuple[str, ...] = (
    "dwp", "gaussian_prior", "random_init", "finetune", "finetune_frozen", "dwp_init", "source_gaussian", "swag_prior",
)
PAPER_METHODS: tuple[str, ...] = ("dwp", "gaussian_prior", "random_init", "finetune", "finetune_frozen", "dwp_init")
"""The six methods of the protocol of Kuzina et al. (2019); ``source_gaussian`` and ``swag_prior`` go beyond it."""
BAYESIAN_METHODS: tuple[str, ...] = ("dwp", "gaussian_prior", "source_gaussian", "swag_prior")
SOURCE_START_METHODS: tuple[str, ...] = ("finetune", "finetune_frozen", "source_gaussian", "swag_prior")
"""The methods whose network always starts at the source network of ``source_ckpt``."""
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")
ENCODER_PREFIXES: tuple[str, ...] = ("init_conv", "down1", "down2", "down3", "down4", "down5", "down6")

logger = logging.getLogger(__name__)


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}; e.g. --method dwp.")
    return method


def is_bayesian_method(method: str) -> bool:
    """Whether ``method`` trains a Bayesian network (:data:`BAYESIAN_METHODS`)."""
    return _check_method(method) in BAYESIAN_METHODS


HANDOFFS: dict[str, tuple[str, ...]] = {
    "dwp": ("prior_ckpt",),
    "dwp_init": ("prior_ckpt",),
    "gaussian_prior": (),
    "random_init": (),
    "finetune": ("source_ckpt",),
    "finetune_frozen": ("source_ckpt",),
    "source_gaussian": ("source_ckpt",),
    "swag_prior": ("source_ckpt", "swag_ckpt"),
}
"""The hand-off files each method needs: the prior checkpoint of ``dwp_prior``, a source net of ``dwp_pretrain`` or
its SWAG moments (``swag.pt``, written with ``--swag_start_epoch``)."""


def check_handoffs(method: str, source_init: bool = False, **files: str | os.PathLike | None) -> dict[str, str]:
    """Check, before anything is built, that the hand-off files ``method`` needs exist (the bundles' second
    ``initialize`` step, so that a missing file stops with one line naming the key and the command that makes it).

    Args:
        method: one of :data:`METHODS`.
        source_init: a Bayesian method started at the source network (:func:`prepare_network`): it needs
            ``source_ckpt`` too.
        files: the hand-off keys and their files, e.g. ``prior_ckpt=..., source_ckpt=...``; the ones ``method``
            does not need (:data:`HANDOFFS`) are not checked.

    Returns:
        the checked files by key.

    Raises:
        MissingHandoffError: (a ``FileNotFoundError``) a needed file does not exist or was not given.
    """
    _check_method(method)
    keys = HANDOFFS[method] + (("source_ckpt",) if source_init and "source_ckpt" not in HANDOFFS[method] else ())
    return {key: require_handoff(files.get(key) or "", key) for key in keys}


def make_prior(
    method: str,
    prior_ckpt: str | os.PathLike | None = None,
    prior_scale: float = 0.1,
    max_kernels: int | None = None,
    num_samples: int = 1,
    refresh_interval: int = 1,
    train_encoder: bool = False,
    map_location: str | torch.device = "cpu",
    source_ckpt: str | os.PathLike | None = None,
    swag_ckpt: str | os.PathLike | None = None,
    swag_scale_factor: float = 1e4,
) -> nn.Module | None:
    """The prior of ``method``: :class:`DeepWeightPrior` from ``prior_ckpt`` (``dwp``, ``dwp_init``),
    :class:`GaussianPrior` ``N(0, prior_scale²)`` (``gaussian_prior``), ``N(w_source, prior_scale²)`` from
    ``source_ckpt`` (``source_gaussian``, :meth:`GaussianPrior.from_source`), ``N(w_SWAG, λ σ²_SWAG)`` from
    ``swag_ckpt`` with ``λ = swag_scale_factor`` (``swag_prior``, :meth:`GaussianPrior.from_swag`; ``λ = 10⁴``, the
    finetune bundle's default, was chosen on the validation split among 1, 10² and 10⁴), or ``None`` (the others).

    Raises:
        FileNotFoundError: the prior checkpoint is needed and missing (names the key and the dwp_prior command).
    """
    _check_method(method)
    if method in ("dwp", "dwp_init"):
        if prior_ckpt is None:
            raise ValueError(f"method {method!r} needs prior_ckpt, the checkpoint written by the dwp_prior bundle.")
        path = require_handoff(prior_ckpt, "prior_ckpt")
        return DeepWeightPrior.load(
            path, map_location=map_location, max_kernels=max_kernels, num_samples=num_samples,
            refresh_interval=refresh_interval, train_encoder=train_encoder,
        )
    if method == "gaussian_prior":
        return GaussianPrior(loc=0.0, scale=prior_scale)
    if method == "source_gaussian":
        if source_ckpt is None:
            raise ValueError("method 'source_gaussian' needs source_ckpt, a checkpoint of the dwp_pretrain bundle.")
        return GaussianPrior.from_source(require_handoff(source_ckpt, "source_ckpt"), scale=prior_scale,
                                         map_location=map_location)
    if method == "swag_prior":
        if swag_ckpt is None:
            raise ValueError("method 'swag_prior' needs swag_ckpt, the swag.pt of a dwp_pretrain run with "
                             "--swag_start_epoch.")
        return GaussianPrior.from_swag(swag_ckpt, scale_factor=swag_scale_factor, map_location=map_location)
    return None


def _load_source(network: nn.Module, source_ckpt: str | os.PathLike) -> None:
    """Load a deterministic source network into ``network``; a Bayesian layer's ``loc`` takes the source ``weight``
    of the layer of the same name (its ``log_scale`` is left as it is)."""
    path = require_handoff(source_ckpt, "source_ckpt")
    try:
        state = load_state_dict(path)
    except ValueError as err:
        raise ValueError(f"source_ckpt {path!r} is not a network checkpoint: {err}") from err
    renamed = {f"{name}.weight": f"{name}.loc" for name in bayesian_modules(network)}
    state = {renamed.get(k, k): v for k, v in state.items()}
    own = {k: v for k, v in network.state_dict().items() if not k.endswith(".log_scale")}
    for name, value in state.items():
        if name in own and own[name].shape != value.shape:
            raise ValueError(
                f"source_ckpt {path!r} does not fit the network: {name!r} has shape {tuple(value.shape)} in the "
                f"checkpoint but {tuple(own[name].shape)} in the network (in_channels/out_channels differ?)."
            )
    missing = [k for k in own if k not in state]
    if missing:
        raise ValueError(
            f"source_ckpt {path!r} does not fit the network: it lacks {missing[:5]}{'...' if len(missing) > 5 else ''}; "
            "is it a DWPUNet checkpoint of the dwp_pretrain bundle?"
        )
    network.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def prepare_network(
    network: nn.Module,
    method: str,
    source_ckpt: str | os.PathLike | None = None,
    prior: nn.Module | None = None,
    dwp_init: bool = True,
    generator: torch.Generator | None = None,
    init_scale_ratio: float | None = None,
    source_init: bool = False,
    dwp_init_noise: bool = False,
) -> nn.Module:
    """Initialise ``network`` for ``method`` (in place) and check the hand-offs it needs, before any training.

    Args:
        network: a :class:`DWPUNet`, Bayesian for :data:`BAYESIAN_METHODS`, deterministic otherwise.
        method: one of :data:`METHODS`.
        source_ckpt: the source network's checkpoint (:data:`SOURCE_START_METHODS` and ``source_init``).
        prior: the :class:`DeepWeightPrior` (``dwp``, ``dwp_init``); checked against the network here.
        dwp_init: for ``dwp``, start the posterior locations at VAE samples (otherwise PyTorch's initialisation).
        source_init: for a Bayesian method, start the posterior locations (and the other parameters) at the
            source network of ``source_ckpt``: fine-tuning with the method's prior. It takes the place of
            ``dwp_init``; ``source_gaussian`` and ``swag_prior`` always start there.
        generator: random generator of the DWP initialisation.
        init_scale_ratio: for a Bayesian network, set every posterior scale to this fraction of the RMS of its
            layer's locations once they are initialised (:func:`~monai_dwp.networks.utils.init_relative_scale`);
            ``None`` keeps the scales as they are. The signal-to-noise ratio ``RMS(loc) / sigma`` of every layer
            is logged.
        dwp_init_noise: the DWP initialisation (``dwp_init``, and ``dwp`` with ``dwp_init``) draws every kernel from
            the whole generative model, decoder mean plus decoder noise (a sample of the prior ``p(w)``), instead of
            taking the decoder mean (:meth:`DeepWeightPrior.initialize`).

    Returns:
        ``network``.
    """
    _check_method(method)
    if not isinstance(dwp_init_noise, bool):
        raise TypeError(f"dwp_init_noise must be a bool, got {dwp_init_noise!r}; e.g. --dwp_init_noise true.")
    bayesian = any(hasattr(m, "log_scale") for m in network.modules())
    if bayesian != is_bayesian_method(method):
        want = "a Bayesian" if is_bayesian_method(method) else "a deterministic"
        raise ValueError(
            f"method {method!r} needs {want} network; build DWPUNet with bayesian={is_bayesian_method(method)}."
        )
    if method in ("dwp", "dwp_init"):
        if not isinstance(prior, DeepWeightPrior):
            raise ValueError(f"method {method!r} needs the DeepWeightPrior of the dwp_prior bundle, got {prior!r}.")
        if method == "dwp":
            prior.check_network(network)
    if method in ("finetune", "finetune_frozen"):
        if source_ckpt is None:
            raise ValueError(f"method {method!r} needs source_ckpt, a checkpoint of the dwp_pretrain bundle.")
        _load_source(network, source_ckpt)
        if method == "finetune_frozen":
            for name, param in network.named_parameters():
                if name.startswith(ENCODER_PREFIXES):
                    param.requires_grad_(False)
    elif source_init and not bayesian:
        raise ValueError(
            f"source_init=True is for the Bayesian methods {BAYESIAN_METHODS}, got method {method!r}; a deterministic "
            "net starts at the source network with method 'finetune'."
        )
    elif source_init or method in SOURCE_START_METHODS:
        if source_ckpt is None:
            raise ValueError(f"{'source_init=True' if source_init else f'method {method}'} needs source_ckpt, "
                             "a checkpoint of the dwp_pretrain bundle.")
        _load_source(network, source_ckpt)
        logger.info("posterior locations start at the source network %s", source_ckpt)
    elif method in ("dwp", "dwp_init"):
        if method == "dwp_init" or dwp_init:
            names = prior.initialize(network, generator=generator, decoder_noise=dwp_init_noise)
            modules = dict(network.named_modules())
            ratio = {}
            with torch.no_grad():
                for n in names:
                    layer = modules[n]
                    kernels = layer.loc if hasattr(layer, "loc") else layer.weight  # Bayesian or plain conv
                    ratio[n] = float(kernels.square().mean().sqrt() / prior.scale_of(n))
            logger.info(
                "DWP initialisation: %s; RMS of the sampled kernels / RMS of the source kernels per layer (1 = the "
                "data's scale, near 0 = a collapsed prior): %s",
                "decoder mean + decoder noise" if dwp_init_noise else "decoder means",
                ", ".join(f"{n} {v:.2g}" for n, v in ratio.items()),
            )
    if bayesian:
        if init_scale_ratio is not None:
            init_relative_scale(network, init_scale_ratio)
        with torch.no_grad():
            snr = {
                name: float(layer.loc.square().mean().sqrt() / layer.scale.square().mean().sqrt())
                for name, layer in bayesian_modules(network).items()
            }
        logger.info(
            "posterior signal-to-noise RMS(loc)/RMS(sigma) after init: %s",
            ", ".join(f"{n} {v:.2g}" for n, v in snr.items()),
        )
    return network


def make_loss(
    method: str,
    network: nn.Module,
    prior: nn.Module | None,
    dataset_size: int,
    voxels_per_case: float | None = None,
    temperature: float = 1.0,
    aux_weight: float = 1.0,
) -> ELBOLoss:
    """The training loss of ``method``: the per-voxel ELBO with ``prior`` (plus the auxiliary Dice term) for the
    Bayesian methods, the same data terms alone (an :class:`ELBOLoss` without prior, so every method logs
    ``loss_nll``, ``loss_aux`` and ``loss_data``) for the others. See :class:`ELBOLoss` for the arguments."""
    return ELBOLoss(
        network,
        prior if is_bayesian_method(method) else None,
        dataset_size,
        voxels_per_case=voxels_per_case,
        temperature=temperature,
        aux_weight=aux_weight,
    )


def trainable_parameters(*modules: nn.Module | None) -> Iterable[nn.Parameter]:
    """The parameters that require a gradient, of the network and (when its encoder is fine-tuned) the prior."""
    seen: set[int] = set()
    params = []
    for module in modules:
        if module is None:
            continue
        for p in module.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    return params


def parameter_groups(
    network: nn.Module, prior: nn.Module | None = None, log_scale_lr: float | None = None
) -> list[dict[str, object]]:
    """Optimizer parameter groups: every trainable parameter, with the posterior ``log_scale`` parameters in a
    group of their own when ``log_scale_lr`` is set (their learning rate; the others keep the optimizer's).

    Under the per-voxel ELBO the KL gradient on ``log_scale`` is usually much larger than the data gradient, and
    with Adam a parameter moves at most about ``lr`` per step whatever its gradient, so with a small budget the
    posterior scales may stay where they were initialised; a larger ``log_scale_lr`` lets them reach their
    optimum. Choose it on the validation split.

    Returns:
        ``[{"params": [...]}]`` or ``[{"params": [...]}, {"params": [log_scales], "lr": log_scale_lr}]``.
    """
    params = trainable_parameters(network, prior)
    if log_scale_lr is None:
        return [{"params": params}]
    log_scale_lr = check_float(
        log_scale_lr, "log_scale_lr", minimum=0.0, include_minimum=False, hint="or None; e.g. --log_scale_lr 0.01"
    )
    scales = {id(m.log_scale) for m in bayesian_modules(network).values()}
    return [
        {"params": [p for p in params if id(p) not in scales]},
        {"params": [p for p in params if id(p) in scales], "lr": float(log_scale_lr)},
    ]


def make_lr_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, total_steps: int, final_fraction: float = 0.0,
    anneal_steps: int | None = None,
) -> torch.optim.lr_scheduler.LRScheduler | None:
    r"""The learning-rate schedule of a training run, stepped once per optimiser step (MONAI's ``LrScheduleHandler``
    with ``epoch_level=False``); the finetune bundle's target runs and the pretrain bundle's source runs.

    - ``"constant"``: no scheduler (``None``); every step uses the optimizer's learning rate(s).
    - ``"cosine"``: :class:`torch.optim.lr_scheduler.CosineAnnealingLR` with ``T_max = total_steps``, i.e.
      :math:`\eta_t = \eta_0 (1 + \cos(\pi t / T)) / 2` for every parameter group after step :math:`t`: the
      last step runs at a small rate, and the rate reaches 0 after it.
      With a few cases and a fixed step budget Adam at a constant rate keeps the weights moving to the end: the
      validation Dice of one run swings by tens of points between neighbouring epochs, so the chosen checkpoint
      is mostly luck. Annealing lets the last epochs settle.
    - ``"cosine"`` with ``final_fraction`` :math:`f > 0` or ``anneal_steps`` :math:`A < T`:
      :class:`torch.optim.swa_utils.SWALR` (``anneal_strategy="cos"``), i.e. the cosine from :math:`\eta_0` down
      to :math:`f \eta_0` over the first :math:`A` steps, then :math:`f \eta_0` for the rest of the run. This is
      the schedule of a source run that records SWAG moments (Maddox et al., NeurIPS 2019): SWAG reads the
      iterates of a *constant* rate as samples around a mode, so the rate stops falling where the recording
      starts.

    Args:
        optimizer: the run's optimizer (every group is annealed from its own learning rate).
        schedule: one of :data:`LR_SCHEDULES`.
        total_steps: optimiser steps of the whole run (``epochs × iterations per epoch``).
        final_fraction: the rate where the cosine ends, as a fraction of each group's rate, in ``[0, 1]``.
        anneal_steps: the steps the cosine takes, in ``[0, total_steps]`` (``None``: ``total_steps``).

    Raises:
        ValueError: an unknown ``schedule``, ``total_steps < 1``, ``final_fraction`` outside ``[0, 1]`` or
            ``anneal_steps`` outside ``[0, total_steps]``.
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {schedule!r}.")
    total_steps = check_int(total_steps, "total_steps", minimum=1, hint="epochs × iterations per epoch")
    final_fraction = check_float(final_fraction, "final_fraction", minimum=0.0, maximum=1.0)
    if anneal_steps is not None:
        anneal_steps = check_int(anneal_steps, "anneal_steps", minimum=0, maximum=total_steps)
    if schedule == "constant":
        return None
    if final_fraction == 0.0 and anneal_steps in (None, total_steps):
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    final = [float(group["lr"]) * final_fraction for group in optimizer.param_groups]
    steps = total_steps if anneal_steps is None else anneal_steps
    return torch.optim.swa_utils.SWALR(optimizer, swa_lr=final, anneal_epochs=steps, anneal_strategy="cos")
