from __future__ import annotations

import csv
import logging
import math
import tempfile
import unittest
from pathlib import Path

import torch
from torch.utils.data import Dataset, random_split

from monai_dwp.data import KernelDataset
from monai_dwp.losses import KernelVAELoss
from monai_dwp.metrics import (
    kernel_prior_report,
    kernels_by_group,
    participation_ratio,
    prior_report,
    write_kernel_prior_report,
)
from monai_dwp.networks import KernelVAE, KernelVAEGroup

D = 27
SMALL = {"latent_size": 2, "hidden_channels": (8, 16, 32)}


def _gaussian_kernels(cov: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` kernels ``(n, 3, 3, 3)`` from ``N(0, cov)``."""
    white = torch.randn(n, D, generator=generator, dtype=torch.float64)
    return (white @ torch.linalg.cholesky(cov).T).float().reshape(n, 3, 3, 3)


def _low_rank_cov(generator: torch.Generator) -> torch.Tensor:
    basis = torch.randn(D, 3, generator=generator, dtype=torch.float64) * 1.5
    return basis @ basis.T + 0.05 * torch.eye(D, dtype=torch.float64)


def _manifold_kernels(n: int, generator: torch.Generator, mixing: torch.Tensor, noise: float = 0.05) -> torch.Tensor:
    """Kernels on a 2D nonlinear family ``tanh(A z)`` plus noise, ``(n, 27)``."""
    z = torch.randn(n, 2, generator=generator)
    return torch.tanh(z @ mixing.T) + noise * torch.randn(n, D, generator=generator)


def _trained_vae(train: torch.Tensor, steps: int = 400) -> KernelVAE:
    torch.manual_seed(0)
    vae = KernelVAE(**SMALL)
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-2)
    loss_fn = KernelVAELoss()
    batch_gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = train[torch.randint(0, train.shape[0], (256,), generator=batch_gen)]
        optimizer.zero_grad()
        loss_fn(vae(batch), batch).backward()
        optimizer.step()
    return vae


class TestGaussianBaselines(unittest.TestCase):
    def test_non_isotropic_kernels(self):
        gen = torch.Generator().manual_seed(0)
        cov = _low_rank_cov(gen)
        train, heldout = _gaussian_kernels(cov, 20000, gen), _gaussian_kernels(cov, 20000, gen)
        torch.manual_seed(0)
        row = kernel_prior_report([KernelVAE(**SMALL)], [train], [heldout], num_z_samples=1)[0]
        expected = 0.5 * (D * math.log(2 * math.pi) + float(torch.logdet(cov)) + D)
        self.assertAlmostEqual(row["full_gauss_nll"], expected, delta=0.1)
        self.assertLess(row["full_gauss_nll"], row["iso_gauss_nll"] - 10.0)
        self.assertLess(row["spectrum_flatness"], 0.5)
        eig = torch.tensor(row["eigvals"])
        self.assertEqual(eig.shape, (D,))
        self.assertTrue(bool((eig[:-1] >= eig[1:]).all()))  # descending
        torch.testing.assert_close(eig, torch.linalg.eigvalsh(cov).flip(0).float(), rtol=0.05, atol=0.01)
        self.assertEqual((row["num_train"], row["num_heldout"]), (20000, 20000))

    def test_isotropic_kernels(self):
        gen = torch.Generator().manual_seed(1)
        cov = 0.49 * torch.eye(D, dtype=torch.float64)
        train, heldout = _gaussian_kernels(cov, 20000, gen), _gaussian_kernels(cov, 20000, gen)
        row = kernel_prior_report([KernelVAE(**SMALL)], {0: train}, {0: heldout.unsqueeze(1)}, num_z_samples=1)[0]
        self.assertAlmostEqual(row["spectrum_flatness"], 1.0, delta=0.02)
        self.assertAlmostEqual(row["full_gauss_nll"], row["iso_gauss_nll"], delta=0.1)
        expected_iso = 0.5 * D * (math.log(2 * math.pi * 0.49) + 1)
        self.assertAlmostEqual(row["iso_gauss_nll"], expected_iso, delta=0.1)


class TestSampleSpread(unittest.TestCase):
    def test_participation_ratio(self):
        gen = torch.Generator().manual_seed(0)
        iso = _gaussian_kernels(torch.eye(D, dtype=torch.float64), 20000, gen)
        self.assertAlmostEqual(participation_ratio(iso), D, delta=0.5)  # isotropic: every direction
        line = torch.randn(500, 1, generator=gen) * torch.randn(1, D, generator=gen)
        self.assertAlmostEqual(participation_ratio(line), 1.0, places=6)  # one direction
        # three equal directions (orthonormal basis, equal variances): exactly 3
        basis = torch.linalg.qr(torch.randn(D, 3, generator=gen, dtype=torch.float64))[0]
        coords = torch.randn(20000, 3, generator=gen, dtype=torch.float64)
        self.assertAlmostEqual(participation_ratio(coords @ basis.T), 3.0, delta=0.05)
        with self.assertRaisesRegex(ValueError, "needs at least 2 kernels, got 1"):
            participation_ratio(torch.zeros(1, 3, 3, 3))
        with self.assertRaisesRegex(ValueError, "the 4 kernels have no variance"):
            participation_ratio(torch.ones(4, 3, 3, 3))

    def test_report_rows_measure_the_draws(self):
        """The decoder means of an untrained VAE (decoder noise e^0 = 1 per tap) hardly vary, its prior samples are
        nearly isotropic: the columns tell the two apart, against the kernels' own spread."""
        gen = torch.Generator().manual_seed(2)
        cov = _low_rank_cov(gen)
        train, heldout = _gaussian_kernels(cov, 4000, gen), _gaussian_kernels(cov, 500, gen)
        torch.manual_seed(0)
        row = kernel_prior_report([KernelVAE(**SMALL)], [train], [heldout], num_z_samples=1)[0]
        self.assertAlmostEqual(row["pr_kernels"], participation_ratio(train), places=6)
        self.assertGreater(row["pr_prior_samples"], 20.0)
        self.assertLess(row["pr_kernels"], 10.0)
        self.assertGreater(row["rms_prior_samples"], row["rms_decoder_means"])
        for key in ("pr_kernels", "pr_decoder_means", "pr_prior_samples"):
            self.assertTrue(1.0 <= row[key] <= D + 1e-6, (key, row[key]))


class TestVAEScores(unittest.TestCase):
    def test_vae_nll_is_kernel_vae_loss(self):
        torch.manual_seed(0)
        vae = KernelVAE(**SMALL)
        kernels = torch.randn(50, 1, 3, 3, 3)
        torch.manual_seed(123)
        out = vae(kernels)
        loss = KernelVAELoss()(out, kernels)
        row = kernel_prior_report([vae], [torch.randn(10, 3, 3, 3)], [kernels], num_z_samples=1, seed=123)[0]
        self.assertAlmostEqual(row["vae_nll"], loss.item(), places=4)
        kl = KernelVAELoss(reduction="none")
        kl(out, kernels)
        self.assertAlmostEqual(row["latent_kl"], kl.last_terms["kl"].item(), places=4)
        self.assertAlmostEqual(row["vae_recon_nll"], kl.last_terms["nll"].item(), places=4)
        # more draws: the same bound on average, and the importance-weighted bound is tighter
        row8 = kernel_prior_report([vae], [torch.randn(10, 3, 3, 3)], [kernels], num_z_samples=8, batch_size=16)[0]
        self.assertLess(row8["vae_nll_iw"], row8["vae_nll"])
        self.assertAlmostEqual(row8["latent_kl"], row["latent_kl"], places=4)  # analytic, no draws
        self.assertTrue(vae.training)  # train mode restored

    def test_trained_vae_beats_gaussians_untrained_does_not(self):
        gen = torch.Generator().manual_seed(1)
        mixing = torch.randn(D, 2, generator=gen) * 1.5
        train, heldout = _manifold_kernels(4000, gen, mixing), _manifold_kernels(2000, gen, mixing)
        scale = train.square().mean().sqrt()  # normalised scale: unit RMS, as KernelDataset does
        train, heldout = (train / scale).reshape(-1, 1, 3, 3, 3), (heldout / scale).reshape(-1, 1, 3, 3, 3)
        torch.manual_seed(0)
        untrained = KernelVAE(**SMALL)
        vaes = KernelVAEGroup(2, **SMALL)
        vaes.vaes[0] = _trained_vae(train)
        vaes.vaes[1] = untrained
        rows = kernel_prior_report(vaes, [train, train], [heldout, heldout], num_z_samples=4)
        trained_row, untrained_row = rows
        print(
            "\nsynthetic manifold (nats/kernel): trained VAE -ELBO {vae_nll:.2f} IWAE {vae_nll_iw:.2f} | iso "
            "{iso_gauss_nll:.2f} | full {full_gauss_nll:.2f} | KL {latent_kl:.2f} active {active_units} | "
            "flatness {spectrum_flatness:.3f}".format(**trained_row)
        )
        print("untrained VAE -ELBO {vae_nll:.2f}, KL {latent_kl:.3f}".format(**untrained_row))
        self.assertTrue(trained_row["beats_iso"])
        self.assertTrue(trained_row["beats_full"])
        self.assertGreater(trained_row["gain_over_full"], 2.0)
        self.assertEqual(trained_row["active_units"], 2)
        self.assertFalse(untrained_row["beats_full"])
        self.assertEqual(untrained_row["full_gauss_nll"], trained_row["full_gauss_nll"])
        with tempfile.TemporaryDirectory() as tmp:
            with self.assertLogs("monai_dwp.metrics", level="WARNING") as logs:
                write_kernel_prior_report(rows, tmp)
        self.assertEqual(len(logs.records), 1)
        message = logs.records[0].getMessage()
        self.assertIn("group 1:", message)
        self.assertIn(f"{untrained_row['vae_nll']:.3f}", message)
        self.assertIn(f"{untrained_row['full_gauss_nll']:.3f}", message)
        self.assertIn("too few epochs", message)
        with tempfile.TemporaryDirectory() as tmp:
            with self.assertLogs("monai_dwp.metrics", level="INFO") as logs:
                write_kernel_prior_report(rows[:1], tmp)
        self.assertEqual([r.levelno for r in logs.records], [logging.INFO])
        self.assertIn("beats the isotropic and the full-covariance Gaussian in all 1 groups", logs.output[0])


class TestReportFilesAndEntryPoint(unittest.TestCase):
    def _dataset(self) -> KernelDataset:
        gen = torch.Generator().manual_seed(2)
        kernels = {f"layer{i}": torch.randn(60 + 10 * i, 3, 3, 3, generator=gen) * (i + 1) for i in range(3)}
        return KernelDataset(kernels, {"layer0": 0, "layer1": 0, "layer2": 1})

    def test_kernels_by_group_matches_items(self):
        dataset = self._dataset()
        train, heldout = random_split(dataset, [0.8, 0.2], generator=torch.Generator().manual_seed(0))
        for part in (train, heldout, dataset):
            fast = kernels_by_group(part, 2)
            items = [part[i] for i in range(len(part))]
            for g in range(2):
                expected = torch.stack([it["image"] for it in items if int(it["group"]) == g]).squeeze(1)
                torch.testing.assert_close(fast[g], expected)

        class ItemsOnly(Dataset):  # the item contract only, normalised in __getitem__ (no usable .kernels)
            def __init__(self, base):
                self.kernels, self.groups, self.base = base.kernels * 5.0, base.groups, base

            def __len__(self):
                return len(self.base)

            def __getitem__(self, i):
                item = self.base[i]
                return {"image": item["image"] * 2.0, "group": item["group"]}

        wrapped = ItemsOnly(dataset)
        slow = kernels_by_group(random_split(wrapped, [0.5, 0.5], generator=torch.Generator().manual_seed(0))[1])
        self.assertEqual(sorted(slow), [0, 1])
        self.assertEqual(sum(t.shape[0] for t in slow.values()), len(dataset) // 2)
        self.assertTrue(all(t.shape[1:] == (3, 3, 3) for t in slow.values()))
        full = kernels_by_group(wrapped)
        torch.testing.assert_close(full[1], 2.0 * dataset.kernels[dataset.groups == 1].squeeze(1))

    def test_prior_report_writes_files(self):
        dataset = self._dataset()
        split = random_split(dataset, [0.75, 0.25], generator=torch.Generator().manual_seed(0))
        torch.manual_seed(0)
        network = KernelVAEGroup(2, **SMALL)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "report"
            with self.assertLogs("monai_dwp.metrics", level="WARNING"):
                rows = prior_report(network, split, out, 2, num_z_samples=2)
            self.assertEqual([r["group"] for r in rows], [0, 1])
            self.assertEqual(sum(r["num_train"] + r["num_heldout"] for r in rows), len(dataset))
            names = sorted(p.name for p in out.iterdir())
            self.assertEqual(names, ["prior_report.csv", "prior_report.md", "prior_report.png"])
            table = [line for line in (out / "prior_report.md").read_text().splitlines() if line.startswith("| ")]
            self.assertEqual(len(table), 1 + len(rows))  # header + one row per group
            self.assertIn("full-cov Gaussian", table[0])
            self.assertIn("effective dims: kernels / decoder means / prior samples", table[0])
            self.assertRegex(table[1], r"\| [0-9.]+ / [0-9.]+ / [0-9.]+ \| [0-9.]+ / [0-9.]+ \|$")
            self.assertTrue(table[1].startswith("| 0 | "))
            png = (out / "prior_report.png").read_bytes()
            self.assertGreater(len(png), 1000)
            self.assertEqual(png[:8], b"\x89PNG\r\n\x1a\n")
            with open(out / "prior_report.csv", newline="") as f:
                csv_rows = list(csv.DictReader(f))
            self.assertEqual(len(csv_rows), 2)
            self.assertAlmostEqual(float(csv_rows[1]["full_gauss_nll"]), rows[1]["full_gauss_nll"], places=6)
            self.assertEqual(len(csv_rows[0]["eigvals"].split(";")), D)
            self.assertEqual([p.name for p in out.glob(".*")], [])  # no temporary files left


class TestBadInputs(unittest.TestCase):
    def setUp(self):
        torch.manual_seed(0)
        self.vaes = [KernelVAE(**SMALL), KernelVAE(**SMALL)]
        self.good = [torch.randn(20, 3, 3, 3), torch.randn(20, 3, 3, 3)]

    def test_errors(self):
        shape_msg = r"heldout_kernels\[1\] must have shape \(K, 3, 3, 3\) or \(K, 1, 3, 3, 3\).*got \(20, 27\)"
        with self.assertRaisesRegex(ValueError, shape_msg):
            kernel_prior_report(self.vaes, self.good, [self.good[0], torch.randn(20, 27)])
        with self.assertRaisesRegex(ValueError, r"train_kernels\[0\] must have shape .* got \(20, 5, 5, 5\)"):
            kernel_prior_report(self.vaes, [torch.randn(20, 5, 5, 5), self.good[1]], self.good)
        empty_msg = r"heldout_kernels\[1\] has 0 kernels, at least 1 needed; group 1 is empty"
        with self.assertRaisesRegex(ValueError, empty_msg):
            kernel_prior_report(self.vaes, self.good, {0: self.good[0], 1: torch.empty(0, 3, 3, 3)})
        with self.assertRaisesRegex(ValueError, r"train_kernels has kernels for groups \[0\] but there are 2 VAEs"):
            kernel_prior_report(self.vaes, self.good[:1], self.good)
        with self.assertRaisesRegex(ValueError, r"heldout_kernels has kernels for groups \[0, 1, 2\] but there are 2"):
            kernel_prior_report(self.vaes, self.good, self.good + [self.good[0]])
        with self.assertRaisesRegex(TypeError, r"train_kernels must map each group to its kernels .* single tensor"):
            kernel_prior_report(self.vaes, self.good[0], self.good)
        with self.assertRaisesRegex(TypeError, r"vaes\[1\] must be a KernelVAE, got Linear"):
            kernel_prior_report([self.vaes[0], torch.nn.Linear(2, 2)], self.good, self.good)
        with self.assertRaisesRegex(ValueError, r"num_z_samples must be ≥ 1, got 0"):
            kernel_prior_report(self.vaes, self.good, self.good, num_z_samples=0)
        with self.assertRaisesRegex(ValueError, r"train_kernels\[0\] holds NaN"):
            kernel_prior_report(self.vaes, [self.good[0] * float("nan"), self.good[1]], self.good)
        with self.assertRaisesRegex(ValueError, r"train kernels of group 1 have zero variance"):
            kernel_prior_report(self.vaes, [self.good[0], torch.zeros(20, 3, 3, 3)], self.good)
        with self.assertRaisesRegex(ValueError, r"rows is empty"):
            write_kernel_prior_report([], ".")
        with self.assertRaisesRegex(ValueError, r"rows\[0\] lacks the keys \['num_train'"):
            write_kernel_prior_report([{"group": 0}], ".")
        network = KernelVAEGroup(2, **SMALL)
        with self.assertRaisesRegex(ValueError, r"num_groups is 3 but network has 2 VAEs"):
            prior_report(network, [None, None], ".", 3)
        with self.assertRaisesRegex(ValueError, r"kernel_split must have two parts \[train, held-out\], got 1"):
            prior_report(network, [None], ".")
        dataset = KernelDataset({"a": torch.randn(10, 3, 3, 3)}, {"a": 0})
        with self.assertRaisesRegex(ValueError, r"train_kernels\[1\] has 0 kernels, at least 2 needed; group 1 is"):
            prior_report(network, [dataset, dataset], ".")  # a one-group dataset for a two-group prior
        with self.assertRaisesRegex(ValueError, r"group indices in \[0, 1\], outside \[0, num_groups=1\)"):
            two = {"a": torch.randn(4, 3, 3, 3), "b": torch.randn(4, 3, 3, 3)}
            kernels_by_group(KernelDataset(two, {"a": 0, "b": 1}), 1)


if __name__ == "__main__":
    unittest.main()
