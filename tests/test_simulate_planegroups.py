"""The plane-group generator: Wyckoff tables, computed labels, rendered patterns, the store (real Dask, real
zarr), its resume rule, and the symmetry-map pass of the feature stage on it."""
from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import ndimage

from contract import planegroups as pg
from simulate.planegroups_render import draw_image, draw_labelled_structure, nearest_distance, render_pattern
from simulate.planegroups_symmetry import _spglib_ops, pattern_symmetry
from simulate.planegroups_tables import (
    WYCKOFF,
    conventional_lattice,
    orbit,
    parse_triplet,
    plane_group,
    wyckoff_point,
)

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "dataset" / "planegroups-demo.yaml"
TINY = REPO / "configs" / "dataset" / "planegroups-tiny.yaml"
# the 3-D space group of a plane group's pattern at z = 0 in a cell with a normal c axis (plane group x m_z):
# an independent check of the classification, through spglib's own space-group identification
LAYER_SPACE_GROUP = {"p1": 6, "p2": 10, "pm": 25, "pg": 26, "cm": 38, "p2mm": 47, "p2mg": 51, "p2gg": 55, "c2mm": 65,
                     "p4": 83, "p4mm": 123, "p4gm": 127, "p3": 174, "p3m1": 187, "p31m": 189, "p6": 175, "p6mm": 191}
ORDER = {"p1": 1, "p2": 2, "pm": 2, "pg": 2, "cm": 4, "p2mm": 4, "p2mg": 4, "p2gg": 4, "c2mm": 8, "p4": 4, "p4mm": 8,
         "p4gm": 8, "p3": 3, "p3m1": 6, "p31m": 6, "p6": 6, "p6mm": 12}


def demo_config() -> dict:
    from simulate.planegroups import load_config

    return load_config(DEMO)


def space_group_number(lattice, frac, species) -> int:
    import spglib
    import spglib.error

    spglib.error.OLD_ERROR_HANDLING = False
    a1, a2 = lattice
    lat3 = np.array([[*a1, 0.0], [*a2, 0.0], [0.0, 0.0, 3 * np.abs(lattice).sum() + 7.31]])
    return spglib.get_symmetry_dataset((lat3, np.column_stack([frac, np.zeros(len(frac))]), species),
                                       symprec=1e-3).number


# ------------------------------------------------------------------------------------------------ tables
def test_all_17_groups_with_their_order():
    assert len(pg.PLANE_GROUPS) == 17
    for name in pg.PLANE_GROUPS:
        assert plane_group(name).order == ORDER[name], name


@pytest.mark.parametrize("name", pg.PLANE_GROUPS)
def test_wyckoff_multiplicities_for_generic_parameters(name):
    group = plane_group(name)
    rng = np.random.default_rng(0)
    for w in group.wyckoff:
        for _ in range(5):
            pts = orbit(group, wyckoff_point(w, *rng.uniform(0, 1, 2)))
            assert len(pts) == w.multiplicity, (name, w.label)
            assert np.all((pts >= 0) & (pts < 1))
    # the general position is the group order; multiplicities divide it
    assert group.wyckoff[-1].multiplicity == group.order
    assert all(group.order % w.multiplicity == 0 for w in group.wyckoff)


@pytest.mark.parametrize("name", pg.PLANE_GROUPS)
def test_orbits_are_closed_under_the_group(name):
    group = plane_group(name)
    rng = np.random.default_rng(1)
    for w in group.wyckoff:
        pts = orbit(group, wyckoff_point(w, *rng.uniform(0, 1, 2)))
        for w_mat, t in group.operations:
            for p in pts:
                q = np.mod(w_mat @ p + t, 1.0)
                d = pts - q
                d -= np.round(d)
                assert np.min(np.abs(d).max(axis=1)) < 1e-9, (name, w.label)


@pytest.mark.parametrize("name", pg.PLANE_GROUPS)
def test_operations_form_a_group_modulo_the_lattice(name):
    ops = plane_group(name).operations

    def find(w, t):
        for w2, t2 in ops:
            d = t - t2
            if np.allclose(w, w2) and np.allclose(d - np.round(d), 0, atol=1e-9):
                return True
        return False

    for (w1, t1), (w2, t2) in itertools.product(ops, ops):
        assert find(w1 @ w2, w1 @ t2 + t1), name


