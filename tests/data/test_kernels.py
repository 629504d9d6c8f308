from __future__ import annotations

import tempfile
import unittest
from pathlib import Path

import torch
from parameterized import parameterized
from torch import nn

from monai_dwp.data.kernels import KernelDataset, collect_kernels, filter_kernels, group_layers, load_state_dict
from monai_dwp.networks import DWPUNet, convert_to_bayesian


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv3d(1, 2, 3), nn.Conv3d(2, 3, 3), nn.Conv3d(3, 1, 1))


class TestCollectKernels(unittest.TestCase):
    def test_layers_shapes_and_concatenation(self):
        a, b = _net(0), _net(1)
        kernels = collect_kernels([a, b])
        self.assertEqual(list(kernels), ["0", "1"])  # the 1x1x1 convolution is skipped
        self.assertEqual(tuple(kernels["0"].shape), (4, 3, 3, 3))
        self.assertEqual(tuple(kernels["1"].shape), (12, 3, 3, 3))
        torch.testing.assert_close(kernels["1"][:6], a[1].weight.detach().flatten(0, 1))
        torch.testing.assert_close(kernels["1"][6:], b[1].weight.detach().flatten(0, 1))

    def test_checkpoint_formats_and_bayesian_loc(self):
        net = _net(0)
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(net.state_dict(), Path(tmp) / "bare.pt")
            torch.save({"model": {"module." + k: v for k, v in net.state_dict().items()}}, Path(tmp) / "ddp.pt")
            for name in ("bare.pt", "ddp.pt"):
                torch.testing.assert_close(collect_kernels(Path(tmp) / name)["0"], net[0].weight.detach().flatten(0, 1))
        bayes = convert_to_bayesian(net)
        torch.testing.assert_close(collect_kernels(bayes)["1"], net[1].weight.detach().flatten(0, 1))

    def test_dwpunet_has_25_layers_of_33808_kernels(self):
        kernels = collect_kernels(DWPUNet())
        self.assertEqual(len(kernels), 25)
        self.assertEqual(sum(k.shape[0] for k in kernels.values()), 33_808)

    def test_errors(self):
        with self.assertRaisesRegex(FileNotFoundError, r"source checkpoint 'nope.pt' does not exist; .*dwp_pretrain"):
            collect_kernels("nope.pt")
        with self.assertRaisesRegex(ValueError, r"no convolution with kernel size \(5, 5, 5\)"):
            collect_kernels(_net(0), kernel_size=5)
        with self.assertRaisesRegex(ValueError, "sources is empty"):
            collect_kernels([])
        with self.assertRaisesRegex(ValueError, "holds no state dict of tensors"):
            load_state_dict({"epoch": 3})


class TestFilterAndGroup(unittest.TestCase):
    def test_filter_by_norm(self):
        kernels = {"a": torch.stack([torch.full((3, 3, 3), 1e-4), torch.ones(3, 3, 3)])}
        kept = filter_kernels(kernels, min_norm=1e-2)
        self.assertEqual(kept["a"].shape[0], 1)
        with self.assertRaisesRegex(ValueError, r"min_norm must lie in \[0.0, inf\], got -1.0"):
            filter_kernels(kernels, min_norm=-1)

    @parameterized.expand([(19, 7, [3, 3, 3, 2, 3, 3, 2]), (7, 7, [1] * 7), (5, 1, [5])])
    def test_group_layers_consecutive(self, num_layers, num_groups, sizes):
        groups = group_layers([f"l{i}" for i in range(num_layers)], num_groups)
        values = list(groups.values())
        self.assertEqual(values, sorted(values))
        self.assertEqual([values.count(g) for g in range(num_groups)], sizes)

    def test_group_layers_errors_and_per_layer(self):
        self.assertEqual(group_layers(["a", "b"], None), {"a": 0, "b": 1})
        with self.assertRaisesRegex(ValueError, r"num_groups must be ≤ 2, got 3; at most the number of layers, 2"):
            group_layers(["a", "b"], 3)
        with self.assertRaisesRegex(ValueError, "layer_names is empty"):
            group_layers([], 1)


class TestKernelDataset(unittest.TestCase):
    def test_normalised_to_unit_rms_per_layer(self):
        kernels = {"a": torch.randn(10, 3, 3, 3) * 0.05, "b": torch.randn(6, 3, 3, 3) * 0.2, "c": torch.randn(4, 3, 3, 3)}
        kernels["empty"] = torch.empty(0, 3, 3, 3)
        ds = KernelDataset(kernels, {"a": 0, "b": 0, "c": 1, "empty": 1})
        self.assertEqual(len(ds), 20)
        for name in ("a", "b", "c"):
            self.assertAlmostEqual(ds.layer_scales[name], kernels[name].square().mean().sqrt().item(), places=6)
        a = ds.kernels[:10, 0]
        b = ds.kernels[10:16, 0]
        self.assertAlmostEqual(a.square().mean().sqrt().item(), 1.0, places=5)
        self.assertAlmostEqual(b.square().mean().sqrt().item(), 1.0, places=5)
        torch.testing.assert_close(ds[11]["image"][0] * ds.layer_scales["b"], kernels["b"][1])
        self.assertEqual(ds.layer_scales["empty"], ds.scales[1])  # every kernel filtered: the group's scale
        with self.assertRaisesRegex(ValueError, "scale_by must be 'layer' or 'group', got 'kernel'"):
            KernelDataset(kernels, {"a": 0}, scale_by="kernel")

    def test_normalised_to_unit_rms_per_group(self):
        kernels = {"a": torch.randn(10, 3, 3, 3) * 0.05, "b": torch.randn(6, 3, 3, 3) * 0.2, "c": torch.randn(4, 3, 3, 3)}
        ds = KernelDataset(kernels, {"a": 0, "b": 0, "c": 1}, scale_by="group")
        self.assertEqual(ds.layer_scales, {"a": ds.scales[0], "b": ds.scales[0], "c": ds.scales[1]})
        self.assertEqual(len(ds), 20)
        self.assertEqual(ds.num_groups, 2)
        item = ds[0]
        self.assertEqual(set(item), {"image", "label", "group"})
        self.assertEqual(tuple(item["image"].shape), (1, 3, 3, 3))
        for g in range(2):
            self.assertAlmostEqual(ds.group_kernels(g).square().mean().sqrt().item(), 1.0, places=5)
        torch.testing.assert_close(ds[0]["image"][0] * ds.scales[0], kernels["a"][0])
        torch.testing.assert_close(ds[19]["image"][0] * ds.scales[1], kernels["c"][3])
        self.assertEqual(ds[19]["group"].item(), 1)

    def test_errors(self):
        kernels = {"a": torch.randn(10, 3, 3, 3)}
        with self.assertRaisesRegex(ValueError, r"group 0 has no kernels \(layers \['x'\]\)"):
            KernelDataset(kernels, {"x": 0, "a": 1})
        with self.assertRaisesRegex(ValueError, "layer_groups is empty"):
            KernelDataset(kernels, {})
        with self.assertRaisesRegex(ValueError, "the scale of group 0 must be a finite float > 0, got -1.0"):
            KernelDataset(kernels, {"a": 0}, scales=[-1.0])


if __name__ == "__main__":
    unittest.main()
