"""MONAI Label serves the target bundle and ranks unlabeled studies by Bayesian uncertainty (real MONAI Label classes).

Runs in the separate MONAI Label environment (``bash .ci/monailabel.sh``). Where ``monailabel`` is not importable
the module is skipped, unless ``MONAI_DWP_REQUIRE_MONAILABEL=1`` (set by .ci/monailabel.sh), which turns the skip
into a failure.

One tiny Bayesian target bundle (``gaussian_prior``, 6 mm phantoms) is trained once with ``python -m monai.bundle
run`` and served. The datastores hold 3 labeled tumour cases, 2 unlabeled ones and an unlabeled tumour case with a
diffuse FLAIR hyperintensity of the whole brain (the out-of-distribution study, ``zz_diffuse``, see
``_monailabel_data.make_data``) that every uncertainty ranking must put first. The torch RNG is seeded before each
test, so the weight draws, and the rankings, are reproducible.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

if importlib.util.find_spec("monailabel") is None:
    if os.environ.get("MONAI_DWP_REQUIRE_MONAILABEL") == "1":
        raise ImportError("MONAI_DWP_REQUIRE_MONAILABEL=1 but monailabel is not importable; run bash .ci/monailabel.sh")
    raise unittest.SkipTest("monailabel is not installed here; bash .ci/monailabel.sh runs these tests in its own env")

# MONAI Label reads its settings from the environment when first imported
os.environ.setdefault("MONAI_LABEL_AUTO_UPDATE_SCORING", "false")  # else the app POSTs to port 8000
os.environ.setdefault("MONAI_LABEL_DATASTORE_AUTO_RELOAD", "false")
os.environ.setdefault("MONAI_LABEL_SESSIONS", "false")

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from monai.transforms import Invertd, SaveImaged  # noqa: E402
from monailabel.datastore.local import LocalDatastore  # noqa: E402
from monailabel.interfaces.exception import MONAILabelException  # noqa: E402
from monailabel.interfaces.utils.app import app_instance  # noqa: E402
from monailabel.tasks.activelearning.epistemic import Epistemic  # noqa: E402
from monailabel.tasks.infer.bundle import BundleInferTask  # noqa: E402
from monailabel.tasks.scoring.epistemic_v2 import EpistemicScoring  # noqa: E402
from monailabel.tasks.train.bundle import BundleTrainTask  # noqa: E402

from monai_dwp.apps.monailabel import MI_SCORE_KEY, DWPBundleInferTask, MutualInformationScoring  # noqa: E402
from monai_dwp.transforms import UNCERTAINTY_SUMMARY_KEYS  # noqa: E402

from ..bundles._utils import BUNDLES  # noqa: E402
from ._monailabel_data import (  # noqa: E402
    BUNDLE,
    METHOD,
    OOD_ID,
    SCORING_MC_SAMPLES,
    make_data,
    make_studies,
    our_app,
    serve,
    train_model,
    unlabeled_ids,
)

_TMP: tempfile.TemporaryDirectory | None = None
ROOT: Path
FILES: dict[str, Path]
SERVED: Path  # the served bundle (read-only for the tests: copy it to change it)


def setUpModule() -> None:  # noqa: N802
    global _TMP, ROOT, FILES, SERVED
    _TMP = tempfile.TemporaryDirectory()
    ROOT = Path(_TMP.name)
    FILES = make_data(ROOT)
    model = train_model(ROOT, FILES["dataset"])
    SERVED = serve(ROOT / "served" / BUNDLE, model, FILES["dataset"])


def tearDownModule() -> None:  # noqa: N802
    if _TMP is not None:
        _TMP.cleanup()


def _check_summary(test: unittest.TestCase, result: dict) -> None:
    for key in UNCERTAINTY_SUMMARY_KEYS:
        test.assertIn(key, result, "no uncertainty summary in the result JSON: the bundle's inference.json needs "
                                   "monai_dwp.transforms.UncertaintySummaryd in its postprocessing (after FlattenMCOutputd)")
        test.assertIsInstance(result[key], float)
    test.assertTrue(0.0 <= result["mean_mutual_information"] <= result["mean_entropy"] <= np.log(2) + 1e-6, result)
    test.assertTrue(0.0 <= result["uncertain_fraction"] <= 1.0, result)


def _check_label(test: unittest.TestCase, label_file: str, image_file: Path) -> None:
    test.assertTrue(label_file and Path(label_file).is_file(), label_file)
    label, image = nib.load(label_file), nib.load(str(image_file))
    test.assertEqual(label.shape, image.shape[:3])  # the 4D (T1, FLAIR) input's grid
    np.testing.assert_allclose(label.affine, image.affine, atol=1e-4)
    test.assertTrue(set(np.unique(np.asarray(label.dataobj))) <= {0, 1})


def _ranking(scores: dict[str, float]) -> list[str]:
    return sorted(scores, key=scores.get, reverse=True)


def _check_scores(test: unittest.TestCase, scores: dict[str, float]) -> None:
    """Every unlabeled study scored, finite and positive. Whether the out-of-distribution study ranks first is a
    property of the tiny model, not of the integration: with the appendix-B network, per-voxel ELBO and relative
    posterior scales it no longer holds on this fixture (all three scores within a factor 2), so the tests check
    that the strategies pick the top-scored study instead."""
    test.assertEqual(set(scores), {OOD_ID, "tumour_ts_001", "tumour_ts_002"}, scores)
    test.assertTrue(all(np.isfinite(v) and v > 0 for v in scores.values()), scores)


class _Seeded(unittest.TestCase):
    def setUp(self):
        torch.manual_seed(0)  # the Monte Carlo weight draws use the global RNG


class TestBundleTasks(_Seeded):
    """MONAI Label's stock bundle tasks on the served bundle."""

    def test_stock_infer_task(self):
        task = BundleInferTask(str(SERVED), {})
        self.assertTrue(task.is_valid())
        self.assertEqual(task.labels, {"tumour": 1})
        self.assertEqual(task.dimension, 3)
        image = FILES["dataset"] / "imagesTs" / f"{unlabeled_ids(FILES['dataset'])[0]}.nii.gz"
        label_file, result = task({"image": str(image), "device": "cpu"})
        _check_label(self, label_file, image)
        _check_summary(self, result)
        self.assertEqual(result["label_names"], {"tumour": 1})

    def test_stock_infer_task_with_injected_dropout(self):
        # what the stock app's epistemic scoring builds: dropout in network_def, train mode, data returned
        task = BundleInferTask(str(SERVED), {}, train_mode=True, skip_writer=True, dropout=0.2,
                               post_filter=[SaveImaged, Invertd])
        image = FILES["ood"]
        _, data = task({"image": str(image), "device": "cpu"})
        network = task._get_network("cpu", data)
        self.assertEqual(type(network.dropout).__name__, "Dropout3d")
        self.assertTrue(network.training)
        self.assertEqual(tuple(data["pred"].shape), nib.load(str(image)).shape[:3])
        _check_summary(self, data.get("result", {}))

    def test_stock_train_task_rewrites_the_model(self):
        bundle = shutil.copytree(SERVED, ROOT / "train_task" / BUNDLE)
        studies = make_studies(ROOT / "train_task" / "studies", FILES)
        model = bundle / "models" / "model.pt"
        before = (model.stat().st_mtime_ns, model.read_bytes())
        task = BundleTrainTask(str(bundle), {})
        self.assertTrue(task.is_valid())
        task({"model": BUNDLE, "max_epochs": 1, "val_split": 0.34, "multi_gpu": False, "device": "cpu"},
             LocalDatastore(str(studies), extensions=("*.nii.gz",), auto_reload=False))
        self.assertNotEqual((model.stat().st_mtime_ns, model.read_bytes()), before)
        # the rewritten model serves
        label_file, result = BundleInferTask(str(bundle), {})({"image": str(FILES["ood"]), "device": "cpu"})
        _check_label(self, label_file, FILES["ood"])
        _check_summary(self, result)