@pytest.mark.parametrize("name", pg.PLANE_GROUPS)
def test_site_symmetry_times_multiplicity_is_the_group_order(name):
    """Each Wyckoff position's computed stabiliser order x its multiplicity = the group order (per conventional
    cell): the tables and the symmetry search agree."""
    group = plane_group(name)
    lattice = conventional_lattice(group.lattice_system, 10.0, 6.3, 77.0)
    for w in group.wyckoff:
        pts = orbit(group, wyckoff_point(w, 0.137, 0.291))
        # a general-position orbit of another species fixes the group without adding symmetry
        gen = orbit(group, wyckoff_point(group.wyckoff[-1], 0.071, 0.383))
        frac, species = np.vstack([pts, gen]), np.r_[np.zeros(len(pts), int), np.ones(len(gen), int)]
        sym = pattern_symmetry(lattice, frac, species, 1e-4)
        assert sym.plane_group == name, (name, w.label)
        order = {"1": 1, "2": 2, "m": 2, "2mm": 4, "3": 3, "3m": 6, "4": 4, "4mm": 8, "6": 6, "6mm": 12}
        cells = 2 if name in ("cm", "c2mm") else 1
        site = [o for o in sym.orbits if o[2] == 0][0]
        assert order[site[1]] * w.multiplicity == group.order, (name, w.label, site)
        assert site[0] * cells == w.multiplicity


def test_parse_triplet():
    w, t = parse_triplet("-x+y,-x+1/2")
    np.testing.assert_allclose(w, [[-1, 1], [-1, 0]])
    np.testing.assert_allclose(t, [0, 0.5])
    with pytest.raises(ValueError):
        parse_triplet("x,y,z")
    with pytest.raises(ValueError):
        parse_triplet("x*2,y")


# ------------------------------------------------------------------------------------------------ labels
@pytest.mark.parametrize("name", pg.PLANE_GROUPS)
def test_generic_structures_are_labelled_with_their_group(name):
    group = plane_group(name)
    rng = np.random.default_rng(3)
    for _ in range(3):
        lattice = conventional_lattice(group.lattice_system, 10.0, 10.0 * rng.uniform(0.4, 0.9), rng.uniform(65, 115))
        frac, species = [], []
        for s in range(2):
            pts = orbit(group, wyckoff_point(group.wyckoff[-1], *rng.uniform(0, 1, 2)))
            frac += list(pts)
            species += [s] * len(pts)
        sym = pattern_symmetry(lattice, np.array(frac), np.array(species), 1e-3)
        assert sym.plane_group == name
        assert space_group_number(lattice, np.array(frac), np.array(species)) == LAYER_SPACE_GROUP[name]


@pytest.mark.parametrize("drawn, letters, system, expected", [
    ("p4", ["a"], "square", "p4mm"),            # a lone atom has the full point symmetry of its lattice
    ("p2", ["a"], "oblique", "p2"),
    ("p3", ["a", "b"], "hexagonal", "p3m1"),    # two species on 1a, 1b: 1H-MX2 in projection
    ("p6mm", ["b"], "hexagonal", "p6mm"),       # graphene
    ("p2mm", ["a", "d"], "rectangular", "c2mm"),  # same species at 0,0 and 1/2,1/2: centred
])
def test_special_positions_give_the_higher_group(drawn, letters, system, expected):
    group = plane_group(drawn)
    lattice = conventional_lattice(system, 10.0, 7.1, 71.0)
    frac = np.vstack([orbit(group, wyckoff_point(group.wyckoff_position(w), 0, 0)) for w in letters])
    species = np.zeros(len(frac), int) if expected == "c2mm" or drawn in ("p6mm", "p4", "p2") else \
        np.repeat(np.arange(len(letters)), [len(orbit(group, wyckoff_point(group.wyckoff_position(w), 0, 0)))
                                            for w in letters])
    assert pattern_symmetry(lattice, frac, species, 1e-3).plane_group == expected


