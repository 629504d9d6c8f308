from __future__ import annotations

import math
import tempfile
import unittest
from pathlib import Path

import torch
from torch.distributions import Normal, kl_divergence

from monai_dwp.handlers import SWAG_FORMAT
from monai_dwp.losses import DeepWeightPrior, ELBOLoss, GaussianPrior
from monai_dwp.networks import DWPUNet, KernelVAE, bayesian_modules
from monai_dwp.transfer import (ENCODER_PREFIXES, METHODS, check_handoffs, is_bayesian_method, make_loss,
                                make_lr_scheduler, make_prior, parameter_groups, prepare_network, trainable_parameters)

SMALL = {"channels": (4, 4, 8, 8)}


def _prior(net: torch.nn.Module) -> DeepWeightPrior:
    names = [n for n, m in net.named_modules() if isinstance(m, torch.nn.Conv3d) and m.kernel_size == (3, 3, 3)]
    if not names:
        names = [n for n, m in net.named_modules() if hasattr(m, "log_scale")]
    torch.manual_seed(0)
    return DeepWeightPrior([KernelVAE(latent_size=2, hidden_channels=(4, 8, 16))], [0.1], {n: 0 for n in names})


class TestTransfer(unittest.TestCase):
    def test_methods(self):
        self.assertEqual([m for m in METHODS if is_bayesian_method(m)], ["dwp", "gaussian_prior", "source_gaussian", "swag_prior"])
        with self.assertRaisesRegex(ValueError, r"method must be one of .* got 'bayes'; e.g. --method dwp"):
            is_bayesian_method("bayes")

    def test_check_handoffs(self):
        with tempfile.TemporaryDirectory() as tmp:
            prior = Path(tmp) / "prior.pt"
            prior.write_bytes(b"x")
            self.assertEqual(check_handoffs("dwp", prior_ckpt=prior, source_ckpt=None), {"prior_ckpt": str(prior)})
            self.assertEqual(check_handoffs("gaussian_prior", prior_ckpt=None, source_ckpt=None), {})
            with self.assertRaisesRegex(FileNotFoundError, r"source_ckpt file '.*nope.pt' does not exist; make it first "
                                                           r"with `python -m monai.bundle run --config_file "
                                                           r"bundles/dwp_pretrain/configs/train.json --seed 0`"):
                check_handoffs("finetune_frozen", prior_ckpt=prior, source_ckpt=Path(tmp) / "nope.pt")
            with self.assertRaisesRegex(ValueError, r"method must be one of"):
                check_handoffs("bayes")

    def test_finetune_frozen_loads_and_freezes_the_encoder(self):
        source = DWPUNet(**SMALL)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.pt"
            torch.save(source.state_dict(), path)
            net = prepare_network(DWPUNet(**SMALL), "finetune_frozen", source_ckpt=path)
        for (name, p), q in zip(net.named_parameters(), source.parameters()):
            torch.testing.assert_close(p, q)
            self.assertEqual(p.requires_grad, not name.startswith(ENCODER_PREFIXES), name)
        self.assertTrue(all(p.requires_grad for p in trainable_parameters(net)))

    def test_source_gaussian_is_centred_on_the_source_network(self):
        source = DWPUNet(**SMALL)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.pt"
            torch.save(source.state_dict(), path)
            self.assertEqual(check_handoffs("source_gaussian", prior_ckpt=None, source_ckpt=path),
                             {"source_ckpt": str(path)})
            prior = make_prior("source_gaussian", source_ckpt=path, prior_scale=0.05)
            net = prepare_network(DWPUNet(bayesian=True, **SMALL), "source_gaussian", source_ckpt=path, prior=prior,
                                  init_scale_ratio=0.1)
            with self.assertRaisesRegex(ValueError, "method 'source_gaussian' needs source_ckpt"):
                make_prior("source_gaussian", prior_scale=0.05)
            with self.assertRaisesRegex(ValueError, "method source_gaussian needs source_ckpt"):
                prepare_network(DWPUNet(bayesian=True, **SMALL), "source_gaussian", prior=prior)
        self.assertIsInstance(prior, GaussianPrior)
        weights = source.state_dict()
        layers = dict(net.named_modules())
        for name in prior.layer_names:
            if hasattr(layers[name], "loc"):  # the posterior starts where the prior is centred
                torch.testing.assert_close(layers[name].loc, weights[f"{name}.weight"])
        # the KL is then the scale mismatch alone: moving a mean away from the source weight costs more
        base = prior(net)
        first = next(m for m in layers.values() if hasattr(m, "loc"))
        with torch.no_grad():
            first.loc.add_(0.1)
        self.assertGreater(prior(net).item(), base.item())
        loss = make_loss("source_gaussian", net, prior, dataset_size=5, voxels_per_case=1000)
        self.assertIsInstance(loss, ELBOLoss)

    def test_swag_prior_is_the_swag_gaussian_around_a_source_start(self):
        source = DWPUNet(**SMALL)
        state = {k: v.double() for k, v in source.state_dict().items() if v.is_floating_point()}
        with tempfile.TemporaryDirectory() as tmp:
            path, swag = Path(tmp) / "model.pt", Path(tmp) / "swag.pt"
            torch.save(source.state_dict(), path)
            # the moments of two epochs, w and w + 0.02: mean w + 0.01, variance 1e-4
            torch.save({"format": SWAG_FORMAT, "count": 2, "start_epoch": 1,
                        "mean": {k: v + 0.01 for k, v in state.items()},
                        "sq_mean": {k: (v.square() + (v + 0.02).square()) / 2 for k, v in state.items()}}, swag)
            self.assertEqual(check_handoffs("swag_prior", source_ckpt=path, swag_ckpt=swag),
                             {"source_ckpt": str(path), "swag_ckpt": str(swag)})
            with self.assertRaisesRegex(FileNotFoundError, r"swag_ckpt file 'nope.pt' does not exist; make it first "
                                                           r"with `.* --swag_start_epoch 61`"):
                check_handoffs("swag_prior", source_ckpt=path, swag_ckpt="nope.pt")
            prior = make_prior("swag_prior", swag_ckpt=swag, swag_scale_factor=4.0)
            net = prepare_network(DWPUNet(bayesian=True, **SMALL), "swag_prior", source_ckpt=path, prior=prior,
                                  init_scale_ratio=0.1)
            with self.assertRaisesRegex(ValueError, "method 'swag_prior' needs swag_ckpt"):
                make_prior("swag_prior")
            with self.assertRaisesRegex(ValueError, "method swag_prior needs source_ckpt"):
                prepare_network(DWPUNet(bayesian=True, **SMALL), "swag_prior", prior=prior)
        layers = bayesian_modules(net)
        self.assertLessEqual(set(layers), set(prior.layer_names))  # and the deterministic 1×1×1 output conv
        expected = sum(
            kl_divergence(Normal(m.loc, m.scale),
                          Normal(state[f"{n}.weight"].float() + 0.01, torch.full_like(m.loc, (4.0 * 1e-4) ** 0.5))).sum()
            for n, m in layers.items()
        )
        torch.testing.assert_close(prior(net), expected, rtol=1e-4, atol=1e-2)
        for n, m in layers.items():  # the posterior starts at the source network, not at the SWAG mean
            torch.testing.assert_close(m.loc, state[f"{n}.weight"].float())
        self.assertIsInstance(make_loss("swag_prior", net, prior, dataset_size=5, voxels_per_case=1000), ELBOLoss)

    def test_source_init_starts_a_bayesian_net_at_the_source_weights(self):
        source = DWPUNet(**SMALL)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.pt"
            torch.save(source.state_dict(), path)
            self.assertEqual(check_handoffs("dwp", source_init=True, prior_ckpt=path, source_ckpt=path),
                             {"prior_ckpt": str(path), "source_ckpt": str(path)})
            with self.assertRaisesRegex(FileNotFoundError, r"source_ckpt file '.*nope.pt' does not exist"):
                check_handoffs("gaussian_prior", source_init=True, source_ckpt=Path(tmp) / "nope.pt")
            for method in ("dwp", "gaussian_prior"):
                net = DWPUNet(bayesian=True, **SMALL)
                prior = _prior(net) if method == "dwp" else GaussianPrior()
                prepare_network(net, method, source_ckpt=path, prior=prior, source_init=True, init_scale_ratio=0.1)
                mine, modules, locs = net.state_dict(), dict(net.named_modules()), 0
                for name, value in source.state_dict().items():
                    layer, _, leaf = name.rpartition(".")
                    bayesian_weight = leaf == "weight" and hasattr(modules.get(layer), "loc")
                    locs += bayesian_weight
                    torch.testing.assert_close(mine[f"{layer}.loc" if bayesian_weight else name], value)
                self.assertEqual(locs, len([m for m in modules.values() if hasattr(m, "loc")]))
                # the posterior scales start relative to the source weights, not at the source (it has none)
                torch.testing.assert_close(net.init_conv.scale, 0.1 * net.init_conv.loc.square().mean().sqrt()
                                           .expand_as(net.init_conv.scale))
            with self.assertRaisesRegex(ValueError, r"source_init=True is for the Bayesian methods .* got method "
                                                    r"'random_init'; .* method 'finetune'"):
                prepare_network(DWPUNet(**SMALL), "random_init", source_ckpt=path, source_init=True)
            with self.assertRaisesRegex(ValueError, r"source_init=True needs source_ckpt"):
                prepare_network(DWPUNet(bayesian=True, **SMALL), "gaussian_prior", prior=GaussianPrior(),
                                source_init=True)

    def test_dwp_initialises_from_the_prior(self):
        net = DWPUNet(bayesian=True, **SMALL)
        prior = _prior(net)
        before = net.init_conv.loc.clone()
        prepare_network(net, "dwp", prior=prior)
        self.assertFalse(torch.equal(before, net.init_conv.loc))
        # dwp_init_noise: samples of the prior itself (decoder noise included), from the same generator
        noisy = DWPUNet(**SMALL)
        prepare_network(noisy, "dwp_init", prior=prior, generator=torch.Generator().manual_seed(0), dwp_init_noise=True)
        twin = DWPUNet(**SMALL)
        prior.initialize(twin, generator=torch.Generator().manual_seed(0), decoder_noise=True)
        torch.testing.assert_close(noisy.init_conv.weight, twin.init_conv.weight)
        with self.assertRaisesRegex(TypeError, "dwp_init_noise must be a bool, got 'true'"):
            prepare_network(DWPUNet(**SMALL), "dwp_init", prior=prior, dwp_init_noise="true")
        loss = make_loss("dwp", net, prior, dataset_size=5)
        self.assertIs(loss.prior, prior)
        self.assertIsNone(make_loss("random_init", DWPUNet(**SMALL), None, 5).prior)
        self.assertIsInstance(make_prior("gaussian_prior", prior_scale=0.2), GaussianPrior)
        self.assertIsNone(make_prior("finetune"))
        self.assertIsInstance(loss, ELBOLoss)

    def test_parameter_groups(self):
        net = DWPUNet(bayesian=True, **SMALL)
        (only,) = parameter_groups(net)
        self.assertEqual(len(only["params"]), len(list(net.parameters())))
        rest, scales = parameter_groups(net, log_scale_lr=0.01)
        self.assertEqual(scales["lr"], 0.01)
        self.assertEqual({id(p) for p in scales["params"]}, {id(m.log_scale) for m in net.modules() if hasattr(m, "log_scale")})
        self.assertEqual(len(rest["params"]) + len(scales["params"]), len(list(net.parameters())))
        opt = torch.optim.Adam(parameter_groups(net, log_scale_lr=0.01), lr=1e-3)
        self.assertEqual([g["lr"] for g in opt.param_groups], [1e-3, 0.01])
        with self.assertRaisesRegex(ValueError, r"log_scale_lr must lie in \(0.0, inf\], got 0.0; or None"):
            parameter_groups(net, log_scale_lr=0)

    def test_lr_schedules(self):
        net = DWPUNet(spatial_dims=3, bayesian=True, **SMALL)
        optimizer = torch.optim.Adam(parameter_groups(net, log_scale_lr=0.01), lr=1e-3)
        self.assertIsNone(make_lr_scheduler(optimizer, "constant", 10))
        scheduler = make_lr_scheduler(optimizer, "cosine", 10)
        rates = []
        for _ in range(10):
            optimizer.step()
            scheduler.step()
            rates.append([group["lr"] for group in optimizer.param_groups])
        # eta_t = eta_0 (1 + cos(pi t / T)) / 2 for each group, from its own rate, 0 at the last step
        for t, (lr, lr_scale) in enumerate(rates, start=1):
            factor = (1 + torch.cos(torch.tensor(torch.pi * t / 10)).item()) / 2
            self.assertAlmostEqual(lr, 1e-3 * factor, places=9)
            self.assertAlmostEqual(lr_scale, 1e-2 * factor, places=9)
        self.assertAlmostEqual(rates[-1][0], 0.0, places=12)
        with self.assertRaisesRegex(ValueError, r"lr_schedule must be one of \('constant', 'cosine'\), got 'linear'"):
            make_lr_scheduler(optimizer, "linear", 10)
        with self.assertRaisesRegex(ValueError, r"total_steps must be .*got 0"):
            make_lr_scheduler(optimizer, "cosine", 0)
        with self.assertRaisesRegex(ValueError, r"final_fraction must lie in \[0.0, 1.0\], got 1.5"):
            make_lr_scheduler(optimizer, "cosine", 10, final_fraction=1.5)
        with self.assertRaisesRegex(ValueError, r"anneal_steps must be .*got 11"):
            make_lr_scheduler(optimizer, "cosine", 10, anneal_steps=11)
        # the bundle key, checked at start-up
        from monai_dwp.bundle_utils import InvalidKeyError, check_keys

        with self.assertRaisesRegex(InvalidKeyError, r"^--lr_schedule must be one of constant, cosine, got 'linear'\. "
                                                     r"Fix the override or the config value of 'lr_schedule'\.$"):
            check_keys(lr_schedule="linear")

    def test_cosine_to_a_floor_then_constant(self):
        # the source runs' schedule: the cosine from eta_0 to f eta_0 over the first A steps, then f eta_0
        net = DWPUNet(spatial_dims=3, bayesian=True, **SMALL)
        optimizer = torch.optim.Adam(parameter_groups(net, log_scale_lr=0.01), lr=1e-3)
        scheduler = make_lr_scheduler(optimizer, "cosine", 10, final_fraction=0.1, anneal_steps=4)
        rates = [[group["lr"] for group in optimizer.param_groups]]
        for _ in range(10):
            optimizer.step()
            scheduler.step()
            rates.append([group["lr"] for group in optimizer.param_groups])
        for t, (lr, lr_scale) in enumerate(rates):
            factor = 0.1 + 0.9 * (1 + math.cos(math.pi * min(t, 4) / 4)) / 2
            self.assertAlmostEqual(lr, 1e-3 * factor, places=12)
            self.assertAlmostEqual(lr_scale, 1e-2 * factor, places=12)
        self.assertEqual(rates[4:], [[1e-4, 1e-3]] * 7)  # constant from the end of the cosine on
        # resumed from the optimizer's and the schedule's state half-way through the cosine: the same rates
        def fresh():
            opt = torch.optim.Adam(parameter_groups(net, log_scale_lr=0.01), lr=1e-3)
            return opt, make_lr_scheduler(opt, "cosine", 10, final_fraction=0.1, anneal_steps=4)

        first, first_schedule = fresh()
        for _ in range(2):
            first.step()
            first_schedule.step()
        resumed, resumed_schedule = fresh()
        resumed.load_state_dict(first.state_dict())
        resumed_schedule.load_state_dict(first_schedule.state_dict())
        for t in range(2, 10):
            resumed.step()
            resumed_schedule.step()
            self.assertAlmostEqual(resumed.param_groups[0]["lr"], rates[t + 1][0], places=12)
        # no annealing at all: the floor from the first step
        optimizer = torch.optim.Adam(parameter_groups(net, log_scale_lr=0.01), lr=1e-3)
        scheduler = make_lr_scheduler(optimizer, "cosine", 10, final_fraction=0.5, anneal_steps=0)
        optimizer.step()
        scheduler.step()
        self.assertAlmostEqual(optimizer.param_groups[0]["lr"], 5e-4, places=12)
        from monai_dwp.bundle_utils import InvalidKeyError, check_keys

        with self.assertRaisesRegex(InvalidKeyError, r"^--lr_final_fraction must lie in \[0.0, 1.0\], got -0.1"):
            check_keys(lr_final_fraction=-0.1)

    def test_errors_before_training(self):
        with self.assertRaisesRegex(ValueError, "method 'dwp' needs a Bayesian network; build DWPUNet with bayesian=True"):
            prepare_network(DWPUNet(**SMALL), "dwp")
        with self.assertRaisesRegex(FileNotFoundError, r"source_ckpt file 'nope.pt' does not exist; .*dwp_pretrain"):
            prepare_network(DWPUNet(**SMALL), "finetune", source_ckpt="nope.pt")
        with self.assertRaisesRegex(FileNotFoundError, r"prior_ckpt file 'nope.pt' does not exist; .*dwp_prior"):
            make_prior("dwp", "nope.pt")
        with self.assertRaisesRegex(ValueError, "method 'dwp' needs the DeepWeightPrior of the dwp_prior bundle"):
            prepare_network(DWPUNet(bayesian=True, **SMALL), "dwp", prior=GaussianPrior())
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.pt"
            torch.save(DWPUNet(in_channels=2, **SMALL).state_dict(), path)
            with self.assertRaisesRegex(ValueError, r"'init_conv.weight' has shape \(4, 2, 3, 3, 3\) in the checkpoint but "
                                                    r"\(4, 1, 3, 3, 3\) in the network"):
                prepare_network(DWPUNet(**SMALL), "finetune", source_ckpt=path)


