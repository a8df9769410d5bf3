"""Dataset configuration: load a YAML file (optionally on top of a ``base:`` file), validate it as the typed
``DatasetConfig`` (``simulate.config_model``), resolve it, and hash the result.

A config error is a ``ConfigError`` whose message starts with the dotted name of the offending field, e.g.
``noise.dose_e_per_angstrom2[0]: must be > 0, got 0``. The file is read by ``contract.yamlsafe`` (no aliases,
no duplicate keys, no NaN/inf); every key at every level must be known (the models forbid any other); the sizes
are bounded (``LIMITS``: a config too large for any machine is refused before anything is created). A child's
``selection`` replaces its base's as a whole. Here: the rules that need several sections (the selection against
the catalog, the grid size against the detectors, the totals). Reference: docs/config-safety.md.
"""
from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from contract.catalog import CATALOG_SCHEMA, is_excluded, load_catalog
from contract.context import NO_DOPANT
from contract.errors import ConfigError
from contract.environments import ENVIRONMENTS
from contract.yamlsafe import brief, check_keys, deep_merge, load_with_bases
from kernels.optics import is_smooth_235

from .config_model import GIB, LIMITS, DatasetConfig, Selection, validate
from .optics import detector_reach_mrad, gpts_reaching

__all__ = ["LIMITS", "ConfigError", "DatasetConfig", "config_hash", "is_excluded", "load", "load_yaml", "resolve"]

MATERIALS_SCHEMA = {"catalog": None, **CATALOG_SCHEMA}


_deep_merge = deep_merge  # the old name, for code that imports it from here


def _materials_catalog_path(merged: dict, raw: dict, path: Path) -> dict:
    """A file's own ``materials: {catalog: FILE}`` is relative to that file, and replaces the base's materials."""
    if isinstance(raw.get("materials"), dict) and "catalog" in raw["materials"]:
        catalog = raw["materials"]["catalog"]
        if not isinstance(catalog, str):
            raise ConfigError(f"materials.catalog: must be a file name, got {brief(catalog)}")
        merged["materials"] = {"catalog": str((path.parent / catalog).resolve())}
    return merged


def _load_with_bases(path: Path) -> dict:
    return load_with_bases(path, "config", replace=("selection",), on_merge=_materials_catalog_path)


def load_yaml(path: str | Path) -> dict:
    """Read a dataset YAML; a ``base: other.yaml`` key (relative to this file) is loaded first and overridden.

    ``materials``: the catalog (``contract/catalog.yaml``, or ``catalog: FILE`` relative to the config) with the
    block's own ``hosts`` (merged per host) and ``dopants`` (replacing the list) on top.
    """
    path = Path(path)
    raw = _load_with_bases(path)
    materials = raw.get("materials") or {}
    if not isinstance(materials, dict):
        raise ConfigError("materials: must be a mapping ({catalog: FILE}, hosts, dopants)")
    check_keys(materials, MATERIALS_SCHEMA, "materials")  # before the merge copies anything
    catalog_file = materials.get("catalog")
    if catalog_file is not None and not isinstance(catalog_file, str):
        raise ConfigError(f"materials.catalog: must be a file name, got {brief(catalog_file)}")
    catalog = load_catalog(None if catalog_file is None else path.parent / catalog_file).raw
    raw["materials"] = deep_merge(catalog, {k: v for k, v in materials.items() if k != "catalog"})
    return raw


def _unknown(kind: str, name: Any, known) -> str:
    undoped = f" (or {NO_DOPANT!r}: undoped)" if kind == "dopant" else ""
    return f"unknown {kind} {brief(name)}; the catalog has {known}{undoped}"


