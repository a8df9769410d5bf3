"""The rVAE angle on rendered grains (issue 25, item 3): the n-fold moment that anchors the angle
(``rvae.model.angular_moment``) rotates with the item, has no moment of its own from the square pixel grid, and
follows the grains for every site type of the honeycomb and the perovskite; an rVAE fitted with the anchor
(``model.angle_anchor``) gives every site type's angle per grain within 5° and per atom within 10° on both
lattices, for two training seeds."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from rvae.columns import cut_subimages, find_columns
from rvae.metrics import circular_mean, grain_angle_errors, wrap
from rvae.model import angular_moment, coordinate_grid
from rvae.module import RVAEModule
from rvae.synthetic import (PEROVSKITE_SITES, FieldSpec, PerovskiteSpec, perovskite_field, rotated_shapes,
                            two_grain_field)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PERIOD = 3
WINDOW_ANGSTROM = 6.5


def per_grain_error_deg(angle, truth, grain, period=PERIOD) -> list[float]:
    return list(grain_angle_errors(angle, truth, grain, period)["per_grain_deg"].values())


def matched_columns(image, truth, px):
    """Columns found in a rendered field: (positions (N, 2) px, matched to a true column within 0.5 Å (N,) bool,
    the truth of the nearest true column per found column)."""
    pos = find_columns(image, px)
    d, j = cKDTree(np.c_[truth["y_px"], truth["x_px"]]).query(pos)
    return pos, d < 0.5 / px, {k: v[j] for k, v in truth.items()}


@pytest.fixture(scope="module")
def honeycomb():
    """Found columns of a small rendered MX2 field (two grains 8° and 38°), their sub-images and truth."""
    spec = FieldSpec(size_px=256)
    image, truth = two_grain_field(spec, np.random.default_rng(0))
    px = spec.pixel_size_angstrom
    pos, matched, t = matched_columns(image, truth, px)
    items, border = cut_subimages(image, pos, WINDOW_ANGSTROM, px, 17)
    keep = ~border & matched
    t = {k: v[keep] for k, v in t.items()}
    scored = (t["boundary_distance_angstrom"] > WINDOW_ANGSTROM / 2) & (t["site"] <= 1)  # M and X2, away
    return items[keep], t, scored


def test_angular_moment_rotates_with_the_item():
    data = rotated_shapes(64, 17, np.random.default_rng(1), period=PERIOD, noise_std=0.0)
    images = torch.from_numpy(data["images"])
    psi, strength = angular_moment(images, PERIOD)
    offset = wrap(psi.numpy() - PERIOD * data["angle"])
    assert np.degrees(np.abs(wrap(offset - circular_mean(offset))).max()) / PERIOD < 3.0  # grid: 17 px
    # an exact quarter turn on the grid (content turned by +90°: +x goes to +y, rows down) adds n · 90°
    turned, _ = angular_moment(torch.rot90(images, -1, dims=(1, 2)), PERIOD, coordinate_grid(17))
    assert np.allclose(wrap(turned.numpy() - psi.numpy() - PERIOD * np.pi / 2), 0, atol=1e-4)
    assert ((strength > 0) & (strength <= 1)).all()


def test_angular_moment_follows_both_site_types_of_the_honeycomb(honeycomb):
    """The data carry the angle for the faint-neighboured metal site as well as for the chalcogen site."""
    items, t, scored = honeycomb
    psi, _ = angular_moment(torch.from_numpy(items), PERIOD)
    for site in (0, 1):
        m = scored & (t["site"] == site)
        errors = per_grain_error_deg(psi.numpy()[m] / PERIOD, t["orientation_rad"][m], t["grain"][m])
        assert max(errors) < 2.0, (site, errors)  # 1.1-1.2° for M, below 0.5° for X2 at 17 px


@pytest.mark.parametrize("period, followed", [(4, ("A", "B", "O")), (2, ("O",))])
def test_perovskite_angle_needs_the_period_of_every_site(perovskite, period, followed):
    """ABO3 [001] in three grains: with period 4 (the lattice's) the moment follows the grains for A, B and O
    sites (O modulo 90°: its two sublattices fold together); with period 2 only the 2-fold O sites are followed,
    the 4-fold A and B sites have no second harmonic and their angle is noise (measured 6-35° per grain)."""
    image, pos, matched, t, px = perovskite
    items, border = cut_subimages(image, pos, 5.5, px, 25)
    sel = ~border & matched & (t["boundary_distance_angstrom"] > 2.75)
    psi, _ = angular_moment(torch.from_numpy(items), period)
    for k, name in enumerate(PEROVSKITE_SITES):
        m = sel & (t["site"] == k)
        assert len(np.unique(t["grain"][m])) == 3
        errors = per_grain_error_deg(psi.numpy()[m] / period, t["orientation_rad"][m], t["grain"][m], period)
        assert (max(errors) < 3.0) == (name in followed), (name, period, errors)


@pytest.fixture(scope="module")
def perovskite():
    """A small rendered ABO3 [001] field (three grains 5°, 25°, 62°), its found columns and truth."""
    spec = PerovskiteSpec(size_px=256)
    image, truth = perovskite_field(spec, np.random.default_rng(0))
    px = spec.pixel_size_angstrom
    return image, *matched_columns(image, truth, px), px


def test_angular_moment_has_no_moment_of_the_square_grid():
    """An isotropic item has no n-fold orientation: on the square pixel grid its 4-fold (and 8-fold) moment
    summed over pixels is not zero (the pixels at one radius are not spread evenly in θ); sampled on the polar
    grid it is."""
    grid = coordinate_grid(17)
    blob = torch.exp(-grid.square().sum(-1) / (2 * 0.15**2)).reshape(1, 17, 17) \
        + 0.3 * torch.exp(-(grid.square().sum(-1).sqrt() - 0.7) ** 2 / (2 * 0.08**2)).reshape(1, 17, 17)
    for period in (2, 3, 4, 8):
        _, strength = angular_moment(blob, period)
        assert float(strength) < 0.01, (period, float(strength))
    with pytest.raises(ValueError, match="n_angles"):
        angular_moment(blob, 4, n_angles=30)


@pytest.mark.parametrize("window, size", [(5.5, 17), (8.0, 17), (5.5, 25)])
def test_perovskite_moment_follows_every_site_at_any_sampling(perovskite, window, size):
    """A 4-fold A site's net 4-fold content is faint (B neighbours on the diagonals, O on the axes: opposite
    signs); summed over square pixels, the centre's grid moment turned its grains by 8° (5.5 Å at 17 px) and 20°
    (8 Å at 17 px). On the polar grid every site type stays within 2° per grain at any of these samplings."""
    image, pos, matched, t, px = perovskite
    items, border = cut_subimages(image, pos, window, px, size)
    sel = ~border & matched & (t["boundary_distance_angstrom"] > window / 2)
    psi, _ = angular_moment(torch.from_numpy(items), 4)
    for k, name in enumerate(PEROVSKITE_SITES):
        m = sel & (t["site"] == k)
        e = grain_angle_errors(psi.numpy()[m] / 4, t["orientation_rad"][m], t["grain"][m], 4)
        assert e["max_grain_deg"] < 2.0 and e["per_atom_median_deg"] < 3.0, (name, window, size, e)


def test_anchor_weight_schedule_and_validation():
    module = RVAEModule(image_size=9, angle_anchor=100.0, angle_anchor_steps=300)
    assert module.anchor_weight(0) == 100.0 and module.anchor_weight(150) == 50.0
    assert module.anchor_weight(300) == 0.0 and RVAEModule(image_size=9).anchor_weight(0) == 0.0
    held = RVAEModule(image_size=9, angle_anchor=100.0, angle_anchor_end=100.0)
    assert held.anchor_weight(0) == held.anchor_weight(10**6) == 100.0
    with pytest.raises(ValueError, match="angle_anchor"):
        RVAEModule(image_size=9, angle_anchor=-1.0)
    with pytest.raises(ValueError, match="angle_anchor_steps"):
        RVAEModule(image_size=9, angle_anchor_steps=2.5)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_fitted_angle_follows_the_grains_for_both_site_types(repo_root, honeycomb, tmp_path, seed):
    """Per grain ≤ 5° and per atom (median) ≤ 10° for metal and chalcogen sites, with the anchor of
    configs/rvae/adf.yaml. Without the anchor, the same fit on a larger field left the metal angle at 10–15° per
    grain (the grains hardly told apart); with the anchor released to 0 after 250 steps, seed 1 gave 5.1°."""
    from rvae.cli import run_cli
    from rvae.encode import encode_batch, load_module
    from rvae.store import write_items

    items, t, scored = honeycomb
    store = tmp_path / "items.zarr"
    write_items(store, items, 64)
    run_cli(["fit", "--config", str(repo_root / "configs" / "rvae" / "adf.yaml"), "--data.store", str(store),
             "--data.array", "patches", "--run_dir", str(tmp_path / "run"), "--model.image_size", "17",
             "--trainer.accelerator", "cpu", "--model.period", str(PERIOD), "--data.batch_size", "64",
             "--trainer.max_steps", "400", "--trainer.max_epochs", "-1", "--model.beta_warmup_steps", "250", "--seed_everything", str(seed), "--data.seed", str(seed)])
    module, transform, _ = load_module(tmp_path / "run" / "checkpoints" / "last.ckpt")
    angle = encode_batch(module.model.eval(), torch.from_numpy(transform(items)))["angle"].numpy()
    for site in (0, 1):
        m = scored & (t["site"] == site)
        e = grain_angle_errors(angle[m], t["orientation_rad"][m], t["grain"][m], PERIOD)
        assert e["max_grain_deg"] <= 5.0 and e["per_atom_median_deg"] <= 10.0, (seed, site, e)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_fitted_angle_follows_the_grains_for_every_perovskite_site(repo_root, perovskite, tmp_path, seed):
    """The second lattice: A, B and O sites trained together at period 4 with configs/rvae/adf.yaml (25 px,
    5.5 Å windows), per grain ≤ 5° and per atom ≤ 10° for each site type. With the anchor's moment summed over
    square pixels the A sites missed (8.9° per grain at 17 px: the moment's own grid bias, followed)."""
    from rvae.cli import run_cli
    from rvae.encode import encode_batch, load_module
    from rvae.store import write_items

    image, pos, matched, t, px = perovskite
    items, border = cut_subimages(image, pos, 5.5, px, 25)
    keep = ~border & matched
    items, t = items[keep], {k: v[keep] for k, v in t.items()}
    store = tmp_path / "items.zarr"
    write_items(store, items, 64)
    run_cli(["fit", "--config", str(repo_root / "configs" / "rvae" / "adf.yaml"), "--data.store", str(store),
             "--data.array", "patches", "--run_dir", str(tmp_path / "run"), "--trainer.accelerator", "cpu",
             "--model.period", "4", "--data.batch_size", "64", "--trainer.max_steps", "400",
             "--trainer.max_epochs", "-1", "--seed_everything", str(seed), "--data.seed", str(seed)])
    module, transform, _ = load_module(tmp_path / "run" / "checkpoints" / "last.ckpt")
    angle = encode_batch(module.model.eval(), torch.from_numpy(transform(items)))["angle"].numpy()
    away = t["boundary_distance_angstrom"] > 2.75
    for k, name in enumerate(PEROVSKITE_SITES):
        m = away & (t["site"] == k)
        e = grain_angle_errors(angle[m], t["orientation_rad"][m], t["grain"][m], 4)
        assert e["max_grain_deg"] <= 5.0 and e["per_atom_median_deg"] <= 10.0, (seed, name, e)