class TestBadHandoffs(unittest.TestCase):
    """Checkpoints of the wrong kind are refused by prepare_network / make_prior before any training."""

    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.root = Path(tmp.name)

    def test_source_checkpoint_of_another_architecture(self):
        path = self.root / "vae.pt"
        torch.save(KernelVAE(latent_size=2, hidden_channels=(4, 8, 16)).state_dict(), path)
        with self.assertRaisesRegex(ValueError, r"^source_ckpt '.*vae\.pt' does not fit the network: it lacks "
                                                r"\['init_conv\.weight', .*\]\.\.\.; is it a DWPUNet checkpoint of the "
                                                r"dwp_pretrain bundle\?$"):
            prepare_network(DWPUNet(**SMALL), "finetune", source_ckpt=path)

    def test_prior_checkpoint_given_as_source(self):
        net = DWPUNet(bayesian=True, **SMALL)
        path = _prior(net).save(self.root / "dwp_prior.pt")
        pattern = (r"^source_ckpt '.*dwp_prior\.pt' is not a network checkpoint: '.*dwp_prior\.pt' holds no state "
                   r"dict of tensors, got the keys \['extra', 'format', .*\]; pass a network checkpoint "
                   r"\(models/model\.pt of a dwp_pretrain run\), not a prior or kernel file\.$")
        with self.assertRaisesRegex(ValueError, pattern):
            prepare_network(DWPUNet(**SMALL), "finetune", source_ckpt=path)

    def test_source_checkpoint_that_is_not_a_checkpoint(self):
        path = self.root / "model.pt"
        path.write_text("not a checkpoint")
        with self.assertRaisesRegex(ValueError, r"^source_ckpt '.*model\.pt' is not a network checkpoint: source "
                                                r"checkpoint '.*model\.pt' is not a readable PyTorch checkpoint, got "
                                                r"\w+: .*; pass the models/model\.pt of a dwp_pretrain run\.$"):
            prepare_network(DWPUNet(**SMALL), "finetune_frozen", source_ckpt=path)

    def test_prior_for_another_network(self):
        other = DWPUNet(bayesian=True, **SMALL)
        prior = _prior(other)
        prior.layer_groups["extra.conv"] = 0  # a layer of another network layout
        pattern = r"^the prior covers layer 'extra\.conv' \(group 0, kernel \(3, 3, 3\)\) but the network has no such"
        with self.assertRaisesRegex(ValueError, pattern):
            prepare_network(DWPUNet(bayesian=True, **SMALL), "dwp", prior=prior)

    def test_unknown_method_everywhere(self):
        for call in (lambda: make_prior("dpw"), lambda: prepare_network(DWPUNet(**SMALL), "dpw"),
                     lambda: is_bayesian_method("dpw")):
            with self.assertRaisesRegex(ValueError, r"^method must be one of \('dwp', 'gaussian_prior', "
                                                    r"'random_init', 'finetune', 'finetune_frozen', 'dwp_init', 'source_gaussian', 'swag_prior'\), got "
                                                    r"'dpw'; e\.g\. --method dwp\.$"):
                call()


if __name__ == "__main__":
    unittest.main()
