"""UncertaintySummaryd: the scalar uncertainty summary that MONAI Label returns in its response JSON."""

from __future__ import annotations

import json
import math
import unittest

import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose

from monai_dwp.transforms import UNCERTAINTY_SUMMARY_KEYS, UncertaintySummaryd


def _maps():
    entropy = torch.zeros(1, 4, 4, 2)
    entropy[0, :2] = 0.6  # a quarter of the voxels above the default threshold 0.5 ... and another quarter below
    entropy[0, 2] = 0.4
    mutual_information = torch.full((1, 4, 4, 2), 0.01)
    mutual_information[0, 0, 0, 0] = 0.33
    return entropy, mutual_information


class TestUncertaintySummaryd(unittest.TestCase):
    def test_values(self):
        entropy, mi = _maps()
        out = UncertaintySummaryd()({"entropy": entropy, "mutual_information": mi})
        result = out["result"]
        self.assertEqual(set(result), set(UNCERTAINTY_SUMMARY_KEYS))
        self.assertAlmostEqual(result["mean_entropy"], (16 * 0.6 + 8 * 0.4) / 32, places=6)
        self.assertAlmostEqual(result["mean_mutual_information"], (31 * 0.01 + 0.33) / 32, places=6)
        self.assertAlmostEqual(result["uncertain_fraction"], 0.5)
        self.assertTrue(all(type(v) is float for v in result.values()))
        json.dumps(result)  # JSON-ready
        self.assertIs(out["entropy"], entropy)  # maps are kept

    def test_threshold_and_threshold_key(self):
        entropy, mi = _maps()
        data = {"entropy": entropy, "mutual_information": mi}
        self.assertAlmostEqual(UncertaintySummaryd(threshold=0.3)(data)["result"]["uncertain_fraction"], 0.75)
        self.assertAlmostEqual(UncertaintySummaryd(threshold=0.6)(data)["result"]["uncertain_fraction"], 0.0)
        self.assertAlmostEqual(UncertaintySummaryd(threshold=0.0)(data)["result"]["uncertain_fraction"], 0.75)
        by_mi = UncertaintySummaryd(threshold=0.1, threshold_key="mutual_information")(data)["result"]
        self.assertAlmostEqual(by_mi["uncertain_fraction"], 1 / 32)

    def test_merges_into_an_existing_result(self):
        entropy, mi = _maps()
        out = UncertaintySummaryd()({"entropy": entropy, "mutual_information": mi, "result": {"dice": 0.9}})
        self.assertEqual(out["result"]["dice"], 0.9)
        self.assertIn("mean_entropy", out["result"])
        # the input dict is not modified
        data = {"entropy": entropy, "mutual_information": mi, "result": {"dice": 0.9}}
        UncertaintySummaryd()(data)
        self.assertEqual(data["result"], {"dice": 0.9})

    def test_keys_prefix_and_result_key(self):
        entropy, mi = _maps()
        t = UncertaintySummaryd(entropy_key="H", mutual_information_key="MI", result_key="summary", prefix="dwp_")
        out = t({"H": entropy, "MI": mi})
        self.assertEqual(set(out["summary"]), {"dwp_" + k for k in UNCERTAINTY_SUMMARY_KEYS})
        self.assertNotIn("result", out)

    def test_array_types_and_channel_axis(self):
        entropy, mi = _maps()
        reference = UncertaintySummaryd()({"entropy": entropy, "mutual_information": mi})["result"]
        for e, m in [
            (entropy.numpy(), mi.numpy()),
            (MetaTensor(entropy, affine=torch.eye(4) * 2), MetaTensor(mi)),
            (entropy[0], mi[0]),  # no channel axis
            (entropy.double(), mi.half()),
        ]:
            result = UncertaintySummaryd()({"entropy": e, "mutual_information": m})["result"]
            for k in UNCERTAINTY_SUMMARY_KEYS:
                self.assertAlmostEqual(result[k], reference[k], places=3, msg=f"{k} {type(e).__name__}")

    def test_nan_propagates(self):
        entropy, mi = _maps()
        entropy[0, 0, 0, 0] = float("nan")
        result = UncertaintySummaryd()({"entropy": entropy, "mutual_information": mi})["result"]
        self.assertTrue(math.isnan(result["mean_entropy"]))
        self.assertTrue(math.isnan(result["uncertain_fraction"]))
        self.assertFalse(math.isnan(result["mean_mutual_information"]))

    def test_missing_maps(self):
        entropy, _ = _maps()
        with self.assertRaisesRegex(KeyError, "mutual_information"):
            UncertaintySummaryd()({"entropy": entropy})
        out = UncertaintySummaryd(allow_missing_keys=True)({"entropy": entropy, "result": {"a": 1}})
        self.assertEqual(out["result"], {"a": 1})

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, r"threshold must lie in \[0.0, inf\], got -0.1; nats, e.g. 0.5"):
            UncertaintySummaryd(threshold=-0.1)
        with self.assertRaisesRegex(ValueError, r"threshold must be finite, got inf; nats"):
            UncertaintySummaryd(threshold=float("inf"))
        with self.assertRaisesRegex(TypeError, r"threshold must be a number, got '0.5' \(str\); nats"):
            UncertaintySummaryd(threshold="0.5")
        with self.assertRaisesRegex(ValueError, r"threshold_key must be the entropy key 'entropy' or the mutual "
                                                r"information key 'mutual_information', got 'pred'"):
            UncertaintySummaryd(threshold_key="pred")
        with self.assertRaisesRegex(ValueError, "entropy_key and mutual_information_key must differ"):
            UncertaintySummaryd(entropy_key="x", mutual_information_key="x")

    def test_bad_data(self):
        entropy, mi = _maps()
        with self.assertRaisesRegex(TypeError, r"data\['result'\] must be a dict .* got list"):
            UncertaintySummaryd()({"entropy": entropy, "mutual_information": mi, "result": [1]})
        with self.assertRaisesRegex(TypeError, r"data\['entropy'\] must be an uncertainty map .* got list"):
            UncertaintySummaryd()({"entropy": [0.1], "mutual_information": mi})
        with self.assertRaisesRegex(ValueError, r"data\['entropy'\] is empty"):
            UncertaintySummaryd()({"entropy": torch.zeros(1, 0, 3), "mutual_information": mi})

    def test_in_a_compose_and_a_bundle_config(self):
        entropy, mi = _maps()
        out = Compose([UncertaintySummaryd(threshold=0.3)])({"entropy": entropy, "mutual_information": mi})
        self.assertAlmostEqual(out["result"]["uncertain_fraction"], 0.75)
        parser = ConfigParser(
            {
                "imports": ["$import monai_dwp.transforms"],
                "t": {"_target_": "UncertaintySummaryd", "threshold": 0.3},
            }
        )
        self.assertIsInstance(parser.get_parsed_content("t"), UncertaintySummaryd)


if __name__ == "__main__":
    unittest.main()