def _resolve_combos(cfg: DatasetConfig) -> list[list[str]]:
    """The selection (``None``: all) against the catalog: every [host, dopant] known and allowed, none twice."""
    hosts, dopants = cfg.materials["hosts"], cfg.materials["dopants"]
    selection = cfg.selection or Selection.model_construct()  # None: `all`
    if selection.combos is not None:
        combos = []
        for i, (host, dopant) in enumerate(selection.combos):
            field = f"selection.combos[{i}]"
            if host not in hosts:
                raise ConfigError(f"{field}: {_unknown('host', host, sorted(hosts))}")
            if dopant not in dopants and dopant != NO_DOPANT:
                raise ConfigError(f"{field}: {_unknown('dopant', dopant, dopants)}")
            if is_excluded(hosts[host]["metal"], dopant):
                raise ConfigError(f"{field}: dopant {dopant} is excluded in {host}: it is in the same periodic-table "
                                  f"row as the host metal {hosts[host]['metal']}")
            combos.append([host, dopant])
    else:
        sel_hosts = list(hosts) if selection.hosts is None else selection.hosts
        sel_dopants = list(dopants) if selection.dopants is None else selection.dopants
        for i, host in enumerate(sel_hosts):
            if not isinstance(host, str) or host not in hosts:
                raise ConfigError(f"selection.hosts[{i}]: {_unknown('host', host, sorted(hosts))}")
        for i, dopant in enumerate(sel_dopants):
            if not isinstance(dopant, str) or (dopant not in dopants and dopant != NO_DOPANT):
                raise ConfigError(f"selection.dopants[{i}]: {_unknown('dopant', dopant, dopants)}")
        for key, value in (("hosts", sel_hosts), ("dopants", sel_dopants)):
            if len(set(value)) != len(value):
                raise ConfigError(f"selection.{key}: lists a name twice")
        combos = [[h, d] for h in sel_hosts for d in sel_dopants if not is_excluded(hosts[h]["metal"], d)]
    if not combos:
        raise ConfigError("selection: selects no host+dopant combination")
    if len({tuple(c) for c in combos}) != len(combos):
        raise ConfigError("selection: lists a host+dopant combination twice")
    return combos


def supercell_extent_angstrom(lattice_constant_angstrom: float, repeats: list[int]) -> tuple[float, float]:
    """In-plane size [Å] of the orthogonal supercell: repeats of the a x √3·a rectangular cell."""
    a = lattice_constant_angstrom
    return (repeats[0] * a, repeats[1] * a * 3**0.5)


def _resolve_gpts(cfg: DatasetConfig, combos: list[list[str]]) -> dict[int, int]:
    """Per-energy grid size: check (or choose, for `auto`) that it reaches the largest detector angle on the
    largest selected supercell. Never lets abTEM truncate a detector silently."""
    hosts = cfg.materials["hosts"]
    outer = max(d.outer_mrad for d in cfg.imaging.detectors.values())
    widest_host = max({h for h, _ in combos}, key=lambda h: hosts[h]["lattice_constant_angstrom"])
    extent = supercell_extent_angstrom(hosts[widest_host]["lattice_constant_angstrom"], cfg.multislice.supercell_repeats)
    gpts = cfg.multislice.gpts
    resolved: dict[int, int] = {}
    for energy in cfg.imaging.beam_energies_kev:
        if gpts == "auto":
            resolved[energy] = gpts_reaching(extent, energy, outer)
            continue
        if energy not in gpts:
            raise ConfigError(f"multislice.gpts: must be `auto` or map every beam energy to a grid size; {energy} keV missing")
        n, field = gpts[energy], f"multislice.gpts.{energy}"
        if not is_smooth_235(n):
            raise ConfigError(f"{field}: {n} is not 2,3,5-smooth (FFTs of other sizes run 30-40 % slower)")
        reach = detector_reach_mrad(extent, (n, n), energy)
        if reach < outer:
            need = gpts_reaching(extent, energy, outer)
            raise ConfigError(
                f"{field}: a {n}x{n} grid on the {extent[0]:.1f} x {extent[1]:.1f} A cell of {widest_host} reaches "
                f"{reach:.0f} mrad at {energy} keV, below the detector outer angle {outer:.0f} mrad; use >= {need}"
            )
        resolved[energy] = n
    for energy, n in resolved.items():
        if n > LIMITS["gpts"][0]:
            raise ConfigError(f"multislice.gpts: `auto` needs a {n}x{n} grid at {energy} keV to reach {outer:.0f} mrad on "
                              f"the {extent[0]:.1f} x {extent[1]:.1f} A cell, over the limit {LIMITS['gpts'][0]} "
                              f"({LIMITS['gpts'][1]}); use fewer supercell_repeats or a smaller detector angle")
    return resolved


