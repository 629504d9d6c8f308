"""Brain-MRI phantoms for two diseases, written as a Medical Segmentation Decathlon style dataset.

The anatomy is the real MNI ICBM152 2009a T1 template (skull-stripped) and its grey-matter and
white-matter probability maps that ship inside the ``nilearn`` wheel (loaded with nilearn's own
offline loaders, no network access). Every subject gets

* a random global affine (rotation, scaling) and a smooth random elastic deformation,
* a disease: ``"ms"`` (source; many small ovoid, mostly periventricular white-matter lesions, label 1)
  or ``"tumour"`` (target; an irregular mass, sometimes with satellites, with enhancing rim, necrotic core and
  surrounding oedema whose signal fades before its label's edge, mass effect on the anatomy and unlabelled
  FLAIR-bright look-alikes; BraTS-like labels 1 oedema, 2 non-enhancing/necrotic core, 4 enhancing tumour),
* two modalities synthesised from the tissue fractions with disease-specific intensities (``"T1"``-like,
  with enhancement, and ``"FLAIR"``-like), contrast jitter, a MONAI bias field and MONAI Rician noise (the target
  cohort with the wider :data:`TUMOUR_ACQUISITION` ranges, thick slices and a FLAIR ghost),
* skull stripping (background exactly 0, like BraTS).

All random draws come from one :class:`numpy.random.Generator` seeded by ``(seed, disease, split, index)``,
so a subject does not depend on how many subjects are written. The documented parameter ranges live in
:data:`MS_PHANTOM_RANGES`, :data:`TUMOUR_PHANTOM_RANGES` and :data:`PHANTOM_INTENSITIES`; ``docs/data.md``
describes the model.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from monai_dwp.utils.io import atomic_path, atomic_write
from monai_dwp.utils.validation import check_float, check_int

__all__ = [
    "PHANTOM_DISEASES",
    "PHANTOM_MODALITIES",
    "PHANTOM_LABELS",
    "PHANTOM_INTENSITIES",
    "MS_PHANTOM_RANGES",
    "TUMOUR_PHANTOM_RANGES",
    "TUMOUR_ACQUISITION",
    "PhantomCase",
    "phantom_grid",
    "generate_phantom_case",
    "make_phantom_dataset",
]

PHANTOM_DISEASES: tuple[str, ...] = ("ms", "tumour")
"""Diseases the generator knows: ``"ms"`` (the source task) and ``"tumour"`` (the target task)."""

PHANTOM_MODALITIES: dict[str, str] = {"0": "T1", "1": "FLAIR"}
"""``dataset.json`` ``modality`` field of every phantom dataset (channel index -> name)."""

PHANTOM_LABELS: dict[str, dict[str, str]] = {
    "ms": {"0": "background", "1": "lesion"},
    "tumour": {"0": "background", "1": "oedema", "2": "non-enhancing/necrotic core", "4": "enhancing tumour"},
}
"""``dataset.json`` ``labels`` field per disease (label value -> name)."""

PHANTOM_INTENSITIES: dict[str, dict[str, float]] = {
    # relative mean intensity of each tissue class before contrast jitter, gamma, bias and noise
    "T1": {"csf": 0.25, "gm": 0.55, "wm": 0.80, "lesion": 0.45, "oedema": 0.50, "necrosis": 0.20, "enhancing": 1.15},
    "FLAIR": {"csf": 0.10, "gm": 0.55, "wm": 0.42, "lesion": 0.85, "oedema": 0.80, "necrosis": 0.35, "enhancing": 0.70},
}
"""Class means per modality (the T1-like channel shows contrast enhancement, like BraTS T1Gd). Per-class
jitter is at most 5 % and the gamma is monotonic, so these orderings hold in every subject:
T1 ``enhancing > wm > gm > oedema > lesion > csf > necrosis``; FLAIR ``lesion > oedema > enhancing > gm > wm >
necrosis > csf``."""

MS_PHANTOM_RANGES: dict[str, tuple[float, float]] = {
    "lesion_count": (8, 30),  # drawn uniformly (integers, inclusive)
    "total_volume_ml": (1.5, 15.0),  # drawn log-uniformly, then split between the lesions
    "lesion_volume_ml": (0.02, 2.5),  # each lesion (clipped)
    "aspect_ratio": (1.2, 2.2),  # long / short semi-axis of each ovoid
    "periventricular_fraction": (0.6, 0.8),  # probability that a lesion abuts the ventricles
    "label_volume_ml": (0.5, 16.0),  # resulting label volume, documented, checked by the tests
}
"""Per-subject ranges of the MS-like phantom (volumes in mL)."""

TUMOUR_PHANTOM_RANGES: dict[str, tuple[float, float]] = {
    "core_radius_mm": (10.0, 22.0),  # main enhancing + necrotic mass, before boundary irregularity
    "necrosis_fraction": (0.4, 0.75),  # radius of the necrotic core / radius of the mass
    "oedema_factor": (1.4, 2.0),  # outer oedema radius / radius of the mass
    "irregularity": (0.1, 0.25),  # relative amplitude of the boundary perturbation
    "mass_effect": (0.3, 0.5),  # fraction by which anatomy at the centre is compressed
    "satellite_radius": (0.35, 0.7),  # radius of each further (multifocal) mass / radius of the main one
    "oedema_fade": (0.2, 0.7),  # loss of oedema signal from the core's surface to the label's edge
    "lookalike_count": (2, 10),  # unlabelled FLAIR-bright white-matter hyperintensities (integers, inclusive)
    "lookalike_volume_ml": (0.05, 1.5),  # each look-alike (log-uniform)
    "core_volume_ml": (1.0, 200.0),  # resulting labels 2 + 4, checked by the tests
    "whole_volume_ml": (3.0, 450.0),  # resulting labels 1 + 2 + 4, checked by the tests
}
"""Per-subject ranges of the tumour-like phantom (lengths in mm, volumes in mL). A necrotic core is present
with probability :data:`_NECROSIS_PROBABILITY`; otherwise the whole mass enhances. :data:`_SATELLITES` gives
the probabilities of 0, 1 and 2 further masses at other sites. The oedema's signal fades towards the edge of its
label (the label is the oedema's extent, the image shows ``1 - fade s²`` of its contrast at relative depth ``s``
through the oedema shell), so its outer part is barely visible, as on real FLAIR."""

TUMOUR_ACQUISITION: dict[str, tuple[float, float]] = {
    "noise_std": (0.02, 0.05),  # Rician noise std relative to the white-matter T1 intensity
    "bias_coeff": (-0.2, 0.2),  # MONAI RandBiasField coefficient range (degree 3)
    "gamma": (0.75, 1.3),
    "slice_thickness_mm": (1.0, 7.0),  # thick slices along a random axis, averaged then upsampled linearly
    "ghost": (0.0, 0.12),  # amplitude of a FLAIR flow/pulsation ghost shifted along a phase-encoding axis
}
"""Per-subject acquisition ranges of the tumour-like target cohort: more scanners, more noise, stronger bias
fields and thicker slices than the MS-like source cohort (whose ranges are fixed in the module constants)."""

_NECROSIS_PROBABILITY = 0.85
_SATELLITES = (0.7, 0.2, 0.1)  # probabilities of 0, 1, 2 further masses
_DISEASE_CODES = {"ms": 1, "tumour": 2}
_SPLIT_CODES = {"training": 0, "test": 1}
_MNI_FOV_MM = (197.0, 233.0, 189.0)  # field of view of the 1 mm nilearn template
_ROTATION_DEG = 6.0  # maximal rotation about each axis
_SCALE_RANGE = (0.92, 1.08)  # global isotropic scaling
_ANISOTROPY = 0.03  # extra per-axis scaling
_ELASTIC_MM = (1.5, 4.0)  # standard deviation of the elastic displacement
_ELASTIC_CORRELATION_MM = 24.0
_NOISE_STD = (0.01, 0.03)  # Rician noise std relative to the white-matter T1 intensity
_BIAS_COEFF = (-0.05, 0.05)  # MONAI RandBiasField coefficient range (degree 3)
_GAMMA_RANGE = (0.85, 1.15)
_CONTRAST_JITTER = 0.05
_SCANNER_SCALE = (600.0, 1400.0)  # images are stored as int16 "scanner units"


@dataclass
class PhantomCase:
    """One generated subject.

    Attributes:
        image: ``(C, X, Y, Z)`` float32 array, channel ``c`` is modality ``PHANTOM_MODALITIES[str(c)]``;
            arbitrary scanner units, 0 outside the brain.
        label: ``(X, Y, Z)`` uint8 label map (values in ``PHANTOM_LABELS[disease]``).
        affine: ``(4, 4)`` voxel-to-world (RAS, mm) matrix.
        fractions: tissue and lesion fractions ``(X, Y, Z)`` in [0, 1] that produced the image
            (keys ``csf, gm, wm, lesion`` for MS; ``csf, gm, wm, oedema, necrosis, enhancing`` and ``lesion`` (the
            unlabelled look-alikes) for tumours, with the oedema's visible, faded fraction).
        info: the drawn parameters (disease, index, split, seed, spacing, lesion count, ...).
    """

    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    fractions: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------
# argument checks


def _check_disease(disease: str) -> str:
    if disease not in PHANTOM_DISEASES:
        raise ValueError(f"disease must be one of {PHANTOM_DISEASES}, got {disease!r}; use 'ms' or 'tumour'.")
    return disease


def _check_spacing(spacing: float) -> float:
    return check_float(spacing, "spacing", 0.5, 8.0, hint="millimetres, the default is 2.0 mm")


def _check_count(name: str, value: int, minimum: int) -> int:
    return check_int(int(value) if isinstance(value, np.integer) else value, name, minimum=minimum)


# ----------------------------------------------------------------------------------------------------
# template (cached, loaded lazily: importing this module loads nothing)


@dataclass(frozen=True)
class _Template:
    """1 mm MNI152 maps, float32, channel order ``gm, wm, mask, ventricle_distance_mm``."""

    maps: np.ndarray
    affine: np.ndarray
    tumour_centres_mm: np.ndarray  # (N, 3) world coordinates of admissible tumour centres
    brain_centre_mm: np.ndarray
    brain_extent_mm: np.ndarray


@functools.lru_cache(maxsize=1)
def _mni152_template() -> _Template:
    """Loads the MNI152 2009a template and tissue maps shipped with nilearn (offline), derives CSF and ventricles.

    nilearn ships T1, GM, WM and a brain mask but no CSF map: the residual ``mask - gm - wm`` is split into CSF
    and other tissue (brainstem, deep nuclei; added to WM) by the T1 intensity, and the lateral ventricles are
    the large CSF components inside a central box in MNI space.
    """
    from nilearn import datasets
    from scipy import ndimage

    t1_img = datasets.load_mni152_template(resolution=1)
    affine = np.asarray(t1_img.affine, dtype=np.float64)
    t1 = np.asarray(t1_img.get_fdata(), dtype=np.float32)
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=1).get_fdata(), dtype=np.float32)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=1).get_fdata(), dtype=np.float32)
    mask = np.asarray(datasets.load_mni152_brain_mask(resolution=1).get_fdata(), dtype=np.float32)
    gm, wm = np.clip(gm, 0, 1) * mask, np.clip(wm, 0, 1) * mask
    residual = np.clip(mask - gm - wm, 0.0, 1.0)
    # T1 ~ 0.65 gm + 0.87 wm + residual * (0.28 csf_share + 0.8 (1 - csf_share)), measured on the template
    expected = 0.65 * gm + 0.87 * wm + 0.8 * residual
    csf_share = np.clip((expected - t1) / np.maximum(0.52 * residual, 1e-3), 0.0, 1.0)
    wm = wm + residual * (1.0 - csf_share)
    csf = residual * csf_share

    world = _voxel_to_world(affine, mask.shape)
    box = (np.abs(world[0]) < 32) & (world[1] > -50) & (world[1] < 35) & (world[2] > -5) & (world[2] < 40)
    candidates = (csf > 0.5) & box
    components, num = ndimage.label(candidates)
    sizes = ndimage.sum(candidates, components, index=np.arange(1, num + 1))
    ventricles = np.isin(components, 1 + np.flatnonzero(sizes > 1000))
    ventricle_distance = ndimage.distance_transform_edt(~ventricles).astype(np.float32)  # 1 mm voxels -> mm
    depth = ndimage.distance_transform_edt(mask > 0.5)
    admissible = (wm > 0.6) & (depth >= 30) & (ventricle_distance > 8) & (world[2] > -15)
    sub = np.zeros_like(admissible)
    sub[::3, ::3, ::3] = admissible[::3, ::3, ::3]
    tumour_centres = world[:, sub].T.astype(np.float64)

    brain = np.argwhere(mask > 0.5)
    lo, hi = affine[:3, :3] @ brain.min(0) + affine[:3, 3], affine[:3, :3] @ brain.max(0) + affine[:3, 3]
    maps = np.stack([gm, wm, mask, ventricle_distance]).astype(np.float32)
    del csf  # csf is recomputed per subject as mask - gm - wm
    return _Template(maps, affine, tumour_centres, (lo + hi) / 2.0, hi - lo)


@functools.lru_cache(maxsize=4)
def _prefiltered_maps(spacing: float) -> np.ndarray:
    """Template maps low-pass filtered for sampling at ``spacing`` mm (anti-aliasing), ``(4, X, Y, Z)`` float32."""
    from scipy import ndimage

    maps = _mni152_template().maps
    if spacing <= 1.0:
        return maps
    sigma = 0.5 * math.sqrt(spacing**2 - 1.0)
    return np.stack([ndimage.gaussian_filter(m, sigma) for m in maps]).astype(np.float32)


def _voxel_to_world(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """World coordinates ``(3, *shape)`` of every voxel centre of a grid with ``affine``."""
    axes = [np.arange(n, dtype=np.float32) for n in shape]
    out = np.empty((3, *shape), dtype=np.float32)
    for row in range(3):
        acc = np.full(shape, affine[row, 3], dtype=np.float32)
        for col in range(3):
            if affine[row, col] != 0:
                view = [1, 1, 1]
                view[col] = shape[col]
                acc = acc + np.float32(affine[row, col]) * axes[col].reshape(view)
        out[row] = acc
    return out


def phantom_grid(spacing: float = 2.0) -> tuple[tuple[int, int, int], np.ndarray]:
    """The output grid of the phantoms at ``spacing``: every axis is a multiple of 16 voxels.

    Each axis covers the 197 x 233 x 189 mm field of view of the MNI template rounded to the nearest multiple
    of 16 voxels (and never smaller than the brain), centred on the brain: 2 mm gives ``(96, 112, 96)``,
    4 mm ``(48, 64, 48)``, 6 mm ``(32, 32, 32)``, 1 mm ``(192, 240, 192)``.

    Args:
        spacing: isotropic voxel size in mm, in [0.5, 8].

    Returns:
        ``(shape, affine)``: the ``(X, Y, Z)`` shape and the ``(4, 4)`` RAS voxel-to-world affine (mm).
    """
    spacing = _check_spacing(spacing)
    template = _mni152_template()
    shape = []
    for fov, extent in zip(_MNI_FOV_MM, template.brain_extent_mm):
        n = max(16 * round(fov / spacing / 16.0), 16 * math.ceil((extent + 2 * spacing) / spacing / 16.0))
        shape.append(int(n))
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = template.brain_centre_mm - spacing * (np.asarray(shape) - 1) / 2.0
    return (shape[0], shape[1], shape[2]), affine


# ----------------------------------------------------------------------------------------------------
# random fields and deformations


def _smooth_field(
    rng: np.random.Generator, shape: tuple[int, ...], spacing: float, correlation_mm: float
) -> np.ndarray:
    """A smooth zero-mean random field with unit standard deviation and correlation length ``correlation_mm``.

    Gaussian radial basis functions on a coarse control grid, evaluated separably (one small matrix per axis),
    which is far cheaper than upsampling with a spline.
    """
    bases = []
    for n in shape:
        length = n * spacing
        num_ctrl = int(math.ceil(length / correlation_mm)) + 3  # one spare control point beyond each end
        ctrl = (np.arange(num_ctrl) - (num_ctrl - 1) / 2.0) * correlation_mm + length / 2.0  # centred on the axis
        pos = (np.arange(n) + 0.5) * spacing
        bases.append(np.exp(-0.5 * ((pos[:, None] - ctrl[None, :]) / (0.6 * correlation_mm)) ** 2).astype(np.float32))
    coarse = rng.standard_normal(tuple(b.shape[1] for b in bases)).astype(np.float32)
    out = np.tensordot(bases[0], coarse, axes=(1, 0))
    out = np.tensordot(out, bases[1], axes=(1, 1))
    out = np.tensordot(out, bases[2], axes=(1, 1))
    out -= out.mean()
    return out / max(float(out.std()), 1e-6)


def _rotation(angles_rad: np.ndarray) -> np.ndarray:
    cx, cy, cz = np.cos(angles_rad)
    sx, sy, sz = np.sin(angles_rad)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _subject_coordinates(
    rng: np.random.Generator, shape: tuple[int, int, int], affine: np.ndarray, centre: np.ndarray
) -> np.ndarray:
    """Template-space world coordinates ``(3, X, Y, Z)`` (mm) seen by every output voxel: affine + elastic."""
    spacing = float(affine[0, 0])
    angles = np.deg2rad(rng.uniform(-_ROTATION_DEG, _ROTATION_DEG, 3))
    scale = rng.uniform(*_SCALE_RANGE) * rng.uniform(1 - _ANISOTROPY, 1 + _ANISOTROPY, 3)
    elastic_mm = rng.uniform(*_ELASTIC_MM)
    matrix = (_rotation(angles) / scale[None, :]).astype(np.float32)  # output -> template (a larger brain: scale > 1)
    world = _voxel_to_world(affine, shape) - centre.astype(np.float32)[:, None, None, None]
    coords = np.tensordot(matrix, world, axes=(1, 0)) + centre.astype(np.float32)[:, None, None, None]
    for axis in range(3):
        coords[axis] += elastic_mm * _smooth_field(rng, shape, spacing, _ELASTIC_CORRELATION_MM)
    return coords


def _mass_effect(coords: np.ndarray, centre: np.ndarray, radius: float, strength: float) -> np.ndarray:
    """Radial compression of the template around ``centre``: anatomy is pushed away from the mass.

    A point at distance ``r`` samples the template at ``r (1 - strength exp(-(r / (1.3 radius))^2))``, which is
    monotonic in ``r`` for ``strength < 1`` (no folding).
    """
    offset = coords - centre.astype(np.float32)[:, None, None, None]
    r2 = np.einsum("i...,i...->...", offset, offset)
    factor = 1.0 - strength * np.exp(-r2 / np.float32((1.3 * radius) ** 2))
    return centre.astype(np.float32)[:, None, None, None] + offset * factor


def _sample_maps(maps: np.ndarray, template_affine: np.ndarray, coords: np.ndarray, channels: int) -> np.ndarray:
    """Samples the first ``channels`` template maps at world ``coords`` (trilinear, zero outside)."""
    from scipy import ndimage

    inverse = np.linalg.inv(template_affine).astype(np.float32)
    index = np.tensordot(inverse[:3, :3], coords, axes=(1, 0)) + inverse[:3, 3][:, None, None, None]
    out = np.empty((channels, *coords.shape[1:]), dtype=np.float32)
    for c in range(channels):
        ndimage.map_coordinates(maps[c], index, output=out[c], order=1, mode="constant", cval=0.0, prefilter=False)
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    return expit(x).astype(np.float32)


# ----------------------------------------------------------------------------------------------------
# diseases


def _ms_lesions(
    rng: np.random.Generator, tissue: dict[str, np.ndarray], ventricle_distance: np.ndarray, spacing: float
) -> tuple[np.ndarray, dict[str, Any]]:
    """Union of soft ovoid lesions in white matter, mostly periventricular, drawn on the output grid."""
    low, high = MS_PHANTOM_RANGES["lesion_count"]
    count = int(rng.integers(int(low), int(high) + 1))
    v_low, v_high = MS_PHANTOM_RANGES["total_volume_ml"]
    total_ml = float(np.exp(rng.uniform(np.log(v_low), np.log(v_high))))
    pv_fraction = float(rng.uniform(*MS_PHANTOM_RANGES["periventricular_fraction"]))
    l_low, l_high = MS_PHANTOM_RANGES["lesion_volume_ml"]
    volumes_ml = np.clip(total_ml * rng.dirichlet(np.full(count, 2.0)), l_low, l_high)
    aspects = rng.uniform(*MS_PHANTOM_RANGES["aspect_ratio"], count)
    periventricular = rng.random(count) < pv_fraction
    picks, directions = rng.random(count), rng.standard_normal((count, 3))

    wm = tissue["wm"]
    candidate_sets = {
        True: np.flatnonzero(((wm > 0.5) & (ventricle_distance > 1.0) & (ventricle_distance < 8.0)).ravel()),
        False: np.flatnonzero(((wm > 0.6) & (ventricle_distance >= 10.0)).ravel()),
    }
    shape = wm.shape
    lesion = np.zeros(shape, dtype=np.float32)
    edge_mm = max(0.5, 0.35 * spacing)
    grad = np.gradient(ventricle_distance)
    for k in range(count):
        candidates = candidate_sets[bool(periventricular[k])]
        if candidates.size == 0:
            candidates = candidate_sets[not periventricular[k]]
        centre = np.array(np.unravel_index(candidates[int(picks[k] * candidates.size)], shape))
        if periventricular[k]:  # Dawson's finger: long axis perpendicular to the ventricle wall
            axis = np.array([g[tuple(centre)] for g in grad], dtype=np.float64)
            if np.linalg.norm(axis) < 1e-6:
                axis = directions[k]
        else:
            axis = directions[k]
        axis = axis / max(np.linalg.norm(axis), 1e-9)
        short = (3.0 * volumes_ml[k] * 1000.0 / (4.0 * math.pi * aspects[k])) ** (1.0 / 3.0)  # mm
        long = aspects[k] * short
        _add_ovoid(lesion, centre, axis, long, short, spacing, edge_mm)
    affinity = np.clip(wm + 0.5 * tissue["gm"], 0.0, 1.0)  # white matter, touching cortex at most
    lesion *= affinity
    info = {
        "lesion_count": count,
        "total_volume_ml_drawn": round(total_ml, 3),
        "periventricular_lesions": int(periventricular.sum()),
    }
    return lesion, info


def _add_ovoid(
    volume: np.ndarray, centre: np.ndarray, axis: np.ndarray, long: float, short: float, spacing: float, edge_mm: float
) -> None:
    """In place ``volume = max(volume, soft ovoid)``; the ovoid is evaluated on its bounding box only."""
    reach = int(math.ceil((long + 3 * edge_mm) / spacing))
    lo = np.maximum(centre - reach, 0)
    hi = np.minimum(centre + reach + 1, volume.shape)
    grids = np.meshgrid(*[np.arange(a, b, dtype=np.float32) for a, b in zip(lo, hi)], indexing="ij")
    offset = np.stack([(g - c) * spacing for g, c in zip(grids, centre)])
    along = np.tensordot(axis.astype(np.float32), offset, axes=(0, 0))
    across2 = np.maximum(np.einsum("i...,i...->...", offset, offset) - along**2, 0.0)
    radius = np.sqrt((along / long) ** 2 + across2 / short**2)  # 1 on the surface
    soft = _sigmoid((1.0 - radius) * short / edge_mm)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    np.maximum(volume[box], soft, out=volume[box])


def _mass_compartments(
    rng: np.random.Generator,
    coords: np.ndarray,
    tissue: dict[str, np.ndarray],
    mask: np.ndarray,
    mass: dict[str, Any],
    spacing: float,
) -> dict[str, np.ndarray]:
    """Soft enhancing / necrotic / oedema fractions of one irregular mass centred at ``mass['centre']``, and the
    oedema's visible fraction ``oedema (1 - fade s²)`` (``s`` the relative depth through the oedema shell)."""
    shape = mask.shape
    offset = coords - mass["centre"].astype(np.float32)[:, None, None, None]
    r = np.sqrt(np.einsum("i...,i...->...", offset, offset))
    edge_mm = max(0.5, 0.35 * spacing)
    bumps = mass["irregularity"] * _smooth_field(rng, shape, spacing, 0.6 * mass["core_radius"])
    core_radius = mass["core_radius"] * (1.0 + np.clip(bumps, -2.5 * mass["irregularity"], None))
    core = _sigmoid((core_radius - r) / edge_mm) * mask
    if mass["necrotic"]:
        necrosis = _sigmoid((mass["necrosis_fraction"] * core_radius - r) / edge_mm) * mask
    else:
        necrosis = np.zeros(shape, dtype=np.float32)
    oedema_bumps = 1.0 + 1.5 * mass["irregularity"] * _smooth_field(rng, shape, spacing, 12.0)
    oedema_radius = mass["oedema_factor"] * mass["core_radius"] * oedema_bumps
    region = _sigmoid((oedema_radius - r) / (2.0 * edge_mm)) * mask
    affinity = np.clip(1.3 * tissue["wm"] + 0.3 * tissue["gm"], 0.0, 1.0)  # oedema spreads along white matter
    oedema = np.clip(region - core, 0.0, 1.0) * affinity
    depth = np.clip((r - core_radius) / np.maximum(oedema_radius - core_radius, 1e-3), 0.0, 1.0)
    return {"oedema": oedema, "necrosis": necrosis, "enhancing": np.clip(core - necrosis, 0.0, 1.0),
            "visible_oedema": oedema * (1.0 - np.float32(mass["oedema_fade"]) * depth**2)}


def _tumour_compartments(
    rng: np.random.Generator,
    coords: np.ndarray,
    tissue: dict[str, np.ndarray],
    mask: np.ndarray,
    tumour: dict[str, Any],
    spacing: float,
) -> dict[str, np.ndarray]:
    """Union (voxel-wise maximum) of the main mass and its satellites; see :func:`_mass_compartments`."""
    out: dict[str, np.ndarray] = {}
    for mass in [tumour, *tumour["satellites"]]:
        parts = _mass_compartments(rng, coords, tissue, mask, mass, spacing)
        for key, value in parts.items():
            out[key] = np.maximum(out[key], value) if key in out else value
    # a voxel's compartments never exceed one; oedema yields to the solid parts of another mass
    solid = np.clip(out["necrosis"] + out["enhancing"], 0.0, 1.0)
    out["oedema"] = np.minimum(out["oedema"], 1.0 - solid)
    out["visible_oedema"] = np.minimum(out["visible_oedema"], out["oedema"])
    return out


def _draw_mass(rng: np.random.Generator, template: _Template, core_radius: float) -> dict[str, Any]:
    ranges = TUMOUR_PHANTOM_RANGES
    centre = template.tumour_centres_mm[int(rng.integers(len(template.tumour_centres_mm)))]
    return {
        "centre": centre + rng.uniform(-1.0, 1.0, 3),
        "core_radius": core_radius,
        "necrotic": bool(rng.random() < _NECROSIS_PROBABILITY),
        "necrosis_fraction": float(rng.uniform(*ranges["necrosis_fraction"])),
        "oedema_factor": float(rng.uniform(*ranges["oedema_factor"])),
        "irregularity": float(rng.uniform(*ranges["irregularity"])),
    }


def _draw_tumour(rng: np.random.Generator, template: _Template) -> dict[str, Any]:
    """The main mass (with its mass effect and the subject's oedema fade) and 0-2 satellites at other sites."""
    ranges = TUMOUR_PHANTOM_RANGES
    main = _draw_mass(rng, template, float(rng.uniform(*ranges["core_radius_mm"])))
    main["mass_effect"] = float(rng.uniform(*ranges["mass_effect"]))
    main["oedema_fade"] = float(rng.uniform(*ranges["oedema_fade"]))
    count = int(rng.choice(len(_SATELLITES), p=_SATELLITES))
    main["satellites"] = [
        dict(_draw_mass(rng, template, main["core_radius"] * float(rng.uniform(*ranges["satellite_radius"]))),
             oedema_fade=main["oedema_fade"])
        for _ in range(count)
    ]
    return main


def _lookalikes(rng: np.random.Generator, tissue: dict[str, np.ndarray], spacing: float) -> tuple[np.ndarray, int]:
    """Unlabelled FLAIR-bright white-matter hyperintensities (soft ovoids in white matter), and their count."""
    ranges = TUMOUR_PHANTOM_RANGES
    low, high = ranges["lookalike_count"]
    count = int(rng.integers(int(low), int(high) + 1))
    v_low, v_high = ranges["lookalike_volume_ml"]
    volumes = np.exp(rng.uniform(np.log(v_low), np.log(v_high), count))
    aspects = rng.uniform(*MS_PHANTOM_RANGES["aspect_ratio"], count)
    picks, directions = rng.random(count), rng.standard_normal((count, 3))
    wm = tissue["wm"]
    candidates = np.flatnonzero((wm > 0.6).ravel())
    out = np.zeros(wm.shape, dtype=np.float32)
    if candidates.size == 0:
        return out, 0
    edge_mm = max(0.5, 0.35 * spacing)
    for k in range(count):
        centre = np.array(np.unravel_index(candidates[int(picks[k] * candidates.size)], wm.shape))
        axis = directions[k] / max(np.linalg.norm(directions[k]), 1e-9)
        short = (3.0 * volumes[k] * 1000.0 / (4.0 * math.pi * aspects[k])) ** (1.0 / 3.0)
        _add_ovoid(out, centre, axis, aspects[k] * short, short, spacing, edge_mm)
    return out * np.clip(wm + 0.5 * tissue["gm"], 0.0, 1.0), count


# ----------------------------------------------------------------------------------------------------
# images


def _synthesise(
    rng: np.random.Generator,
    fractions: dict[str, np.ndarray],
    brain: np.ndarray,
    spacing: float,
    acquisition: dict[str, tuple[float, float]] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Channel-first images ``(2, X, Y, Z)`` from class fractions: jitter, texture, gamma, bias, Rician noise, and
    with ``acquisition`` (:data:`TUMOUR_ACQUISITION`) its wider ranges, thick slices and a FLAIR ghost.

    Returns:
        the images and the drawn acquisition parameters (empty without ``acquisition``).
    """
    from monai.transforms import RandBiasField, RandRicianNoise

    acq = acquisition or {}
    names = list(PHANTOM_MODALITIES.values())
    shape = brain.shape
    texture = 0.03 * _smooth_field(rng, shape, spacing, max(2.0, 1.5 * spacing))
    images = np.zeros((len(names), *shape), dtype=np.float32)
    for c, name in enumerate(names):
        means = PHANTOM_INTENSITIES[name]
        for tissue, frac in fractions.items():
            jitter = rng.uniform(1 - _CONTRAST_JITTER, 1 + _CONTRAST_JITTER)
            images[c] += np.float32(means[tissue] * jitter) * frac
        gamma = rng.uniform(*acq.get("gamma", _GAMMA_RANGE))
        images[c] = np.clip(images[c] * (1.0 + texture), 0.0, None) ** np.float32(gamma)
    bias = RandBiasField(degree=3, coeff_range=acq.get("bias_coeff", _BIAS_COEFF), prob=1.0)
    bias.set_random_state(seed=int(rng.integers(2**31 - 1)))
    images = np.asarray(bias(images), dtype=np.float32)
    stds = [float(rng.uniform(*acq.get("noise_std", _NOISE_STD))) * PHANTOM_INTENSITIES["T1"]["wm"] for _ in names]
    noise = RandRicianNoise(prob=1.0, mean=0.0, std=stds, channel_wise=True, relative=False, sample_std=False)
    noise.set_random_state(seed=int(rng.integers(2**31 - 1)))
    images = np.asarray(noise(images), dtype=np.float32)
    scales = rng.uniform(*_SCANNER_SCALE, len(names)).astype(np.float32)
    drawn: dict[str, Any] = {}
    if acquisition is not None:
        axis = int(rng.integers(3))
        factor = max(1, int(round(float(rng.uniform(*acq["slice_thickness_mm"])) / spacing)))
        ghost, phase_axis = float(rng.uniform(*acq["ghost"])), int(rng.integers(2))
        images = _thick_slices(images, axis, factor)
        flair = names.index("FLAIR")
        images[flair] += np.float32(ghost) * np.roll(images[flair], shape[phase_axis] // 2, axis=phase_axis)
        drawn = {"slice_axis": axis, "slice_thickness_mm": factor * spacing, "ghost": round(ghost, 3),
                 "noise_std": [round(v, 4) for v in stds]}
    return np.rint(images * scales[:, None, None, None] * brain[None]).astype(np.float32), drawn


def _thick_slices(images: np.ndarray, axis: int, factor: int) -> np.ndarray:
    """``(C, X, Y, Z)`` images acquired in slices ``factor`` voxels thick along spatial ``axis`` (block means),
    linearly interpolated back to the grid, as when thick-slice scans are resampled to isotropic voxels."""
    if factor == 1:
        return images
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images))[None]
    kernel = [1, 1, 1]
    kernel[axis] = factor
    low = F.avg_pool3d(x, kernel_size=kernel, stride=kernel, ceil_mode=True)
    return F.interpolate(low, size=images.shape[1:], mode="trilinear", align_corners=False)[0].numpy()


def _subject_rng(seed: int, disease: str, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, _DISEASE_CODES[disease], _SPLIT_CODES[split], index]))


def generate_phantom_case(
    disease: str = "tumour", index: int = 0, seed: int = 0, spacing: float = 2.0, split: str = "training"
) -> PhantomCase:
    """Generates one phantom subject in memory.

    The subject depends only on ``(seed, disease, split, index)`` and the grid given by ``spacing``; all
    scalar parameters (counts, sizes, contrasts) are drawn before any grid-dependent step, so the same subject
    at another spacing has the same parameters.

    Args:
        disease: ``"ms"`` or ``"tumour"``.
        index: subject number, >= 0.
        seed: dataset seed, >= 0.
        spacing: isotropic voxel size in mm, in [0.5, 8]; the grid is :func:`phantom_grid` ``(spacing)``.
        split: ``"training"`` or ``"test"``: the two splits are independent random streams.

    Returns:
        a :class:`PhantomCase` with ``image`` ``(2, X, Y, Z)``, ``label`` ``(X, Y, Z)`` and the affine.

    Raises:
        ValueError: for an unknown disease or split, a negative index or seed, a spacing outside [0.5, 8] mm.
    """
    disease = _check_disease(disease)
    spacing = _check_spacing(spacing)
    index, seed = _check_count("index", index, 0), _check_count("seed", seed, 0)
    if split not in _SPLIT_CODES:
        raise ValueError(f"split must be one of {tuple(_SPLIT_CODES)}, got {split!r}.")
    rng = _subject_rng(seed, disease, split, index)
    template = _mni152_template()
    shape, affine = phantom_grid(spacing)
    tumour = _draw_tumour(rng, template) if disease == "tumour" else None

    coords = _subject_coordinates(rng, shape, affine, template.brain_centre_mm)
    sample_at = coords
    if tumour is not None:
        sample_at = _mass_effect(coords, tumour["centre"], tumour["core_radius"], tumour["mass_effect"])
    channels = 4 if disease == "ms" else 3
    gm, wm, mask, *rest = _sample_maps(_prefiltered_maps(spacing), template.affine, sample_at, channels)
    del sample_at
    mask = np.clip(mask, 0.0, 1.0)
    gm, wm = np.minimum(gm, mask), np.minimum(wm, mask)
    csf = np.clip(mask - gm - wm, 0.0, 1.0)
    tissue = {"csf": csf, "gm": gm, "wm": wm}

    info: dict[str, Any] = {"disease": disease, "index": index, "split": split, "seed": seed, "spacing": spacing}
    if tumour is None:
        lesion, extra = _ms_lesions(rng, tissue, rest[0], spacing)
        lesions = {"lesion": lesion}
        visible = lesions
    else:
        lesions = _tumour_compartments(rng, coords, tissue, mask, tumour, spacing)
        visible = {"oedema": lesions.pop("visible_oedema"), "necrosis": lesions["necrosis"],
                   "enhancing": lesions["enhancing"]}
        extra = {k: (v.round(2).tolist() if isinstance(v, np.ndarray) else v) for k, v in tumour.items()
                 if k != "satellites"}
        extra["satellite_radii"] = [round(m["core_radius"], 2) for m in tumour["satellites"]]
    info.update(extra)
    del coords
    lesion_total = np.clip(sum(lesions.values()), 0.0, 1.0)
    # the image shows the visible part of each lesion; the rest of the voxel looks like its normal tissue
    visible_total = np.clip(sum(visible.values()), 0.0, 1.0)
    fractions = {k: v * (1.0 - visible_total) for k, v in tissue.items()}
    fractions.update(visible)
    if tumour is not None:  # unlabelled FLAIR-bright look-alikes replace part of the normal white matter
        hyper, info["lookalike_count"] = _lookalikes(rng, tissue, spacing)
        fractions["lesion"] = hyper * fractions["wm"]
        fractions["wm"] = fractions["wm"] - fractions["lesion"]

    label = _labels(disease, lesions, lesion_total)
    brain = (mask > 0.5).astype(np.float32)
    label *= brain.astype(np.uint8)
    image, acquisition = _synthesise(rng, fractions, brain, spacing, TUMOUR_ACQUISITION if tumour else None)
    info.update(acquisition)
    return PhantomCase(image=image, label=label, affine=affine, fractions=fractions, info=info)


def _labels(disease: str, lesions: dict[str, np.ndarray], lesion_total: np.ndarray) -> np.ndarray:
    """Label of the class with the largest fraction (lesion classes against all normal tissue together)."""
    if disease == "ms":
        return (lesions["lesion"] > 0.5).astype(np.uint8)
    stack = np.stack([1.0 - lesion_total, lesions["oedema"], lesions["necrosis"], lesions["enhancing"]])
    values = np.array([0, 1, 2, 4], dtype=np.uint8)
    return values[np.argmax(stack, axis=0)]


# ----------------------------------------------------------------------------------------------------
# writing


def _save_nifti_atomic(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Writes ``array`` as NIfTI to a temporary name in the same folder, then renames it to ``path``."""
    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    with atomic_path(path) as tmp:  # same file name: nibabel picks the format from the extension
        nib.save(img, tmp)


def _write_json_atomic(content: dict[str, Any], path: Path) -> None:
    text = json.dumps(content, indent=2) + "\n"
    atomic_write(path, "w", lambda f: f.write(text))


def _write_case(task: tuple[str, str, int, int, float, str]) -> dict[str, Any]:
    """Generates and writes one subject, returns its ``dataset.json`` entry."""
    output_dir, disease, index, seed, spacing, split = task
    case = generate_phantom_case(disease=disease, index=index, seed=seed, spacing=spacing, split=split)
    name = f"{disease}_{index + 1:03d}.nii.gz" if split == "training" else f"{disease}_ts_{index + 1:03d}.nii.gz"
    image_dir, label_dir = ("imagesTr", "labelsTr") if split == "training" else ("imagesTs", "labelsTs")
    root = Path(output_dir)
    # MSD Task01 layout: one 4D NIfTI per subject, modalities on the last axis
    _save_nifti_atomic(np.moveaxis(case.image, 0, -1).astype(np.int16), case.affine, root / image_dir / name)
    _save_nifti_atomic(case.label, case.affine, root / label_dir / name)
    return {"image": f"./{image_dir}/{name}", "label": f"./{label_dir}/{name}"}


def make_phantom_dataset(
    output_dir: str | Path,
    disease: str = "tumour",
    num_cases: int = 40,
    num_test: int = 10,
    spacing: float = 2.0,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Writes a Decathlon-style phantom dataset and returns the path of its ``dataset.json``.

    Layout (MSD Task01 style)::

        output_dir/
          dataset.json            written last; "test" entries are {"image", "label"} dicts
          imagesTr/<disease>_001.nii.gz   4D int16, (X, Y, Z, 2): T1-like, FLAIR-like
          labelsTr/<disease>_001.nii.gz   3D uint8
          imagesTs/<disease>_ts_001.nii.gz
          labelsTs/<disease>_ts_001.nii.gz   labels of the held-out test cases, for evaluation

    Every file is written under a temporary name and renamed; an existing ``dataset.json`` is removed first and
    the new one is written after all images, so an interrupted run never leaves a dataset that looks complete.

    Args:
        output_dir: folder to write into (created if needed).
        disease: ``"ms"`` (source task, labels 0/1) or ``"tumour"`` (target task, labels 0/1/2/4).
        num_cases: number of training cases, >= 1.
        num_test: number of held-out test cases (with labels), >= 0.
        spacing: isotropic voxel size in mm; 2 mm gives volumes of 96 x 112 x 96 voxels.
        seed: dataset seed; case ``i`` depends only on ``(seed, disease, split, i)``.
        progress: show a tqdm progress bar.

    Returns:
        the path of the written ``dataset.json``.

    Raises:
        ValueError: for an unknown disease, non-positive counts or a spacing outside [0.5, 8] mm.
        TypeError: for arguments of the wrong type.
    """
    disease = _check_disease(disease)
    spacing = _check_spacing(spacing)
    num_cases = _check_count("num_cases", num_cases, 1)
    num_test = _check_count("num_test", num_test, 0)
    seed = _check_count("seed", seed, 0)

    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    json_path = root / "dataset.json"
    json_path.unlink(missing_ok=True)
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs") if num_test else ("imagesTr", "labelsTr"):
        (root / sub).mkdir(exist_ok=True)
    shape, _ = phantom_grid(spacing)
    tasks = [(str(root), disease, i, seed, spacing, "training") for i in range(num_cases)]
    tasks += [(str(root), disease, i, seed, spacing, "test") for i in range(num_test)]
    entries = _run_tasks(tasks, progress, desc=f"{disease} phantoms")

    content = {
        "name": f"monai_dwp {disease} phantom",
        "description": _DESCRIPTIONS[disease],
        "reference": "MNI ICBM152 2009a template (Fonov et al. 2009, 2011), as shipped by nilearn",
        "licence": "MNI ICBM152 template: free use with copyright notice, see docs/data.md",
        "release": "monai_dwp phantom generator 0.1",
        "tensorImageSize": "4D",
        "modality": dict(PHANTOM_MODALITIES),
        "labels": dict(PHANTOM_LABELS[disease]),
        "numTraining": num_cases,
        "numTest": num_test,
        "training": entries[:num_cases],
        "test": entries[num_cases:],
        "phantom": {"disease": disease, "seed": seed, "spacing_mm": spacing, "shape": list(shape)},
    }
    _write_json_atomic(content, json_path)
    return json_path


_DESCRIPTIONS = {
    "ms": "MS-like brain MRI phantoms: many small ovoid, mostly periventricular white-matter lesions (label 1).",
    "tumour": "Tumour-like brain MRI phantoms: one irregular mass with oedema (1), necrotic core (2) and "
    "enhancing rim (4), with mass effect.",
}


def _run_tasks(tasks: list[tuple], progress: bool, desc: str) -> list[dict[str, Any]]:
    """Writes the cases one after the other (about 0.7 s each at 2 mm on one core) with a tqdm progress bar."""
    from tqdm.auto import tqdm

    return [_write_case(task) for task in tqdm(tasks, desc=desc, unit="case", disable=not progress)]
