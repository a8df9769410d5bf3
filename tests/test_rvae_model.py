"""rVAE kernels (pure torch): shapes, bad input, exact properties of the rotation and of the circular latent."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rvae.model import (
    RVAE,
    bessel_ratio,
    canonical_coordinates,
    circular_std,
    coordinate_grid,
    gaussian_kl,
    reconstruction_nll,
    von_mises_kl_uniform,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def test_coordinate_grid_spans_pixel_centres_and_rejects_even_sizes():
    g = coordinate_grid(5)
    assert g.shape == (25, 2)
    assert torch.equal(g[12], torch.zeros(2))  # centre pixel at the origin
    assert g[0].tolist() == [-1.0, -1.0] and g[4].tolist() == [1.0, -1.0]  # row 0: x across, y = -1
    with pytest.raises(ValueError, match="odd"):
        coordinate_grid(6)


def test_canonical_coordinates_rotate_and_shift():
    grid = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    u = canonical_coordinates(grid, torch.tensor([math.pi / 2]), None)[0]
    # image(x) = canonical(R(φ)ᵀ x): the canonical +x direction appears at +y after φ = 90°
    torch.testing.assert_close(u, torch.tensor([[0.0, -1.0], [1.0, 0.0]]), atol=1e-6, rtol=0)
    u = canonical_coordinates(grid, torch.tensor([0.0]), torch.tensor([[0.5, 0.0]]))[0]
    torch.testing.assert_close(u, torch.tensor([[0.5, 0.0], [-0.5, 1.0]]))


def test_von_mises_kl_matches_numerical_integral_and_vanishes_when_uniform():
    from scipy import integrate, special

    for kappa in (0.5, 2.0, 10.0):
        density = lambda t: np.exp(kappa * np.cos(t)) / (2 * np.pi * special.i0(kappa))  # noqa: E731
        numeric = integrate.quad(lambda t: density(t) * np.log(density(t) * 2 * np.pi), -np.pi, np.pi)[0]
        assert von_mises_kl_uniform(torch.tensor(kappa, dtype=torch.float64)).item() == pytest.approx(numeric, rel=1e-6)
    assert von_mises_kl_uniform(torch.tensor(1e-6, dtype=torch.float64)).item() == pytest.approx(0.0, abs=1e-9)
    assert (von_mises_kl_uniform(torch.logspace(-3, 4, 50)) >= 0).all()


def test_sampler_matches_the_von_mises_mean_resultant_length():
    """The wrapped-normal draw has σ² = -2 log A(κ): its mean resultant length equals the von Mises A(κ)."""
    torch.manual_seed(0)
    for kappa in (0.3, 1.0, 5.0, 50.0):
        k = torch.tensor(kappa, dtype=torch.float64)
        draws = circular_std(k) * torch.randn(200_000, dtype=torch.float64)
        r = torch.abs(torch.exp(1j * draws).mean()).item()
        assert r == pytest.approx(bessel_ratio(k).item(), abs=5e-3)


def test_gaussian_kl_is_zero_at_the_prior():
    assert gaussian_kl(torch.zeros(3, 2), torch.zeros(3, 2)).abs().max() < 1e-7
    assert gaussian_kl(torch.zeros(1, 2), torch.full((1, 2), math.log(0.01)), prior_std=0.1).item() == \
        pytest.approx(0.0, abs=1e-6)
    assert (gaussian_kl(torch.randn(5, 3), torch.randn(5, 3)) > 0).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("decoder", ["spatial", "canonical"])
@pytest.mark.parametrize("translation", [True, False])
def test_forward_shapes_and_kl_terms(device, dtype, decoder, translation):
    torch.manual_seed(0)
    model = RVAE(9, n_latent=3, decoder=decoder, period=2, translation=translation, encoder_channels=(4, 8),
                 encoder_hidden=16, decoder_hidden=16).to(device=device, dtype=dtype)
    x = torch.randn(5, 9, 9, device=device, dtype=dtype)
    post, recon = model(x)
    assert recon.shape == (5, 9, 9) and recon.dtype == dtype
    assert post.z_mean.shape == (5, 3) and post.kappa.shape == (5,)
    assert (post.angle_mean.abs() <= math.pi / 2 + 1e-6).all()  # period 2: φ in (-π/2, π/2]
    kl = model.kl_terms(post)
    assert set(kl) == ({"angle", "z", "shift"} if translation else {"angle", "z"})
    assert all(v.shape == (5,) and torch.isfinite(v).all() for v in kl.values())


def test_bad_input_is_rejected():
    model = RVAE(9, encoder_channels=(4,), encoder_hidden=8, decoder_hidden=8)
    with pytest.raises(ValueError, match=r"\(B, 9, 9\)"):
        model.encode(torch.zeros(2, 11, 11))
    for kwargs, match in (({"decoder": "fourier"}, "decoder"), ({"period": 0}, "period"),
                          ({"n_latent": -1}, "n_latent"), ({"kappa_init": 0.0}, "kappa_init")):
        with pytest.raises(ValueError, match=match):
            RVAE(9, **kwargs)
    with pytest.raises(ValueError, match="odd"):
        RVAE(10)


@pytest.mark.parametrize("decoder", ["spatial", "canonical"])
def test_decoder_rotation_by_90_degrees_is_exact_on_the_grid(decoder):
    """decode(φ + 90°) is decode(φ) turned by 90° about the centre pixel (grid points map onto grid points)."""
    torch.manual_seed(1)
    model = RVAE(11, n_latent=2, decoder=decoder, translation=False, encoder_channels=(4,), encoder_hidden=8,
                 decoder_hidden=32).double()
    z = torch.randn(3, 2, dtype=torch.float64)
    phi = torch.tensor([0.0, 0.3, -1.0], dtype=torch.float64)
    a = model.decode(phi, None, z)
    b = model.decode(phi + math.pi / 2, None, z)
    # content turned from +x towards +y (rows down): the top row of b is the left column of a, reversed
    torch.testing.assert_close(b, torch.rot90(a, k=-1, dims=(1, 2)), atol=1e-6, rtol=0)


def test_reconstruction_nll_gaussian_and_bernoulli():
    x, mu = torch.rand(4, 5, 5), torch.rand(4, 5, 5)
    log_sigma = torch.tensor(-0.7)
    ref = -torch.distributions.Normal(mu, log_sigma.exp()).log_prob(x).flatten(1).sum(-1) \
        - 25 * 0.5 * math.log(2 * math.pi)
    torch.testing.assert_close(reconstruction_nll(x, mu, "gaussian", log_sigma), ref)
    logits = torch.randn(4, 5, 5)
    ref = -(x * torch.nn.functional.logsigmoid(logits) + (1 - x) * torch.nn.functional.logsigmoid(-logits)) \
        .flatten(1).sum(-1)  # continuous Bernoulli-style targets in [0, 1]
    torch.testing.assert_close(reconstruction_nll(x, logits, "bernoulli"), ref)
    with pytest.raises(ValueError, match="likelihood"):
        reconstruction_nll(x, mu, "poisson")