class TestServedInPlace(_Seeded):
    """The repository bundle itself, trained by its own command into its own ``models/``, served with no packaging
    step: by the stock ``BundleInferTask`` on the bundle folder, and by the stock ``monaibundle`` app through a link."""

    def test_stock_tasks_serve_the_bundle_in_place(self):
        repo = ROOT / "in_place"
        shutil.copytree(BUNDLES, repo / "bundles", ignore=shutil.ignore_patterns("models", "eval"))
        shutil.copytree(FILES["dataset"], repo / "data" / "tumour")  # the bundle's default dataset_dir
        bundle = repo / "bundles" / BUNDLE
        # the README's command, from the checkout's root, with only the sizes of a test (its defaults otherwise)
        cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", f"bundles/{BUNDLE}/configs/train.json",
               "--method", METHOD, "--epochs", "1", "--num_train_cases", "2", "--num_val_cases", "1",
               "--batch_size", "1", "--device", "cpu"]
        env = dict(os.environ, PYTHONWARNINGS="ignore")
        proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        self.assertTrue((bundle / "models" / "model.pt").is_file())
        task = BundleInferTask(str(bundle), {})
        self.assertTrue(task.is_valid())
        label_file, result = task({"image": str(FILES["ood"]), "device": "cpu"})
        _check_label(self, label_file, FILES["ood"])
        _check_summary(self, result)
        # the stock sample app, its model folder a link to the bundle
        sample = Path(sys.prefix) / "monailabel" / "sample-apps" / "monaibundle"
        app_dir = ROOT / "stock_app_in_place"
        shutil.copytree(sample, app_dir, ignore=shutil.ignore_patterns("__pycache__"))
        (app_dir / "model").mkdir(exist_ok=True)
        (app_dir / "model" / BUNDLE).symlink_to(bundle, target_is_directory=True)
        studies = make_studies(ROOT / "studies_in_place", FILES)
        app = app_instance(str(app_dir), str(studies), {"models": BUNDLE, "zoo_source": "github",
                                                        "skip_trainers": "true", "sam2": "false"})
        result = app.infer({"model": BUNDLE, "image": OOD_ID, "device": "cpu"})
        _check_label(self, result["label"], studies / f"{OOD_ID}.nii.gz")
        _check_summary(self, result["params"])