def test_signature_ignores_species_names_and_origin():
    group = plane_group("p2mm")
    lattice = conventional_lattice("rectangular", 10.0, 7.0, 90.0)
    a = np.vstack([orbit(group, wyckoff_point(group.wyckoff_position("a"), 0, 0)),
                   orbit(group, wyckoff_point(group.wyckoff_position("i"), 0.2, 0.3))])
    species = np.r_[0, np.ones(4, int)]
    s1 = pattern_symmetry(lattice, a, species, 1e-3).signature()
    s2 = pattern_symmetry(lattice, a, 1 - species, 1e-3).signature()          # species swapped
    s3 = pattern_symmetry(lattice, np.mod(a + [0.5, 0.5], 1), species, 1e-3).signature()  # another origin
    assert s1 == s2 == s3 == "p2mm:1(2mm)A+4(1)B"


@pytest.mark.parametrize("aspect, accepted", [(0.99, False), (0.97, False), (0.9, True), (0.6, True)])
def test_draws_near_a_higher_symmetry_are_rejected_at_the_loose_tolerance(aspect, accepted):
    """One atom per cell on a 12 px rectangular lattice: p2mm, but within 0.5 px of a square lattice (p4mm)
    when b/a > ~0.96: such a draw is ambiguous and refused; clearly rectangular ones are kept."""
    from simulate.planegroups_render import DrawRejected, Structure, unambiguous_symmetry

    s = Structure("p2mm", conventional_lattice("rectangular", 12.0, 12.0 * aspect, 90.0), np.zeros((1, 2)),
                  np.zeros(1, int), (("a", 0),))
    if accepted:
        assert unambiguous_symmetry(s, 1e-3, 0.5).plane_group == "p2mm"
    else:
        with pytest.raises(DrawRejected, match="p4mm"):
            unambiguous_symmetry(s, 1e-3, 0.5)


def test_labels_agree_with_spglib_space_groups_on_generator_draws():
    cfg = demo_config()
    rng = np.random.default_rng(11)
    labels = set()
    for i in range(85):
        s, sym, _ = draw_labelled_structure(rng, pg.PLANE_GROUPS[i % 17], cfg)
        assert space_group_number(s.lattice, s.frac, s.species) == LAYER_SPACE_GROUP[sym.plane_group], s.description()
        assert nearest_distance(s.lattice, s.frac) >= cfg["structure"]["min_distance_px"][0] - 1e-9
        area = abs(np.linalg.det(sym.primitive))
        lo, hi = cfg["structure"]["cell_size_px"]
        assert lo - 1e-6 <= np.sqrt(area) <= hi + 1e-6
        labels.add(sym.plane_group)
    assert len(labels) == 17


def _image_frame_operations(r):
    """Symmetry operations of the rendered pattern as affine maps of image coordinates (x, y)."""
    rots, trans, _ = _spglib_ops(r.structure.lattice, r.structure.frac, r.structure.species, 1e-3)
    c, s = np.cos(np.deg2rad(r.rotation_deg)), np.sin(np.deg2rad(r.rotation_deg))
    a_t = (r.structure.lattice @ np.array([[c, -s], [s, c]]).T).T  # columns: rotated lattice vectors
    inv = np.linalg.inv(a_t)
    centre = np.full(2, r.clean.shape[0] / 2)
    ops = []
    for w, t in zip(rots, trans):
        m = a_t @ w @ inv
        b = a_t @ t + r.origin_px - m @ r.origin_px
        b -= a_t @ np.round(inv @ (m @ centre + b - centre))  # the lattice translation keeping the centre near
        ops.append((m, b))
    return ops


def _mismatch(clean, m, b, margin=14):
    h, w = clean.shape
    y, x = np.mgrid[margin:h - margin, margin:w - margin].astype(float)
    pts = np.stack([x.ravel(), y.ravel()])
    q = m @ pts + b[:, None]
    inside = (q[0] > 2) & (q[0] < w - 3) & (q[1] > 2) & (q[1] < h - 3)
    moved = ndimage.map_coordinates(clean.astype(float), [q[1, inside], q[0, inside]], order=3)
    return float(np.abs(moved - clean[margin:h - margin, margin:w - margin].ravel()[inside]).max())


