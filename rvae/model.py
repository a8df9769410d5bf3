"""The rotationally invariant VAE: pure torch modules and loss terms (no I/O, no Lightning, no global state).

An item is a (P, P) image (an atom-centred ADF sub-image or a diffraction pattern), P odd, its centre on the
centre pixel. Pixel coordinates are normalised so that the centre pixel is 0 and the edge pixel centres are
±1: ``x`` runs along columns, ``y`` along rows (down on screen). The generative model is

    image(x) = canonical_z( R(φ)ᵀ (x - t) )

with R(φ) = [[cos φ, -sin φ], [sin φ, cos φ]] acting on (x, y): the angle φ turns the +x axis towards +y, and a
shift t moves the content (translation, for ADF sub-images; off for diffraction patterns). Rotating an input's
content by α therefore gives φ + α and t rotated by α, with the same content latents z.

Latents and their posteriors (the encoder gives all of them):

* angle: a von Mises posterior vM(μ, κ) on ψ = n·φ (``period`` n: a sub-image with n-fold symmetry has its angle
  defined modulo 2π/n, so ψ lives on the whole circle), uniform prior; KL(vM ‖ U) = κ A(κ) - log I0(κ) with
  A = I1/I0 (closed form). Samples use the moment-matched wrapped normal, σ² = -2 log A(κ), which is
  reparameterisable; its mean resultant length equals the von Mises one, exact as κ → ∞ and uniform as κ → 0.
* shift (optional): Normal posterior, Normal(0, ``shift_prior_std``²) prior, in normalised units.
* content z (``n_latent``): Normal posterior, standard Normal prior.

Decoders (``decoder``): ``spatial`` renders intensity with an MLP of (rotated coordinates, z) at every pixel
(Bepler et al. 2019); ``canonical`` decodes z to a canonical image on a padded canvas once per item and samples
it bilinearly at the rotated coordinates (cheaper: one MLP call per item instead of one per pixel).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

DECODERS = ("spatial", "canonical")
ENCODERS = ("conv", "mlp")
LIKELIHOODS = ("gaussian", "bernoulli")
KAPPA_MIN, KAPPA_MAX = 1e-3, 1e4  # past 1e4 the Bessel-ratio gradient of the KL is float32 noise


def coordinate_grid(size: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(size², 2) pixel-centre coordinates (x = column, y = row) spanning [-1, 1], row-major: item k is pixel
    (k // size, k % size)."""
    if size < 3 or size % 2 == 0:
        raise ValueError(f"image size must be odd and >= 3 (the centre on the centre pixel), got {size}")
    r = torch.linspace(-1.0, 1.0, size, device=device, dtype=dtype)
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1)


def rotation_matrices(phi: torch.Tensor) -> torch.Tensor:
    """(B,) angles [rad] -> (B, 2, 2) matrices R(φ) acting on (x, y) column vectors."""
    c, s = torch.cos(phi), torch.sin(phi)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def canonical_coordinates(grid: torch.Tensor, phi: torch.Tensor, shift: torch.Tensor | None) -> torch.Tensor:
    """Where each pixel of an item lands in its canonical frame: u = R(φ)ᵀ (x - t).
    ``grid`` (M, 2), ``phi`` (B,), ``shift`` (B, 2) or None -> (B, M, 2)."""
    x = grid.unsqueeze(0).expand(phi.shape[0], -1, -1)
    if shift is not None:
        x = x - shift.unsqueeze(1)
    return torch.bmm(x, rotation_matrices(phi))  # row vectors: vᵀ R = (Rᵀ v)ᵀ


def bessel_ratio(kappa: torch.Tensor) -> torch.Tensor:
    """A(κ) = I1(κ) / I0(κ), the mean resultant length of vM(·, κ)."""
    return torch.special.i1e(kappa) / torch.special.i0e(kappa)


def von_mises_kl_uniform(kappa: torch.Tensor) -> torch.Tensor:
    """KL(vM(μ, κ) ‖ uniform on the circle) = κ A(κ) - log I0(κ), elementwise, >= 0."""
    log_i0 = torch.log(torch.special.i0e(kappa)) + kappa
    return torch.clamp(kappa * bessel_ratio(kappa) - log_i0, min=0.0)  # rounding gives -1e-8 at κ -> 0