def _check_totals(cfg: DatasetConfig, combos: list, environments: list[int]) -> None:
    """The bounds on what the whole config asks for (after each field passed its own bound)."""
    n_detectors = len(cfg.imaging.detectors)
    size, per_image = cfg.patches.patch_size_px, cfg.patches.patches_per_image
    shard_bytes = n_detectors * per_image * size * size * 4
    if shard_bytes > LIMITS["shard_bytes"][0]:
        raise ConfigError(f"patches: a shard of {n_detectors} detector(s) x {per_image} patches x {size}^2 float32 is "
                          f"{shard_bytes / GIB:.1f} GiB, over the limit {LIMITS['shard_bytes'][0] / GIB:.0f} GiB "
                          f"({LIMITS['shard_bytes'][1]}); lower patches_per_image or patch_size_px")
    images = len(combos) * len(cfg.imaging.beam_energies_kev) * len(environments)
    total = images * n_detectors * per_image
    if total > LIMITS["total_patches"][0]:
        raise ConfigError(f"patches: the config asks for {total:,} patches ({images:,} images x {n_detectors} "
                          f"detector(s) x {per_image}), over the limit {LIMITS['total_patches'][0]:,} "
                          f"({LIMITS['total_patches'][1]})")
    phonons = max(1, cfg.multislice.frozen_phonons)
    if images * phonons > LIMITS["multislice_runs"][0]:
        raise ConfigError(f"multislice: the config asks for {images * phonons:,} multislice runs ({images:,} structures x "
                          f"{phonons} frozen phonon configuration(s)), over the limit {LIMITS['multislice_runs'][0]:,} "
                          f"({LIMITS['multislice_runs'][1]})")


def resolve(raw: Mapping | DatasetConfig) -> DatasetConfig:
    """Validate ``raw`` and return the resolved config: selection expanded to ``combos``, environments to ids,
    ``gpts`` to one grid size per energy, materials to the hosts and dopants in use. Raises ``ConfigError``
    naming the field on the first problem. A resolved config (or its mapping, read back from a store) resolves
    to itself."""
    if isinstance(raw, DatasetConfig):
        raw = raw.as_mapping()
    cfg = validate(copy.deepcopy(raw))
    combos = _resolve_combos(cfg)
    environments = [e.id for e in ENVIRONMENTS] if cfg.environments == "all" else sorted(cfg.environments)
    _check_totals(cfg, combos, environments)
    gpts = _resolve_gpts(cfg, combos)
    # Only the hosts and dopants in use are kept, so the hash does not change when the catalog grows.
    used_hosts, used_dopants = {h for h, _ in combos}, {d for _, d in combos}
    materials = {**cfg.materials,
                 "hosts": {h: v for h, v in cfg.materials["hosts"].items() if h in used_hosts},
                 "dopants": [d for d in cfg.materials["dopants"] if d in used_dopants]}
    return cfg.model_copy(update={
        "combos": combos, "environments": environments, "selection": Selection(combos=combos),
        "multislice": cfg.multislice.model_copy(update={"gpts": gpts}), "materials": materials})


def config_from_attrs(stored: Mapping) -> dict:
    """The resolved config as a store's ``attrs["config"]`` holds it, as the run used it: JSON turned
    ``multislice.gpts``' integer energies into strings."""
    cfg = copy.deepcopy(dict(stored))
    gpts = cfg.get("multislice", {}).get("gpts")
    if isinstance(gpts, dict):
        cfg["multislice"]["gpts"] = {int(k): v for k, v in gpts.items()}
    return cfg


def stored_config(mapping: Mapping) -> DatasetConfig:
    """The typed config of a store's ``attrs["config"]`` (resolved already; it resolves to itself). A store made
    before ``multislice.slicing`` existed recorded only a uniform ``slice_thickness_angstrom`` with the infinite
    projection: those are filled in. The store's hash stays the hash of its stored mapping."""
    raw = copy.deepcopy(dict(mapping))
    multislice = raw.get("multislice")
    if isinstance(multislice, dict) and "slicing" not in multislice:
        multislice["slicing"] = "uniform"
        multislice.setdefault("projection", "infinite")
    return resolve(raw)


def load(path: str | Path) -> DatasetConfig:
    """Load, resolve and validate a dataset config file."""
    return resolve(load_yaml(path))


def config_hash(resolved: DatasetConfig | Mapping) -> str:
    """SHA-256 of the resolved config in canonical JSON: equal configs give equal stores. (A plain mapping: the
    config read back from a store, or another kind's config such as 4D-STEM's.)"""
    mapping = resolved.as_mapping() if isinstance(resolved, DatasetConfig) else resolved
    text = json.dumps(mapping, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