def test_rendered_pattern_has_exactly_its_labelled_symmetry():
    """The noiseless rendered image maps onto itself under every operation of the computed group (cubic
    interpolation), and a p1 pattern does not map onto itself under a 2-fold rotation about its cell origin."""
    cfg = demo_config()
    cfg["image_size_px"] = 96
    cfg["rendering"]["peak_sigma_px"] = [1.3, 1.3]
    cfg["rendering"]["peak_shapes"] = ["gaussian"]
    rng = np.random.default_rng(5)
    for name in ("p4gm", "p31m", "p2mg", "cm", "p6", "p1"):
        r = draw_image(rng, name, cfg)
        ops = _image_frame_operations(r)
        assert len(ops) == plane_group(r.symmetry.plane_group).order // (2 if r.symmetry.plane_group in ("cm", "c2mm")
                                                                         else 1) * _cells(r)
        for m, b in ops:
            assert _mismatch(r.clean, m, b) < 0.02, (name, r.symmetry.plane_group)
        if r.symmetry.plane_group == "p1":  # no 2-fold axis at a lattice point near the centre
            c, s = np.cos(np.deg2rad(r.rotation_deg)), np.sin(np.deg2rad(r.rotation_deg))
            a_t = (r.structure.lattice @ np.array([[c, -s], [s, c]]).T).T
            point = r.origin_px + a_t @ np.round(np.linalg.solve(a_t, np.full(2, 48.0) - r.origin_px))
            assert _mismatch(r.clean, -np.eye(2), 2 * point) > 0.2


def _cells(r):
    """Primitive cells per conventional cell of the drawn lattice (pure translations spglib reports)."""
    return int(round(abs(np.linalg.det(r.structure.lattice)) / abs(np.linalg.det(r.symmetry.primitive))))


def test_images_are_deterministic_and_carry_their_dose():
    from simulate.planegroups import config_hash, image_rng

    cfg = demo_config()
    h = config_hash(cfg)
    a = draw_image(image_rng(cfg, h, 7), "p3", cfg)
    b = draw_image(image_rng(cfg, h, 7), "p3", cfg)
    c = draw_image(image_rng(cfg, h, 8), "p3", cfg)
    assert np.array_equal(a.image, b.image) and not np.array_equal(a.image, c.image)
    assert a.image.shape == (cfg["image_size_px"],) * 2 and a.image.dtype == np.float32
    lo, hi = cfg["noise"]["peak_counts"]
    assert lo <= a.peak_counts <= hi
    assert np.all(a.image >= -10 * cfg["noise"]["read_noise_counts"][1] - 1)


def test_render_pattern_places_peaks_where_asked():
    img = render_pattern(32, np.array([[10.0, 20.0], [25.5, 5.0]]), np.array([1.0, 0.5]), np.array([1.0, 1.0]),
                         "gaussian", 2.0, 5)
    assert img[20, 10] == pytest.approx(1.0, abs=1e-6)
    assert img[5, 25] == pytest.approx(0.5 * np.exp(-0.25 / 2), abs=1e-6)
    moffat = render_pattern(32, np.array([[16.0, 16.0]]), np.array([1.0]), np.array([1.0]), "moffat", 1.5, 12)
    gauss = render_pattern(32, np.array([[16.0, 16.0]]), np.array([1.0]), np.array([1.0]), "gaussian", 1.5, 12)
    assert moffat[16, 16] == pytest.approx(1.0) and moffat[16, 24] > 50 * gauss[16, 24]  # heavy tails


# ------------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("change, message", [
    ({"groups": ["p7"]}, "groups[0]: unknown plane group"),
    ({"image_size_px": 16}, "image_size_px"),
    ({"structure": {"species": [1, 4]}}, "structure.species"),
    ({"noise": {"peak_counts": [0, 10]}}, "noise.peak_counts"),
    ({"symmetry": {"tight_tolerance_px": 1.0}}, "symmetry.tight_tolerance_px"),
    ({"kind": "patches"}, "kind"),
])
def test_bad_configs_name_the_field(tmp_path, change, message):
    from contract.errors import ConfigError
    from simulate.planegroups import load_config

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"base": str(DEMO), **change}))
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(path)


