"""Copy a trained bundle elsewhere for MONAI Label, and copy our MONAI Label app.

Nothing here imports MONAI Label: packaging runs in the project's own environment.

A trained repository bundle is served **in place**: its training writes ``models/model.pt``, its hand-off keys
default to the sibling bundles' ``models/``, and its ``inference.json`` already sets MONAI Label's ``image_path``
aside (MONAI >= 1.5's ``Spacingd`` treats every ``image_*`` entry as a metadata dict), so MONAI Label's stock
``BundleInferTask`` (and the ``monaibundle`` app, through a link ``<app>/model/dwp_finetune`` → the bundle) read it
as it is. :func:`package_bundle` is only for a copy that must stand alone elsewhere: it copies the bundle with its
model and hand-offs and changes a few top-level values, and nothing else:

====================  ===========================================================  ==============================
key                   value in the copy                                            why
====================  ===========================================================  ==============================
hand-off keys         ``"$@bundle_root + '/models/handoffs/<key>.pt'"``            e.g. ``prior_ckpt`` travels along
``dataset_dir``       ``null``                                                     data come from the datastore
``modality``          the channel index (a name is resolved with ``dataset.json``) no ``dataset.json`` in the copy
``modality_names``    the channel names of the training data, or ``null``          idem
``split`` (train)     ``"$dict(train=@train#dataset#data, val=@validate#...)"``    N of the ELBO = the labeled cases
your ``overrides``    e.g. ``method``, ``spacing``, ``patch_size``, ``inferer#...``  the values the model was trained with
====================  ===========================================================  ==============================
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai_dwp.utils.io import atomic_write

__all__ = ["APP_TEMPLATE", "HANDOFF_DIR", "package_bundle", "make_app"]

APP_TEMPLATE: Path = Path(__file__).resolve().parent / "app"
"""Our MONAI Label app folder (``main.py`` + ``lib/``); copy it with :func:`make_app` before serving it."""

HANDOFF_DIR: str = "models/handoffs"
"""Folder of a served bundle that holds the hand-off checkpoints (outside ``models/*.pt``, which MONAI Label lists
as selectable models)."""

_SERVED_SPLIT = "$dict(train=@train#dataset#data, val=@validate#dataset#data, test=[])"
_CONFIG_SUFFIXES = (".json",)


def _load_state(path: Path) -> Mapping[str, Any]:
    import torch

    from monai_dwp.utils.io import load_checkpoint

    state = load_checkpoint(path, "model", "train the bundle first and pass its <ckpt_dir>/model.pt",
                            "the <ckpt_dir>/model.pt the bundle's training writes")
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"model {str(path)!r} must hold a state dict (or {{'model': state_dict}}), as the bundle's training writes "
            f"it to <ckpt_dir>/model.pt; got {type(state).__name__}."
        )
    return state


def _has_id(parser: Any, id_: str) -> bool:
    """Whether ``id_`` exists in the parsed config, or (nested ids) its parent does: a new argument of a component."""
    return id_ in parser or ("#" in id_ and id_.rpartition("#")[0] in parser)


def _resolve_modality(
    modality: Any, names: list[str] | None, dataset_dir: str | os.PathLike | None
) -> tuple[Any, list[str] | None]:
    """The modality as channel index(es), and the channel names when known."""
    from monai_dwp.data.decathlon import read_dataset_json, resolve_modality

    if names is None and dataset_dir is not None:
        modality_map = read_dataset_json(dataset_dir).get("modality")
        if isinstance(modality_map, Mapping):
            names = [str(modality_map[k]) for k in sorted(modality_map, key=lambda k: int(k))]
    if modality is None:
        return None, names
    if isinstance(modality, str) and modality.startswith(("$", "@", "%")):
        raise ValueError(
            f"modality is the expression {modality!r} in the bundle's configs; a served bundle needs the channel "
            "index: pass overrides={'modality': <index>}."
        )
    needs_names = isinstance(modality, str) or (
        isinstance(modality, (list, tuple)) and any(isinstance(m, str) for m in modality)
    )
    if needs_names and names is None:
        raise ValueError(
            f"modality {modality!r} is a channel name, but a served bundle has no dataset.json to resolve it: pass "
            "dataset_dir=<the training dataset> (its dataset.json names the channels), overrides={'modality_names': "
            "[...]} or overrides={'modality': <index>}."
        )
    indices = resolve_modality(modality, names)
    return (indices[0] if indices is not None and len(indices) == 1 else indices), names


def package_bundle(
    bundle_dir: str | os.PathLike,
    dest: str | os.PathLike,
    model: str | os.PathLike | None = None,
    handoffs: Mapping[str, str | os.PathLike] | None = None,
    overrides: Mapping[str, Any] | None = None,
    dataset_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    verify: bool = True,
) -> Path:
    """Write a self-contained served copy of a bundle, ready for MONAI Label's bundle tasks.

    The copy holds the bundle's ``configs/`` (with the served values of the module docstring's table),
    ``docs/`` if any, ``models/model.pt`` and ``models/handoffs/<key>.pt``. Put it at ``<app>/model/<name>`` of
    the stock ``monaibundle`` app or of ours (:func:`make_app`) and start the server with ``--conf models <name>``.

    Example (the ``dwp`` method: training needs the prior checkpoint; 2 mm data)::

        package_bundle("bundles/dwp_finetune", "apps/dwp/model/dwp_finetune",
                       model="runs/dwp_finetune/dwp_n5_seed0/model.pt",
                       handoffs={"prior_ckpt": "runs/dwp_prior/dwp_prior.pt"},
                       overrides={"method": "dwp", "num_train_cases": 5}, dataset_dir="data/tumour")

    Args:
        bundle_dir: the repository bundle, e.g. ``bundles/dwp_finetune`` (needs ``configs/inference.json`` and
            ``configs/metadata.json``).
        dest: the served bundle folder to write.
        model: the trained network, ``<ckpt_dir>/model.pt`` of a training run (a state dict or
            ``{"model": state_dict}``); ``None`` writes no model (MONAI Label then offers training only).
        handoffs: top-level config keys naming hand-off files that training needs, with the files to ship, e.g.
            ``{"prior_ckpt": "runs/dwp_prior/dwp_prior.pt"}`` (method ``dwp``) or ``{"source_ckpt": ...}``
            (``finetune``, ``finetune_frozen``).
        overrides: config ids (``"method"``, ``"spacing"``, nested ``"inferer#num_samples"``) and the values the
            served configs get, literally (JSON values or ``"$..."`` expressions); applied to every config file that
            has the id (a new entry of an existing component dict is allowed). The values the model was trained
            with belong here: ``method``, ``spacing``, ``patch_size``, ``in_channels``...
        dataset_dir: the training dataset; its ``dataset.json`` resolves a modality *name* (``"FLAIR"``) to the
            channel index the served bundle keeps. Default: the bundle's own ``dataset_dir`` when that exists.
        overwrite: replace an existing served bundle at ``dest`` (a folder with ``configs/``).
        verify: build the served ``network_def`` and load ``model`` into it strictly, so that a model of another
            method (Bayesian vs deterministic) or other channels fails here, not silently in MONAI Label (which
            loads non-strictly).

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        FileNotFoundError: a missing bundle config, model or hand-off file.
        FileExistsError: ``dest`` exists and is not empty, without ``overwrite``.
        ValueError: an override id found in no config, a hand-off key that no config has, a modality name that
            cannot be resolved, an unreadable model, or a model that does not fit the served network.
    """
    bundle_dir, dest = Path(bundle_dir), Path(dest)
    configs_dir = bundle_dir / "configs"
    for required in ("inference.json", "metadata.json"):
        if not (configs_dir / required).is_file():
            raise FileNotFoundError(
                f"bundle_dir {str(bundle_dir)!r} has no configs/{required}; pass a bundle folder such as "
                "bundles/dwp_finetune."
            )
    if model is not None and not Path(model).is_file():
        raise FileNotFoundError(
            f"model {str(model)!r} does not exist; train the bundle first (python -m monai.bundle run --config_file "
            f"{configs_dir / 'train.json'} ...) and pass its <ckpt_dir>/model.pt."
        )
    state = _load_state(Path(model)) if model is not None else None
    handoffs = dict(handoffs or {})
    for key, path in handoffs.items():
        if not Path(path).is_file():
            raise FileNotFoundError(f"hand-off {key}={str(path)!r} does not exist; pass the file the bundle needs.")
    if dest.exists() and any(dest.iterdir()):
        if not overwrite:
            raise FileExistsError(f"dest {str(dest)!r} exists and is not empty; pass overwrite=True to replace it.")
        if not (dest / "configs").is_dir():
            raise FileExistsError(
                f"dest {str(dest)!r} is not empty and holds no served bundle (no configs/); refusing to delete it."
            )
        shutil.rmtree(dest)

    from monai.bundle import ConfigParser

    configs = {
        p.name: ConfigParser(json.loads(p.read_text(encoding="utf-8")))
        for p in sorted(configs_dir.iterdir())
        if p.suffix in _CONFIG_SUFFIXES and p.name != "metadata.json"
    }
    user = dict(overrides or {})
    served: dict[str, Any] = {"dataset_dir": None}
    for key in handoffs:
        if not any(key in c for c in configs.values()):
            raise ValueError(
                f"hand-off key {key!r} is in none of the configs {sorted(configs)} of {str(bundle_dir)!r}; "
                "use a top-level key such as 'prior_ckpt' or 'source_ckpt'."
            )
        served[key] = f"$@bundle_root + '/{HANDOFF_DIR}/{key}.pt'"

    # modality: a served bundle has no dataset.json, so names become indices
    raw_modality = next((c["modality"] for c in configs.values() if "modality" in c), None)
    if dataset_dir is None:
        own = ConfigParser(json.loads((configs_dir / "inference.json").read_text(encoding="utf-8")))
        if "dataset_dir" in own:
            own["bundle_root"] = str(bundle_dir)
            default_dir = own.get_parsed_content("dataset_dir")
            if isinstance(default_dir, str) and (Path(default_dir) / "dataset.json").is_file():
                dataset_dir = default_dir
    names = user.get("modality_names")
    modality, names = _resolve_modality(user.get("modality", raw_modality), names, dataset_dir)
    if any("modality" in c for c in configs.values()):
        served["modality"] = modality
    if any("modality_names" in c for c in configs.values()):
        served["modality_names"] = names
    if any(_has_id(c, "split") for c in configs.values()):
        served["split"] = _SERVED_SPLIT
    served.update({k: v for k, v in user.items() if k not in ("modality", "modality_names")})

    unknown = [k for k in user if not any(_has_id(c, k) for c in configs.values())]
    if unknown:
        raise ValueError(
            f"overrides {unknown} match no id of the configs {sorted(configs)} of {str(bundle_dir)!r}; check the "
            "spelling (nested ids use '#', e.g. 'inferer#num_samples')."
        )
    for config in configs.values():
        for key, value in served.items():
            if _has_id(config, key) and (key in config or isinstance(config[key.rpartition("#")[0]], dict)):
                config[key] = value

    (dest / "configs").mkdir(parents=True, exist_ok=True)
    for p in configs_dir.iterdir():
        if p.is_file() and p.name not in configs:
            shutil.copy2(p, dest / "configs" / p.name)  # metadata.json, logging.conf, ...
    for name, config in configs.items():
        text = json.dumps(config.get(), indent=4) + "\n"
        atomic_write(dest / "configs" / name, "w", lambda f, text=text: f.write(text))
    if (bundle_dir / "docs").is_dir():
        shutil.copytree(bundle_dir / "docs", dest / "docs", dirs_exist_ok=True)
    (dest / "models").mkdir(exist_ok=True)
    if handoffs:
        (dest / HANDOFF_DIR).mkdir(parents=True, exist_ok=True)
        for key, path in handoffs.items():
            shutil.copy2(path, dest / HANDOFF_DIR / f"{key}.pt")
    if model is not None and state is not None:
        shutil.copy2(model, dest / "models" / "model.pt")
        if verify:
            try:
                _verify_model(dest, state)
            except Exception:
                shutil.rmtree(dest)  # leave no half-right served bundle behind
                raise
    return dest


def _verify_model(dest: Path, state: Mapping[str, Any]) -> None:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(dest / "configs" / "inference.json"))
    parser["bundle_root"] = str(dest)
    network = parser.get_parsed_content("network_def", instantiate=True)
    own = network.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        details = "; ".join(
            f"{what}: {items[:3]}{' ...' if len(items) > 3 else ''}"
            for what, items in (("missing", missing), ("unexpected", unexpected), ("shape (model vs network)", wrong))
            if items
        )
        raise ValueError(
            f"the model does not fit the served network_def ({details}); pass the overrides it was trained with, "
            "e.g. overrides={'method': 'gaussian_prior'} (Bayesian network) or {'method': 'random_init'} "
            "(deterministic), and in_channels/out_channels."
        )


def make_app(dest: str | os.PathLike, overwrite: bool = False) -> Path:
    """Copy our MONAI Label app (``main.py`` + ``lib/``) to a writable folder ``dest`` and create ``dest/model``.

    MONAI Label writes ``logs/``, ``model/`` and ``bin/`` into the app folder, so serve a copy, not the installed
    package. Then put served bundles into ``dest/model/<name>`` (:func:`package_bundle`) and run
    ``monailabel start_server --app <dest> --studies <images> --conf models <name>``.

    Args:
        dest: the app folder to write.
        overwrite: replace the app files (``main.py``, ``lib/``) of an existing folder; ``model/`` is kept.

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        FileExistsError: ``dest`` already has a ``main.py``, without ``overwrite``.
    """
    dest = Path(dest)
    if (dest / "main.py").exists() and not overwrite:
        raise FileExistsError(f"dest {str(dest)!r} already holds an app (main.py); pass overwrite=True to update it.")
    if (dest / "lib").is_dir():
        shutil.rmtree(dest / "lib")
    shutil.copytree(APP_TEMPLATE, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (dest / "model").mkdir(exist_ok=True)
    return dest
