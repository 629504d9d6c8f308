"""Package a trained bundle run as a self-contained *served* bundle for MONAI Label, and copy our MONAI Label app.

Nothing here imports MONAI Label: packaging runs in the project's own environment.

MONAI Label's bundle tasks (``BundleInferTask``, ``BundleTrainTask``; also the stock ``monaibundle`` sample app)
read a bundle folder ``<app>/model/<name>/`` with ``configs/metadata.json``, ``configs/inference.json``,
``configs/train.json`` and ``models/model.pt``, and override only ``bundle_root`` (inference and training),
``device``, ``train#trainer#max_epochs``, ``train#dataset#data``, ``validate#dataset#data`` and
``train#handlers`` (training). Everything else must already be right in the folder's configs. Our repository
bundles take their data and hand-offs from the repository layout (``data/...``, ``runs/...``), so a served copy
changes a few top-level values, and nothing else:

====================  ===========================================================  ==============================
key                   served value                                                 why
====================  ===========================================================  ==============================
``ckpt_dir``          ``"$@bundle_root + '/models'"``                              training writes ``models/model.pt``
hand-off keys         ``"$@bundle_root + '/models/handoffs/<key>.pt'"``            e.g. ``prior_ckpt`` travels along
``dataset_dir``       ``null``                                                     data come from the datastore
``modality``          the channel index (a name is resolved with ``dataset.json``) no ``dataset.json`` when served
``modality_names``    the channel names of the training data, or ``null``          idem
``split`` (train)     ``"$dict(train=@train#dataset#data, val=@validate#...)"``    N of the ELBO = the labeled cases
your ``overrides``    e.g. ``method``, ``spacing``, ``patch_size``, ``inferer#...``  the values the model was trained with
====================  ===========================================================  ==============================

and, in ``inference.json`` only, one compatibility fix: MONAI Label puts the input's path under
``data["image_path"]``, and MONAI >= 1.5's ``Spacingd`` updates every ``image_*`` entry of the data as a metadata
dict (``'str' object has no attribute 'update'``). The served ``preprocessing`` therefore starts by moving
``image_path`` to ``monailabel_image_path`` (``CopyItemsd`` + ``DeleteItemsd``) and the served ``postprocessing``
ends by copying it back (MONAI Label's writer takes the label file's extension from it). Outside MONAI Label there
is no ``image_path`` and both steps do nothing.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai_dwp.utils.io import atomic_write

__all__ = ["APP_TEMPLATE", "SERVED_CKPT_DIR", "HANDOFF_DIR", "package_bundle", "make_app"]

APP_TEMPLATE: Path = Path(__file__).resolve().parent / "app"
"""Our MONAI Label app folder (``main.py`` + ``lib/``); copy it with :func:`make_app` before serving it."""

SERVED_CKPT_DIR: str = "$@bundle_root + '/models'"
"""``ckpt_dir`` of a served bundle: where MONAI Label reads (and training rewrites) ``model.pt``."""

HANDOFF_DIR: str = "models/handoffs"
"""Folder of a served bundle that holds the hand-off checkpoints (outside ``models/*.pt``, which MONAI Label lists
as selectable models)."""

_SERVED_SPLIT = "$dict(train=@train#dataset#data, val=@validate#dataset#data, test=[])"
_STASH_KEY = "monailabel_image_path"
_STASH = [
    {"_target_": "CopyItemsd", "keys": "image_path", "names": _STASH_KEY, "allow_missing_keys": True},
    {"_target_": "DeleteItemsd", "keys": "image_path"},
]
_RESTORE = {"_target_": "CopyItemsd", "keys": _STASH_KEY, "names": "image_path", "allow_missing_keys": True}
_CONFIG_SUFFIXES = (".json",)


def _load_checkpoint(path: Path) -> Mapping[str, Any]:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - report any unreadable file the same way
        raise ValueError(f"model {str(path)!r} is not a readable PyTorch checkpoint: {err}") from err
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"model {str(path)!r} must hold a state dict (or {{'model': state_dict}}), as the bundle's training writes "
            f"it to <ckpt_dir>/model.pt; got {type(state).__name__}."
        )
    return state


def _has_id(config: Mapping[str, Any], id_: str) -> bool:
    node: Any = config
    for part in id_.split("#"):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def _set_id(config: dict[str, Any], id_: str, value: Any) -> bool:
    """Set ``id_`` (``a#b#0``) in ``config`` when it exists, or when its parent is a dict (a new argument of a
    component); top-level ids must exist. Returns whether it was set."""
    parts = id_.split("#")
    if len(parts) == 1:
        if id_ not in config:
            return False
        config[id_] = value
        return True
    parent: Any = config
    for part in parts[:-1]:
        if isinstance(parent, Mapping) and part in parent:
            parent = parent[part]
        elif isinstance(parent, list) and part.isdigit() and int(part) < len(parent):
            parent = parent[int(part)]
        else:
            return False
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
        return True
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        parent[int(last)] = value
        return True
    return False


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
    state = _load_checkpoint(Path(model)) if model is not None else None
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

    configs = {
        p.name: json.loads(p.read_text(encoding="utf-8"))
        for p in sorted(configs_dir.iterdir())
        if p.suffix in _CONFIG_SUFFIXES and p.name != "metadata.json"
    }
    user = dict(overrides or {})
    served: dict[str, Any] = {"ckpt_dir": SERVED_CKPT_DIR, "dataset_dir": None}
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
        default_dir = next((c["dataset_dir"] for c in configs.values() if isinstance(c.get("dataset_dir"), str)), None)
        if default_dir and not default_dir.startswith(("$", "@")) and (Path(default_dir) / "dataset.json").is_file():
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

    unknown = [k for k in user if not any(_has_id(c, k) or ("#" in k and _has_id(c, k.rpartition("#")[0]))
                                          for c in configs.values())]
    if unknown:
        raise ValueError(
            f"overrides {unknown} match no id of the configs {sorted(configs)} of {str(bundle_dir)!r}; check the "
            "spelling (nested ids use '#', e.g. 'inferer#num_samples')."
        )
    for config in configs.values():
        for key, value in served.items():
            if _has_id(config, key) or "#" in key:
                _set_id(config, key, value)
    _stash_image_path(configs["inference.json"])

    (dest / "configs").mkdir(parents=True, exist_ok=True)
    for p in configs_dir.iterdir():
        if p.is_file() and p.name not in configs:
            shutil.copy2(p, dest / "configs" / p.name)  # metadata.json, logging.conf, ...
    for name, config in configs.items():
        text = json.dumps(config, indent=4) + "\n"
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


def _stash_image_path(config: dict[str, Any]) -> None:
    """Wrap ``preprocessing`` / ``postprocessing`` of an inference config with the ``image_path`` stash and restore
    (see the module docstring); a config that already has them is left alone."""
    for key in ("preprocessing", "postprocessing"):
        value = config.get(key)
        if value is None:
            continue
        if json.dumps(value).find(_STASH_KEY) >= 0:
            continue
        steps = _STASH if key == "preprocessing" else [_RESTORE]
        if isinstance(value, dict) and isinstance(value.get("transforms"), list):
            value["transforms"] = (steps + value["transforms"]) if key == "preprocessing" else (value["transforms"] + steps)
        elif isinstance(value, list):
            config[key] = (steps + value) if key == "preprocessing" else (value + steps)
        elif isinstance(value, str) and value.startswith("$"):
            ref = f"{_STASH_KEY}_{key}"
            config[ref] = steps
            inner = f"(lambda c: list(c.transforms) if hasattr(c, 'transforms') else list(c))({value[1:]})"
            joined = f"@{ref} + {inner}" if key == "preprocessing" else f"{inner} + @{ref}"
            config[key] = f"$monai.transforms.Compose({joined})"
        else:
            raise ValueError(
                f"the bundle's inference.json {key!r} is neither a Compose, a list nor a '$' expression ({value!r:.80}); "
                "cannot add MONAI Label's image_path fix to it."
            )


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
