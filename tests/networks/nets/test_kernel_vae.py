from __future__ import annotations

import unittest

import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser
from parameterized import parameterized

from monai_dwp.networks.nets import KernelVAE, KernelVAEOutput
from monai_dwp.networks.nets.kernel_vae import _PointToMap, _SmallMapConv

# (constructor kwargs, kernel shape without the batch axis)
TEST_SHAPES = [
    ({}, (1, 3, 3, 3)),
    ({"latent_size": 2, "hidden_channels": (8, 16, 32)}, (1, 3, 3, 3)),
    ({"kernel_size": 5, "spatial_dims": 3, "hidden_channels": (4, 8, 16)}, (1, 5, 5, 5)),
    ({"kernel_size": 7, "spatial_dims": 2}, (1, 7, 7)),
    ({"kernel_size": 1, "latent_size": 1}, (1, 1, 1, 1)),
]

TEST_BAD_ARGS = [
    ({"latent_size": 0}, ValueError, r"latent_size must be ≥ 1, got 0"),
    ({"kernel_size": "3"}, TypeError, r"kernel_size must be an integer, got '3'"),
    ({"spatial_dims": 4}, ValueError, r"spatial_dims must be 1, 2 or 3, got 4"),
    ({"hidden_channels": (32, 64)}, ValueError, r"hidden_channels must have three entries .*\(32, 64\)"),
    ({"hidden_channels": 32}, TypeError, r"hidden_channels must be a sequence of three ints, got 32"),
    ({"hidden_channels": (32, 0, 128)}, ValueError, r"hidden_channels entry must be ≥ 1, got 0"),
    ({"log_scale_bounds": (3.0, -10.0)}, ValueError, r"log_scale_bounds must be finite with low < high"),
    ({"log_scale_bounds": None}, TypeError, r"log_scale_bounds must be two floats"),
]


def _negative_elbo(out: KernelVAEOutput, w: torch.Tensor) -> torch.Tensor:
    recon = 0.5 * ((w - out.recon_loc) * torch.exp(-out.recon_log_scale)).square() + out.recon_log_scale
    kl = 0.5 * (out.z_loc.square() + torch.exp(2 * out.z_log_scale)) - out.z_log_scale - 0.5
    return recon.flatten(1).sum(1).mean() + kl.sum(1).mean()