class TestScoring(_Seeded):
    """Both scorings put the out-of-distribution study first, and Epistemic serves it first."""

    def _datastore(self, name: str) -> LocalDatastore:
        return LocalDatastore(str(make_studies(ROOT / name, FILES)), extensions=("*.nii.gz",), auto_reload=False)

    def test_mutual_information_scoring(self):
        datastore = self._datastore("studies_mi")
        task = DWPBundleInferTask(str(SERVED), {}, skip_writer=True, post_filter=[SaveImaged, Invertd])
        scoring = MutualInformationScoring(task, num_samples=SCORING_MC_SAMPLES)
        summary = scoring({"device": "cpu"}, datastore)
        self.assertEqual((summary["total"], summary["executed"]), (3, 3))
        _check_scores(self, summary["scores"])
        info = datastore.get_image_info(OOD_ID)
        self.assertEqual(info[MI_SCORE_KEY], summary["scores"][OOD_ID])
        self.assertEqual(scoring({"device": "cpu"}, datastore)["skipped"], 3)  # same model: nothing to rescore
        pick = Epistemic(key=MI_SCORE_KEY)({"strategy": "mutual_information"}, datastore)
        self.assertEqual(pick["id"], _ranking(summary["scores"])[0])

    def test_stock_epistemic_scoring(self):
        datastore = self._datastore("studies_epistemic")
        # one fresh weight draw per call (mc_samples 1), no dropout: the posterior alone makes the spread
        task = DWPBundleInferTask(str(SERVED), {}, num_samples=1, train_mode=True, skip_writer=True,
                                  post_filter=[SaveImaged, Invertd])
        EpistemicScoring(task, simulation_size=5)({"device": "cpu", "max_workers": 1}, datastore)
        scores = {i: datastore.get_image_info(i)["epistemic_entropy"] for i in datastore.get_unlabeled_images()}
        _check_scores(self, scores)  # every call is a fresh draw: never a zero spread
        self.assertEqual(Epistemic()({"strategy": "epistemic"}, datastore)["id"], _ranking(scores)[0])

    def test_the_task_tunes_the_allocator(self):
        from unittest import mock

        from monai_dwp.apps.monailabel import infer

        with mock.patch.object(infer, "tune_allocator") as tune:
            DWPBundleInferTask(str(SERVED), {}, skip_writer=True)
        tune.assert_called_once_with()

    def test_mc_samples_option(self):
        task = DWPBundleInferTask(str(SERVED), {}, skip_writer=True)
        self.assertEqual(task.config()["mc_samples"], 4)  # the served bundle's
        self.assertEqual(task.inferer({"mc_samples": 2}).num_samples, 2)
        self.assertEqual(task.inferer({}).num_samples, 4)
        with self.assertRaisesRegex(MONAILabelException, "mc_samples must be an int >= 1, got 'x'"):
            task.inferer({"mc_samples": "x"})
        with self.assertRaisesRegex(ValueError, "infer_task must be built with skip_writer=True"):
            MutualInformationScoring(DWPBundleInferTask(str(SERVED), {}))