# ------------------------------------------------------------------------------------------------ store
@pytest.fixture(scope="module")
def tiny_planegroup_store(tmp_path_factory):
    """The tiny plane-group store (17 x 2 images, 64 px) on a real 2-worker LocalCluster, with its maps."""
    from cluster import open_client
    from features.symmetry_store import map_store
    from simulate.planegroups import simulate_planegroups

    out = tmp_path_factory.mktemp("pg") / "tiny.zarr"
    with open_client("local", n_workers=2) as client:
        summary = simulate_planegroups(TINY, out, client=client)
        maps = map_store(out, client)
    assert summary["tasks_run"] == 3 and maps["done_shards"] == 3
    return out


def test_store_layout_and_labels(tiny_planegroup_store):
    import zarr

    from simulate.planegroups import decode_text

    g = zarr.open_group(str(tiny_planegroup_store), mode="r")
    n = 34
    assert g[pg.IMAGES].shape == (n, 64, 64) and np.isfinite(g[pg.IMAGES][:]).all()
    assert g[pg.MAPS].shape == (n, 7, 64, 64) and np.isfinite(g[pg.MAPS][:]).all()
    assert g[pg.TASK_DONE][:].all() and g[pg.MAPS_DONE][:].all()
    labels = g[pg.LABEL][:]
    drawn = g[pg.DRAWN_GROUP][:]
    sig = decode_text(g[pg.SIGNATURE][:])
    for lab, s in zip(labels, sig):
        assert s.split(":")[0] == pg.PLANE_GROUPS[lab]
    assert np.array_equal(drawn, np.arange(n) % 17)
    table = g.attrs[pg.ATTR_STRUCTURES]
    assert [t["signature"] for t in table][g[pg.STRUCTURE][0]] == sig[0]
    assert sum(t["images"] for t in table) == n
    k = g[pg.KERNEL_PX][:]
    assert np.all(k % 2 == 1) and np.all(k >= 7) and np.all(k <= 32)
    # the stored maps are the maps of the stored image with the stored kernel
    from kernels.symmetry import symmetry_maps

    np.testing.assert_allclose(g[pg.MAPS][5].astype(np.float32), symmetry_maps(g[pg.IMAGES][5], int(k[5])),
                               atol=2e-3)


def test_resume_rewrites_identical_bytes(tiny_planegroup_store, tmp_path):
    import zarr

    from simulate.planegroups import simulate_planegroups

    copy = tmp_path / "copy.zarr"
    shutil.copytree(tiny_planegroup_store, copy)
    g = zarr.open_group(str(copy), mode="r+")
    g[pg.TASK_DONE][1] = 0
    g[pg.IMAGES][12:24] = np.zeros((12, 64, 64), np.float32)
    summary = simulate_planegroups(TINY, copy, resume=True, n_workers=1)
    assert summary["tasks_run"] == 1
    a = zarr.open_group(str(tiny_planegroup_store), mode="r")
    np.testing.assert_array_equal(g[pg.IMAGES][:], a[pg.IMAGES][:])
    np.testing.assert_array_equal(g[pg.SIGNATURE][:], a[pg.SIGNATURE][:])


def test_existing_store_or_other_config_is_refused(tiny_planegroup_store, tmp_path):
    from contract.store import StoreError
    from simulate.planegroups import simulate_planegroups

    with pytest.raises(StoreError, match="--resume"):
        simulate_planegroups(TINY, tiny_planegroup_store)
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"base": str(TINY), "seed": 1}))
    with pytest.raises(StoreError, match="different config"):
        simulate_planegroups(other, tiny_planegroup_store, resume=True)


