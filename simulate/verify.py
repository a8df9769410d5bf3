"""``python -m simulate verify STORE [--repair]``: read every shard of a simulated store, check it, and repair
it by rerunning exactly the tasks that own bad shards.

Checked, against what the store's own ``attrs["config"]`` gives (the plan):

* the config hash (``attrs["config_hash"]`` = hash of ``attrs["config"]``) and the attributes derived from the
  config (cases, tasks, environments, row layout);
* every array's presence, shape, dtype and shard size;
* every shard of ``patches``, ``label``, ``case``, ``environment`` and every per-task chunk of ``clean/``:
  it decodes (zarr's crc32c checksums of the shard index and, in stores written since checksums were added,
  of every chunk), patches are finite (NaN is the fill value: never written), and ``label``, ``case`` and
  ``environment`` hold exactly the values the plan puts in those rows;
* every ``task_done`` marker decodes and is 1.

A store written before chunk checksums (its arrays' codecs end in ``zstd``) is checked the same way, but a
flipped byte inside a patch chunk that still decompresses to finite numbers cannot be seen there.

``--repair`` sets the markers of the tasks that own bad shards to 0 and reruns exactly those tasks with the
resume rules of ``python -m simulate run --resume`` (same seeds, same shards), so the store ends
byte-identical to an undamaged one; then it verifies again. Attributes derived from the config are rewritten
from it. A missing or inconsistent config, a missing array or one of another shape or dtype cannot be
repaired in place: simulate the config into a new store.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TextIO

import numpy as np

from contract import store as schema
from contract.environments import ENVIRONMENTS
from contract.errors import CorruptDataError
from contract.verify import (
    Finding,
    Report,
    block_unit,
    first_difference,
    marker_problem,
    non_finite_rows,
    open_checked,
    read_shard,
    remove_blocks,
)

from . import config as config_mod
from .config import config_from_attrs
from .patches import max_scan_px, task_window
from .plan import Plan, make_plan

SCANS_PATH = f"{schema.CLEAN}/{schema.SCANS}"

DERIVED_ATTRS = (schema.ATTR_CASES, schema.ATTR_ENVIRONMENTS, schema.ATTR_DETECTORS, schema.ATTR_PATCH_SIZE,
                 "pixel_size_angstrom", "patches_per_image", schema.ATTR_ROWS_PER_SHARD, schema.ATTR_ROWS_PER_TASK,
                 schema.ATTR_CLEAN_ROWS_PER_TASK, schema.ATTR_TASKS, "dataset", "units")
"""Group attributes that ``simulate.run.store_attrs`` derives from the config (``versions`` is not checked:
a store verified on another machine has other library versions)."""


def _json(value):
    return json.loads(json.dumps(value, default=str))


def task_label(plan: Plan, task: int) -> str:
    t = plan.tasks[task]
    return f"task {task} ({t.host}+{t.dopant} {t.beam_energy_kev} keV)"


def store_plan(group, name: str) -> tuple[config_mod.DatasetConfig | None, str | None, Plan | None, list[Finding]]:
    """(config, config hash, plan, findings) from the group attributes; plan None when they cannot be used."""
    attrs = dict(group.attrs)
    if not isinstance(attrs.get(schema.ATTR_CONFIG), dict):
        return None, None, None, [Finding("attrs", f"attrs[{schema.ATTR_CONFIG!r}] is missing: not written by "
                                          "`python -m simulate run`, or its zarr.json was edited; nothing to check "
                                          "the shards against", repairable=False)]
    cfg = config_from_attrs(attrs[schema.ATTR_CONFIG])
    cfg_hash = config_mod.config_hash(cfg)
    if attrs.get(schema.ATTR_CONFIG_HASH) != cfg_hash:
        return None, None, None, [Finding("attrs", f"attrs[{schema.ATTR_CONFIG_HASH!r}] "
                                          f"{str(attrs.get(schema.ATTR_CONFIG_HASH))[:12]!r} is not the hash of "
                                          f"attrs[{schema.ATTR_CONFIG!r}] ({cfg_hash[:12]}): the attributes were "
                                          "edited; the seeds depend on the hash", repairable=False)]
    try:
        typed = config_mod.stored_config(cfg)
        plan = make_plan(typed)
    except Exception as err:
        return None, None, None, [Finding("attrs", f"attrs[{schema.ATTR_CONFIG!r}] gives no plan "
                                          f"({type(err).__name__}: {err})", repairable=False)]
    from .run import store_attrs

    expected = _json(store_attrs(cfg, cfg_hash, plan))
    differ = [k for k in DERIVED_ATTRS if _json(attrs.get(k)) != expected.get(k)]
    findings = []
    if differ:
        findings.append(Finding("attrs", f"{', '.join(differ)} differ from what attrs['config'] gives "
                                "(--repair rewrites them from it)"))
    return typed, cfg_hash, plan, findings


def expected_rows(plan: Plan, task: int, position: int) -> dict[str, np.ndarray]:
    """``label``, ``case`` and ``environment`` of the shard of environment ``position`` of ``task``."""
    t, n = plan.tasks[task], plan.patches_per_image
    env = ENVIRONMENTS[plan.environments_of(t)[position]]
    case = np.repeat([plan.case_index(t, d) for d in range(len(plan.detectors))], n)
    return {schema.LABEL: np.full(plan.rows_per_shard, env.label), schema.CASE: case,
            schema.ENVIRONMENT: np.full(plan.rows_per_shard, env.id)}


def expected_clean_rows(plan: Plan, task: int, cfg=None) -> dict[str, np.ndarray]:
    """``label``, ``case`` and ``environment`` of ``task``'s clean rows, and (given ``cfg``) the side of their
    scan windows under ``scans``."""
    t, n_det = plan.tasks[task], len(plan.detectors)
    envs = [ENVIRONMENTS[e] for e in plan.environments_of(t)]
    out = {schema.LABEL: np.repeat([e.label for e in envs], n_det),
           schema.CASE: np.tile([plan.case_index(t, d) for d in range(n_det)], len(envs)),
           schema.ENVIRONMENT: np.repeat([e.id for e in envs], n_det)}
    if cfg is not None:
        out[schema.SCANS] = np.full(len(envs) * n_det, task_window(t, cfg).n_px)
    return out


def _check_rows(arrays: dict, start: int, stop: int, block: int, owner: str, expected: dict,
                findings: list[Finding], digests=None) -> None:
    for name, array in arrays.items():
        if array is None:
            continue
        data = read_shard(array, name, start, stop, block, owner, findings)
        if data is None:
            continue
        short = name.split("/")[-1]
        if short == schema.SCANS:  # finite inside each row's window (NaN beyond it is the padding)
            side = int(expected[short][0])
            problem = non_finite_rows(data[:, :side, :side])
        else:
            problem = non_finite_rows(data) if short == schema.PATCHES else (
                first_difference(data, expected[short]) if not np.array_equal(data, expected[short]) else None)
        if problem is None and name == schema.PATCHES and digests is not None:  # tied to its rows
            stored = read_shard(digests, schema.digest_name(name), block, block + 1, block, owner, findings)
            problem = None if stored is None else schema.digest_problem(stored[0], start, data)
        if problem:
            findings.append(Finding(name, problem, block, (start, stop), owner, unit=block_unit(array)))


def verify_store(path: str | Path) -> tuple[Report, dict]:
    """Check every shard of the store at ``path``; returns (report, context for ``repair_store``).

    ``StoreError`` (exit 2) when ``path`` is not a zarr store at all; everything else is a finding."""
    name = str(path)
    group = schema.open_group(path)
    cfg, cfg_hash, plan, findings = store_plan(group, name)
    context = {"config": cfg, "config_hash": cfg_hash, "plan": plan, "tasks": set()}
    if plan is None:
        return Report(name, "group attributes", findings), context
    p, n_clean = plan.patch_size_px, plan.n_clean_rows
    version, kept = schema.store_layout(group.attrs)
    main = {}
    if kept:
        main[schema.PATCHES] = open_checked(group, schema.PATCHES, (plan.n_rows, p, p), schema.PATCH_DTYPE,
                                            plan.rows_per_shard, findings)
    clean = {f"{schema.CLEAN}/{schema.PATCHES}": open_checked(group, f"{schema.CLEAN}/{schema.PATCHES}",
                                                              (n_clean, p, p), schema.PATCH_DTYPE,
                                                              plan.clean_chunk_rows, findings)}
    if version >= 2:  # the scans the noisy patches are made from (every layout-2 store has them)
        side = max_scan_px(plan, cfg)
        clean[SCANS_PATH] = open_checked(group, SCANS_PATH, (n_clean, side, side), schema.PATCH_DTYPE,
                                         plan.clean_chunk_rows, findings)
    for a, dtype in schema.ROW_ARRAYS.items():
        main[a] = open_checked(group, a, (plan.n_rows,), dtype, plan.rows_per_shard, findings)
        c = f"{schema.CLEAN}/{a}"
        clean[c] = open_checked(group, c, (n_clean,), dtype, plan.clean_chunk_rows, findings)
    markers = open_checked(group, schema.TASK_DONE, (len(plan.tasks),), schema.MARKER_DTYPE, 1, findings)
    digests = None  # a store written before shard digests: shards moved to other rows cannot be seen
    if kept and schema.has_array(group, schema.digest_name(schema.PATCHES)):
        digests = open_checked(group, schema.digest_name(schema.PATCHES), (plan.n_rows // plan.rows_per_shard,),
                               schema.DIGEST_DTYPE, 1, findings)
    from cluster import track_items

    for task in track_items(range(len(plan.tasks)), label="verify", unit="task"):
        owner = task_label(plan, task)
        before = len(findings)
        t = plan.tasks[task]
        for position in range(len(plan.environments_of(t))):
            start = plan.shard_start(t, position)
            _check_rows(main, start, start + plan.rows_per_shard, start // plan.rows_per_shard, owner,
                        expected_rows(plan, task, position), findings, digests)
        expected, c0, per = expected_clean_rows(plan, task, cfg), plan.clean_start(t), plan.clean_chunk_rows
        for chunk in plan.task_clean_chunks(t):  # one chunk per task unless an undoped task is shorter
            rows = slice(chunk * per - c0, (chunk + 1) * per - c0)
            _check_rows(clean, chunk * per, (chunk + 1) * per, chunk, owner,
                        {k: v[rows] for k, v in expected.items()}, findings)
        if markers is not None:
            value = read_shard(markers, schema.TASK_DONE, task, task + 1, task, owner, findings)
            problem = marker_problem(value)
            if problem:
                findings.append(Finding(schema.TASK_DONE, problem, task, (task, task + 1), owner, unit="marker"))
        if len(findings) > before:
            context["tasks"].add(task)
    checked = (f"{cfg.name}, layout {version} ({'patches stored' if kept else 'patches made from clean/scans'}), "
               f"config hash {cfg_hash[:12]} OK, {len(plan.tasks)} tasks, "
               f"{plan.n_shards} shards x {len(main)} arrays, {n_clean // plan.clean_chunk_rows} chunks x "
               f"{len(clean)} clean arrays, {len(plan.tasks)} markers, "
               + ("patch shard digests" if digests is not None else
                  "no patches to digest" if not kept else "no shard digests (an older store)"))
    return Report(name, checked, findings), context


def _remove_task_blocks(path, group, plan: Plan, tasks: list[int]) -> None:
    """Delete every shard and clean chunk of ``tasks`` (the rerun writes each of them whole)."""
    shards = [k for t in tasks for k in plan.task_shards(plan.tasks[t])]
    chunks = [k for t in tasks for k in plan.task_clean_chunks(plan.tasks[t])]
    for name in (schema.PATCHES, *schema.ROW_ARRAYS, schema.SCANS):
        if name in group:
            remove_blocks(path, name, group[name], shards)
        clean = f"{schema.CLEAN}/{name}"
        if clean in group:
            remove_blocks(path, clean, group[clean], chunks)


def repair_store(path: str | Path, report: Report, context: dict, *, cluster: str = "local",
                 cluster_config: str | None = None, n_workers: int | None = None, stream: TextIO | None = None,
                 client=None) -> Report:
    """Rerun exactly the tasks owning bad shards (their markers set to 0 first, so an interrupted repair is
    resumed by `python -m simulate run --resume` too) and rewrite derived attributes; returns the new report."""
    from .run import run_tasks, store_attrs

    stream = sys.stderr if stream is None else stream
    if not report.repairable:
        raise CorruptDataError(f"store {report.store!r} cannot be repaired in place: "
                               + "; ".join(f.describe() for f in report.findings if not f.repairable)
                               + "; simulate its config into a new store")
    cfg, cfg_hash, plan = context["config"], context["config_hash"], context["plan"]
    group = schema.open_group(path, mode="r+")
    if any(f.array == "attrs" for f in report.findings):
        attrs = store_attrs(config_from_attrs(group.attrs[schema.ATTR_CONFIG]), cfg_hash, plan)
        attrs[schema.ATTR_VERSIONS] = group.attrs.get(schema.ATTR_VERSIONS, attrs[schema.ATTR_VERSIONS])
        for key in (schema.ATTR_LAYOUT, schema.ATTR_PATCHES_KEPT):  # set at creation, not derived from the config
            if key in group.attrs:
                attrs[key] = group.attrs[key]
        group.attrs.put(attrs)  # the whole dict, in the order `create_store` wrote it
        print("verify: rewrote the group attributes derived from attrs['config']", file=stream)
    tasks = sorted(context["tasks"])
    if tasks:
        for t in tasks:
            group[schema.TASK_DONE][t] = 0  # the resume rule: a task whose marker is 0 is run
        _remove_task_blocks(path, group, plan, tasks)
        print(f"verify: rerunning {len(tasks)} task(s): {', '.join(task_label(plan, t) for t in tasks)}", file=stream)
        run_tasks([plan.tasks[t] for t in tasks], cfg, cfg_hash, Path(path), cluster=cluster,
                  cluster_config=cluster_config, n_workers=n_workers, stream=stream, client=client)
    return verify_store(path)[0]
