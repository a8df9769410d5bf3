"""Dataset configuration: load a YAML file (optionally on top of a ``base:`` file), resolve defaults, validate
every field before anything is submitted, and hash the result.

A config error is a ``ConfigError`` whose message starts with the dotted name of the offending field, e.g.
``noise.dose_e_per_angstrom2: low must be > 0, got 0.0``. The file is read by ``contract.yamlsafe`` (no aliases,
no duplicate keys, no NaN/inf); every key at every level must be known (``DATASET_SCHEMA``); the sizes are
bounded (``LIMITS``: a config too large for any machine is refused before anything is created). A child's
``selection`` replaces its base's as a whole. Reference: docs/config-safety.md.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path
from typing import Any

from contract.catalog import CATALOG_SCHEMA, catalog_from_mapping, is_excluded, load_catalog
from contract.context import BEAM_ENERGIES_KEV, DETECTORS, NO_DOPANT, is_undoped
from contract.errors import ConfigError
from contract.environments import ENVIRONMENTS
from contract.yamlsafe import ANY, Each, brief, check_keys, deep_merge, load_with_bases
from kernels.optics import is_smooth_235

from .optics import detector_reach_mrad, gpts_reaching

__all__ = ["DATASET_SCHEMA", "LIMITS", "ConfigError", "config_hash", "is_excluded", "load", "load_yaml", "resolve"]

NOISE_KEYS = (
    "probe_blur_sigma_angstrom",
    "dose_e_per_angstrom2",
    "read_noise_counts",
    "scan_jitter_px",
    "centre_offset_px",
)


MULTISLICE_KEYS = ("supercell_repeats", "vacuum_angstrom", "slicing", "slice_thickness_angstrom", "projection",
                  "gpts", "scan_margin_px", "frozen_phonons", "frozen_phonon_sigma_angstrom", "parametrization",
                  "device", "fftw_planning_effort")
DATASET_SCHEMA = {
    "name": ANY, "seed": ANY, "environments": ANY,
    "materials": {"catalog": ANY, **CATALOG_SCHEMA},
    "selection": dict.fromkeys(("combos", "hosts", "dopants"), ANY),
    "imaging": {"beam_energies_kev": ANY, "convergence_semiangle_mrad": ANY,
                "detectors": Each(dict.fromkeys(("inner_mrad", "outer_mrad"), ANY))},
    "multislice": dict.fromkeys(MULTISLICE_KEYS, ANY),
    "noise": {**dict.fromkeys(NOISE_KEYS, ANY), "display_export": ANY},  # its keys: _validate_display_export
    "patches": dict.fromkeys(("patch_size_px", "patches_per_image"), ANY),
}
"""Every key a dataset config may hold, at every level (a typo would otherwise be ignored and the default used)."""
SECTIONS = ("imaging", "multislice", "noise", "patches", "selection", "materials")

GIB = 1 << 30
LIMITS = {  # name: (limit, why); the paper's dataset (paper.yaml) is far inside every one
    "patch_size_px": (255, "a stored patch spans about one lattice constant; 255 px is 8x the paper's 33 px "
                           "(each row stores size^2 float32)"),
    "patches_per_image": (100_000, "noise draws of one simulated image; 36x the paper's 2800"),
    "shard_bytes": (2 * GIB, "one shard (one environment of one task: detectors x patches per image x size^2 "
                             "float32) is built in one worker's memory"),
    "total_patches": (1_000_000_000, "18x the paper's 55 M patches (4.5 TB at 33 px)"),
    "frozen_phonons": (64, "each configuration is a full multislice run (cost x N); 8-30 converge"),
    "gpts": (4096, "a 4096^2 complex64 wave is 128 MiB per probe position and FFT time grows as n^2 log n"),
    "supercell_repeats": (16, "the environment needs one neighbour shell; 16 cells is ~50 A a side"),
    "multislice_runs": (500_000, "combos x energies x environments x frozen phonons; 6x the paper's 78 336 "
                                 "(~5 CPU-s each: 500 000 runs is ~1 CPU-month)"),
    "scan_margin_px": (32, "scan pixels beyond the patch on each side; jitter and offset need a few"),
    "convergence_semiangle_mrad": (100.0, "probe-forming apertures are 20-40 mrad; the scan step is lambda / "
                                          "(4 alpha), so the scan grows as alpha^2"),
    "vacuum_angstrom": (50.0, "vacuum above and below a single layer; more only adds empty slices"),
    "dose_e_per_angstrom2": (1e9, "beyond any sample's damage threshold; numpy's Poisson sampler refuses means "
                                  "above ~1e19 counts"),
    "seed": (2**63 - 1, "stored as a 64-bit integer"),
    "name": (64, "characters; the name goes into paths and store attributes"),
}
"""Upper bounds that refuse a config too large for any machine before anything is created: (limit, why)."""
MIN_SLICE_THICKNESS_ANGSTROM = 0.05
"""Thinner uniform slices only multiply the cost: 0.1 A slicing already agrees with `planes` to < 1 %."""


def _too_large(field: str, value, limit_name: str) -> ConfigError:
    limit, why = LIMITS[limit_name]
    return ConfigError(f"{field}: {brief(value)} is over the limit {limit:,} ({why})")


def _check_keys(cfg: dict) -> None:
    """``ConfigError`` for a section that is not a mapping, or a key no code reads at any level."""
    for section in SECTIONS:
        node = cfg.get(section)
        if node is None or isinstance(node, dict) or (section == "selection" and node == "all"):
            continue  # a missing section is reported by its own validation, naming the field it needs
        raise ConfigError(f"{section}: must be a mapping, got {type(node).__name__} {brief(node)}")
    check_keys(cfg, DATASET_SCHEMA)


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
    check_keys(materials, DATASET_SCHEMA["materials"], "materials")  # before the merge copies anything
    catalog_file = materials.get("catalog")
    if catalog_file is not None and not isinstance(catalog_file, str):
        raise ConfigError(f"materials.catalog: must be a file name, got {brief(catalog_file)}")
    catalog = load_catalog(None if catalog_file is None else path.parent / catalog_file).raw
    raw["materials"] = deep_merge(catalog, {k: v for k, v in materials.items() if k != "catalog"})
    return raw


def _require(cfg: dict, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"{dotted}: missing")
        node = node[part]
    return node


def _positive_number(value: Any, field: str, *, allow_zero: bool = False, limit: str | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{field}: must be a finite number, got {brief(value)}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{field}: must be {'>= 0' if allow_zero else '> 0'}, got {brief(value)}")
    if limit is not None and value > LIMITS[limit][0]:
        raise _too_large(field, value, limit)
    return float(value)


def _positive_int(value: Any, field: str, limit: str | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{field}: must be a positive integer, got {brief(value)}")
    if limit is not None and value > LIMITS[limit][0]:
        raise _too_large(field, value, limit)
    return value


def _validate_materials(cfg: dict) -> None:
    catalog_from_mapping(_require(cfg, "materials"), field="materials")


def _resolve_combos(cfg: dict) -> list[list[str]]:
    hosts, dopants = cfg["materials"]["hosts"], cfg["materials"]["dopants"]
    selection = cfg.get("selection", "all")
    if selection == "all":
        selection = {"hosts": list(hosts), "dopants": list(dopants)}
    if not isinstance(selection, dict) or not selection:
        raise ConfigError("selection: must be `all`, {hosts: [...], dopants: [...]} or {combos: [[host, dopant], ...]}")
    if "combos" in selection:
        if set(selection) != {"combos"}:
            raise ConfigError("selection: give either combos or hosts/dopants, not both")
        if not isinstance(selection["combos"], list):
            raise ConfigError(f"selection.combos: must be a list of [host, dopant], got {brief(selection['combos'])}")
        combos = []
        for i, pair in enumerate(selection["combos"]):
            field = f"selection.combos[{i}]"
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
                raise ConfigError(f"{field}: must be [host, dopant], got {brief(pair)}")
            host, dopant = pair[0], NO_DOPANT if is_undoped(pair[1]) else pair[1]
            if host not in hosts:
                raise ConfigError(f"{field}: unknown host {brief(host)}; the catalog has {sorted(hosts)}")
            if dopant not in dopants and dopant != NO_DOPANT:
                raise ConfigError(f"{field}: unknown dopant {brief(dopant)}; the catalog has {dopants} (or "
                                  f"{NO_DOPANT!r}: undoped)")
            if is_excluded(hosts[host]["metal"], dopant):
                raise ConfigError(
                    f"{field}: dopant {dopant} is excluded in {host}: it is in the same periodic-table row "
                    f"as the host metal {hosts[host]['metal']}"
                )
            combos.append([host, dopant])
    else:
        sel_hosts = selection.get("hosts", list(hosts))
        sel_dopants = selection.get("dopants", list(dopants))
        for key, value in (("hosts", sel_hosts), ("dopants", sel_dopants)):
            if not isinstance(value, list):
                raise ConfigError(f"selection.{key}: must be a list of names, got {brief(value)}")
        sel_dopants = [NO_DOPANT if isinstance(d, str) and is_undoped(d) else d for d in sel_dopants]
        for i, host in enumerate(sel_hosts):
            if not isinstance(host, str) or host not in hosts:
                raise ConfigError(f"selection.hosts[{i}]: unknown host {brief(host)}; the catalog has {sorted(hosts)}")
        for i, dopant in enumerate(sel_dopants):
            if not isinstance(dopant, str) or (dopant not in dopants and dopant != NO_DOPANT):
                raise ConfigError(f"selection.dopants[{i}]: unknown dopant {brief(dopant)}; the catalog has {dopants} "
                                  f"(or {NO_DOPANT!r}: undoped)")
        for key, value in (("hosts", sel_hosts), ("dopants", sel_dopants)):
            if len(set(value)) != len(value):
                raise ConfigError(f"selection.{key}: lists a name twice")
        combos = [[h, d] for h in sel_hosts for d in sel_dopants if not is_excluded(hosts[h]["metal"], d)]
    if not combos:
        raise ConfigError("selection: selects no host+dopant combination")
    if len({tuple(c) for c in combos}) != len(combos):
        raise ConfigError("selection: lists a host+dopant combination twice")
    return combos


def _resolve_environments(cfg: dict) -> list[int]:
    envs = cfg.get("environments", "all")
    if envs == "all":
        return [e.id for e in ENVIRONMENTS]
    if not isinstance(envs, list) or not envs:
        raise ConfigError("environments: must be `all` or a non-empty list of ids 0..33")
    for i, env in enumerate(envs):
        if isinstance(env, bool) or not isinstance(env, int) or not 0 <= env < len(ENVIRONMENTS):
            raise ConfigError(f"environments[{i}]: must be an id in 0..{len(ENVIRONMENTS) - 1}, got {brief(env)}")
    if len(set(envs)) != len(envs):
        raise ConfigError("environments: lists an id twice")
    return sorted(envs)


def supercell_extent_angstrom(lattice_constant_angstrom: float, repeats: list[int]) -> tuple[float, float]:
    """In-plane size [Å] of the orthogonal supercell: repeats of the a x √3·a rectangular cell."""
    a = lattice_constant_angstrom
    return (repeats[0] * a, repeats[1] * a * 3**0.5)


def _validate_imaging(cfg: dict) -> None:
    energies = _require(cfg, "imaging.beam_energies_kev")
    if not isinstance(energies, list) or not energies:
        raise ConfigError("imaging.beam_energies_kev: must be a non-empty list")
    for i, energy in enumerate(energies):
        if isinstance(energy, bool) or not isinstance(energy, int) or energy not in BEAM_ENERGIES_KEV:
            raise ConfigError(
                f"imaging.beam_energies_kev[{i}]: {brief(energy)} is not supported; supported: {BEAM_ENERGIES_KEV} "
                "(the context vector one-hot encodes exactly these)"
            )
    if len(set(energies)) != len(energies):
        raise ConfigError("imaging.beam_energies_kev: lists an energy twice")
    _positive_number(_require(cfg, "imaging.convergence_semiangle_mrad"), "imaging.convergence_semiangle_mrad",
                     limit="convergence_semiangle_mrad")
    detectors = _require(cfg, "imaging.detectors")
    if isinstance(detectors, list):  # names only: the paper's angles (contract.context.DETECTORS)
        for i, name in enumerate(detectors):
            if not isinstance(name, str) or name not in DETECTORS:
                raise ConfigError(f"imaging.detectors[{i}]: unsupported detector {brief(name)}; supported: "
                                  f"{tuple(DETECTORS)}")
        if len(set(detectors)) != len(detectors):
            raise ConfigError("imaging.detectors: lists a detector twice")
        detectors = cfg["imaging"]["detectors"] = {name: DETECTORS[name].as_config() for name in detectors}
    if not isinstance(detectors, dict) or not detectors:
        raise ConfigError("imaging.detectors: must list detector names or map name -> {inner_mrad, outer_mrad}")
    for name, det in detectors.items():
        field = f"imaging.detectors.{brief(name, 40)}"
        if not isinstance(name, str) or name not in DETECTORS:
            raise ConfigError(f"{field}: unsupported detector; supported: {tuple(DETECTORS)}")
        if not isinstance(det, dict):
            raise ConfigError(f"{field}: must be a mapping {{inner_mrad, outer_mrad}}, got {brief(det)}")
        inner = _positive_number(det.get("inner_mrad", -1), f"{field}.inner_mrad", allow_zero=True)
        outer = _positive_number(det.get("outer_mrad", -1), f"{field}.outer_mrad")
        if outer <= inner:
            raise ConfigError(f"{field}: outer_mrad ({outer}) must exceed inner_mrad ({inner})")


def _resolve_gpts(cfg: dict, combos: list[list[str]]) -> dict[int, int]:
    """Per-energy grid size: check (or choose, for `auto`) that it reaches the largest detector angle on the
    largest selected supercell. Never lets abTEM truncate a detector silently."""
    ms = cfg["multislice"]
    hosts = cfg["materials"]["hosts"]
    repeats = ms["supercell_repeats"]
    outer = max(d["outer_mrad"] for d in cfg["imaging"]["detectors"].values())
    widest_host = max({h for h, _ in combos}, key=lambda h: hosts[h]["lattice_constant_angstrom"])
    extent = supercell_extent_angstrom(hosts[widest_host]["lattice_constant_angstrom"], repeats)
    gpts = ms.get("gpts", "auto")
    resolved: dict[int, int] = {}
    for energy in cfg["imaging"]["beam_energies_kev"]:
        if gpts == "auto":
            resolved[energy] = gpts_reaching(extent, energy, outer)
            continue
        if not isinstance(gpts, dict) or energy not in gpts:
            raise ConfigError(f"multislice.gpts: must be `auto` or map every beam energy to a grid size; {energy} keV missing")
        n = gpts[energy]
        field = f"multislice.gpts.{energy}"
        _positive_int(n, field, limit="gpts")
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


def _validate_multislice(cfg: dict) -> None:
    ms = _require(cfg, "multislice")
    repeats = ms.get("supercell_repeats")
    if not (isinstance(repeats, list) and len(repeats) == 2
            and all(isinstance(r, int) and not isinstance(r, bool) and r >= 2 for r in repeats)):
        raise ConfigError(f"multislice.supercell_repeats: must be two integers >= 2, got {brief(repeats)}")
    if max(repeats) > LIMITS["supercell_repeats"][0]:
        raise _too_large("multislice.supercell_repeats", repeats, "supercell_repeats")
    if "gpts" in ms and ms["gpts"] != "auto":
        if not isinstance(ms["gpts"], dict):
            raise ConfigError(f"multislice.gpts: must be `auto` or map beam energies to grid sizes, got "
                              f"{brief(ms['gpts'])}")
        for energy in ms["gpts"]:
            if energy not in BEAM_ENERGIES_KEV or isinstance(energy, bool):
                raise ConfigError(f"multislice.gpts.{brief(energy, 40)}: not a supported beam energy "
                                  f"{BEAM_ENERGIES_KEV}")
    _positive_number(ms.get("vacuum_angstrom"), "multislice.vacuum_angstrom", allow_zero=True,
                     limit="vacuum_angstrom")
    slicing = ms.get("slicing")
    if slicing == "planes":
        if ms.get("slice_thickness_angstrom") is not None:
            raise ConfigError("multislice.slice_thickness_angstrom: only used with `slicing: uniform` (`planes` puts "
                              "one slice on each atomic plane); remove it or set multislice.slicing: uniform")
        if ms.get("vacuum_angstrom", 0) < 1.0:
            raise ConfigError(f"multislice.vacuum_angstrom: `slicing: planes` needs >= 1 A of vacuum above the layer "
                              f"(the first plane's slice starts above it), got {ms.get('vacuum_angstrom')!r}")
    elif slicing == "uniform":
        thickness = _positive_number(ms.get("slice_thickness_angstrom"), "multislice.slice_thickness_angstrom")
        if thickness < MIN_SLICE_THICKNESS_ANGSTROM:
            raise ConfigError(f"multislice.slice_thickness_angstrom: {thickness:g} is below the limit "
                              f"{MIN_SLICE_THICKNESS_ANGSTROM} A (thinner slices only multiply the cost: 0.1 A slicing "
                              "already agrees with `planes` to < 1 %)")
    else:
        raise ConfigError(f"multislice.slicing: must be planes or uniform, got {brief(slicing)}")
    if ms.get("projection") not in ("infinite", "finite"):
        raise ConfigError(f"multislice.projection: must be infinite or finite, got {brief(ms.get('projection'))}")
    margin = ms.get("scan_margin_px")
    if isinstance(margin, bool) or not isinstance(margin, int) or margin < 1:
        raise ConfigError(f"multislice.scan_margin_px: must be an integer >= 1, got {brief(margin)}")
    if margin > LIMITS["scan_margin_px"][0]:
        raise _too_large("multislice.scan_margin_px", margin, "scan_margin_px")
    phonons = ms.get("frozen_phonons")
    if isinstance(phonons, bool) or not isinstance(phonons, int) or phonons < 0:
        raise ConfigError(f"multislice.frozen_phonons: must be an integer >= 0, got {brief(phonons)}")
    if phonons > LIMITS["frozen_phonons"][0]:
        raise _too_large("multislice.frozen_phonons", phonons, "frozen_phonons")
    _positive_number(ms.get("frozen_phonon_sigma_angstrom"), "multislice.frozen_phonon_sigma_angstrom", allow_zero=True)
    if ms.get("device") not in ("cpu", "gpu"):
        raise ConfigError(f"multislice.device: must be cpu or gpu, got {brief(ms.get('device'))}")
    if ms.get("fftw_planning_effort") not in ("FFTW_ESTIMATE", "FFTW_MEASURE", "FFTW_PATIENT"):
        raise ConfigError("multislice.fftw_planning_effort: must be FFTW_ESTIMATE, FFTW_MEASURE or FFTW_PATIENT")


def _validate_noise(cfg: dict) -> None:
    noise = _require(cfg, "noise")
    for key in NOISE_KEYS:
        field = f"noise.{key}"
        value = noise.get(key)
        if not (isinstance(value, list) and len(value) == 2):
            raise ConfigError(f"{field}: must be a range [low, high], got {brief(value)}")
        limit = "dose_e_per_angstrom2" if key == "dose_e_per_angstrom2" else None
        low = _positive_number(value[0], f"{field}[0]", allow_zero=key != "dose_e_per_angstrom2", limit=limit)
        high = _positive_number(value[1], f"{field}[1]", allow_zero=key != "dose_e_per_angstrom2", limit=limit)
        if high < low:
            raise ConfigError(f"{field}: high ({high}) is below low ({low})")
    _validate_display_export(noise.get("display_export"))
    margin = cfg["multislice"]["scan_margin_px"]
    reach = noise["scan_jitter_px"][1] + noise["centre_offset_px"][1] + 1  # +1: bilinear support
    if reach > margin:
        raise ConfigError(
            f"multislice.scan_margin_px: {margin} px cannot hold jitter ({noise['scan_jitter_px'][1]}) + offset "
            f"({noise['centre_offset_px'][1]}) + 1 px of interpolation; raise it to {int(reach + 0.999)}"
        )


def _validate_display_export(export: Any) -> None:
    """``noise.display_export`` (optional; absent or null: off): ranges of the 8-bit display step."""
    from kernels.noise import DISPLAY_EXPORT_KEYS

    if export is None:
        return
    if not isinstance(export, dict):
        raise ConfigError(f"noise.display_export: must be a mapping of ranges {DISPLAY_EXPORT_KEYS}, got {brief(export)}")
    for key in export:
        if key not in DISPLAY_EXPORT_KEYS:
            raise ConfigError(f"noise.display_export.{key}: unknown key; known keys: {', '.join(DISPLAY_EXPORT_KEYS)}")
    for key in DISPLAY_EXPORT_KEYS:
        field, value = f"noise.display_export.{key}", export.get(key)
        if not (isinstance(value, list) and len(value) == 2):
            raise ConfigError(f"{field}: must be a range [low, high], got {brief(value)}")
        low = _positive_number(value[0], f"{field}[0]", allow_zero=key != "gamma")
        high = _positive_number(value[1], f"{field}[1]", allow_zero=key != "gamma")
        if high < low:
            raise ConfigError(f"{field}: high ({high}) is below low ({low})")
        if key != "gamma" and high >= 0.5:
            raise ConfigError(f"{field}: a clipped fraction must stay below 0.5, got {high}")


def _validate_patches(cfg: dict) -> None:
    size = _positive_int(_require(cfg, "patches.patch_size_px"), "patches.patch_size_px", limit="patch_size_px")
    if size % 2 == 0 or size < 9:
        raise ConfigError(f"patches.patch_size_px: must be odd and >= 9 (the column sits on the centre pixel), got {size}")
    _positive_int(_require(cfg, "patches.patches_per_image"), "patches.patches_per_image", limit="patches_per_image")


def _check_totals(cfg: dict) -> None:
    """The bounds on what the whole config asks for (after each field passed its own bound)."""
    n_detectors = len(cfg["imaging"]["detectors"])
    size, per_image = cfg["patches"]["patch_size_px"], cfg["patches"]["patches_per_image"]
    shard_bytes = n_detectors * per_image * size * size * 4
    if shard_bytes > LIMITS["shard_bytes"][0]:
        raise ConfigError(f"patches: a shard of {n_detectors} detector(s) x {per_image} patches x {size}^2 float32 is "
                          f"{shard_bytes / GIB:.1f} GiB, over the limit {LIMITS['shard_bytes'][0] / GIB:.0f} GiB "
                          f"({LIMITS['shard_bytes'][1]}); lower patches_per_image or patch_size_px")
    images = len(cfg["combos"]) * len(cfg["imaging"]["beam_energies_kev"]) * len(cfg["environments"])
    total = images * n_detectors * per_image
    if total > LIMITS["total_patches"][0]:
        raise ConfigError(f"patches: the config asks for {total:,} patches ({images:,} images x {n_detectors} "
                          f"detector(s) x {per_image}), over the limit {LIMITS['total_patches'][0]:,} "
                          f"({LIMITS['total_patches'][1]})")
    runs = images * max(1, cfg["multislice"]["frozen_phonons"])
    if runs > LIMITS["multislice_runs"][0]:
        raise ConfigError(f"multislice: the config asks for {runs:,} multislice runs ({images:,} structures x "
                          f"{max(1, cfg['multislice']['frozen_phonons'])} frozen phonon configuration(s)), over the "
                          f"limit {LIMITS['multislice_runs'][0]:,} ({LIMITS['multislice_runs'][1]})")


def resolve(raw: dict) -> dict:
    """Validate ``raw`` and return the resolved config: selection expanded to ``combos``, environments to ids,
    ``gpts`` to one grid size per energy. Raises ``ConfigError`` naming the field on the first problem."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config: must be a mapping of sections, got {type(raw).__name__}")
    cfg = copy.deepcopy(raw)
    _check_keys(cfg)
    if "name" not in cfg or not isinstance(cfg["name"], str):
        raise ConfigError("name: missing (a short dataset name)")
    if not 0 < len(cfg["name"]) <= LIMITS["name"][0] or not cfg["name"].isprintable():
        raise ConfigError(f"name: must be 1-{LIMITS['name'][0]} printable characters, got {brief(cfg['name'])}")
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed: must be a non-negative integer, got {brief(seed)}")
    if seed > LIMITS["seed"][0]:
        raise _too_large("seed", seed, "seed")
    _validate_materials(cfg)
    _validate_imaging(cfg)
    _validate_multislice(cfg)
    _validate_noise(cfg)
    _validate_patches(cfg)
    combos = _resolve_combos(cfg)
    cfg["combos"] = combos
    cfg["environments"] = _resolve_environments(cfg)
    cfg["selection"] = {"combos": combos}
    _check_totals(cfg)
    cfg["multislice"]["gpts"] = _resolve_gpts(cfg, combos)
    # Only the hosts and dopants in use are kept, so the hash does not change when the catalog grows.
    used_hosts = {h for h, _ in combos}
    used_dopants = {d for _, d in combos}
    cfg["materials"]["hosts"] = {h: v for h, v in cfg["materials"]["hosts"].items() if h in used_hosts}
    cfg["materials"]["dopants"] = [d for d in cfg["materials"]["dopants"] if d in used_dopants]
    return cfg


def load(path: str | Path) -> dict:
    """Load, resolve and validate a dataset config file."""
    return resolve(load_yaml(path))


def config_hash(resolved: dict) -> str:
    """SHA-256 of the resolved config in canonical JSON: equal configs give equal stores."""
    text = json.dumps(resolved, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