class TestKernelVAE(unittest.TestCase):
    @parameterized.expand(TEST_SHAPES)
    def test_shapes(self, kwargs, kernel_shape):
        vae = KernelVAE(**kwargs)
        latent = vae.latent_size
        w = torch.randn((5,) + kernel_shape)
        out = vae(w)
        self.assertIsInstance(out, KernelVAEOutput)
        self.assertEqual(out._fields, ("recon_loc", "recon_log_scale", "z_loc", "z_log_scale", "z"))
        for name in ("recon_loc", "recon_log_scale"):
            self.assertEqual(tuple(getattr(out, name).shape), (5,) + kernel_shape, name)
        for name in ("z_loc", "z_log_scale", "z"):
            self.assertEqual(tuple(getattr(out, name).shape), (5, latent), name)
        z_loc, z_log_scale = vae.encode(w)
        self.assertEqual((tuple(z_loc.shape), tuple(z_log_scale.shape)), ((5, latent), (5, latent)))
        recon_loc, recon_log_scale = vae.decode(torch.randn(3, latent))
        self.assertEqual(tuple(recon_loc.shape), (3,) + kernel_shape)
        self.assertEqual(tuple(recon_log_scale.shape), (3,) + kernel_shape)

    def test_parameter_count(self):
        vae = KernelVAE()
        self.assertEqual(sum(p.numel() for p in vae.encoder.parameters()), 66_124)
        self.assertEqual(sum(p.numel() for p in vae.decoder.parameters()), 453_794)
        self.assertEqual(sum(p.numel() for p in vae.parameters()), 519_918)

    def test_encoder_decoder_split(self):
        vae = KernelVAE()
        enc = {id(p) for p in vae.encoder.parameters()}
        dec = {id(p) for p in vae.decoder.parameters()}
        self.assertFalse(enc & dec)
        self.assertEqual(enc | dec, {id(p) for p in vae.parameters()})
        # freezing the decoder (the DWP setting) leaves the encoder trainable
        for p in vae.decoder.parameters():
            p.requires_grad_(False)
        w = torch.randn(16, 1, 3, 3, 3)
        _negative_elbo(vae(w), w).backward()
        for name, p in vae.encoder.named_parameters():
            self.assertIsNotNone(p.grad, name)
            self.assertGreater(int(torch.count_nonzero(p.grad)), 0, name)
        for name, p in vae.decoder.named_parameters():
            self.assertIsNone(p.grad, name)

    def test_gradients_reach_every_parameter_and_input(self):
        torch.manual_seed(0)
        vae = KernelVAE()
        w = torch.randn(64, 1, 3, 3, 3, requires_grad=True)
        _negative_elbo(vae(w), w).backward()
        for name, p in vae.named_parameters():
            self.assertIsNotNone(p.grad, name)
            self.assertTrue(torch.isfinite(p.grad).all(), name)
            self.assertGreater(int(torch.count_nonzero(p.grad)), 0, name)
        self.assertTrue(torch.isfinite(w.grad).all())

    def test_gradcheck_float64(self):
        torch.manual_seed(0)
        vae = KernelVAE(hidden_channels=(4, 4, 8), latent_size=2).double()
        w = torch.randn(3, 1, 3, 3, 3, dtype=torch.float64, requires_grad=True)
        self.assertTrue(torch.autograd.gradcheck(lambda x: vae.encode(x)[0], (w,)))
        z = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
        self.assertTrue(torch.autograd.gradcheck(lambda x: vae.decode(x)[0], (z,)))

    @parameterized.expand([(3, 3, 4, 6), (3, 2, 4, 6), (2, 5, 3, 2), (1, 4, 2, 3)])
    def test_small_map_conv_equals_conv(self, spatial_dims, size, in_channels, out_channels):
        layer = _SmallMapConv(spatial_dims, in_channels, out_channels, size).double()
        x = torch.randn((7, in_channels) + (size,) * spatial_dims, dtype=torch.float64)
        conv = (F.conv1d, F.conv2d, F.conv3d)[spatial_dims - 1]
        torch.testing.assert_close(layer(x), conv(x, layer.weight, layer.bias, padding=1))

    @parameterized.expand([(3, 3), (2, 5)])
    def test_point_to_map_equals_transposed_conv(self, spatial_dims, kernel_size):
        layer = _PointToMap(spatial_dims, 4, 6, kernel_size).double()
        x = torch.randn(7, 4, dtype=torch.float64)
        conv_t = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[spatial_dims - 1]
        expected = conv_t(x.view((7, 4) + (1,) * spatial_dims), layer.weight, layer.bias)  # (7, 6, k, ..., k)
        torch.testing.assert_close(layer(x), expected.flatten(2).transpose(1, 2).reshape(7, -1))

    def test_equals_layer_by_layer_convolutions(self):
        """The paper's Kernel_3D_VAE written with Conv3d / MaxPool3d / ConvTranspose3d on our parameters."""
        torch.manual_seed(0)
        vae = KernelVAE().double()
        enc, dec = vae.encoder, vae.decoder
        w = torch.randn(9, 1, 3, 3, 3, dtype=torch.float64)
        h = F.elu(F.max_pool3d(F.conv3d(w, enc.conv1.weight, enc.conv1.bias, padding=1), 2, padding=1))
        h = F.elu(F.max_pool3d(F.conv3d(h, enc.conv2.weight, enc.conv2.bias, padding=1), 2))
        h = F.elu(F.conv3d(h, enc.conv3.weight[..., None, None, None], enc.conv3.bias)).flatten(1)
        z_loc, z_log_scale = vae.encode(w)
        torch.testing.assert_close(z_loc, F.linear(h, enc.loc.weight, enc.loc.bias))
        torch.testing.assert_close(z_log_scale, F.linear(h, enc.log_scale.weight, enc.log_scale.bias).clamp(-10, 3))

        z = torch.randn(9, 6, dtype=torch.float64)
        h = F.elu(F.linear(z, dec.linear.weight, dec.linear.bias)).view(9, 128, 1, 1, 1)
        h = F.elu(F.conv_transpose3d(h, dec.expand.weight, dec.expand.bias))
        h = F.elu(F.conv_transpose3d(h, dec.mix1.weight.t()[..., None, None, None], dec.mix1.bias))
        h = F.elu(F.conv_transpose3d(h, dec.mix2.weight.t()[..., None, None, None], dec.mix2.bias))
        heads = F.conv_transpose3d(h, dec.head.weight.t()[..., None, None, None], dec.head.bias)
        recon_loc, recon_log_scale = vae.decode(z)
        torch.testing.assert_close(recon_loc, heads[:, :1])
        torch.testing.assert_close(recon_log_scale, heads[:, 1:].clamp(-10, 3))

    def test_forward_reparameterization(self):
        vae = KernelVAE()
        w = torch.randn(8, 1, 3, 3, 3)
        torch.manual_seed(1)
        out = vae(w)
        torch.manual_seed(1)
        eps = torch.randn_like(out.z_loc)
        torch.testing.assert_close(out.z, out.z_loc + torch.exp(out.z_log_scale) * eps)
        recon_loc, recon_log_scale = vae.decode(out.z)
        torch.testing.assert_close(out.recon_loc, recon_loc)
        torch.testing.assert_close(out.recon_log_scale, recon_log_scale)

    def test_heads_in_float32_under_bfloat16_autocast(self):
        """Under autocast the wide layers run in bfloat16 and the heads in float32: float32 outputs, close to the
        float32 model's (the decoder mean within bfloat16's rounding of its inputs, not rounded itself)."""
        torch.manual_seed(0)
        vae = KernelVAE()
        w = torch.randn(64, 1, 3, 3, 3)
        z = torch.randn(64, 6)
        exact = (*vae.encode(w), *vae.decode(z))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = (*vae.encode(w), *vae.decode(z))
            self.assertEqual(vae.decoder.mix1(torch.randn(2, 128)).dtype, torch.bfloat16)  # autocast is on
        for e, f in zip(exact, fast):
            self.assertEqual(f.dtype, torch.float32)
            torch.testing.assert_close(f, e, rtol=0.05, atol=0.05)
        # a float32 head on bfloat16 features: most decoder means are not bfloat16 numbers
        recon = fast[2]
        self.assertGreater((recon != recon.bfloat16().float()).float().mean().item(), 0.9)

    def test_seeded_determinism(self):
        w = torch.randn(4, 1, 3, 3, 3)
        outs = []
        for _ in range(2):
            torch.manual_seed(42)
            outs.append(KernelVAE()(w))
        for a, b in zip(*outs):
            torch.testing.assert_close(a, b, rtol=0, atol=0)

    def test_log_scale_clamping(self):
        vae = KernelVAE(log_scale_bounds=(-10.0, 3.0))
        w = torch.randn(4, 1, 3, 3, 3)
        with torch.no_grad():
            vae.decoder.head.bias[1] = 1e4
            vae.encoder.log_scale.bias.fill_(-1e4)
        out = vae(w)
        torch.testing.assert_close(out.recon_log_scale, torch.full_like(out.recon_log_scale, 3.0))
        torch.testing.assert_close(out.z_log_scale, torch.full_like(out.z_log_scale, -10.0))
        self.assertTrue(torch.isfinite(out.z).all())
        with torch.no_grad():
            vae.decoder.head.bias[1] = -1e4
        self.assertEqual(float(vae.decode(torch.zeros(2, 6))[1].detach().max()), -10.0)

    def test_sample(self):
        vae = KernelVAE(latent_size=4)
        s1 = vae.sample(10, generator=torch.Generator().manual_seed(3))
        s2 = vae.sample(10, generator=torch.Generator().manual_seed(3))
        self.assertEqual(tuple(s1.shape), (10, 1, 3, 3, 3))
        torch.testing.assert_close(s1, s2, rtol=0, atol=0)
        self.assertFalse(torch.equal(s1, vae.sample(10, generator=torch.Generator().manual_seed(4))))
        z = torch.randn(10, 4, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(s1, vae.decode(z)[0])
        self.assertEqual(vae.double().sample(2).dtype, torch.float64)

    def test_sample_with_decoder_noise(self):
        """``decoder_noise=True``: a draw of p(w) = ∫ p(w|z) p(z) dz, the decoder mean plus its scaled noise, from
        the same generator (codes first, then the noise)."""
        vae = KernelVAE(latent_size=4)
        with torch.no_grad():
            vae.decoder.head.bias[1] = -1.0  # decoder scales near e^-1, so the noise is visible
        with torch.no_grad():
            drawn = vae.sample(500, generator=torch.Generator().manual_seed(3), decoder_noise=True)
            g = torch.Generator().manual_seed(3)
            loc, log_scale = vae.decode(torch.randn(500, 4, generator=g))
            eps = torch.randn(loc.shape, generator=g)
        torch.testing.assert_close(drawn, loc + log_scale.exp() * eps)
        with torch.no_grad():  # the default: the means
            torch.testing.assert_close(vae.sample(500, generator=torch.Generator().manual_seed(3)), loc)
        # the noise adds the decoder's variance: the draws spread more than the means
        noise_var = float((2 * log_scale).exp().mean(0).sum())
        self.assertGreater(float(drawn.var(0).sum()), float(loc.var(0).sum()) + 0.5 * noise_var)
        with self.assertRaisesRegex(TypeError, "decoder_noise must be a bool, got str"):
            vae.sample(2, decoder_noise="yes")

    @parameterized.expand(TEST_BAD_ARGS)
    def test_bad_args(self, kwargs, error, pattern):
        with self.assertRaisesRegex(error, pattern):
            KernelVAE(**kwargs)

    def test_bad_inputs(self):
        vae = KernelVAE()
        with self.assertRaisesRegex(ValueError, r"w must have shape \(B, 1, 3, 3, 3\) .* got \(4, 3, 3, 3\)"):
            vae.encode(torch.randn(4, 3, 3, 3))
        with self.assertRaisesRegex(ValueError, r"w must have shape .* got \(4, 1, 5, 5, 5\); reshape"):
            vae(torch.randn(4, 1, 5, 5, 5))
        with self.assertRaisesRegex(ValueError, r"w must have shape .* got \(2, 4, 3, 3, 3\)"):
            vae.encode(torch.randn(2, 4, 3, 3, 3))
        with self.assertRaisesRegex(TypeError, r"w must be a torch.Tensor, got list"):
            vae.encode([0.0] * 27)
        with self.assertRaisesRegex(ValueError, r"z must have shape \(B, latent_size=6\) .* got \(3, 5\)"):
            vae.decode(torch.randn(3, 5))
        with self.assertRaisesRegex(ValueError, r"z must have shape .* got \(6,\)"):
            vae.decode(torch.randn(6))
        with self.assertRaisesRegex(ValueError, r"num_samples must be ≥ 1, got 0"):
            vae.sample(0)
        with self.assertRaisesRegex(TypeError, r"num_samples must be an integer, got 2.0"):
            vae.sample(2.0)

    def test_config_parser_short_name(self):
        parser = ConfigParser(
            {"imports": ["$import monai_dwp.networks.nets"], "vae": {"_target_": "KernelVAE", "latent_size": 6}}
        )
        vae = parser.get_parsed_content("vae")
        self.assertIsInstance(vae, KernelVAE)
        self.assertEqual(vae.latent_size, 6)


if __name__ == "__main__":
    unittest.main()
