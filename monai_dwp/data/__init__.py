"""Data for monai_dwp: brain-MRI phantoms, Decathlon-style loading and pictures of the data.

Importing this package has no side effects: the MNI152 template is loaded (and cached) on first use only.
"""

from __future__ import annotations

from .decathlon import (
    decathlon_split,
    eval_transforms,
    label_rule_transforms,
    read_dataset_json,
    modality_indices,
    resolve_modality,
    train_transforms,
    validate_decathlon,
)
from .brats import BRATS_LABELS, BRATS_MODALITIES, find_brats_cases, is_brats_folder, write_brats_datalist
from .image_writer import AtomicNibabelWriter
from .phantoms import (
    MS_PHANTOM_RANGES,
    PHANTOM_DISEASES,
    PHANTOM_INTENSITIES,
    PHANTOM_LABELS,
    PHANTOM_MODALITIES,
    TUMOUR_ACQUISITION,
    TUMOUR_PHANTOM_RANGES,
    PhantomCase,
    generate_phantom_case,
    make_phantom_dataset,
    phantom_grid,
)
from .visualize import save_data_montage

from .datalist import image_datalist
from .statistics import mean_voxels
from .kernels import KernelDataset, collect_kernels, filter_kernels, group_layers, load_state_dict

__all__ = [
    "AtomicNibabelWriter",
    # phantoms
    "MS_PHANTOM_RANGES",
    "PHANTOM_DISEASES",
    "PHANTOM_INTENSITIES",
    "PHANTOM_LABELS",
    "PHANTOM_MODALITIES",
    "TUMOUR_ACQUISITION",
    "TUMOUR_PHANTOM_RANGES",
    "PhantomCase",
    "generate_phantom_case",
    "make_phantom_dataset",
    "phantom_grid",
    # decathlon
    "decathlon_split",
    "eval_transforms",
    "label_rule_transforms",
    "read_dataset_json",
    "modality_indices",
    "resolve_modality",
    "train_transforms",
    "validate_decathlon",
    # visualize
    "save_data_montage",
    # kernels
    "KernelDataset",
    "collect_kernels",
    "filter_kernels",
    "group_layers",
    "load_state_dict",
    # datalist
    "image_datalist",
    # statistics
    "mean_voxels",
    # brats
    "BRATS_LABELS",
    "BRATS_MODALITIES",
    "find_brats_cases",
    "is_brats_folder",
    "write_brats_datalist",
]
