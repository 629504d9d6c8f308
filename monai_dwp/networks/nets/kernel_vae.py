"""The kernel VAE of the Deep Weight Prior ("Kernel_3D_VAE" of Kuzina et al., 2019, appendix B)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Pool
from torch import Tensor, nn

from monai_dwp.utils.validation import check_int
__all__ = ["KernelVAE", "KernelVAEOutput"]


class KernelVAEOutput(NamedTuple):
    """What :meth:`KernelVAE.forward` returns.

    Attributes:
        recon_loc: location of the reconstruction ``p(w|z)``, shape ``(B, 1, k, ..., k)``.
        recon_log_scale: log standard deviation of ``p(w|z)``, same shape, clamped to the VAE's bounds.
        z_loc: location of the encoder's ``r(z|w)``, shape ``(B, latent_size)``.
        z_log_scale: log standard deviation of ``r(z|w)``, shape ``(B, latent_size)``, clamped.
        z: the reparameterized sample ``z_loc + exp(z_log_scale) * eps`` that was decoded, ``(B, latent_size)``.
    """

    recon_loc: Tensor
    recon_log_scale: Tensor
    z_loc: Tensor
    z_log_scale: Tensor
    z: Tensor


def _tap_index(size: int, spatial_dims: int, kernel_size: int = 3) -> Tensor:
    """``idx[p_in, p_out]``: which tap of a padded ``kernel_size`` convolution links two positions of a
    ``size^spatial_dims`` map (``kernel_size^spatial_dims``, one past the last tap, where none does)."""
    axes = torch.meshgrid(*[torch.arange(size)] * spatial_dims, indexing="ij")
    grid = torch.stack(axes, -1).reshape(-1, spatial_dims)  # (P, spatial_dims), row-major positions
    offset = grid[:, None, :] - grid[None, :, :] + kernel_size // 2  # (P_in, P_out, spatial_dims)
    valid = ((offset >= 0) & (offset < kernel_size)).all(-1)
    weights = torch.tensor([kernel_size**i for i in reversed(range(spatial_dims))])
    tap = (offset.clamp(0, kernel_size - 1) * weights).sum(-1)
    return torch.where(valid, tap, torch.full_like(tap, kernel_size**spatial_dims))


def _full_precision(layer: nn.Linear, h: Tensor) -> Tensor:
    """``layer(h)`` in the layer's own dtype even under :func:`torch.autocast`: the VAE's output heads, whose
    values enter the Gaussian log-densities, where a bfloat16 reconstruction mean (8 significant bits) would bias
    ``(w - mu)^2 / sigma^2``; the wide layers before them may run in bfloat16."""
    if not torch.is_autocast_enabled(h.device.type):
        return layer(h)
    with torch.autocast(h.device.type, enabled=False):
        return layer(h.to(layer.weight.dtype))


class _SmallMapConv(nn.Module):
    """A padded 3×3×3 convolution (``nn.Conv{d}d`` parameters ``weight`` and ``bias``) on a fixed, tiny input
    map, evaluated as one dense matrix product on the flattened map.

    On a ``size^d`` map the convolution is the linear map with matrix ``D[(i, p_in), (o, p_out)] =
    weight[o, i, tap(p_in, p_out)]`` (zero where no tap links the two positions). For the kernel VAE's 3³ and
    2³ maps that matrix is small, and one GEMM over a batch of 50,000 kernels is up to 3.5 times faster
    (forward + backward) than ``conv3d``, which also multiplies the zero padding; the parameters are the
    convolution's own.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, size: int) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims](in_channels, out_channels, 3, padding=1)
        self.weight = conv.weight
        self.bias = conv.bias
        self.spatial_shape = (size,) * spatial_dims
        self.register_buffer("tap_index", _tap_index(size, spatial_dims), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_channels, *spatial_shape)`` -> ``(B, out_channels, *spatial_shape)``."""
        out_channels, in_channels = self.weight.shape[:2]
        positions = self.tap_index.shape[0]
        taps = torch.cat([self.weight.flatten(2), self.weight.new_zeros(out_channels, in_channels, 1)], 2)
        dense = taps[:, :, self.tap_index].permute(1, 2, 0, 3).reshape(in_channels * positions, -1)
        y = torch.addmm(self.bias.repeat_interleave(positions), x.flatten(1), dense)
        return y.view((x.shape[0], out_channels) + self.spatial_shape)


class _PointToMap(nn.Module):
    """A ``ConvTranspose{d}d(in_channels, out_channels, kernel_size)`` applied to a 1×…×1 map (parameters
    ``weight`` ``(in_channels, out_channels, k, ..., k)`` and ``bias`` ``(out_channels,)``), evaluated as one
    matrix product that writes the ``k^d`` output positions channel-last: ``(B, in) -> (B, k^d * out)``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        conv = Conv[Conv.CONVTRANS, spatial_dims](in_channels, out_channels, kernel_size)
        self.weight = conv.weight
        self.bias = conv.bias
        self.num_positions = kernel_size**spatial_dims

    def forward(self, x: Tensor) -> Tensor:
        in_channels, out_channels = self.weight.shape[:2]
        dense = self.weight.flatten(2).transpose(1, 2).reshape(in_channels, self.num_positions * out_channels)
        return torch.addmm(self.bias.repeat(self.num_positions), x, dense)


