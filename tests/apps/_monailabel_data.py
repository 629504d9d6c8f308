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
OOD_ID = "zz_noisy"  # the out-of-distribution study: a tumour case drowned in heavy noise
TRAINED = {"spacing": TINY["spacing"], "patch_size": TINY["patch_size"], "method": METHOD}
# served values: what the model was trained with, and few Monte Carlo draws (seconds per study on 1 CPU thread)
SERVED_OVERRIDES = {"method": METHOD, "spacing": [6.0, 6.0, 6.0], "patch_size": [16, 16, 16], "mc_samples": 3}


def make_data(root: Path) -> dict[str, Path]:
    """Phantoms (3 labeled tumour cases, 2 unlabeled ones) and a heavily noised copy of an unlabeled one."""
    data = root / "tumour"
    make_phantom_dataset(data, disease="tumour", num_cases=3, num_test=2, spacing=6.0, progress=False)
    src = sorted((data / "imagesTs").glob("*.nii.gz"))[0]
    img = nib.load(str(src))
    array = np.asarray(img.dataobj, dtype=np.float32)
    rng = np.random.default_rng(0)
    noisy = array + rng.normal(0.0, float(array.max()), array.shape).astype(np.float32)
    ood = root / f"{OOD_ID}.nii.gz"
    nib.save(nib.Nifti1Image(noisy, img.affine), str(ood))
    return {"dataset": data, "ood": ood}


def train_model(root: Path, dataset: Path, epochs: int = 4) -> Path:
    """Train the tiny target bundle with ``python -m monai.bundle run`` (as users do); returns its model.pt."""
    check(run_bundle(BUNDLE, "train", dataset_dir=dataset, output_dir=root / "runs", num_train_cases=2,
                     **dict(TINY, epochs=epochs, num_val_cases=1), method=METHOD))
    model = root / "runs" / f"{METHOD}_n2_seed0" / "model.pt"
    assert model.is_file(), model
    return model


def serve(dest: Path, model: Path | None, dataset: Path) -> Path:
    """A served copy of the bundle at ``dest``."""
    return package_bundle(BUNDLES / BUNDLE, dest, model=model, overrides=SERVED_OVERRIDES, dataset_dir=dataset)


def make_studies(dest: Path, files: dict[str, Path]) -> Path:
    """A MONAI Label local datastore: the 3 training cases labeled (labels/final), the 2 test cases and the noisy
    one unlabeled."""
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
    """Ids of the unlabeled studies, the noisy one last."""
    return [p.name[: -len(".nii.gz")] for p in sorted((dataset / "imagesTs").glob("*.nii.gz"))] + [OOD_ID]


def our_app(dest: Path, model_dir: Path) -> Path:
    """Our app at ``dest`` with the served bundle ``model_dir`` in it."""
    make_app(dest)
    shutil.copytree(model_dir, dest / "model" / BUNDLE)
    return dest