def circular_std(kappa: torch.Tensor) -> torch.Tensor:
    """Circular standard deviation sqrt(-2 log A(κ)) [rad] of vM(·, κ): the wrapped-normal σ of the sampler."""
    return torch.sqrt(torch.clamp(-2.0 * torch.log(bessel_ratio(kappa)), min=0.0))


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor, prior_std: float = 1.0) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) ‖ N(0, prior_std²)), summed over the last axis -> (B,)."""
    var_ratio = torch.exp(logvar) / prior_std**2
    return 0.5 * torch.sum(mean**2 / prior_std**2 + var_ratio - 1.0 - torch.log(var_ratio), dim=-1)


def angular_moment(images: torch.Tensor, period: int, grid: torch.Tensor | None = None,
                   n_angles: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The classical n-fold orientation of each item: ψ_m = arg ∫∫ I(ρ, θ) e^{i n θ} ρ dρ dθ over the inscribed
    disk 0 < ρ <= 1 (θ from +x towards +y, n = ``period``), in the model's own convention: rotating an item's
    content by α adds n·α to ψ_m, as to the encoder's ψ = n·φ (the offset between the two is arbitrary).

    The item is sampled (bilinear) on a polar grid, ``n_angles`` equal steps in θ (a multiple of 4) on rings
    half a pixel apart, not summed over its square pixels: on the square grid an isotropic part (the bright
    centre column) has a 4-fold moment of its own, fixed in the image frame (the pixels at one radius are not
    spread evenly in θ), which cancels for n = 2 or 3 but not for n = 4, 8, ...; added to a faint 4-fold
    content (a perovskite A site), it turned each grain's angle by up to 8° at 17 px and 20° at 8 Å windows.
    Returns (ψ_m (B,) in (−π, π], strength (B,) = |Σ (I − Ī) ρ e^{inθ}| / Σ |I − Ī| ρ, in [0, 1], Ī the disk
    mean). ``images`` (B, P, P) or (B, 1, P, P); ``grid`` is accepted for the old signature and not used."""
    if n_angles % 4:
        raise ValueError(f"n_angles must be a multiple of 4 (a quarter turn maps the polar grid onto itself), "
                         f"got {n_angles}")
    b, size = images.shape[0], images.shape[-1]
    x = images.reshape(b, 1, size, size)
    n_rings = size - 1  # half a pixel apart over the radius (size - 1) / 2 pixels
    rho = torch.arange(1, n_rings + 1, device=x.device, dtype=x.dtype) / n_rings
    theta = torch.arange(n_angles, device=x.device, dtype=x.dtype) * (2 * torch.pi / n_angles)
    polar = torch.stack([rho[:, None] * torch.cos(theta), rho[:, None] * torch.sin(theta)], dim=-1)
    # grid_sample: x -> column, y -> row, ±1 the centres of the outer pixels (coordinate_grid's convention)
    values = F.grid_sample(x, polar.expand(b, -1, -1, -1), mode="bilinear", align_corners=True)[:, 0]
    weight = rho[:, None].expand(-1, n_angles)
    centred = (values - (values * weight).sum((-1, -2), keepdim=True) / weight.sum()) * weight
    re = (centred * torch.cos(period * theta)).sum((-1, -2))
    im = (centred * torch.sin(period * theta)).sum((-1, -2))
    strength = torch.hypot(re, im) / centred.abs().sum((-1, -2)).clamp_min(torch.finfo(x.dtype).tiny)
    return torch.atan2(im, re), strength


def _mlp(sizes: list[int], act=nn.SiLU) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """(B, 1, P, P) -> (B, n_outputs): strided 3x3 convolutions then an MLP (``kind="conv"``), or an MLP on the
    flattened image (``kind="mlp"``)."""

    def __init__(self, image_size: int, n_outputs: int, kind: str = "conv", channels=(32, 64, 64),
                 hidden: int = 128):
        super().__init__()
        if kind not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {kind!r}")
        if kind == "conv":
            layers: list[nn.Module] = []
            c_in, size = 1, image_size
            for c in channels:
                layers += [nn.Conv2d(c_in, int(c), 3, stride=2, padding=1), nn.SiLU()]
                c_in, size = int(c), (size + 1) // 2
            self.features = nn.Sequential(*layers, nn.Flatten())
            n_flat = c_in * size * size
        else:
            self.features = nn.Flatten()
            n_flat = image_size * image_size
        self.head = _mlp([n_flat, hidden, hidden, n_outputs])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


