"""The bundle configs as documents: every overlay parses and every reference resolves, the JSON transform chains
are the library's chains, and each ``multi_gpu_train.json`` changes only the rank logic of its ``train.json``."""

from __future__ import annotations

import json
import re
import tempfile
import unittest
from pathlib import Path

from monai.bundle import ConfigParser
from parameterized import parameterized

from monai_dwp.data import eval_transforms, make_phantom_dataset, train_transforms

REPO = Path(__file__).resolve().parents[2]
BUNDLES = ("dwp_pretrain", "dwp_prior", "dwp_finetune")
COMBINATIONS = [(b, c) for b in BUNDLES for c in (("train",), ("train", "evaluate"), ("train", "multi_gpu_train"),
                                                     ("inference",))]
_REF = re.compile(r"[@%]([A-Za-z_][\w#]*)")


def _parser(bundle: str, *configs: str, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(REPO / "bundles" / bundle / "configs" / f"{c}.json") for c in configs])
    parser.update(overrides)
    return parser


def _strings(value, path=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{path}#{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}#{i}")
    elif isinstance(value, str):
        yield path, value


class TestOverlaysParse(unittest.TestCase):
    @parameterized.expand(COMBINATIONS)
    def test_every_reference_resolves(self, bundle, configs):
        parser = _parser(bundle, *configs)
        parser.parse(True)
        missing = [(where, ref) for where, text in _strings(parser.get()) if not text.startswith("$import")
                   for ref in _REF.findall(text) if ref not in parser]
        self.assertEqual(missing, [], f"{bundle} {configs}: references to ids that do not exist")

    @parameterized.expand(BUNDLES)
    def test_no_unused_imports(self, bundle):
        """Every ``$import`` of a config is used by some combination in which that file's imports are the ones in
        effect (an overlay with its own ``imports`` replaces the base list)."""
        used: dict[tuple[str, str], bool] = {}
        for _, configs in [c for c in COMBINATIONS if c[0] == bundle]:
            files = [REPO / "bundles" / bundle / "configs" / f"{c}.json" for c in configs]
            owner = [f for f in files if "imports" in json.loads(f.read_text())][-1].name
            merged = _parser(bundle, *configs).get()
            body = json.dumps({k: v for k, v in merged.items() if k != "imports"})
            for line in merged.get("imports", []):
                name = re.match(r"\$import ([\w.]+)(?: as (\w+))?", line)
                name = name.group(2) or name.group(1)
                hit = re.search(r"(?<![\w.])" + re.escape(name) + r"(?!\w)", body) is not None
                used[(owner, line)] = used.get((owner, line), False) or hit
        self.assertEqual([k for k, v in used.items() if not v], [])

    @parameterized.expand(BUNDLES)
    def test_no_positional_handler_slices(self, bundle):
        text = (REPO / "bundles" / bundle / "configs" / "multi_gpu_train.json").read_text()
        self.assertNotRegex(text, r"handlers\[")

    @parameterized.expand(BUNDLES)
    def test_no_python_pipelines_in_finalize(self, bundle):
        """``finalize`` holds calls of named functions (or the DDP teardown), never inline loops or comprehensions."""
        for config in ("train", "multi_gpu_train"):
            finalize = json.loads((REPO / "bundles" / bundle / "configs" / f"{config}.json").read_text()).get("finalize", [])
            for step in finalize:
                self.assertNotRegex(step, r"\bfor\b.*\bin\b|lambda", f"{bundle}/{config}: {step}")


class TestMultiGPUOverlay(unittest.TestCase):
    """``multi_gpu_train.json`` has the handlers and start-up steps of ``train.json``; it differs only by rank logic."""

    # the rank-logic rewrites an overlay may make of a train.json step
    _RANK_VARIANTS = (
        lambda s: s,
        lambda s: s + " if dist.get_rank() == 0 else None",
        lambda s: s.replace("set_determinism(seed=@seed)", "set_determinism(seed=@seed + dist.get_rank())"),
        lambda s: s.replace("@network,", "@network_def,").replace("@network)", "@network_def)"),
        lambda s: s.replace("@network,", "@network_def,") + " if dist.get_rank() == 0 else None",
    )

    @parameterized.expand(BUNDLES)
    def test_same_handlers_and_steps(self, bundle):
        train = json.loads((REPO / "bundles" / bundle / "configs" / "train.json").read_text())
        overlay = json.loads((REPO / "bundles" / bundle / "configs" / "multi_gpu_train.json").read_text())
        # handler lists are train.json's own: the overlay may not replace them (only rank-0 switches in train.json)
        self.assertFalse([k for k in overlay if k.endswith("handlers") and k != "validate#evaluator#val_handlers"])
        self.assertEqual(overlay.get("validate#evaluator#val_handlers"), "$None if dist.get_rank() > 0 else @validate#handlers")
        for section in ("initialize", "finalize"):
            steps = overlay.get(section, [])
            for step in train.get(section, []):
                self.assertTrue(any(v(step) in steps for v in self._RANK_VARIANTS),
                                f"{bundle}: train.json {section} step missing from multi_gpu_train.json: {step}")


class TestMethodSwitch(unittest.TestCase):
    """The prior of each method is a component of its own id (``priors#<method>``), visible and overridable."""

    def test_prior_per_method(self):
        from monai_dwp.losses import GaussianPrior

        parser = _parser("dwp_finetune", "train", method="gaussian_prior", prior_scale=0.2)
        prior = parser.get_parsed_content("prior")
        self.assertIsInstance(prior, GaussianPrior)
        self.assertAlmostEqual(float(prior.scale), 0.2)
        parser = _parser("dwp_finetune", "train", method="gaussian_prior", **{"priors#gaussian_prior#scale": 0.05})
        self.assertAlmostEqual(float(parser.get_parsed_content("prior").scale), 0.05)
        for method in ("random_init", "finetune", "finetune_frozen"):
            self.assertIsNone(_parser("dwp_finetune", "train", method=method).get_parsed_content("prior"), method)
        self.assertEqual(_parser("dwp_finetune", "train")["priors#dwp#_target_"], "monai_dwp.losses.DeepWeightPrior.load")

    def test_swag_prior_is_the_swag_gaussian(self):
        import torch

        from monai_dwp.handlers import load_swag

        state = {"a.weight": torch.randn(2, 1, 3, 3, 3, dtype=torch.float64)}
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "swag.pt"
            torch.save({"format": "monai_dwp.swag/1", "count": 3, "start_epoch": 1, "mean": state,
                        "sq_mean": {k: v.square() + 0.01 for k, v in state.items()}}, path)
            prior = _parser("dwp_finetune", "train", method="swag_prior", swag_ckpt=str(path), swag_scale_factor=4.0,
                            device="cpu").get_parsed_content("prior")
            mean, variance = load_swag(path)
        torch.testing.assert_close(getattr(prior, "loc::a"), mean["a.weight"])  # centred on the SWAG mean
        torch.testing.assert_close(getattr(prior, "log_scale::a").exp(), (4.0 * variance["a.weight"]).sqrt())


class TestSplitSeed(unittest.TestCase):
    """``split_seed`` draws the validation and nested training cases; the test cases never move."""

    def test_split_seed_draws_the_cases(self):
        from monai_dwp.data import decathlon_split

        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "tumour"
            make_phantom_dataset(data, disease="tumour", num_cases=8, num_test=2, spacing=6.0, progress=False)
            splits = {}
            for seed in (0, 1, 2):
                parser = _parser("dwp_finetune", "train", dataset_dir=str(data), num_train_cases=3, num_val_cases=2,
                                 split_seed=seed, seed=0)
                splits[seed] = parser.get_parsed_content("split")
                expected = decathlon_split(data, num_train_cases=3, num_val_cases=2, seed=seed)
                self.assertEqual(splits[seed], expected)
        self.assertTrue(all(splits[k]["test"] == splits[0]["test"] for k in splits))
        self.assertGreater(len({tuple(c["image"] for c in v["train"] + v["val"]) for v in splits.values()}), 1)


class TestDeclarativeChains(unittest.TestCase):
    """The Compose lists in the JSON configs are the chains of :func:`train_transforms` / :func:`eval_transforms`."""

    @classmethod
    def setUpClass(cls) -> None:
        cls._tmp = tempfile.TemporaryDirectory()
        cls.data = Path(cls._tmp.name) / "tumour"
        make_phantom_dataset(cls.data, disease="tumour", num_cases=2, num_test=1, spacing=6.0, progress=False)

    @classmethod
    def tearDownClass(cls) -> None:
        cls._tmp.cleanup()

    @staticmethod
    def _signature(compose) -> list[tuple]:
        out = []
        for t in compose.transforms:
            fields = {k: getattr(t, k) for k in ("keys", "indices", "applied_labels", "threshold", "k", "num_samples",
                                                 "spatial_size", "patch_size") if hasattr(t, k)}
            if hasattr(t, "spacing_transform"):
                fields["pixdim"] = tuple(float(v) for v in t.spacing_transform.pixdim)
            if hasattr(t, "cropper") and hasattr(t.cropper, "spatial_size"):
                fields["crop"] = tuple(t.cropper.spatial_size)
            if hasattr(t, "padder") and hasattr(t.padder, "spatial_size"):
                fields["pad"] = tuple(t.padder.spatial_size)
            out.append((type(t).__name__, repr(sorted(fields.items()))))
        return out

    @parameterized.expand([("dwp_pretrain",), ("dwp_finetune",)])
    def test_train_and_validate_chains(self, bundle):
        for rule in ("foreground", [2, 4]):
            parser = _parser(bundle, "train", dataset_dir=str(self.data), label_rule=rule)
            kwargs = dict(modality="FLAIR", label_rule=rule, spacing=(3.0, 3.0, 3.0), dataset_dir=self.data)
            self.assertEqual(self._signature(parser.get_parsed_content("train#preprocessing")),
                             self._signature(train_transforms(patch_size=(32, 32, 32), num_samples=2, **kwargs)))
            self.assertEqual(self._signature(parser.get_parsed_content("validate#preprocessing")),
                             self._signature(eval_transforms(**kwargs)))

    @parameterized.expand([("dwp_pretrain",), ("dwp_finetune",)])
    def test_inference_chain(self, bundle):
        parser = _parser(bundle, "inference", dataset_dir=str(self.data))
        chain = parser.get_parsed_content("preprocessing")
        names = [type(t).__name__ for t in chain.transforms]
        # MONAI Label's image_path set aside first (the post-processing puts it back), then the evaluation chain
        self.assertEqual(names[:2], ["CopyItemsd", "DeleteItemsd"])
        expected = eval_transforms(modality="FLAIR", label_rule=None, spacing=(3.0, 3.0, 3.0), dataset_dir=self.data,
                                   with_label=False)
        self.assertEqual(self._signature(chain)[2:], self._signature(expected))

    def test_override_by_id(self):
        """A transform of the chain is overridable by its id, as in ``--train#preprocessing#transforms#9#pixdim``."""
        parser = _parser("dwp_finetune", "train", dataset_dir=str(self.data))
        chain = parser["train#preprocessing#transforms"]
        self.assertEqual(chain[13]["_target_"], "RandCropByPosNegLabeld")  # the id bundles/dwp_finetune/docs gives
        parser["train#preprocessing#transforms#13#pos"] = 3
        crop = parser.get_parsed_content("train#preprocessing").transforms[-1]
        self.assertEqual(crop.cropper.pos_ratio, 0.75)
        parser = _parser("dwp_finetune", "train", dataset_dir=str(self.data))
        index = next(i for i, t in enumerate(chain) if t["_target_"] == "Spacingd")
        parser[f"train#preprocessing#transforms#{index}#pixdim"] = [4.0, 4.0, 4.0]
        # the id counts every item of the JSON list; the built chain leaves out the disabled ones
        spacing = next(t for t in parser.get_parsed_content("train#preprocessing").transforms
                       if type(t).__name__ == "Spacingd")
        self.assertEqual(tuple(float(v) for v in spacing.spacing_transform.pixdim), (4.0, 4.0, 4.0))
        # and a switch of the top-level keys drops a transform from the chain
        parser = _parser("dwp_finetune", "train", dataset_dir=str(self.data), modality=None, spacing=None)
        names = [type(t).__name__ for t in parser.get_parsed_content("train#preprocessing").transforms]
        self.assertNotIn("SelectModalityd", names)
        self.assertNotIn("Spacingd", names)


if __name__ == "__main__":
    unittest.main()
