"""monai_dwp's MONAI Label app: serve Deep Weight Prior bundles, rank unlabeled studies by Bayesian uncertainty.

Copy the app (MONAI Label writes logs/ and model/ into it), link the trained bundle into ``<app>/model/<name>``
(or put a packaged copy there), start::

    python -c "from monai_dwp.apps.monailabel import make_app; make_app('apps/dwp')"
    ln -s "$PWD/bundles/dwp_finetune" apps/dwp/model/dwp_finetune
    monailabel start_server --app apps/dwp --studies data/tumour/imagesTs --conf models dwp_finetune

Registered tasks, for every bundle ``<name>`` of ``--conf models``:

- infer ``<name>``: :class:`DWPBundleInferTask` (label file + uncertainty summary in the response JSON);
- train ``<name>``: MONAI Label's ``BundleTrainTask`` (rewrites ``models/model.pt``);
- scoring ``mutual_information``: :class:`MutualInformationScoring` (one Monte Carlo call per study) and
  ``epistemic``: MONAI Label's ``EpistemicScoring`` (``epistemic_simulation_size`` calls per study), both with the
  bundle named by ``--conf scoring_model`` (default: the first);
- strategies ``mutual_information`` and ``epistemic`` (MONAI Label's ``Epistemic``, highest score first), ``random``,
  ``first``.

``--conf`` options (all optional):

=========================  ========  =================================================================================
option                     default   meaning
=========================  ========  =================================================================================
models                     all       comma-separated bundle folders of ``<app>/model`` (all with configs/inference.json)
mc_samples                 bundle's  weight draws T of a segmentation request (a request's ``mc_samples`` wins)
scoring_model              first     the bundle the scoring methods use
scoring_mc_samples         bundle's  weight draws T of the one mutual-information call per study
epistemic_simulation_size  5         inference calls per study of the stock epistemic scoring
epistemic_mc_samples       1         weight draws per such call: 1 = each call is one fresh draw of all weights
epistemic_dropout          0.0       channel dropout before the output conv during epistemic scoring (the stock
                                     app's default is 0.2; the Bayesian weights are the stochastic part here)
epistemic_max_samples      0         score at most this many studies per run (0: all); also for mutual_information
skip_trainers              false     register no train task
=========================  ========  =================================================================================
"""

from __future__ import annotations

import logging
import os

import lib.activelearning
import lib.infers
import lib.scoring
import lib.trainers
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.utils.others.generic import strtobool

import monai_dwp

logger = logging.getLogger(__name__)


def _int_conf(conf: dict[str, str], key: str, default: int | None, minimum: int) -> int | None:
    value = conf.get(key)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        number = minimum - 1
    if number < minimum:
        raise ValueError(f"--conf {key} must be an int >= {minimum}, got {value!r}.")
    return number


class DWPLabelApp(MONAILabelApp):
    """MONAI Label app over served Deep Weight Prior bundles (see the module docstring for tasks and options).

    Raises:
        ValueError: no served bundle under ``<app>/model``, an unknown name in ``--conf models`` or
            ``--conf scoring_model``, or a malformed numeric option.
    """

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.model_dir = os.path.join(app_dir, "model")
        available = sorted(
            d for d in (os.listdir(self.model_dir) if os.path.isdir(self.model_dir) else [])
            if os.path.isfile(os.path.join(self.model_dir, d, "configs", "inference.json"))
        )
        names = [n.strip() for n in conf.get("models", "").split(",") if n.strip()] or available
        if not names:
            raise ValueError(
                f"no served bundle in {self.model_dir!r}: put one there with monai_dwp.apps.monailabel.package_bundle "
                "(see docs/monailabel.md) and pass --conf models <name>."
            )
        unknown = [n for n in names if n not in available]
        if unknown:
            raise ValueError(
                f"--conf models names {unknown}, which are not served bundles of {self.model_dir!r} "
                f"(available: {available}); package them there with monai_dwp.apps.monailabel.package_bundle."
            )
        self.bundles = {n: os.path.join(self.model_dir, n) for n in names}
        self.scoring_model = conf.get("scoring_model", names[0])
        if self.scoring_model not in self.bundles:
            raise ValueError(f"--conf scoring_model {self.scoring_model!r} is not one of --conf models {names}.")
        self.mc_samples = _int_conf(conf, "mc_samples", None, 1)
        self.scoring_mc_samples = _int_conf(conf, "scoring_mc_samples", None, 1)
        self.epistemic_simulation_size = _int_conf(conf, "epistemic_simulation_size", 5, 2)
        self.epistemic_mc_samples = _int_conf(conf, "epistemic_mc_samples", 1, 1)
        self.epistemic_max_samples = _int_conf(conf, "epistemic_max_samples", 0, 0)
        try:
            self.epistemic_dropout = float(conf.get("epistemic_dropout", "0.0"))
        except ValueError:
            self.epistemic_dropout = -1.0
        if not 0.0 <= self.epistemic_dropout < 1.0:
            raise ValueError(f"--conf epistemic_dropout must be a number in [0, 1), got {conf['epistemic_dropout']!r}.")
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name=f"monai_dwp - Deep Weight Prior bundles ({monai_dwp.__version__})",
            description="Bayesian 3D U-Nets with a Deep Weight Prior; studies ranked by epistemic uncertainty",
            version=monai_dwp.__version__,
        )

    def init_infers(self) -> dict[str, InferTask]:
        infers: dict[str, InferTask] = {}
        for name, path in self.bundles.items():
            task = lib.infers.segmentation_task(path, self.conf, num_samples=self.mc_samples)
            if not task.is_valid():
                logger.warning("+++ Bundle %s has no models/model.pt yet: train it first (POST /train/%s)", name, name)
                continue
            logger.info("+++ Adding Inferer:: %s => %s", name, path)
            infers[name] = task
        return infers

    def init_trainers(self) -> dict[str, TrainTask]:
        trainers: dict[str, TrainTask] = {}
        if strtobool(self.conf.get("skip_trainers", "false")):
            return trainers
        for name, path in self.bundles.items():
            task = lib.trainers.BundleTrainTask(path, self.conf)
            if task.is_valid():
                logger.info("+++ Adding Trainer:: %s => %s", name, path)
                trainers[name] = task
        return trainers

    def init_strategies(self) -> dict[str, Strategy]:
        return lib.activelearning.strategies()

    def init_scoring_methods(self) -> dict[str, ScoringMethod]:
        path = self.bundles[self.scoring_model]
        mi_task = lib.infers.scoring_task(path, self.conf, num_samples=self.scoring_mc_samples)
        if not mi_task.is_valid():
            logger.warning("+++ No scoring: bundle %s has no models/model.pt yet", self.scoring_model)
            return {}
        epistemic_task = lib.infers.scoring_task(
            path, self.conf, num_samples=self.epistemic_mc_samples, train_mode=True, dropout=self.epistemic_dropout
        )
        methods: dict[str, ScoringMethod] = {
            "mutual_information": lib.scoring.MutualInformationScoring(
                mi_task, max_samples=self.epistemic_max_samples, num_samples=self.scoring_mc_samples
            ),
            "epistemic": lib.scoring.EpistemicScoring(
                epistemic_task, max_samples=self.epistemic_max_samples, simulation_size=self.epistemic_simulation_size
            ),
        }
        logger.info("+++ Scoring methods (model %s):: %s", self.scoring_model, list(methods))
        return methods
