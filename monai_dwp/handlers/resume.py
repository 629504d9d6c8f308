"""What a training checkpoint must hold for an interrupted run to resume exactly.

MONAI's bundles save ``{"model", "optimizer", "trainer"}``; resuming from that restores the weights and the epoch
but not (1) the random number generators, so a resumed run draws other patches and other weight noise than the
run it continues, nor (2) the validation bookkeeping, so the first validation after a resume takes any model as
the best and overwrites ``model.pt`` with it. :class:`RandomStates` and :class:`BestMetricState` are checkpointable
objects (``state_dict``/``load_state_dict``) for both, and :func:`training_state` assembles the dictionary that the
bundles give MONAI's ``CheckpointSaver`` and ``CheckpointLoader`` alike.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from monai.transforms import Randomizable, Transform

__all__ = ["RandomStates", "BestMetricState", "random_generators", "training_state"]


def _numpy_state(state: np.random.RandomState) -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = state.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _set_numpy_state(state: np.random.RandomState, saved: dict[str, Any]) -> None:
    keys = saved["keys"].numpy().astype(np.uint32)
    state.set_state((saved["name"], keys, saved["pos"], saved["has_gauss"], saved["cached_gaussian"]))


def random_generators(transform: Any) -> list[np.random.RandomState]:
    """The private ``RandomState`` of every random transform in a transform chain, nested ones included.

    A dictionary transform such as ``RandCropByPosNegLabeld`` draws from the ``RandomState`` of the array transform
    it wraps, not from its own, so the walk goes through every attribute of every MONAI transform (and lists, tuples
    and dicts of them), the way :func:`monai.data.utils.set_rnd` seeds them; each generator is listed once.
    """
    found: list[np.random.RandomState] = []
    seen: set[int] = set()

    def visit(obj: Any) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, (list, tuple)):
            for item in obj:
                visit(item)
        elif isinstance(obj, dict):
            for item in obj.values():
                visit(item)
        elif isinstance(obj, (Transform, Randomizable)):
            generator = getattr(obj, "R", None)
            if isinstance(generator, np.random.RandomState) and id(generator) not in seen:
                seen.add(id(generator))
                found.append(generator)
            for item in vars(obj).values():
                visit(item)

    visit(transform)
    return found


class RandomStates:
    """Every random number generator a training run draws from, as one checkpointable object.

    PyTorch's (CPU and every CUDA device: weight noise, kernel subsets, shuffling), NumPy's and Python's global
    generators, and the private ``RandomState`` of each random transform of the given datasets (MONAI's random
    crops and augmentations draw from these).

    Under ``torch.distributed`` only rank 0 writes checkpoints, so every rank loads rank 0's states; a rank ``r > 0``
    then reseeds all its generators from ``seed + r``, with ``seed`` drawn from the restored generator, so ranks keep
    drawing different noise and patches after a resume (rank 0 continues exactly).

    Args:
        datasets: datasets whose ``transform`` chains hold random transforms (e.g. the training ``CacheDataset``).

    Example::

        save_dict = {"model": net, "optimizer": opt, "trainer": trainer, "rng": RandomStates(train_ds)}
    """

    def __init__(self, *datasets: Any) -> None:
        self.datasets = datasets

    def _generators(self) -> list[np.random.RandomState]:
        return [g for ds in self.datasets for g in random_generators(getattr(ds, "transform", None))]

    def state_dict(self) -> dict[str, Any]:
        version, state, gauss = random.getstate()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": _numpy_state(np.random.mtrand._rand),
            "python": {"version": version, "state": list(state), "gauss": gauss},
            "transforms": [_numpy_state(g) for g in self._generators()],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore every generator.

        Raises:
            ValueError: the checkpoint holds the states of a different number of random transforms (another
                transform chain).
        """
        generators = self._generators()
        if len(state_dict["transforms"]) != len(generators):
            raise ValueError(
                f"the checkpoint holds the random states of {len(state_dict['transforms'])} random transform(s), "
                f"this run's datasets have {len(generators)}: it was written with another transform chain; "
                "resume with the settings of the interrupted run."
            )
        torch.set_rng_state(state_dict["torch"])
        if state_dict["cuda"] and torch.cuda.is_available() and len(state_dict["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
        _set_numpy_state(np.random.mtrand._rand, state_dict["numpy"])
        python = state_dict["python"]
        random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
        for generator, saved in zip(generators, state_dict["transforms"]):
            _set_numpy_state(generator, saved)
        rank = torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() else 0
        if rank > 0:
            seed = int(torch.randint(0, 2**31 - 1 - 4096, (1,)).item()) + rank
            torch.manual_seed(seed)
            np.random.seed(seed)
            random.seed(seed)
            for i, generator in enumerate(generators):
                generator.seed(seed + i + 1)


class BestMetricState:
    """The validation bookkeeping of a run, as one checkpointable object.

    The evaluator's best key metric and its epoch, and the record of the key-metric ``CheckpointSaver``
    (``model.pt``) of which score its file holds, so that after a resume ``model.pt`` is replaced only by a better
    model.

    Args:
        evaluator: the MONAI evaluator whose ``state.best_metric`` / ``state.best_metric_epoch`` are tracked.
        saver: the ``CheckpointSaver`` with ``save_key_metric=True`` attached to it (optional).
    """

    def __init__(self, evaluator: Any, saver: Any = None) -> None:
        self.evaluator = evaluator
        self.saver = saver

    def _checkpoint(self) -> Any:
        return getattr(self.saver, "_key_metric_checkpoint", None)

    def state_dict(self) -> dict[str, Any]:
        state = self.evaluator.state
        checkpoint = self._checkpoint()
        return {
            "best_metric": float(state.best_metric),
            "best_metric_epoch": int(state.best_metric_epoch),
            "saved": checkpoint.state_dict()["_saved"] if checkpoint is not None else [],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.evaluator.state.best_metric = state_dict["best_metric"]
        self.evaluator.state.best_metric_epoch = state_dict["best_metric_epoch"]
        checkpoint = self._checkpoint()
        if checkpoint is not None:
            checkpoint.load_state_dict({"_saved": [tuple(item) for item in state_dict["saved"]]})


def training_state(**objects: Any) -> dict[str, Any]:
    """The ``save_dict``/``load_dict`` of a resumable run: the given objects, leaving out those that are ``None``
    (e.g. ``prior=None`` for methods without a trainable prior).

    Raises:
        TypeError: an object has no ``state_dict``.
    """
    state = {}
    for name, obj in objects.items():
        if obj is None:
            continue
        if not callable(getattr(obj, "state_dict", None)):
            raise TypeError(f"training_state: {name}={type(obj).__name__} has no state_dict(); it cannot be resumed.")
        state[name] = obj
    return state
