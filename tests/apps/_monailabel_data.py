"""Shared fixtures of the MONAI Label tests: a tiny trained target bundle, served, and datastores of phantoms."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

from monai_dwp.apps.monailabel.packaging import make_app, package_bundle
from monai_dwp.data.phantoms import make_phantom_dataset

from ..bundles._utils import BUNDLES, TINY, check, run_bundle

BUNDLE = "dwp_finetune"
METHOD = "gaussian_prior"  # Bayesian, and needs no hand-off from the source/prior stages: the cheapest to train
OOD_ID = "zz_diffuse"  # the out-of-distribution study (see make_data)
# training: 20 short epochs with a posterior wider than the default at the start (scales 1.5 × the weights' RMS
# instead of 0.1), so that the posterior has learned something and its draws disagree on unfamiliar input
TRAIN = dict(TINY, epochs=20, num_val_cases=1, num_train_cases=2, init_scale_ratio=1.5, method=METHOD)
# served values: what the model was trained with, and few Monte Carlo draws (seconds per study on 1 CPU thread)
SERVED_OVERRIDES = {"method": METHOD, "spacing": [6.0, 6.0, 6.0], "patch_size": [16, 16, 16], "mc_samples": 4}
SCORING_MC_SAMPLES = 8  # draws of the one mutual-information call per study


def make_data(root: Path) -> dict[str, Path]:
    """Phantoms (3 labeled tumour cases, 2 unlabeled ones) and the out-of-distribution study.

    The out-of-distribution study is an unlabeled tumour case with a *diffuse* disease on top: every FLAIR voxel of
    the brain outside the tumour raised by 3/4 of the gap between the brain's and the tumour's median intensity (a
    leukoencephalopathy-like look that no training case has). Measured with this tiny model: heavy Gaussian noise
    and the MS phantom are no use here, the network calls noise confidently background (the lowest mutual
    information of all) and the 6 mm MS lesions look like nothing; see docs/monailabel.md.
    """
    data = root / "tumour"
    make_phantom_dataset(data, disease="tumour", num_cases=3, num_test=2, spacing=6.0, progress=False)
    src = sorted((data / "imagesTs").glob("*.nii.gz"))[0]
    img = nib.load(str(src))
    array = np.asarray(img.dataobj, dtype=np.float32)
    tumour = np.asarray(nib.load(str(data / "labelsTs" / src.name)).dataobj) > 0
    flair = array[..., 1]
    brain = (flair > 0.05 * flair.max()) & ~tumour
    shift = 0.75 * (np.median(flair[tumour]) - np.median(flair[brain]))
    flair[brain] += shift
    ood = root / f"{OOD_ID}.nii.gz"
    nib.save(nib.Nifti1Image(array, img.affine), str(ood))
    return {"dataset": data, "ood": ood}


def train_model(root: Path, dataset: Path) -> Path:
    """Train the tiny target bundle with ``python -m monai.bundle run`` (as users do); returns its model.pt."""
    check(run_bundle(BUNDLE, "train", dataset_dir=dataset, ckpt_dir=root / "runs" / f"{METHOD}_n2_seed0", **TRAIN))
    model = root / "runs" / f"{METHOD}_n2_seed0" / "model.pt"
    assert model.is_file(), model
    return model


def serve(dest: Path, model: Path | None, dataset: Path) -> Path:
    """A served copy of the bundle at ``dest``."""
    return package_bundle(BUNDLES / BUNDLE, dest, model=model, overrides=SERVED_OVERRIDES, dataset_dir=dataset)


def make_studies(dest: Path, files: dict[str, Path]) -> Path:
    """A MONAI Label local datastore: the 3 training cases labeled (labels/final), the 2 test cases and the
    out-of-distribution one unlabeled."""
    dataset, ood = files["dataset"], files["ood"]
    (dest / "labels" / "final").mkdir(parents=True)
    for image in sorted((dataset / "imagesTr").glob("*.nii.gz")):
        shutil.copy2(image, dest / image.name)
        shutil.copy2(dataset / "labelsTr" / image.name, dest / "labels" / "final" / image.name)
    for image in sorted((dataset / "imagesTs").glob("*.nii.gz")):
        shutil.copy2(image, dest / image.name)
    shutil.copy2(ood, dest / ood.name)
    return dest


def unlabeled_ids(dataset: Path) -> list[str]:
    """Ids of the unlabeled studies, the out-of-distribution one last."""
    return [p.name[: -len(".nii.gz")] for p in sorted((dataset / "imagesTs").glob("*.nii.gz"))] + [OOD_ID]


def our_app(dest: Path, model_dir: Path) -> Path:
    """Our app at ``dest`` with the served bundle ``model_dir`` in it."""
    make_app(dest)
    shutil.copytree(model_dir, dest / "model" / BUNDLE)
    return dest