def test_cli_check_errors_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"base": str(DEMO), "groups": ["p5"]}))
    run = subprocess.run([sys.executable, "-m", "simulate", "planegroups", "--config", str(bad), "--out",
                          str(tmp_path / "x.zarr")], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 2 and "groups[0]" in run.stderr
    assert not (tmp_path / "x.zarr").exists()


def test_maps_pass_refuses_an_unfinished_store(tiny_planegroup_store, tmp_path):
    import zarr

    from contract.store import StoreError
    from features.symmetry_store import store_plan

    copy = tmp_path / "c.zarr"
    shutil.copytree(tiny_planegroup_store, copy)
    zarr.open_group(str(copy), mode="r+")[pg.TASK_DONE][0] = 0
    with pytest.raises(StoreError, match="simulation incomplete"):
        store_plan(copy)


def test_folds_never_split_a_structure(tiny_planegroup_store):
    import zarr

    from training.phase_data import structure_folds

    g = zarr.open_group(str(tiny_planegroup_store), mode="r")
    structure, label = g[pg.STRUCTURE][:], g[pg.LABEL][:]
    folds = structure_folds(structure, label, 3, 0)
    assert set(folds) == {0, 1, 2}
    for s in np.unique(structure):
        assert len(set(folds[structure == s])) == 1
    assert np.array_equal(folds, structure_folds(structure, label, 3, 0))


def test_a_hexagonal_pattern_in_a_rectangular_cell_is_found_hexagonal():
    """A 60-degree rotation is not an integer matrix in an a x sqrt(3) a cell: the search runs in the primitive
    cell, so a centred rectangular cell of aspect sqrt(3) with one atom per lattice point is p6mm."""
    lattice = conventional_lattice("centred_rectangular", 10.0, 10.0 * np.sqrt(3), 90.0)
    group = plane_group("c2mm")
    frac = orbit(group, wyckoff_point(group.wyckoff_position("a"), 0, 0))
    assert pattern_symmetry(lattice, frac, np.zeros(len(frac), int), 1e-3).plane_group == "p6mm"
    near = conventional_lattice("centred_rectangular", 10.0, 10.0 * np.sqrt(3) * 1.01, 90.0)  # 0.17 px off
    from simulate.planegroups_render import DrawRejected, Structure, unambiguous_symmetry

    with pytest.raises(DrawRejected, match="p6mm"):
        unambiguous_symmetry(Structure("c2mm", near, frac, np.zeros(len(frac), int), (("a", 0),)), 1e-3, 0.5)


@pytest.mark.parametrize("material, group", [("graphene", "p6mm"), ("WSe2-1H", "p3m1"), ("SrTiO3-001", "p4mm")])
def test_real_material_projections_get_their_computed_plane_group(material, group):
    from simulate.planegroups_materials import material_plane_group

    facts = material_plane_group(material)
    assert facts["plane_group"] == group
    if material == "SrTiO3-001":
        assert facts["columns"] == ["O5", "O5Ti5", "Sr5"]  # O, Ti-O and Sr columns along [001]


def test_material_images_through_abtem_are_cached_and_readable(tmp_path):
    """A coarse abTEM run of graphene (MAADF, 0.25 A steps): test images with their computed group, readable by
    inference's reader, and a second run served from the cache."""
    import json
    import time

    from inference.io import load_image
    from simulate.planegroups_materials import write_materials

    kwargs = dict(detector="MAADF", step_angstrom=0.25, images_per_material=2, size_px=64,
                  materials=("graphene",))
    manifest = write_materials(tmp_path, **kwargs)
    assert [e["plane_group"] for e in manifest["images"]] == ["p6mm", "p6mm"]
    assert len(list((tmp_path / "cache").glob("graphene-*.npy"))) == 1
    image, _ = load_image(tmp_path / "graphene-0.npy")
    assert image.shape == (64, 64) and image.std() > 0
    meta = json.loads((tmp_path / "graphene-0.json").read_text())
    assert meta["plane_group"] == "p6mm" and meta["peak_counts"] == 30.0
    started = time.perf_counter()
    again = write_materials(tmp_path, **kwargs)
    assert time.perf_counter() - started < 20 and again == manifest
    np.testing.assert_array_equal(np.load(tmp_path / "graphene-1.npy"), load_image(tmp_path / "graphene-1.npy")[0])