class SpatialDecoder(nn.Module):
    """Intensity at canonical coordinates from an MLP of (u, z): (B, M, 2), (B, k) -> (B, M).

    With ``fourier_features`` F > 0 the coordinates enter as [u, sin 2π Wu, cos 2π Wu] with W (F, 2) drawn once
    from N(0, ``fourier_scale``²) cycles per unit (a fixed buffer, saved with the weights): an MLP of raw
    coordinates is biased towards smooth images and renders a lattice of sharp columns as a blur (seen here:
    the fitted noise level stayed near the data's own spread); the features let it draw peaks of a column's
    width. They are switched on coarse to fine (``progress`` 0 -> 1, lowest frequencies first, as in BARF, Lin
    et al. 2021): with all of them from the start the decoder learned the two grains of the test field as two
    values of z and never used the angle (seen here); a smooth decoder has to rotate, and once the angle is
    learned the detail adds to it.
    """

    def __init__(self, n_latent: int, hidden: int = 128, n_layers: int = 3, fourier_features: int = 0,
                 fourier_scale: float = 2.0):
        super().__init__()
        if fourier_features < 0 or (fourier_features > 0 and not fourier_scale > 0):
            raise ValueError(f"fourier_features must be >= 0 and fourier_scale > 0, got {fourier_features}, "
                             f"{fourier_scale}")
        if fourier_features:
            w = torch.randn(fourier_features, 2) * fourier_scale
            self.register_buffer("frequencies", w[torch.argsort(w.norm(dim=1))])  # lowest first
        else:
            self.frequencies = None
        self.progress = 1.0  # coarse-to-fine: fraction of the Fourier features switched on (set by the trainer)
        self.coordinates = nn.Linear(2 + 2 * fourier_features, hidden)
        self.latent = nn.Linear(n_latent, hidden, bias=False) if n_latent > 0 else None
        self.body = _mlp([hidden] * n_layers + [1])

    def forward(self, u: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if self.frequencies is not None:
            n = self.frequencies.shape[0]
            weight = torch.clamp(self.progress * n - torch.arange(n, device=u.device, dtype=u.dtype), 0.0, 1.0)
            phase = 2 * math.pi * u @ self.frequencies.to(u.dtype).T
            u = torch.cat([u, weight * torch.sin(phase), weight * torch.cos(phase)], dim=-1)
        h = self.coordinates(u)  # the first layer splits into coordinates and latents: no (B, M, 2 + k) concat
        if self.latent is not None:
            h = h + self.latent(z).unsqueeze(1)
        return self.body(F.silu(h)).squeeze(-1)


class CanonicalDecoder(nn.Module):
    """A (Q, Q) canonical image per item from an MLP of z, spanning ±``extent`` in normalised coordinates (so
    that rotated and shifted pixel coordinates stay on it), sampled bilinearly at u: (B, M, 2), (B, k) -> (B, M).
    Beyond the canvas it reads 0."""

    def __init__(self, n_latent: int, image_size: int, extent: float, hidden: int = 256):
        super().__init__()
        self.extent = float(extent)
        q = math.ceil(self.extent * (image_size - 1)) + 1  # the image's own pixel spacing
        self.canvas_size = q + (q % 2 == 0)
        self.constant = nn.Parameter(torch.zeros(1, max(n_latent, 1))) if n_latent == 0 else None
        self.net = _mlp([max(n_latent, 1), hidden, hidden, self.canvas_size**2])

    def canvas(self, z: torch.Tensor) -> torch.Tensor:
        """(B, k) -> (B, 1, Q, Q) canonical images."""
        if self.constant is not None:
            z = self.constant.expand(z.shape[0], -1)
        q = self.canvas_size
        return self.net(z).view(-1, 1, q, q)

    def forward(self, u: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        grid = (u / self.extent).unsqueeze(2)  # (B, M, 1, 2): grid_sample reads (x, y) = (column, row)
        out = F.grid_sample(self.canvas(z), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        return out[:, 0, :, 0]


@dataclass
class Posterior:
    """Encoder output for a batch (B items). Angles in radians, ``angle_mean`` in (-π/n, π/n]."""

    psi_mean: torch.Tensor  # (B,) mean direction of ψ = n φ
    kappa: torch.Tensor  # (B,) von Mises concentration of ψ
    z_mean: torch.Tensor  # (B, k)
    z_logvar: torch.Tensor  # (B, k)
    shift_mean: torch.Tensor | None  # (B, 2) or None
    shift_logvar: torch.Tensor | None
    period: int

    @property
    def angle_mean(self) -> torch.Tensor:
        return self.psi_mean / self.period

    @property
    def angle_std(self) -> torch.Tensor:
        """Circular standard deviation of φ [rad]."""
        return circular_std(self.kappa) / self.period


class RVAE(nn.Module):
    """Encoder + rotation (+ shift) + decoder. See the module docstring for the model.

    Parameters
    ----------
    image_size : odd P of the (P, P) items.
    n_latent : number of content latents k (>= 0).
    decoder : "spatial" (coordinate MLP) or "canonical" (canonical image sampled at rotated coordinates).
    period : n of the n-fold symmetry: the angle is defined modulo 2π/n.
    translation : infer a shift t (ADF sub-images) or not (diffraction patterns).
    shift_prior_std : prior standard deviation of t, normalised units (1 = half the item width).
    encoder, encoder_channels, encoder_hidden : the encoder.
    decoder_hidden, decoder_layers : width and depth of the decoder MLP.
    canvas_extent : half-width of the canonical canvas in normalised units (canonical decoder); default √2 plus
        four prior standard deviations of the shift, so that rotated corners stay on it.
    fourier_features, fourier_scale : Fourier features of the spatial decoder's coordinates (0: raw coordinates).
    kappa_init : concentration of the angle posterior at initialisation. A diffuse start (κ ≈ 0) lets the decoder
        settle on a rotation-averaged image, which has no gradient with respect to the angle, so the angle is
        never learned (seen here); a concentrated start makes the decoder use the encoder's initial angles.
    """

    def __init__(self, image_size: int, n_latent: int = 2, decoder: str = "spatial", period: int = 1,
                 translation: bool = True, shift_prior_std: float = 0.1, encoder: str = "conv",
                 encoder_channels=(32, 64, 64), encoder_hidden: int = 128, decoder_hidden: int = 128,
                 decoder_layers: int = 3, canvas_extent: float | None = None, kappa_init: float = 20.0,
                 fourier_features: int = 0, fourier_scale: float = 2.0):
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        if isinstance(period, bool) or int(period) != period or period < 1:
            raise ValueError(f"period must be an integer >= 1, got {period!r}")
        if n_latent < 0:
            raise ValueError(f"n_latent must be >= 0, got {n_latent}")
        if translation and not shift_prior_std > 0:
            raise ValueError(f"shift_prior_std must be > 0, got {shift_prior_std}")
        self.image_size, self.n_latent, self.period = int(image_size), int(n_latent), int(period)
        self.translation, self.shift_prior_std = bool(translation), float(shift_prior_std)
        self.register_buffer("grid", coordinate_grid(self.image_size), persistent=False)
        self.n_outputs = 3 + (4 if translation else 0) + 2 * n_latent
        self.encoder = Encoder(self.image_size, self.n_outputs, encoder, tuple(encoder_channels), encoder_hidden)
        if not kappa_init > KAPPA_MIN:
            raise ValueError(f"kappa_init must be > {KAPPA_MIN}, got {kappa_init}")
        with torch.no_grad():  # start concentrated: see kappa_init in the class docstring
            last = self.encoder.head[-1]
            last.bias[2] = math.log(math.expm1(kappa_init - KAPPA_MIN))
        if decoder == "spatial":
            self.decoder = SpatialDecoder(n_latent, decoder_hidden, decoder_layers, fourier_features, fourier_scale)
        else:
            extent = canvas_extent if canvas_extent is not None else \
                math.sqrt(2.0) + (4 * shift_prior_std if translation else 0.0)
            self.decoder = CanonicalDecoder(n_latent, self.image_size, extent, decoder_hidden)

    def check_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, P, P) or (B, 1, P, P) -> (B, 1, P, P); ``ValueError`` on another size."""
        if images.ndim == 3:
            images = images.unsqueeze(1)
        if images.ndim != 4 or images.shape[1] != 1 or images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"images must be (B, {self.image_size}, {self.image_size}), got {tuple(images.shape)}")
        return images

    def encode(self, images: torch.Tensor) -> Posterior:
        h = self.encoder(self.check_images(images))
        psi = torch.atan2(h[:, 1], h[:, 0])
        kappa = torch.clamp(F.softplus(h[:, 2]) + KAPPA_MIN, max=KAPPA_MAX)
        i = 3
        shift_mean = shift_logvar = None
        if self.translation:
            shift_mean, shift_logvar = h[:, i:i + 2], h[:, i + 2:i + 4].clamp(-12, 6)
            i += 4
        k = self.n_latent
        return Posterior(psi, kappa, h[:, i:i + k], h[:, i + k:i + 2 * k].clamp(-12, 6), shift_mean, shift_logvar,
                         self.period)

    def sample(self, post: Posterior, generator: torch.Generator | None = None):
        """Reparameterised draw of (φ, t, z) from the posterior."""
        def noise(like):
            return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)

        psi = post.psi_mean + circular_std(post.kappa) * noise(post.psi_mean)
        z = post.z_mean + torch.exp(0.5 * post.z_logvar) * noise(post.z_mean)
        shift = None
        if post.shift_mean is not None:
            shift = post.shift_mean + torch.exp(0.5 * post.shift_logvar) * noise(post.shift_mean)
        return psi / self.period, shift, z

    def decode(self, phi: torch.Tensor, shift: torch.Tensor | None, z: torch.Tensor) -> torch.Tensor:
        """(B,) angles, (B, 2) shifts or None, (B, k) latents -> (B, P, P) decoder output (means or logits)."""
        u = canonical_coordinates(self.grid, phi, shift if self.translation else None)
        return self.decoder(u, z).view(-1, self.image_size, self.image_size)

    def canonical(self, z: torch.Tensor) -> torch.Tensor:
        """(B, k) -> (B, P, P): the item of content z at φ = 0, t = 0 (for figures and the latent traversal)."""
        zeros = torch.zeros(z.shape[0], device=z.device, dtype=z.dtype)
        return self.decode(zeros, torch.zeros(z.shape[0], 2, device=z.device, dtype=z.dtype)
                           if self.translation else None, z)

    def kl_terms(self, post: Posterior) -> dict[str, torch.Tensor]:
        """Per-item KL of each latent group: {"angle", "z", "shift"} -> (B,)."""
        out = {"angle": von_mises_kl_uniform(post.kappa), "z": gaussian_kl(post.z_mean, post.z_logvar)}
        if post.shift_mean is not None:
            out["shift"] = gaussian_kl(post.shift_mean, post.shift_logvar, self.shift_prior_std)
        return out

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None):
        """(B, P, P) -> (posterior, reconstruction from one posterior draw (B, P, P))."""
        post = self.encode(images)
        phi, shift, z = self.sample(post, generator)
        return post, self.decode(phi, shift, z)


def reconstruction_nll(images: torch.Tensor, output: torch.Tensor, likelihood: str,
                       log_sigma: torch.Tensor | None = None) -> torch.Tensor:
    """Negative log-likelihood per item, summed over pixels -> (B,). ``gaussian``: ``output`` is the mean and
    ``log_sigma`` the log noise level (constant 0.5 log 2π dropped); ``bernoulli``: ``output`` are logits and
    ``images`` must lie in [0, 1]."""
    images = images.reshape(output.shape)
    if likelihood == "gaussian":
        ls = torch.zeros((), device=output.device) if log_sigma is None else log_sigma
        per_pixel = 0.5 * ((images - output) * torch.exp(-ls)) ** 2 + ls
    elif likelihood == "bernoulli":
        per_pixel = F.binary_cross_entropy_with_logits(output, images, reduction="none")
    else:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
    return per_pixel.flatten(1).sum(-1)


@torch.no_grad()
def encode_batch(model: RVAE, images: torch.Tensor, log_sigma=None, likelihood: str = "gaussian") -> dict:
    """(B, P, P) normalised items -> dict of (B, ...) tensors: the posterior means and spreads of the angle
    (``angle``, ``angle_std``: circular standard deviation), content (``z``, ``z_std``) and shift (``shift``,
    ``shift_std``; zeros without translation), and ``reconstruction_error``, the mean squared difference between
    an item and its decoding from the posterior means (``rvae.encode`` writes these to zarr)."""
    post = model.encode(images)
    shift = post.shift_mean if post.shift_mean is not None else torch.zeros(len(images), 2, device=images.device)
    shift_std = torch.exp(0.5 * post.shift_logvar) if post.shift_logvar is not None else torch.zeros_like(shift)
    out = model.decode(post.angle_mean, post.shift_mean, post.z_mean)
    recon = torch.sigmoid(out) if likelihood == "bernoulli" else out
    err = ((images.reshape(recon.shape) - recon) ** 2).flatten(1).mean(-1)
    return {"angle": post.angle_mean, "angle_std": post.angle_std, "z": post.z_mean,
            "z_std": torch.exp(0.5 * post.z_logvar), "shift": shift, "shift_std": shift_std,
            "reconstruction_error": err}
