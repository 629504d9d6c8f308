"""Convolution kernels of trained source networks: collection, filtering, grouping, and a dataset for the VAE."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from monai_dwp.utils.io import load_checkpoint
from monai_dwp.utils.validation import check_float, check_int

__all__ = ["collect_kernels", "filter_kernels", "group_layers", "KernelDataset", "load_state_dict"]

_WEIGHT_SUFFIXES = (".weight", ".loc")


def load_state_dict(source: str | os.PathLike | nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The state dict of a network, a checkpoint file, or a state dict.

    A checkpoint may be a bare state dict (what MONAI's ``CheckpointSaver`` writes for one object) or a dict
    holding it under ``"model"``, ``"network"`` or ``"state_dict"``; a DDP ``module.`` prefix is removed.
    """
    if isinstance(source, nn.Module):
        state = source.state_dict()
    elif isinstance(source, Mapping):
        state = dict(source)
    else:
        state = load_checkpoint(
            source,
            "source checkpoint",
            missing="train it with `python -m monai.bundle run --config_file bundles/dwp_pretrain/configs/train.json`",
            expected="the models/model.pt of a dwp_pretrain run",
        )
    if not isinstance(state, Mapping):
        raise ValueError(
            f"{source!r} holds no state dict of tensors, got a {type(state).__name__}; pass a network checkpoint "
            "(models/model.pt)."
        )
    for key in ("model", "network", "state_dict"):
        if isinstance(state.get(key), Mapping):
            state = dict(state[key])
            break
    if not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(
            f"{str(source) if isinstance(source, (str, os.PathLike)) else type(source).__name__!r} holds no state "
            f"dict of tensors, got the keys {sorted(map(str, state))[:5]}; pass a network checkpoint "
            "(models/model.pt of a dwp_pretrain run), not a prior or kernel file."
        )
    return {k.removeprefix("module."): v for k, v in state.items()}


def collect_kernels(
    sources: Sequence[str | os.PathLike | nn.Module | Mapping[str, Tensor]] | str | os.PathLike | nn.Module,
    kernel_size: int | Sequence[int] = 3,
    spatial_dims: int = 3,
) -> dict[str, Tensor]:
    """Collect the convolution kernels of a given size from one or more trained networks, per layer.

    A kernel is one slice ``W[o, i]`` of a weight ``W`` of shape ``(out, in, *kernel_size)`` (a Bayesian layer
    contributes its ``loc``). The same layer of several source networks (same qualified name) is concatenated.

    Args:
        sources: networks, checkpoint files or state dicts (one or a sequence).
        kernel_size: the kernel shape to collect, e.g. ``3`` for 3×3×3.
        spatial_dims: number of spatial dimensions of the kernels.

    Returns:
        ``{layer name: kernels}`` with kernels of shape ``(num_kernels, *kernel_size)``, float32 on CPU, in the
        order the layers appear in the first source.

    Raises:
        ValueError: when no source has a kernel of that size, or the sources disagree on a layer's kernel shape.
    """
    if isinstance(sources, (str, os.PathLike, nn.Module, Mapping)):
        sources = [sources]
    if not sources:
        raise ValueError("sources is empty; pass at least one network or checkpoint file.")
    shape = (kernel_size,) * spatial_dims if isinstance(kernel_size, int) else tuple(kernel_size)
    collected: dict[str, list[Tensor]] = {}
    for source in sources:
        for key, value in load_state_dict(source).items():
            if not key.endswith(_WEIGHT_SUFFIXES) or value.ndim != spatial_dims + 2 or tuple(value.shape[2:]) != shape:
                continue
            name = key.rsplit(".", 1)[0]
            kernels = value.detach().float().cpu().flatten(0, 1)
            if name in collected and collected[name][0].shape[1:] != kernels.shape[1:]:
                raise ValueError(f"layer {name!r}: sources disagree on the kernel shape.")
            collected.setdefault(name, []).append(kernels)
    if not collected:
        raise ValueError(
            f"no convolution with kernel size {shape} in {len(sources)} source(s); are they the source U-Nets?"
        )
    return {name: torch.cat(parts) for name, parts in collected.items()}


def filter_kernels(kernels: Mapping[str, Tensor], min_norm: float = 1e-2) -> dict[str, Tensor]:
    """Drop kernels whose L2 norm is below ``min_norm`` (the paper drops near-zero kernels with 1e-2).

    Args:
        kernels: ``{layer: (num_kernels, *kernel_size)}``.
        min_norm: the threshold, >= 0.

    Returns:
        The kept kernels per layer (a layer may keep none: its tensor is then empty).
    """
    check_float(min_norm, "min_norm", minimum=0.0)
    return {name: k[k.flatten(1).norm(dim=1) >= min_norm] for name, k in kernels.items()}


