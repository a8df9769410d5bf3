"""Undoped samples (``--dopant none``), the fast part: the context encoding, the 14 environments without a
dopant site, dataset configs and plans with undoped combos, the fullfield structure, the inference context and
the D masking, labelling's context check. No abTEM here (tests/test_undoped_simulate.py runs it)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from contract.catalog import is_excluded, load_catalog
from contract.classes import CLASS_IDS
from contract.context import (
    NO_DOPANT,
    NO_DOPANT_SHELL_FRACTIONS,
    SHELLS,
    Case,
    absent_classes,
    canonical_dopant,
    is_undoped,
)
from contract.errors import ConfigError, InputError
from kernels.context import context_vector, material_vector, shell_fractions
from inference.classify import CONTEXT_NEAR, material_distance, predict_probabilities
from inference.io import resolve_context
from labelling.project import _check_context
from simulate import config
from simulate.__main__ import main as simulate_main
from contract.environments import ENVIRONMENTS, UNDOPED_ENVIRONMENT_IDS, environments_for_dopant
from simulate.fullfield import build_field, default_fractions, parse_fractions
from simulate.plan import make_plan
from simulate.structures import build_environment
from training.models import build_model

D = CLASS_IDS["D"]


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def test_none_spellings_and_absent_classes():
    for text in ("none", "None", " NONE "):
        assert is_undoped(text) and canonical_dopant(text) == NO_DOPANT
    for text in ("Cr", "", None, "nonex"):
        assert not is_undoped(text)
    assert canonical_dopant(" Cr ") == "Cr"
    assert absent_classes("none") == ("D",) and absent_classes("Cr") == ()
    assert Case.from_dict({"host": "WSe2", "metal": "W", "chalcogen": "Se", "dopant": "None",
                           "beam_energy_kev": 60, "detector": "HAADF"}).dopant == NO_DOPANT


def test_undoped_context_vector_has_an_all_zero_dopant_block_and_nothing_else_changes():
    undoped = context_vector("W", "Se", "none", "MAADF", 80)
    doped = context_vector("W", "Se", "Cr", "MAADF", 80)
    assert undoped.shape == (23,) and undoped.dtype == np.float32
    n = len(SHELLS)
    assert np.array_equal(undoped[2 * n:3 * n], np.zeros(n, np.float32))
    assert NO_DOPANT_SHELL_FRACTIONS == (0.0,) * n
    keep = np.r_[0:2 * n, 3 * n:23]  # host metal, chalcogen, detector and energy are the doped case's
    assert np.array_equal(undoped[keep], doped[keep])
    assert np.array_equal(context_vector("W", "Se", "None", "MAADF", 80), undoped)


def test_no_element_is_encoded_like_no_dopant():
    """Every element's shell block sums to 1 (electrons / Z), so the zero block is at L2 distance >= 1/sqrt(6)
    from every real dopant: far beyond the distance up to which the context carries (CONTEXT_NEAR)."""
    elements = ("W", "Se", "Cr", "Nb", "Re")  # a host metal, a chalcogen, a dopant of each row (lookups are slow)
    zero = np.zeros(len(SHELLS))
    for symbol in elements:
        block = np.asarray(shell_fractions(symbol))
        assert block.sum() == pytest.approx(1.0)
        assert np.linalg.norm(block - zero) >= 1 / np.sqrt(len(SHELLS)) - 1e-9 > CONTEXT_NEAR
    # and the material distance of an undoped context to a trained doped one is computed, not skipped
    cases = [{"host": "WSe2", "metal": "W", "chalcogen": "Se", "dopant": "Cr"}]
    d, case = material_distance({"metal": "W", "chalcogen": "Se", "dopant": "none"}, cases)
    assert d == pytest.approx(np.linalg.norm(shell_fractions("Cr"))) and d > CONTEXT_NEAR
    assert material_vector("W", "Se", "none")[12:].sum() == 0


def test_fourteen_environments_have_no_dopant_site():
    undoped = [ENVIRONMENTS[i] for i in UNDOPED_ENVIRONMENT_IDS]
    assert len(undoped) == 14
    # 3 chalcogen-site centres with three host-metal neighbours + the 11 host-metal centres
    assert sorted((e.centre, e.neighbours) for e in undoped if e.sublattice == "chalcogen") == sorted(
        (c, ("M", "M", "M")) for c in ("X2", "VacX", "VacX2"))
    assert sum(e.centre == "M" for e in undoped) == 11 == sum(e.centre == "M" for e in ENVIRONMENTS)
    assert all(e.label != D and "D" not in e.neighbours for e in undoped)
    assert all("D" in (e.centre, *e.neighbours) for e in ENVIRONMENTS if e.id not in UNDOPED_ENVIRONMENT_IDS)
    assert environments_for_dopant("none", range(34)) == UNDOPED_ENVIRONMENT_IDS
    assert environments_for_dopant("Cr", [0, 23]) == (0, 23) and environments_for_dopant("none", [0, 23]) == (0,)


def _raw(repo_root, selection, **extra):
    raw = config.load_yaml(repo_root / "configs" / "dataset" / "paper.yaml")
    raw["selection"] = selection
    raw.update(extra)
    return raw


def test_config_accepts_none_in_combos_and_dopant_lists(repo_root, catalog):
    cfg = config.resolve(_raw(repo_root, {"combos": [["WSe2", "None"], ["WSe2", "Cr"]]}))
    assert cfg.combos == [["WSe2", "none"], ["WSe2", "Cr"]]
    assert cfg.materials["dopants"] == ["Cr"]  # "none" is no catalog entry
    cfg = config.resolve(_raw(repo_root, {"hosts": ["WSe2", "MoS2"], "dopants": ["none", "Nb"]}))
    assert cfg.combos == [["WSe2", "none"], ["WSe2", "Nb"], ["MoS2", "none"]]  # Nb is excluded in MoS2 only
    assert not is_excluded("W", "none")
    with pytest.raises(ConfigError, match=r"selection.combos\[0\]: unknown dopant 'nada'.*'none'"):
        config.resolve(_raw(repo_root, {"combos": [["WSe2", "nada"]]}))
    with pytest.raises(ConfigError, match="WSe2\\+none has nothing to simulate"):
        make_plan(config.resolve(_raw(repo_root, {"combos": [["WSe2", "none"]]}, environments=[23, 24])))
    combos = catalog.combos(undoped=True)
    assert len(combos) == len(catalog.combos()) + len(catalog.hosts)
    assert ("WSe2", "none") in combos and ("WSe2", "none") not in catalog.combos()


def test_simulate_check_of_an_undoped_combo_gives_14_environments_per_energy(repo_root, tmp_path, capsys):
    path = tmp_path / "undoped.yaml"
    path.write_text(f"base: {repo_root / 'configs' / 'dataset' / 'paper.yaml'}\nname: undoped\n"
                    "selection:\n  combos: [[WSe2, none]]\n")
    assert simulate_main(["check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "1 combos, 14 environments, 3 tasks, 6 cases" in out
    assert f"{14 * 3 * 2 * 2800} patches" in out  # 14 environments x 3 energies x 2 detectors x 2800 patches
    plan = make_plan(config.load(path))
    assert all(plan.environments_of(t) == UNDOPED_ENVIRONMENT_IDS for t in plan.tasks)


def test_mixed_plan_lays_tasks_end_to_end_and_aligns_clean_chunks(repo_root):
    cfg = config.resolve(_raw(repo_root, {"combos": [["WSe2", "Cr"], ["WSe2", "none"], ["MoS2", "V"]]},
                              imaging={**config.load_yaml(repo_root / "configs" / "dataset" / "paper.yaml")["imaging"],
                                       "beam_energies_kev": [60, 80]}))
    plan = make_plan(cfg)
    assert not plan.is_uniform
    assert [len(plan.environments_of(t)) for t in plan.tasks] == [34, 34, 14, 14, 34, 34]
    assert plan.n_rows == (4 * 34 + 2 * 14) * plan.rows_per_shard
    # every row belongs to exactly one shard of one task, in task order, without gaps
    starts = [plan.shard_start(t, p) for t in plan.tasks for p in range(len(plan.environments_of(t)))]
    assert starts == list(range(0, plan.n_rows, plan.rows_per_shard))
    shards = list(itertools.chain.from_iterable(plan.task_shards(t) for t in plan.tasks))
    assert shards == list(range(plan.n_shards))
    # clean/: no chunk is shared by two tasks (concurrent writers must own whole chunks)
    per = plan.clean_chunk_rows
    for t in plan.tasks:
        assert plan.clean_start(t) % per == 0 and plan.task_clean_rows(t) % per == 0
    chunks = list(itertools.chain.from_iterable(plan.task_clean_chunks(t) for t in plan.tasks))
    assert chunks == list(range(plan.n_clean_rows // per))
    with pytest.raises(ValueError, match="differ in size"):
        plan.rows_per_task
    # a doped-only plan keeps the layout of every earlier store
    doped = make_plan(config.resolve(_raw(repo_root, {"combos": [["WSe2", "Cr"], ["MoS2", "V"]]})))
    assert doped.is_uniform and doped.clean_chunk_rows == doped.clean_rows_per_task == 34 * 2
    assert doped.shard_start(doped.tasks[2], 5) == 2 * doped.rows_per_task + 5 * doped.rows_per_shard


def test_simulate_structures_writes_only_the_environments_without_dopant_sites(repo_root, tmp_path, capsys):
    path = tmp_path / "tiny-undoped.yaml"
    path.write_text(f"base: {repo_root / 'configs' / 'dataset' / 'tiny.yaml'}\nname: tiny-undoped\n"
                    "selection:\n  combos: [[WSe2, none], [WSe2, Cr]]\n")
    assert simulate_main(["structures", "--config", str(path), "--out", str(tmp_path / "cif")]) == 0
    assert "wrote 5 CIF files" in capsys.readouterr().out  # tiny.yaml's environments 0, 12, 23: 2 + 3
    assert sorted(p.name for p in (tmp_path / "cif" / "WSe2+none").iterdir()) == ["env00_X2.cif", "env12_M.cif"]
    host = config.load(path).materials["hosts"]["WSe2"]
    with pytest.raises(ValueError, match="environment 23 has a dopant site"):
        build_environment(host, "none", ENVIRONMENTS[23], (3, 2), 2.0)


def test_undoped_field_has_no_dopant_column(catalog):
    host = {k: getattr(catalog.hosts["WSe2"], k) for k in ("metal", "chalcogen", "lattice_constant_angstrom",
                                                          "thickness_angstrom")}
    fractions = parse_fractions(default_fractions("none"))
    assert fractions["D"] == 0 and parse_fractions(default_fractions("Cr"))["D"] == 0.05
    atoms, truth = build_field(host, "none", 20.0, 17.0, fractions, np.random.default_rng(0))
    assert set(atoms.get_chemical_symbols()) == {"W", "Se"}
    assert D not in truth["label"] and {CLASS_IDS["M"], CLASS_IDS["X2"]} <= set(truth["label"])
    with pytest.raises(ValueError, match="D must be 0 for an undoped field"):
        build_field(host, "none", 20.0, 17.0, {**fractions, "D": 0.1}, np.random.default_rng(0))


def test_fullfield_cli_refuses_dopant_columns_in_an_undoped_field(tmp_path, capsys):
    rc = simulate_main(["fullfield", "--host", "WSe2", "--dopant", "none", "--energy-kev", "60", "--detector",
                        "HAADF", "--fractions", "D=0.1", "--out", str(tmp_path / "f")])
    assert rc == 2 and "D must be 0 for an undoped field" in capsys.readouterr().err
    assert not (tmp_path / "f").exists()


def test_inference_and_labelling_contexts_accept_none(catalog):
    base = {"host": "WSe2", "beam_energy_kev": 80, "detector": "HAADF"}
    assert resolve_context(base, {"dopant": "None"}, catalog).dopant == "none"
    assert resolve_context(base, {"dopant": "Cr"}, catalog).dopant == "Cr"
    with pytest.raises(InputError, match="--dopant 'Xx' .* is not an element.*or none"):
        resolve_context(base, {"dopant": "Xx"}, catalog)
    with pytest.raises(InputError, match="or none for an undoped sample"):
        resolve_context(base, {}, catalog)
    assert _check_context({"host": "WSe2", "dopant": "NONE"})["dopant"] == "none"
    with pytest.raises(InputError, match="--dopant 'Xx' is not in the catalog.*or none for an undoped sample"):
        _check_context({"host": "WSe2", "dopant": "Xx"})


def test_masked_dopant_class_has_zero_probability_and_the_rest_keep_their_ratios():
    torch.manual_seed(0)
    model = build_model("mlp_simple", 31).eval()
    x = np.random.default_rng(0).normal(size=(64, 31)).astype(np.float32)
    full = predict_probabilities(model, x)
    masked = predict_probabilities(model, x, masked_classes=[D])
    assert (full[:, D] > 0).all()
    assert (masked[:, D] == 0).all() and np.allclose(masked.sum(axis=1), 1, atol=1e-6)
    others = [c for c in range(5) if c != D]
    assert np.allclose(masked[:, others], full[:, others] / full[:, others].sum(axis=1, keepdims=True), atol=1e-6)
    # rows whose dopant logit dominates completely (softmax of the others underflows to 0 in float32) still
    # renormalise: the mask acts on the logits, not on the probabilities
    with torch.no_grad():
        model.head.bias[D] = 1e4
    assert (predict_probabilities(model, x)[:, D] == 1).all()
    masked = predict_probabilities(model, x, masked_classes=[D])
    assert np.isfinite(masked).all() and (masked[:, D] == 0).all() and np.allclose(masked.sum(axis=1), 1, atol=1e-6)
