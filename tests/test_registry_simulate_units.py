"""Work units of a simulation (simulate.plan.work_units): one context's runs spread over every worker, the
environments without a dopant site simulated once per (host, beam energy), and the store's bytes unchanged."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr
from distributed import Client, LocalCluster

from simulate import config
from simulate.plan import has_dopant_site, make_plan, work_units
from simulate.run import prepare_store, simulate
from simulate.task import run_task
from tests.test_simulate_store import assert_same_store

REPO = Path(__file__).resolve().parents[1]


def _write_config(tmp_path: Path, combos, environments, energies=(60,), phonons=0) -> Path:
    path = tmp_path / "units.yaml"
    path.write_text(yaml.safe_dump({
        "base": str(REPO / "configs" / "dataset" / "tiny.yaml"), "name": "units",
        "selection": {"combos": [list(c) for c in combos]}, "environments": environments,
        "imaging": {"beam_energies_kev": list(energies)}, "multislice": {"frozen_phonons": phonons}}))
    return path


def _covered(units) -> list[tuple[int, int]]:
    """(task, environment id) of every shard the units write."""
    return sorted((t, e) for u in units for t in u.tasks for e in u.environment_ids)


def test_one_context_is_split_over_workers(tmp_path):
    cfg = config.load(_write_config(tmp_path, [("WSe2", "V")], "all"))
    plan = make_plan(cfg)
    units = work_units(plan, plan.tasks, frozen_phonons=0)
    assert len(units) == 9  # 34 runs in units of at most 4: both cores of a 2-core machine busy until the end
    assert _covered(units) == [(0, p) for p in range(34)]  # every shard written exactly once


def test_dopant_free_environments_are_shared_unless_a_layout_1_store_seeds_phonons_per_task(tmp_path):
    assert sum(not has_dopant_site(e) for e in range(34)) == 14
    combos = [("WSe2", d) for d in ("Ti", "V", "Cr")] + [("MoS2", "V")]
    static = config.load(_write_config(tmp_path, combos, "all", energies=(60, 80)))
    plan = make_plan(static)
    units = work_units(plan, plan.tasks, frozen_phonons=0)
    assert _covered(units) == sorted((t.index, e) for t in plan.tasks for e in range(34))
    # WSe2: 2 energies x (14 shared + 3 x 20); MoS2 (one dopant, nothing to share): 2 x 34
    assert sum(len(u.environment_ids) for u in units) == 2 * (14 + 3 * 20) + 2 * 34
    assert all(not has_dopant_site(e) for u in units if u.shared for e in u.environment_ids)
    # layout 2: the dopant-free environments' phonon seeds are per (host, energy), so they are shared too
    phonons = work_units(plan, plan.tasks, frozen_phonons=4)
    assert sum(len(u.environment_ids) for u in phonons) == 2 * (14 + 3 * 20) + 2 * 34
    # a layout-1 store (made before 2026-12-07) seeds each task's phonons apart: nothing shared there
    per_task = work_units(plan, plan.tasks, frozen_phonons=4, shared_phonon_seeds=False)
    assert sum(len(u.environment_ids) for u in per_task) == len(plan.tasks) * 34
    # an undoped task (its 14 environments) shares all of them with the host's doped tasks
    mixed = make_plan(config.load(_write_config(tmp_path, [("WSe2", "V"), ("WSe2", "none")], "all")))
    mixed_units = work_units(mixed, mixed.tasks, frozen_phonons=0)
    assert _covered(mixed_units) == sorted((t.index, e) for t in mixed.tasks for e in mixed.environments_of(t))
    assert sum(len(u.environment_ids) for u in mixed_units) == 34
    # a resumed run with only one of WSe2's tasks left shares nothing with the finished ones
    left = work_units(plan, plan.tasks[:1], frozen_phonons=0)
    assert _covered(left) == [(0, p) for p in range(34)]


@pytest.mark.parametrize("phonons", [0, 2])
def test_units_and_shared_environments_write_the_bytes_of_one_run_per_task(tmp_path, phonons):
    # two dopants of one host: environment 12 (W among Se2) is shared, 23 (the dopant among Se2) is not
    cfg_path = _write_config(tmp_path, [("WSe2", "Cr"), ("WSe2", "V")], [12, 23], phonons=phonons)
    cfg = config.load(cfg_path)
    reference = tmp_path / "per-task.zarr"
    plan, cfg_hash, todo = prepare_store(cfg, reference, resume=False)
    for task in todo:  # the former way: one task = every environment of one combo, in this process
        run_task(task, cfg, cfg_hash, str(reference))
    units = work_units(plan, plan.tasks, frozen_phonons=phonons)
    assert sum(len(u.environment_ids) for u in units) == 3  # not 4
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        out = tmp_path / "units.zarr"
        summary = simulate(cfg_path, out, client=client)
    assert summary["tasks_run"] == 2 and summary["multislice_runs"] == 3
    assert_same_store(out, reference)
    # environment 12 has the same clean scans for both dopants (with frozen phonons too: one seed per host)
    scans = zarr.open_group(str(out), mode="r")["clean/scans"][:]
    env = zarr.open_group(str(out), mode="r")["clean/environment"][:]
    first, second = np.flatnonzero(env == 12).reshape(2, -1)  # (task 0's detectors), (task 1's)
    assert np.array_equal(scans[first], scans[second], equal_nan=True)
    assert not np.array_equal(scans[env == 23][:2], scans[env == 23][2:], equal_nan=True)