class _KernelEncoder(nn.Module):
    """``w -> (z_loc, raw z_log_scale)``: two 3×3×3 convs with max pooling, a 1×1×1 conv and two heads."""

    def __init__(
        self, spatial_dims: int, kernel_size: int, latent_size: int, hidden_channels: tuple[int, int, int]
    ) -> None:
        super().__init__()
        c0, c1, c2 = hidden_channels
        self.conv1 = _SmallMapConv(spatial_dims, 1, c0, kernel_size)
        self.pool1 = Pool[Pool.MAX, spatial_dims](2, padding=1)  # k -> k // 2 + 1 (3³ -> 2³)
        self.conv2 = _SmallMapConv(spatial_dims, c0, c1, kernel_size // 2 + 1)
        self.conv3 = nn.Linear(c1, c2)  # the 1×1×1 convolution on the pooled 1×1×1 map
        self.loc = nn.Linear(c2, latent_size)
        self.log_scale = nn.Linear(c2, latent_size)

    def forward(self, w: Tensor) -> tuple[Tensor, Tensor]:
        h = F.elu(self.pool1(self.conv1(w)), inplace=True)
        h = F.elu(self.conv2(h).flatten(2).max(dim=2).values)  # MaxPool(2) on a 2³ map = global max
        h = F.elu(self.conv3(h), inplace=True)
        return _full_precision(self.loc, h), _full_precision(self.log_scale, h)


class _KernelDecoder(nn.Module):
    """``z -> (recon_loc, raw recon_log_scale)`` as linear layers in a channel-last ``(B, k^d, C)`` layout."""

    def __init__(
        self, spatial_dims: int, kernel_size: int, latent_size: int, hidden_channels: tuple[int, int, int]
    ) -> None:
        super().__init__()
        c0, c1, c2 = hidden_channels
        self.kernel_shape = (1,) + (kernel_size,) * spatial_dims
        self.num_positions = kernel_size**spatial_dims
        self.linear = nn.Linear(latent_size, c2)  # Linear(latent, 128) + Conv3d(128, 128, 3, pad 1) on 1³
        self.expand = _PointToMap(spatial_dims, c2, c2, kernel_size)  # ConvTranspose3d(128, 128, 3): 1³ -> 3³
        self.mix1 = nn.Linear(c2, c1)  # ConvTranspose3d(128, 64, 1)
        self.mix2 = nn.Linear(c1, c0)  # ConvTranspose3d(64, 32, 1)
        self.head = nn.Linear(c0, 2)  # the two 1×1×1 reconstruction heads: row 0 loc, row 1 log_scale

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        shape = (z.shape[0],) + self.kernel_shape
        h = F.elu(self.linear(z), inplace=True)
        # (B, c2) -> (B * k^d, c2): every later layer is a 1×1×1 conv, i.e. a GEMM over channels. (The ELU
        # acts in place before the view: an in-place op on a view would make autograd copy the whole base.)
        h = F.elu(self.expand(h), inplace=True).view(-1, self.expand.weight.shape[1])
        h = F.elu(self.mix1(h), inplace=True)
        h = F.elu(self.mix2(h), inplace=True)
        out = _full_precision(self.head, h).view(z.shape[0], self.num_positions, 2)
        return out[..., 0].reshape(shape), out[..., 1].reshape(shape)


class KernelVAE(nn.Module):
    r"""Variational autoencoder of convolution kernels: the learned prior of the Deep Weight Prior.

    The "Kernel_3D_VAE" of Kuzina, Egorov & Burnaev, "Bayesian Generative Models for Knowledge Transfer in MRI
    Semantic Segmentation Problems", *Frontiers in Neuroscience* 13:844 (2019), arXiv:2005.12639, appendix B,
    for the Deep Weight Prior of Atanov et al., "The Deep Weight Prior", ICLR 2019. A kernel ``w`` is one
    ``k×k×k`` slice ``W[o, i]`` of a convolution weight, seen as a 1-channel ``k³`` image. The model is

    .. math::
        p(z) = \mathcal{N}(0, I_d), \qquad
        p(w \mid z) = \prod_{j=1}^{k^3} \mathcal{N}\big(w_j;\ \mu_j(z),\ \sigma_j(z)^2\big), \qquad
        r(z \mid w) = \mathcal{N}\big(z;\ m(w),\ \operatorname{diag} s(w)^2\big),

    with the decoder giving ``recon_loc = mu(z)`` and ``recon_log_scale = log sigma(z)`` and the encoder
    giving ``z_loc = m(w)`` and ``z_log_scale = log s(w)``; ``d = latent_size``. It is trained on the kernels
    of source networks by the negative ELBO (``monai_dwp.losses``); the Deep Weight Prior then uses the
    frozen decoder as ``p(w|z)`` and the encoder as the auxiliary ``r(z|w)``.

    **Architecture** (``k = 3``, ``hidden_channels = (c0, c1, c2) = (32, 64, 128)`` as the paper, ELU
    activations):

    ============  ======================================================  ==========
    part          layer                                                   output
    ============  ======================================================  ==========
    encoder       Conv3d(1, c0, 3, padding=1), MaxPool3d(2, padding=1)    c0 × 2³
                  ELU, Conv3d(c0, c1, 3, padding=1), MaxPool3d(2), ELU    c1 × 1³
                  1×1×1 conv (c1 → c2), ELU                               c2
                  heads ``loc``, ``log_scale``: Linear(c2, d)             d, d
    decoder       Linear(d, c2), ELU                                      c2 × 1³
                  ConvTranspose3d(c2, c2, 3) on 1³, ELU                   c2 × 3³
                  1×1×1 convs c2 → c1 → c0, ELU after each                c0 × 3³
                  ``head``: 1×1×1 conv (c0 → 2): ``loc``, ``log_scale``   2 × 3³
    ============  ======================================================  ==========

    Choices where the paper and the authors' code are ambiguous or inconsistent (all documented here):

    - *Shape consistency.* The published code feeds the decoder a 4D ``(B, d, 1, 1)`` tensor into 3D
      convolutions and uses 2D 1×1 convolutions as 3D heads; here every layer acts on the shapes above.
    - *Exact, faster decoder.* On a 1³ map a padded 3×3×3 convolution only uses its centre tap, so the
      code's ``Linear(d, 128)`` followed by ``Conv3d(128, 128, 3, padding=1)`` (no activation in between) is
      one affine map, and ``ConvTranspose3d(c2, c2, 3)`` on a 1³ input is a matrix product with its own
      weight (kept in the ``ConvTranspose3d`` layout, with the bias shared over positions). 1×1×1
      (transposed) convolutions are ``Linear`` layers over the channel axis. The decoder is written so, in a
      channel-last ``(B, 27, C)`` layout: the same function class, no dead parameters, no permutes, and
      in-place ELUs (half the activation memory), which matters at 50,000 kernels a batch.
    - *Global pooling.* The last ``MaxPool3d(2)`` of a 2³ map is a global max; for other ``kernel_size`` the
      encoder takes the global max too, so any ``kernel_size`` (and ``spatial_dims`` 1, 2 or 3) works. The
      paper's model is ``kernel_size=3, spatial_dims=3``.
    - *No tanh heads.* An early version of the code squashed both reconstruction heads with ``tanh``
      (confining kernels to ``(-1, 1)``); the later one has linear heads, as here. Instead, every
      log-scale (``recon_log_scale`` and ``z_log_scale``) is clamped to ``log_scale_bounds``
      (default ``[-10, 3]``: standard deviations 4.5e-5 to 20), which keeps ``exp(-2 log_scale)`` finite in
      the Gaussian log-densities the DWP bound uses. Kernels are meant to be fed on a normalised scale
      (``w / s_layer``, see the prior), where this range is wide.
    - *log-scale, not log-variance.* The code's ``logsigma`` is a log-variance; here ``log_scale`` is the
      log standard deviation, as in :mod:`torch.distributions`. ``forward`` decodes one reparameterized
      sample (the code decodes the mean of 20 samples, which shrinks the noise by a factor sqrt(20)).

    Initialisation is PyTorch's default for every layer as written here: the convolutions and the transposed
    convolution get their own defaults, the 1×1×1 layers ``nn.Linear``'s (fan-in = input width). Parameter count for the defaults (``k=3``, ``latent_size=6``, ``hidden_channels=(32, 64,
    128)``): 66,124 in the encoder and 453,794 in the decoder, 519,918 in all. The code's layer-for-layer
    version has 442,496 more, all redundant: the off-centre taps of its ``Conv3d(128, 128, 3, padding=1)`` on a
    1³ map only ever see zero padding, and its centre tap is a second affine map composed with the first.

    **Speed.** Measured on a 2-core CPU (float32, PyTorch 2.13, batch of 50,000 3×3×3 kernels, defaults):
    one forward + backward pass of the negative ELBO with gradients to every parameter takes 2.6 s (the
    layer-by-layer ``Conv3d``/``ConvTranspose3d`` version of the same model: 10.4 s); with the decoder frozen
    and gradients to the kernels and the encoder (the Deep Weight Prior setting) 2.4 s; a forward pass under
    :func:`torch.no_grad` 1.2 s. The process peaks at about 3 GB resident for the training pass (about 55 kB
    of activations per kernel), so subsample kernels when memory is short. Under :func:`torch.autocast` with
    ``torch.bfloat16`` the wide layers run in bfloat16 and the three output heads (``loc``, ``log_scale``, the
    decoder's ``head``) in the parameters' dtype, so every output is float32; on a CPU with native bfloat16
    (AVX512-BF16) the Deep Weight Prior's forward + backward runs about 2 times faster so
    (:class:`~monai_dwp.losses.DeepWeightPrior` ``compute_dtype``).

    Example::

        vae = KernelVAE(kernel_size=3, latent_size=6)
        out = vae(kernels)  # kernels: (B, 1, 3, 3, 3)
        for p in vae.decoder.parameters():  # freeze p(w|z) for the Deep Weight Prior
            p.requires_grad_(False)
        init = vae.sample(64)  # (64, 1, 3, 3, 3), decoder means at z ~ N(0, I)

    Args:
        kernel_size: size ``k`` of the (cubic) kernels it models.
        latent_size: dimension ``d`` of the latent code (the paper: 6).
        hidden_channels: the widths ``(c0, c1, c2)`` of the encoder convolutions (the decoder mirrors them);
            the paper: ``(32, 64, 128)``.
        spatial_dims: number of spatial dimensions of the kernels (the paper: 3).
        log_scale_bounds: ``(low, high)`` clamp of every log standard deviation the model outputs.

    Raises:
        TypeError: on a non-int size or width.
        ValueError: on a size or width < 1, ``spatial_dims`` not in ``{1, 2, 3}``, or bounds with
            ``low >= high`` or not finite.
    """

    def __init__(
        self,
        kernel_size: int = 3,
        latent_size: int = 6,
        hidden_channels: Sequence[int] = (32, 64, 128),
        spatial_dims: int = 3,
        log_scale_bounds: tuple[float, float] = (-10.0, 3.0),
    ) -> None:
        super().__init__()
        check_int(kernel_size, "kernel_size", minimum=1)
        check_int(latent_size, "latent_size", minimum=1)
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims!r}; the paper's VAE uses 3.")
        if isinstance(hidden_channels, (str, bytes)) or not isinstance(hidden_channels, Sequence):
            raise TypeError(f"hidden_channels must be a sequence of three ints, got {hidden_channels!r}.")
        if len(hidden_channels) != 3:
            raise ValueError(
                f"hidden_channels must have three entries (c0, c1, c2), got {hidden_channels!r}; "
                "the paper uses (32, 64, 128)."
            )
        widths = tuple(check_int(c, "hidden_channels entry", minimum=1) for c in hidden_channels)
        try:
            low, high = (float(b) for b in log_scale_bounds)
        except (TypeError, ValueError):
            raise TypeError(f"log_scale_bounds must be two floats (low, high), got {log_scale_bounds!r}.") from None
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"log_scale_bounds must be finite with low < high, got {log_scale_bounds!r}.")

        self.kernel_size = kernel_size
        self.latent_size = latent_size
        self.hidden_channels = widths
        self.spatial_dims = spatial_dims
        self.log_scale_bounds = (low, high)
        self.kernel_shape: tuple[int, ...] = (1,) + (kernel_size,) * spatial_dims
        self.encoder = _KernelEncoder(spatial_dims, kernel_size, latent_size, widths)  # type: ignore[arg-type]
        self.decoder = _KernelDecoder(spatial_dims, kernel_size, latent_size, widths)  # type: ignore[arg-type]

    def _clamp(self, log_scale: Tensor) -> Tensor:
        return log_scale.clamp(self.log_scale_bounds[0], self.log_scale_bounds[1])

    def encode(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """Parameters of the encoder distribution ``r(z|w) = N(z_loc, exp(z_log_scale)²)``.

        Args:
            w: kernels, shape ``(B, 1, k, k, k)`` (``(B, 1, *[k] * spatial_dims)``). A convolution weight
                ``W`` of shape ``(out, in, k, k, k)`` becomes this with ``W.reshape(-1, 1, k, k, k)``.

        Returns:
            ``(z_loc, z_log_scale)``, each ``(B, latent_size)``; ``z_log_scale`` is clamped to
            ``log_scale_bounds``.
        """
        if not isinstance(w, torch.Tensor):
            raise TypeError(f"w must be a torch.Tensor, got {type(w).__name__}.")
        if tuple(w.shape[1:]) != self.kernel_shape or w.shape[0] < 1:
            raise ValueError(
                f"w must have shape (B, {', '.join(map(str, self.kernel_shape))}) with B >= 1, got "
                f"{tuple(w.shape)}; reshape a convolution weight (out, in, {', '.join(['k'] * self.spatial_dims)}) "
                f"with W.reshape(-1, {', '.join(map(str, self.kernel_shape))})."
            )
        z_loc, z_log_scale = self.encoder(w)
        return z_loc, self._clamp(z_log_scale)

    def decode(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Parameters of the decoder distribution ``p(w|z) = N(recon_loc, exp(recon_log_scale)²)``, factorized.

        Args:
            z: latent codes, shape ``(B, latent_size)``.

        Returns:
            ``(recon_loc, recon_log_scale)``, each ``(B, 1, k, k, k)``; ``recon_log_scale`` is clamped to
            ``log_scale_bounds``.
        """
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"z must be a torch.Tensor, got {type(z).__name__}.")
        if z.ndim != 2 or z.shape[1] != self.latent_size or z.shape[0] < 1:
            raise ValueError(
                f"z must have shape (B, latent_size={self.latent_size}) with B >= 1, got {tuple(z.shape)}."
            )
        recon_loc, recon_log_scale = self.decoder(z)
        return recon_loc, self._clamp(recon_log_scale)

    def forward(self, w: Tensor) -> KernelVAEOutput:
        """Encode, draw one reparameterized ``z = z_loc + exp(z_log_scale) * eps``, decode.

        Args:
            w: kernels, shape ``(B, 1, k, k, k)``.

        Returns:
            :class:`KernelVAEOutput` ``(recon_loc, recon_log_scale, z_loc, z_log_scale, z)``.
        """
        z_loc, z_log_scale = self.encode(w)
        z = z_loc + torch.exp(z_log_scale) * torch.randn_like(z_loc)
        recon_loc, recon_log_scale = self.decode(z)
        return KernelVAEOutput(recon_loc, recon_log_scale, z_loc, z_log_scale, z)

    def sample(self, num_samples: int, generator: torch.Generator | None = None, decoder_noise: bool = False) -> Tensor:
        r"""New kernels on the VAE's (normalised) scale, from :math:`z \sim \mathcal{N}(0, I)`.

        With ``decoder_noise=False`` (default) a kernel is the decoder mean :math:`\mu_\phi(z)`; with
        ``decoder_noise=True`` it is a draw of the whole generative model,
        :math:`w = \mu_\phi(z) + \sigma_\phi(z) \odot \varepsilon`, :math:`\varepsilon \sim \mathcal{N}(0, I)`,
        i.e. a sample of :math:`p(w) = \int p(w|z) p(z) dz`. The decoder means of a small latent space span only a
        few directions of the kernel space and are shrunk towards the mean kernel (for the transfer benchmark's
        prior: a covariance participation ratio of 2–5 of 27 and 0.6× the RMS of the source kernels, against
        9–16 and 1.0× for the draws with decoder noise and 11–17 and 1.0× for the source kernels themselves).

        Differentiable in the decoder parameters; wrap in :func:`torch.no_grad` to initialise weights.

        Args:
            num_samples: number of kernels to draw.
            generator: optional :class:`torch.Generator` for reproducible draws (on any device; the codes and the
                decoder noise are drawn on the generator's device and moved to the module's).
            decoder_noise: add the decoder's noise (a sample of :math:`p(w)`) instead of returning its mean.

        Returns:
            ``(num_samples, 1, k, k, k)`` on the module's device and dtype.
        """
        check_int(num_samples, "num_samples", minimum=1)
        if not isinstance(decoder_noise, bool):
            raise TypeError(f"decoder_noise must be a bool, got {type(decoder_noise).__name__}.")
        ref = next(self.decoder.parameters())
        noise_device = generator.device if generator is not None else ref.device
        z = torch.randn(num_samples, self.latent_size, generator=generator, device=noise_device, dtype=ref.dtype)
        loc, log_scale = self.decode(z.to(ref.device))
        if not decoder_noise:
            return loc
        eps = torch.randn(loc.shape, generator=generator, device=noise_device, dtype=ref.dtype).to(ref.device)
        return loc + log_scale.exp() * eps
