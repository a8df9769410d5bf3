"""What the rVAE sees of a 4D-STEM pattern (issue 25 item 1): the bright-field window about the undeflected beam
(``rvae.data.bright_field_window``), the window crop and the ``mean_pattern`` normalisation of ``ItemTransform``,
and ``fit-4dstem --window`` end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import zarr

from contract.errors import InputError
from rvae.__main__ import main
from rvae.data import ItemTransform, ZarrItemsDataModule, bright_field_window, dataset_statistics, ring_index

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SMALL = ["--max-epochs", "1", "--", "--model.encoder_channels", "[8, 16]", "--model.encoder_hidden", "32",
         "--model.decoder_hidden", "32", "--data.batch_size", "64", "--trainer.accelerator", "cpu"]


def disc(size: int, centre: tuple[float, float], radius: float, outside: float = 0.0) -> np.ndarray:
    yy, xx = np.indices((size, size))
    return np.where(np.hypot(yy - centre[0], xx - centre[1]) <= radius, 100.0, outside)


@pytest.mark.parametrize("centre", [(20, 20), (18, 23), (22, 17)])
def test_the_window_is_centred_on_the_disc_and_reaches_the_factor_times_its_radius(centre):
    r, c, n = bright_field_window(disc(41, centre, 6.0, outside=3.0), 1.5)
    assert (r + n // 2, c + n // 2) == centre
    assert n % 2 == 1 and n == 2 * int(np.ceil(1.5 * np.sqrt((disc(41, centre, 6.0) > 0).sum() / np.pi))) + 1


def test_the_window_follows_a_shifted_beam_and_is_clipped_to_the_pattern():
    r, c, n = bright_field_window(disc(41, (5, 30), 6.0), 2.0)
    assert (r + n // 2, c + n // 2) == (5, 30) and r == 0 and n == 11  # clipped: 5 rows above the centre
    # a brighter Bragg disc elsewhere does not move the window off the brightest (central) disc
    pattern = disc(41, (20, 20), 6.0) + 0.6 * disc(41, (20, 36), 3.0)
    r, c, n = bright_field_window(pattern, 1.0)
    assert (r + n // 2, c + n // 2) == (20, 20)


@pytest.mark.parametrize("pattern, message", [(np.ones((9, 9)), "flat"), (np.ones((9, 8)), "square"),
                                              (np.full((9, 9), np.nan), "finite")])
def test_bad_mean_patterns_are_refused(pattern, message):
    with pytest.raises(InputError, match=message):
        bright_field_window(pattern)


def test_crop_and_mean_pattern_normalisation():
    rng = np.random.default_rng(0)
    raw = rng.poisson(disc(12, (6, 6), 3.0, outside=2.0), size=(64, 12, 12)).astype(np.float32)
    crop = (1, 2, 7)
    t = ItemTransform(crop=crop)
    assert t(raw).shape == (64, 7, 7)
    assert np.array_equal(t.pre(raw), raw[:, 1:, 1:][:, 1:8, 2:9])  # the odd crop first, then the window
    with pytest.raises(InputError, match="leaves"):
        ItemTransform(crop=(5, 5, 7))(raw)
    root = zarr.open_group(zarr.storage.MemoryStore(), mode="w")
    arr = root.create_array("items", data=raw, chunks=(16, 12, 12))
    s = dataset_statistics(arr, sqrt=True, crop=crop)
    assert len(s["pixel_mean"]) == 49 and len(s["residual_ring_std"]) == ring_index(7).max() + 1
    out = ItemTransform(sqrt=True, normalisation="mean_pattern", offset=tuple(s["pixel_mean"]),
                        scale=tuple(s["residual_ring_std"]), crop=crop)(raw)
    assert np.abs(out.mean(axis=0)).max() < 1e-4  # the mean item is gone, pixel by pixel
    rings = ring_index(7)  # and what is left has unit spread per ring
    for ring in range(rings.max() + 1):
        assert out[:, rings == ring].std() == pytest.approx(1.0, rel=1e-3)


def test_the_data_module_checks_its_crop(tmp_path):
    with pytest.raises(ValueError, match="odd size"):
        ZarrItemsDataModule(crop=[0, 0, 6])
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    root.create_array("items", data=np.ones((8, 9, 9), np.float32) + np.arange(8)[:, None, None], chunks=(4, 9, 9))
    dm = ZarrItemsDataModule(store=str(tmp_path / "s.zarr"), array="items", crop=[1, 1, 7],
                             normalisation="mean_pattern", val_shards=0)
    dm.setup()
    assert dm.item_size == 7 and len(dm.offset) == 49
    with pytest.raises(InputError, match="leaves"):
        ZarrItemsDataModule(store=str(tmp_path / "s.zarr"), array="items", crop=[3, 3, 7]).setup()


def beam_scan(sx: int, sy: int, k: int, centre: tuple[int, int], seed: int = 0) -> np.ndarray:
    """(sx, sy, kx, ky) counts: a bright-field disc about ``centre`` (ky, kx), off the pattern centre, whose
    intensity leans towards a direction that turns with the scan position, on a dim ring of dark field."""
    rng = np.random.default_rng(seed)
    ky, kx = np.indices((k, k))
    dy, dx = ky - centre[0], kx - centre[1]
    r = np.hypot(dy, dx)
    out = np.empty((sx, sy, k, k), np.float32)
    for i in range(sx):
        for j in range(sy):
            t = 2 * np.pi * (i / sx + j / sy)
            lean = 1 + 0.3 * (dx * np.cos(t) + dy * np.sin(t)) / 4
            out[i, j] = rng.poisson(np.where(r <= 4, 200 * lean, 5.0)).T  # (kx, ky) as abTEM orders them
    return out


def test_fit_4dstem_sees_the_bright_field_window_about_an_off_centre_beam(tmp_path):
    data = tmp_path / "scan.npy"
    np.save(data, beam_scan(10, 8, 24, centre=(10, 13)))
    out = tmp_path / "out"
    assert main(["fit-4dstem", str(data), "--out", str(out), "--fold-period-px", "4", "5", *SMALL]) == 0
    summary = json.loads((out / "summary.json").read_text())
    r, c, n = summary["crop_row_col_size"]
    # the 24 px patterns were cropped to 23 (index 1 onwards): the beam at (10, 13) lands on (9, 12)
    assert summary["window"] == "bright_field" and (r + n // 2, c + n // 2) == (9, 12) and n == 13
    hp = torch.load(out / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert hp["hyper_parameters"]["image_size"] == n and hp["datamodule_hyper_parameters"]["crop"] == [r, c, n]
    assert np.load(out / "angle.npy").shape == (10, 8)
    whole = tmp_path / "whole"
    assert main(["fit-4dstem", str(data), "--out", str(whole), "--window", "whole", "--fold-period-px", "4", "5",
                 *SMALL]) == 0
    assert json.loads((whole / "summary.json").read_text())["item_size_px"] == 23


def test_an_unknown_window_or_radius_factor_is_refused_before_any_work(tmp_path):
    from rvae.fit import fit_4dstem

    with pytest.raises(InputError, match="window must be one of"):
        fit_4dstem(tmp_path / "missing.npy", tmp_path / "out", window="disc")
    with pytest.raises(InputError, match="radius-factor must be > 0"):
        fit_4dstem(tmp_path / "missing.npy", tmp_path / "out", bright_field_radius_factor=0.0)
    assert not (tmp_path / "out").exists()


def test_the_bench_dose_to_reach_needs_every_higher_dose_to_reach_too():
    from bench.rvae_4dstem import dose_to_reach

    assert dose_to_reach({1e3: 0.6, 1e4: 0.92, 1e5: 0.95, 1e6: 0.99}) == 1e4
    assert dose_to_reach({1e3: 0.95, 1e4: 0.85, 1e5: 0.95}) == 1e5  # a dip above a lucky low dose
    assert dose_to_reach({1e3: 0.6, 1e4: 0.7}) is None


def test_the_oracle_recovers_the_direction_at_high_dose_and_not_at_a_few_electrons():
    from bench.rvae_4dstem import oracle_direction

    rng = np.random.default_rng(0)
    angles = np.linspace(-np.pi, np.pi, 24, endpoint=False)
    ky, kx = np.indices((15, 15)) - 7
    clean = np.stack([np.where(np.hypot(ky, kx) <= 5, 1 + 0.5 * (kx * np.cos(t) + ky * np.sin(t)) / 5, 0.01)
                      for t in angles])
    clean /= clean.sum((1, 2), keepdims=True)
    rows = np.arange(24)
    for electrons, expected in ((1e5, 1.0), (3.0, None)):
        counts = rng.poisson(clean * electrons)
        got = oracle_direction(counts, clean, electrons, 1.0, angles, rows)
        error = np.abs(np.angle(np.exp(1j * (got - angles))))
        if expected:
            assert error.max() < 1e-6
        else:
            assert np.median(error) > 0.1