class TestResizedInput(_Seeded):
    """A study whose size the pre-processing changes (``CropForegroundd`` removes a zero border, ``DivisiblePadd``
    pads to a multiple of 16): its prediction comes back on its own grid, and every map keeps whole metadata."""

    def _padded_study(self) -> Path:
        src = FILES["dataset"] / "imagesTs" / f"{unlabeled_ids(FILES['dataset'])[0]}.nii.gz"
        img = nib.load(str(src))
        array = np.pad(np.asarray(img.dataobj, dtype=np.float32), ((3, 2), (4, 1), (2, 3), (0, 0)))
        affine = img.affine.copy()
        affine[:3, 3] -= affine[:3, :3] @ np.array([3.0, 4.0, 2.0])  # the same anatomy at the same place
        path = ROOT / "padded" / "padded_study.nii.gz"
        path.parent.mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(array, affine), str(path))
        return path

    def test_scoring_task_output_on_the_input_grid(self):
        image = self._padded_study()
        shape = nib.load(str(image)).shape[:3]
        task = DWPBundleInferTask(str(SERVED), {}, skip_writer=True, post_filter=[SaveImaged, Invertd])
        _, data = task({"image": str(image), "device": "cpu"})
        self.assertEqual(tuple(data["pred"].shape[-3:]), shape)  # the stock ``Restored`` undid the crop and pad
        for key in ("pred", "entropy", "mutual_information"):  # the maps stay on the network's grid
            self.assertEqual(tuple(np.asarray(data[key].meta["affine"]).shape), (4, 4), key)
        _check_summary(self, data["result"])

    def test_segmentation_on_the_input_grid(self):
        image = self._padded_study()
        label_file, result = DWPBundleInferTask(str(SERVED), {})({"image": str(image), "device": "cpu"})
        _check_label(self, label_file, image)
        _check_summary(self, result)