def group_layers(layer_names: Sequence[str], num_groups: int | None = 7) -> dict[str, int]:
    """Map layers to ``num_groups`` groups of consecutive layers, as equal in size as possible.

    The paper fits one VAE per group of consecutive layers (7 groups); ``num_groups=None`` gives one group per
    layer.

    Returns:
        ``{layer name: group index}``, group indices ``0 .. num_groups - 1`` in layer order.
    """
    names = list(layer_names)
    if not names:
        raise ValueError("layer_names is empty; collect the kernels first.")
    if num_groups is None:
        return {name: i for i, name in enumerate(names)}
    check_int(num_groups, "num_groups", 1, len(names), hint=f"at most the number of layers, {len(names)}")
    return {name: i * num_groups // len(names) for i, name in enumerate(names)}


class KernelDataset(Dataset):
    r"""The kernels of all layer groups on their VAE's normalised scale, as ``{"image", "label", "group"}`` items.

    Each layer's kernels are divided by the layer's scale :math:`s_l = \sqrt{\mathrm{mean}(w^2)}` (the root mean
    square of its kernel values; ``scale_by="group"`` uses one scale per group instead), so normalised kernels
    have unit RMS in every layer. The scales are stored in the prior checkpoint, whose density on the raw scale
    includes the Jacobian ``-d log s_l``. ``"image"`` and ``"label"`` are the same normalised kernel
    ``(1, *kernel_size)`` (a VAE reconstructs its input) and ``"group"`` its group, the layout MONAI's
    ``SupervisedTrainer`` with ``PrepareBatchExtraInput({"group": "group"})`` expects.

    Args:
        kernels: ``{layer: (num_kernels, *kernel_size)}``.
        layer_groups: ``{layer: group}``; layers missing here are ignored.
        scales: the normalising scale of each group, used with ``scale_by="group"``; default each group's RMS.
        scale_by: ``"layer"`` (default) or ``"group"``.

    Attributes:
        scales: ``[s_0, ..., s_{G-1}]``, the RMS of each group's raw kernels (or the given ``scales``).
        layer_scales: ``{layer: s_l}``, the scale each layer's kernels were divided by.
        kernels: ``(N, 1, *kernel_size)`` normalised kernels; ``groups``: ``(N,)`` their groups.
    """

    def __init__(
        self,
        kernels: Mapping[str, Tensor],
        layer_groups: Mapping[str, int],
        scales: Sequence[float] | None = None,
        scale_by: str = "layer",
    ) -> None:
        if scale_by not in ("layer", "group"):
            raise ValueError(f"scale_by must be 'layer' or 'group', got {scale_by!r}.")
        num_groups = max(layer_groups.values()) + 1 if layer_groups else 0
        parts: list[Tensor] = []
        groups: list[Tensor] = []
        self.scales: list[float] = []
        self.layer_scales: dict[str, float] = {}
        for g in range(num_groups):
            names = [n for n, gg in layer_groups.items() if gg == g and n in kernels and kernels[n].shape[0] > 0]
            raw_cat = torch.cat([kernels[n] for n in names]) if names else torch.empty(0)
            if raw_cat.shape[0] == 0:
                raise ValueError(
                    f"group {g} has no kernels (layers {[n for n, gg in layer_groups.items() if gg == g]}); "
                    "check layer_groups, the source checkpoints and the kernel filter (min_norm)."
                )
            scale = float(raw_cat.square().mean().sqrt()) if scales is None else float(scales[g])
            if not (math.isfinite(scale) and scale > 0):
                raise ValueError(f"the scale of group {g} must be a finite float > 0, got {scale!r}.")
            self.scales.append(scale)
            for n in names:
                s_l = float(kernels[n].square().mean().sqrt()) if scale_by == "layer" else scale
                if not (math.isfinite(s_l) and s_l > 0):
                    raise ValueError(f"the scale of layer {n!r} must be a finite float > 0, got {s_l!r}.")
                self.layer_scales[n] = s_l
                parts.append(kernels[n] / s_l)
                groups.append(torch.full((kernels[n].shape[0],), g, dtype=torch.long))
            for n, gg in layer_groups.items():  # layers whose kernels were all filtered out: the group's scale
                if gg == g and n not in self.layer_scales:
                    self.layer_scales[n] = scale
        if not parts:
            raise ValueError("layer_groups is empty; map the collected layers to groups with group_layers().")
        self.kernels = torch.cat(parts).unsqueeze(1).contiguous()
        self.groups = torch.cat(groups)

    @property
    def num_groups(self) -> int:
        """Number of groups."""
        return len(self.scales)

    def group_kernels(self, group: int) -> Tensor:
        """The normalised kernels of one group, ``(n, 1, *kernel_size)``."""
        return self.kernels[self.groups == group]

    def __len__(self) -> int:
        return self.kernels.shape[0]

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        kernel = self.kernels[index]
        return {"image": kernel, "label": kernel, "group": self.groups[index]}
