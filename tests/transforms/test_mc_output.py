"""FlattenMCOutputd: MCInferer's dict output flattened to top-level keys, alone and in a SupervisedEvaluator."""

from __future__ import annotations

import math
import unittest

import torch
from ignite.engine import Events
from monai.bundle import ConfigParser
from monai.bundle.config_item import ComponentLocator
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator
from monai.handlers import MeanDice, from_engine
from monai.transforms import AsDiscreted, Compose
from torch import nn

from monai_dwp.inferers import MCInferer
from monai_dwp.networks import bayesian_modules, convert_to_bayesian
from monai_dwp.transforms import FlattenMCOutputd


def _bayes_net(out_channels: int = 2) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, out_channels, 3, padding=1))
    return convert_to_bayesian(net, init_log_scale=-1.0).eval()


class TestEvaluator(unittest.TestCase):
    def test_supervised_evaluator_with_flatten(self):
        torch.manual_seed(0)
        data = [
            {"image": torch.randn(1, 16, 16, 16), "label": (torch.rand(1, 16, 16, 16) > 0.5).float()}
            for _ in range(3)
        ]
        net = _bayes_net()
        before = {name: layer.mode for name, layer in bayesian_modules(net).items()}
        evaluator = SupervisedEvaluator(
            device=torch.device("cpu"),
            val_data_loader=DataLoader(data, batch_size=2),
            network=net,
            inferer=MCInferer(num_samples=2, roi_size=8, return_uncertainty=True, seed=0),
            postprocessing=Compose(
                [
                    FlattenMCOutputd(keys="pred"),
                    AsDiscreted(keys=["pred", "label"], argmax=(True, False), to_onehot=2),
                ]
            ),
            key_val_metric={"dice": MeanDice(output_transform=from_engine(["pred", "label"]))},
        )
        items: list[dict] = []
        evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda e: items.extend(e.state.output))
        evaluator.run()
        self.assertEqual(len(items), 3)
        for item in items:
            self.assertEqual(tuple(item["pred"].shape), (2, 16, 16, 16))
            self.assertNotIn("probs", item)
            for key in ("entropy", "expected_entropy", "mutual_information"):
                self.assertEqual(tuple(item[key].shape), (1, 16, 16, 16), key)
        self.assertTrue(math.isfinite(evaluator.state.metrics["dice"]))
        self.assertEqual({name: layer.mode for name, layer in bayesian_modules(net).items()}, before)

    def test_short_name_in_a_bundle_config(self):
        parser = ConfigParser(
            {"imports": ["$import monai_dwp.transforms"], "flatten": {"_target_": "FlattenMCOutputd", "keys": "pred"}}
        )
        self.assertIsInstance(parser.get_parsed_content("flatten"), FlattenMCOutputd)
        # unambiguous: MONAI has no component of that name
        self.assertEqual(
            ComponentLocator().get_component_module_name("FlattenMCOutputd"), "monai_dwp.transforms.mc_output"
        )


class TestFlattenMCOutputd(unittest.TestCase):
    def test_flatten_passthrough_and_errors(self):
        p, e = torch.rand(2, 4, 4), torch.rand(1, 4, 4)
        out = FlattenMCOutputd()({"image": p, "pred": {"probs": p, "entropy": e}})
        self.assertEqual(set(out), {"image", "pred", "entropy"})
        self.assertIs(out["pred"], p)
        self.assertIs(out["entropy"], e)
        self.assertIs(FlattenMCOutputd()({"pred": p})["pred"], p)  # a tensor output is left alone
        with self.assertRaisesRegex(KeyError, r"without a 'probs' entry"):
            FlattenMCOutputd()({"pred": {"entropy": e}})
        with self.assertRaisesRegex(ValueError, r"overwrite the existing key 'entropy'"):
            FlattenMCOutputd()({"entropy": e, "pred": {"probs": p, "entropy": e}})

    def test_missing_and_other_keys(self):
        p, e = torch.rand(2, 4, 4), torch.rand(1, 4, 4)
        with self.assertRaises(KeyError):
            FlattenMCOutputd()({"image": p})
        self.assertEqual(set(FlattenMCOutputd(allow_missing_keys=True)({"image": p})), {"image"})
        out = FlattenMCOutputd(keys="probs")({"probs": {"probs": p, "entropy": e}})  # any key, even "probs"
        self.assertIs(out["probs"], p)
        self.assertIs(out["entropy"], e)


if __name__ == "__main__":
    unittest.main()
