"""Every public component of monai_dwp resolves by its short name in a MONAI bundle config, unambiguously."""

from __future__ import annotations

import importlib
import inspect
import unittest

from monai.bundle import ConfigParser
from monai.bundle.config_item import ComponentLocator

SUBPACKAGES = [
    "monai_dwp.networks",
    "monai_dwp.networks.layers",
    "monai_dwp.networks.nets",
    "monai_dwp.losses",
    "monai_dwp.metrics",
    "monai_dwp.data",
    "monai_dwp.handlers",
    "monai_dwp.inferers",
    "monai_dwp.visualize",
    "monai_dwp.transfer",
    "monai_dwp.bundle_utils",
    "monai_dwp.utils",
    "monai_dwp.transforms",
]


def _public_components() -> dict[str, object]:
    out = {}
    for name in SUBPACKAGES:
        module = importlib.import_module(name)
        for attr in module.__all__:
            obj = getattr(module, attr)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                out[attr] = obj
    return out


class TestRegistration(unittest.TestCase):
    def test_all_exports_exist(self):
        for name in SUBPACKAGES:
            module = importlib.import_module(name)
            for attr in module.__all__:
                self.assertTrue(hasattr(module, attr), f"{name}.{attr}")

    def test_short_names_resolve_to_our_component_only(self):
        components = _public_components()
        self.assertIn("DeepWeightPrior", components)
        locator = ComponentLocator()
        for short, obj in components.items():
            if short.isupper():  # constants such as STOCHASTIC_MODES are not components
                continue
            found = locator.get_component_module_name(short)
            self.assertIsNotNone(found, short)
            modules = [found] if isinstance(found, str) else found
            self.assertEqual(len(modules), 1, f"{short} is ambiguous: {modules}")
            self.assertTrue(modules[0].startswith("monai_dwp."), f"{short} resolves to {modules}")

    def test_short_name_in_a_bundle_config(self):
        parser = ConfigParser(
            {"imports": ["$import monai_dwp.losses"], "prior": {"_target_": "GaussianPrior", "scale": 0.5}}
        )
        self.assertEqual(type(parser.get_parsed_content("prior")).__module__, "monai_dwp.losses.gaussian_prior")


if __name__ == "__main__":
    unittest.main()