class TestApps(_Seeded):
    """The stock monaibundle sample app and ours, in process."""

    def test_stock_monaibundle_app(self):
        sample = Path(sys.prefix) / "monailabel" / "sample-apps" / "monaibundle"
        self.assertTrue((sample / "main.py").is_file(), f"MONAI Label's sample app is not at {sample}")
        app_dir = ROOT / "stock_app"
        shutil.copytree(sample, app_dir, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(SERVED, app_dir / "model" / BUNDLE)
        studies = make_studies(ROOT / "studies_stock", FILES)
        # the documented start command: --conf models dwp_finetune --conf zoo_source github
        #   --conf epistemic_model dwp_finetune (its default epistemic_dropout 0.2 goes into DWPUNet's dropout)
        conf = {"models": BUNDLE, "zoo_source": "github", "epistemic_model": BUNDLE, "epistemic_simulation_size": "4",
                "skip_trainers": "true", "sam2": "false"}
        app = app_instance(str(app_dir), str(studies), conf)
        self.assertIn(BUNDLE, app.info()["models"])
        result = app.infer({"model": BUNDLE, "image": OOD_ID, "device": "cpu"})
        _check_label(self, result["label"], studies / f"{OOD_ID}.nii.gz")
        _check_summary(self, result["params"])
        app.scoring({"method": BUNDLE, "device": "cpu", "max_workers": 1})
        datastore = app.datastore()
        scores = {i: datastore.get_image_info(i)["epistemic_entropy"] for i in datastore.get_unlabeled_images()}
        _check_scores(self, scores)

    def test_our_app(self):
        app_dir = our_app(ROOT / "our_app", SERVED)
        studies = make_studies(ROOT / "studies_ours", FILES)
        conf = {"models": BUNDLE, "epistemic_simulation_size": "8", "scoring_mc_samples": str(SCORING_MC_SAMPLES)}
        app = app_instance(str(app_dir), str(studies), conf)
        info = app.info()
        self.assertIn(BUNDLE, info["models"])
        self.assertIn(BUNDLE, info["trainers"])
        self.assertEqual(set(info["scoring"]), {"mutual_information", "epistemic"})
        self.assertTrue({"mutual_information", "epistemic", "random", "first"} <= set(info["strategies"]))
        self.assertEqual(info["models"][BUNDLE]["config"]["mc_samples"], 4)

        result = app.infer({"model": BUNDLE, "image": OOD_ID, "device": "cpu", "mc_samples": 2})
        _check_label(self, result["label"], studies / f"{OOD_ID}.nii.gz")
        _check_summary(self, result["params"])

        scores = app.scoring({"method": "mutual_information", "device": "cpu"})["scores"]
        _check_scores(self, scores)
        self.assertEqual(app.next_sample({"strategy": "mutual_information"})["id"], _ranking(scores)[0])
        app.scoring({"method": "epistemic", "device": "cpu"})
        datastore = app.datastore()
        epistemic = {i: datastore.get_image_info(i)["epistemic_entropy"] for i in datastore.get_unlabeled_images()}
        _check_scores(self, epistemic)
        self.assertEqual(app.next_sample({"strategy": "epistemic"})["id"], _ranking(epistemic)[0])

        model = app_dir / "model" / BUNDLE / "models" / "model.pt"
        before = model.stat().st_mtime_ns
        app.train({"model": BUNDLE, "max_epochs": 1, "val_split": 0.34, "multi_gpu": False, "device": "cpu"})
        self.assertNotEqual(model.stat().st_mtime_ns, before)
        rescored = app.scoring({"method": "mutual_information", "device": "cpu"})
        self.assertEqual(rescored["executed"], 3)  # a new model: every study is scored again
        self.assertTrue(all(np.isfinite(v) and v >= 0 for v in rescored["scores"].values()), rescored)

    def test_our_app_errors(self):
        app_dir = our_app(ROOT / "our_app_errors", SERVED)
        studies = ROOT / "studies_errors"
        studies.mkdir()
        with self.assertRaisesRegex(ValueError, r"--conf models names \['nope'\], which are not served bundles"):
            app_instance(str(app_dir), str(studies), {"models": "nope"})
        with self.assertRaisesRegex(ValueError, r"--conf mc_samples must be an int >= 1, got '0'"):
            app_instance(str(app_dir), str(studies) + "/", {"models": BUNDLE, "mc_samples": "0"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TestServer(unittest.TestCase):
    def test_start_server_and_infer(self):
        app_dir = our_app(ROOT / "server_app", SERVED)
        studies = make_studies(ROOT / "studies_server", FILES)
        port = _free_port()
        log = open(ROOT / "server.log", "w")
        # the documented command; the `monailabel` launcher runs `python -m monailabel.main` with $MONAILABEL_PYEXE
        cmd = [str(Path(sys.executable).parent / "monailabel"), "start_server", "--app", str(app_dir), "--studies",
               str(studies), "--host", "127.0.0.1", "--port", str(port), "--conf", "models", BUNDLE,
               "--conf", "skip_trainers", "true"]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                env=dict(os.environ, MONAILABEL_PYEXE=sys.executable))
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 120
            while True:
                try:
                    with urllib.request.urlopen(f"{base}/info/", timeout=5) as response:
                        info = json.load(response)
                    break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    if proc.poll() is not None or time.time() > deadline:
                        raise AssertionError(f"server did not start: {(ROOT / 'server.log').read_text()[-4000:]}")
                    time.sleep(1)
            self.assertIn(BUNDLE, info["models"])
            query = urllib.parse.urlencode({"image": OOD_ID, "output": "json"})
            body = urllib.parse.urlencode({"params": json.dumps({"device": "cpu"})}).encode()
            request = urllib.request.Request(f"{base}/infer/{BUNDLE}?{query}", data=body, method="POST")
            with urllib.request.urlopen(request, timeout=120) as response:
                result = json.load(response)
            _check_summary(self, result)
            self.assertEqual(result["label_names"], {"tumour": 1})
        finally:
            proc.terminate()  # stop the server by its process id
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=20)
            log.close()


if __name__ == "__main__":
    unittest.main()
