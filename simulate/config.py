"""Dataset configuration: load a YAML file (optionally on top of a ``base:`` file), resolve defaults, validate
every field before anything is submitted, and hash the result.

A config error is a ``ConfigError`` whose message starts with the dotted name of the offending field, e.g.
``noise.dose_e_per_angstrom2: low must be > 0, got 0.0``.
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import json
from pathlib import Path
from typing import Any

from contract.catalog import (
    catalog_from_mapping,
    is_excluded,
    load_catalog,
    read_yaml_mapping,
)
from contract.context import BEAM_ENERGIES_KEV, DETECTORS
from contract.errors import ConfigError

from .environments import ENVIRONMENTS
from .optics import detector_reach_mrad, gpts_reaching, is_smooth_235

__all__ = ["ConfigError", "config_hash", "is_excluded", "load", "load_yaml", "resolve"]

NOISE_KEYS = (
    "probe_blur_sigma_angstrom",
    "dose_e_per_angstrom2",
    "read_noise_counts",
    "scan_jitter_px",
    "centre_offset_px",
)


KNOWN_KEYS = {
    "": ("name", "seed", "materials", "selection", "environments", "imaging", "multislice", "noise", "patches"),
    "imaging": ("beam_energies_kev", "convergence_semiangle_mrad", "detectors"),
    "multislice": ("supercell_repeats", "vacuum_angstrom", "slicing", "slice_thickness_angstrom", "projection", "gpts",
                   "scan_margin_px", "frozen_phonons", "frozen_phonon_sigma_angstrom", "parametrization", "device",
                   "fftw_planning_effort"),
    "noise": NOISE_KEYS + ("display_export",),
    "patches": ("patch_size_px", "patches_per_image"),
    "selection": ("combos", "hosts", "dopants"),
}
"""Keys a dataset config may hold, per section ("" = top level); ``materials`` is checked by the catalog."""


def _check_keys(cfg: dict) -> None:
    """``ConfigError`` for a section that is not a mapping or a key no code reads (a typo would otherwise be
    ignored silently and the default used)."""
    for section, known in KNOWN_KEYS.items():
        node = cfg if not section else cfg.get(section)
        if section and node is None:
            continue  # a missing section is reported by its own validation, naming the field it needs
        if not isinstance(node, dict):
            if section == "selection" and node == "all":
                continue
            raise ConfigError(f"{section or 'config'}: must be a mapping, got {type(node).__name__} {node!r}"[:200])
        for key in node:
            if key not in known:
                field = f"{section}.{key}" if section else str(key)
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
                raise ConfigError(f"{field}: unknown key; {hint}")


def _deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _load_with_bases(path: Path) -> dict:
    raw = read_yaml_mapping(path, "config")
    base = raw.pop("base", None)
    if base is None:
        return raw
    merged = _deep_merge(_load_with_bases(path.parent / base), raw)
    if isinstance(raw.get("materials"), dict) and "catalog" in raw["materials"]:
        merged["materials"] = {"catalog": str((path.parent / raw["materials"]["catalog"]).resolve())}
    return merged


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
    catalog_file = materials.get("catalog")
    catalog = load_catalog(None if catalog_file is None else path.parent / str(catalog_file)).raw
    raw["materials"] = _deep_merge(catalog, {k: v for k, v in materials.items() if k != "catalog"})
    return raw


def _require(cfg: dict, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"{dotted}: missing")
        node = node[part]
    return node


def _positive_number(value: Any, field: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{field}: must be a number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{field}: must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


def _positive_int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{field}: must be a positive integer, got {value!r}")
    return value


def _validate_materials(cfg: dict) -> None:
    catalog_from_mapping(_require(cfg, "materials"), field="materials")


def _resolve_combos(cfg: dict) -> list[list[str]]:
    hosts, dopants = cfg["materials"]["hosts"], cfg["materials"]["dopants"]
    selection = cfg.get("selection", "all")
    if selection == "all":
        selection = {"hosts": list(hosts), "dopants": list(dopants)}
    if not isinstance(selection, dict):
        raise ConfigError("selection: must be `all`, {hosts: [...], dopants: [...]} or {combos: [[host, dopant], ...]}")
    if "combos" in selection:
        combos = []
        for i, pair in enumerate(selection["combos"]):
            field = f"selection.combos[{i}]"
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
                raise ConfigError(f"{field}: must be [host, dopant], got {pair!r}")
            host, dopant = pair
            if host not in hosts:
                raise ConfigError(f"{field}: unknown host {host!r}; the catalog has {sorted(hosts)}")
            if dopant not in dopants:
                raise ConfigError(f"{field}: unknown dopant {dopant!r}; the catalog has {dopants}")
            if is_excluded(hosts[host]["metal"], dopant):
                raise ConfigError(
                    f"{field}: dopant {dopant} is excluded in {host}: it is in the same periodic-table row "
                    f"as the host metal {hosts[host]['metal']}"
                )
            combos.append([host, dopant])
    else:
        sel_hosts = selection.get("hosts", list(hosts))
        sel_dopants = selection.get("dopants", list(dopants))
        for i, host in enumerate(sel_hosts):
            if host not in hosts:
                raise ConfigError(f"selection.hosts[{i}]: unknown host {host!r}; the catalog has {sorted(hosts)}")
        for i, dopant in enumerate(sel_dopants):
            if dopant not in dopants:
                raise ConfigError(f"selection.dopants[{i}]: unknown dopant {dopant!r}; the catalog has {dopants}")
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
            raise ConfigError(f"environments[{i}]: must be an id in 0..{len(ENVIRONMENTS) - 1}, got {env!r}")
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
        if energy not in BEAM_ENERGIES_KEV:
            raise ConfigError(
                f"imaging.beam_energies_kev[{i}]: {energy!r} is not supported; supported: {BEAM_ENERGIES_KEV} "
                "(the context vector one-hot encodes exactly these)"
            )
    if len(set(energies)) != len(energies):
        raise ConfigError("imaging.beam_energies_kev: lists an energy twice")
    _positive_number(_require(cfg, "imaging.convergence_semiangle_mrad"), "imaging.convergence_semiangle_mrad")
    detectors = _require(cfg, "imaging.detectors")
    if isinstance(detectors, list):  # names only: the paper's angles (contract.context.DETECTORS)
        for i, name in enumerate(detectors):
            if name not in DETECTORS:
                raise ConfigError(f"imaging.detectors[{i}]: unsupported detector {name!r}; supported: "
                                  f"{tuple(DETECTORS)}")
        if len(set(detectors)) != len(detectors):
            raise ConfigError("imaging.detectors: lists a detector twice")
        detectors = cfg["imaging"]["detectors"] = {name: DETECTORS[name].as_config() for name in detectors}
    if not isinstance(detectors, dict) or not detectors:
        raise ConfigError("imaging.detectors: must list detector names or map name -> {inner_mrad, outer_mrad}")
    for name, det in detectors.items():
        field = f"imaging.detectors.{name}"
        if name not in DETECTORS:
            raise ConfigError(f"{field}: unsupported detector; supported: {tuple(DETECTORS)}")
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
        _positive_int(n, field)
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
    return resolved


def _validate_multislice(cfg: dict) -> None:
    ms = _require(cfg, "multislice")
    repeats = ms.get("supercell_repeats")
    if not (isinstance(repeats, list) and len(repeats) == 2 and all(isinstance(r, int) and r >= 2 for r in repeats)):
        raise ConfigError(f"multislice.supercell_repeats: must be two integers >= 2, got {repeats!r}")
    _positive_number(ms.get("vacuum_angstrom"), "multislice.vacuum_angstrom", allow_zero=True)
    slicing = ms.get("slicing")
    if slicing == "planes":
        if ms.get("slice_thickness_angstrom") is not None:
            raise ConfigError("multislice.slice_thickness_angstrom: only used with `slicing: uniform` (`planes` puts "
                              "one slice on each atomic plane); remove it or set multislice.slicing: uniform")
        if ms.get("vacuum_angstrom", 0) < 1.0:
            raise ConfigError(f"multislice.vacuum_angstrom: `slicing: planes` needs >= 1 A of vacuum above the layer "
                              f"(the first plane's slice starts above it), got {ms.get('vacuum_angstrom')!r}")
    elif slicing == "uniform":
        _positive_number(ms.get("slice_thickness_angstrom"), "multislice.slice_thickness_angstrom")
    else:
        raise ConfigError(f"multislice.slicing: must be planes or uniform, got {slicing!r}")
    if ms.get("projection") not in ("infinite", "finite"):
        raise ConfigError(f"multislice.projection: must be infinite or finite, got {ms.get('projection')!r}")
    margin = ms.get("scan_margin_px")
    if isinstance(margin, bool) or not isinstance(margin, int) or margin < 1:
        raise ConfigError(f"multislice.scan_margin_px: must be an integer >= 1, got {margin!r}")
    phonons = ms.get("frozen_phonons")
    if isinstance(phonons, bool) or not isinstance(phonons, int) or phonons < 0:
        raise ConfigError(f"multislice.frozen_phonons: must be an integer >= 0, got {phonons!r}")
    _positive_number(ms.get("frozen_phonon_sigma_angstrom"), "multislice.frozen_phonon_sigma_angstrom", allow_zero=True)
    if ms.get("device") not in ("cpu", "gpu"):
        raise ConfigError(f"multislice.device: must be cpu or gpu, got {ms.get('device')!r}")
    if ms.get("fftw_planning_effort") not in ("FFTW_ESTIMATE", "FFTW_MEASURE", "FFTW_PATIENT"):
        raise ConfigError("multislice.fftw_planning_effort: must be FFTW_ESTIMATE, FFTW_MEASURE or FFTW_PATIENT")


def _validate_noise(cfg: dict) -> None:
    noise = _require(cfg, "noise")
    for key in NOISE_KEYS:
        field = f"noise.{key}"
        value = noise.get(key)
        if not (isinstance(value, list) and len(value) == 2):
            raise ConfigError(f"{field}: must be a range [low, high], got {value!r}")
        low = _positive_number(value[0], f"{field}[0]", allow_zero=key != "dose_e_per_angstrom2")
        high = _positive_number(value[1], f"{field}[1]", allow_zero=key != "dose_e_per_angstrom2")
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
    from .noise import DISPLAY_EXPORT_KEYS

    if export is None:
        return
    if not isinstance(export, dict):
        raise ConfigError(f"noise.display_export: must be a mapping of ranges {DISPLAY_EXPORT_KEYS}, got {export!r}")
    for key in export:
        if key not in DISPLAY_EXPORT_KEYS:
            raise ConfigError(f"noise.display_export.{key}: unknown key; known keys: {', '.join(DISPLAY_EXPORT_KEYS)}")
    for key in DISPLAY_EXPORT_KEYS:
        field, value = f"noise.display_export.{key}", export.get(key)
        if not (isinstance(value, list) and len(value) == 2):
            raise ConfigError(f"{field}: must be a range [low, high], got {value!r}")
        low = _positive_number(value[0], f"{field}[0]", allow_zero=key != "gamma")
        high = _positive_number(value[1], f"{field}[1]", allow_zero=key != "gamma")
        if high < low:
            raise ConfigError(f"{field}: high ({high}) is below low ({low})")
        if key != "gamma" and high >= 0.5:
            raise ConfigError(f"{field}: a clipped fraction must stay below 0.5, got {high}")


def _validate_patches(cfg: dict) -> None:
    size = _positive_int(_require(cfg, "patches.patch_size_px"), "patches.patch_size_px")
    if size % 2 == 0 or size < 9:
        raise ConfigError(f"patches.patch_size_px: must be odd and >= 9 (the column sits on the centre pixel), got {size}")
    _positive_int(_require(cfg, "patches.patches_per_image"), "patches.patches_per_image")


def resolve(raw: dict) -> dict:
    """Validate ``raw`` and return the resolved config: selection expanded to ``combos``, environments to ids,
    ``gpts`` to one grid size per energy. Raises ``ConfigError`` naming the field on the first problem."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config: must be a mapping of sections, got {type(raw).__name__}")
    cfg = copy.deepcopy(raw)
    _check_keys(cfg)
    if "name" not in cfg or not isinstance(cfg["name"], str):
        raise ConfigError("name: missing (a short dataset name)")
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed: must be a non-negative integer, got {seed!r}")
    _validate_materials(cfg)
    _validate_imaging(cfg)
    _validate_multislice(cfg)
    _validate_noise(cfg)
    _validate_patches(cfg)
    combos = _resolve_combos(cfg)
    cfg["combos"] = combos
    cfg["environments"] = _resolve_environments(cfg)
    cfg["selection"] = {"combos": combos}
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
