"""The dataset config as typed, frozen pydantic models: one rule per field, unknown keys refused at every level.

``DatasetConfig.model_validate(raw)`` checks each field on its own (types, ranges, the ``LIMITS``); the checks
that need several sections (selection against the catalog, grid size against the detectors, the totals) and the
resolution (selection -> ``combos``, ``gpts: auto`` -> one size per energy) are in ``simulate.config``. A
pydantic ``ValidationError`` never leaves this package: ``config_error`` turns its first error into the
project's ``ConfigError``, the dotted field path first (``noise.dose_e_per_angstrom2[0]: must be > 0, got 0``).
"""
from __future__ import annotations

import difflib
import math
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, PlainValidator, ValidationError,
                      model_validator)
from pydantic_core import PydanticCustomError

from contract.context import BEAM_ENERGIES_KEV, DETECTORS, NO_DOPANT, is_undoped
from contract.catalog import CATALOG_SCHEMA, catalog_from_mapping
from contract.environments import ENVIRONMENTS
from contract.errors import ConfigError
from contract.yamlsafe import brief, check_keys, key_text

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


def _refuse(message: str) -> PydanticCustomError:
    """A field's own complaint; ``config_error`` puts the field's dotted path in front of it."""
    return PydanticCustomError("config", "{message}", {"message": message})


def over_limit(value: Any, limit_name: str) -> str:
    limit, why = LIMITS[limit_name]
    return f"{brief(value)} is over the limit {limit:,} ({why})"


# ----------------------------------------------------------------------------------------------- field types
def _number(*, zero: bool = False, limit: str | None = None):
    """A finite real number (its int or float type kept: the config hash sees it), > 0 or >= 0, under a limit."""
    def check(value: Any) -> int | float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _refuse(f"must be a finite number, got {brief(value)}")
        if value < 0 or (value == 0 and not zero):
            raise _refuse(f"must be {'>= 0' if zero else '> 0'}, got {brief(value)}")
        if limit is not None and value > LIMITS[limit][0]:
            raise _refuse(over_limit(value, limit))
        return value
    return Annotated[int | float, BeforeValidator(check)]


def _integer(*, minimum: int = 1, limit: str | None = None, what: str = "an integer >= {minimum}"):
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise _refuse(f"must be {what.format(minimum=minimum)}, got {brief(value)}")
        if limit is not None and value > LIMITS[limit][0]:
            raise _refuse(over_limit(value, limit))
        return value
    return Annotated[int, BeforeValidator(check)]


def _range(*, zero: bool = True, limit: str | None = None, below: float | None = None):
    """``[low, high]``: two numbers, low <= high (and high < ``below``)."""
    number = _number(zero=zero, limit=limit)

    def shape(value: Any) -> Any:
        if not (isinstance(value, (list, tuple)) and len(value) == 2):
            raise _refuse(f"must be a range [low, high], got {brief(value)}")
        return value

    def order(value: tuple) -> tuple:
        low, high = value
        if high < low:
            raise _refuse(f"high ({high}) is below low ({low})")
        if below is not None and high >= below:
            raise _refuse(f"a clipped fraction must stay below {below}, got {high}")
        return value
    return Annotated[tuple[number, number], BeforeValidator(shape), AfterValidator(order)]


def _one_of(*choices: str, say: str | None = None):
    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise _refuse(say or f"must be {', '.join(choices[:-1])} or {choices[-1]}, got {brief(value)}")
        return value
    return Annotated[str, BeforeValidator(check)]


class _Section(BaseModel):
    """Frozen; a key no field reads is refused with the closest known key as a hint."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _mapping_of_known_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise _refuse(f"must be a mapping, got {type(data).__name__} {brief(data)}")
        known = list(cls.model_fields)
        for key in data:
            if key not in cls.model_fields:
                name = key_text(key)
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
                raise PydanticCustomError("unknown_key", "{message}", {"key": name, "message": f"unknown key; {hint}"})
        return data

    def as_mapping(self) -> dict:
        """Plain data (dicts, lists, numbers, text) of the keys given or set by resolution: what the config hash,
        the store's ``attrs["config"]`` and the files written from a config see. (Grid sizes keep their integer
        energy keys.) Also the temporary bridge for readers not yet on attributes (docs/simulate.md)."""
        return _plain(self.model_dump(exclude_unset=True))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ----------------------------------------------------------------------------------------------- sections
class Detector(_Section):
    inner_mrad: _number(zero=True)
    outer_mrad: _number()

    @model_validator(mode="after")
    def _outer_beyond_inner(self) -> Detector:
        if self.outer_mrad <= self.inner_mrad:
            raise _refuse(f"outer_mrad ({self.outer_mrad}) must exceed inner_mrad ({self.inner_mrad})")
        return self


def _detectors(value: Any) -> Any:
    """Names only (the paper's angles, ``contract.context.DETECTORS``) or name -> {inner_mrad, outer_mrad}."""
    if isinstance(value, list):
        for i, name in enumerate(value):
            if not isinstance(name, str) or name not in DETECTORS:
                raise _refuse(f"[{i}]: unsupported detector {brief(name)}; supported: {tuple(DETECTORS)}")
        if len(set(value)) != len(value):
            raise _refuse("lists a detector twice")
        value = {name: DETECTORS[name].as_config() for name in value}
    if not isinstance(value, dict) or not value:
        raise _refuse("must list detector names or map name -> {inner_mrad, outer_mrad}")
    for name in value:
        if not isinstance(name, str) or name not in DETECTORS:
            raise PydanticCustomError("unknown_key", "{message}", {"key": brief(name, 40), "message":
                                      f"unsupported detector; supported: {tuple(DETECTORS)}"})
    return value


def _energies(value: Any) -> Any:
    if not isinstance(value, list) or not value:
        raise _refuse("must be a non-empty list")
    for i, energy in enumerate(value):
        if isinstance(energy, bool) or not isinstance(energy, int) or energy not in BEAM_ENERGIES_KEV:
            raise _refuse(f"[{i}]: {brief(energy)} is not supported; supported: {BEAM_ENERGIES_KEV} (the context "
                          "vector one-hot encodes exactly these)")
    if len(set(value)) != len(value):
        raise _refuse("lists an energy twice")
    return value


class Imaging(_Section):
    beam_energies_kev: Annotated[list[int], BeforeValidator(_energies)]
    convergence_semiangle_mrad: _number(limit="convergence_semiangle_mrad")
    detectors: Annotated[dict[str, Detector], BeforeValidator(_detectors)]


def _gpts(value: Any) -> Any:
    """``auto`` or energy -> grid size (each energy supported, each size a positive integer under the limit)."""
    if value == "auto":
        return value
    if not isinstance(value, dict):
        raise _refuse(f"must be `auto` or map beam energies to grid sizes, got {brief(value)}")
    sizes = {}
    for energy, n in value.items():
        key = brief(energy, 40)
        if isinstance(energy, bool) or _as_energy(energy) not in BEAM_ENERGIES_KEV:
            raise _field(key, f"not a supported beam energy {BEAM_ENERGIES_KEV}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise _field(key, f"must be a positive integer, got {brief(n)}")
        if n > LIMITS["gpts"][0]:
            raise _field(key, over_limit(n, "gpts"))
        sizes[_as_energy(energy)] = n
    return sizes


def _as_energy(key: Any) -> Any:
    """A grid-size key: an energy, or its text (the resolved config read back from a store's JSON)."""
    return int(key) if isinstance(key, str) and key.isdigit() else key


def _repeats(value: Any) -> Any:
    if not (isinstance(value, list) and len(value) == 2
            and all(isinstance(r, int) and not isinstance(r, bool) and r >= 2 for r in value)):
        raise _refuse(f"must be two integers >= 2, got {brief(value)}")
    if max(value) > LIMITS["supercell_repeats"][0]:
        raise _refuse(over_limit(value, "supercell_repeats"))
    return value


class Multislice(_Section):
    supercell_repeats: Annotated[list[int], BeforeValidator(_repeats)]
    vacuum_angstrom: _number(zero=True, limit="vacuum_angstrom")
    slicing: _one_of("planes", "uniform")
    slice_thickness_angstrom: _number() | None = None
    projection: _one_of("infinite", "finite")
    gpts: Annotated[Literal["auto"] | dict[int, int], PlainValidator(_gpts)] = "auto"
    scan_margin_px: _integer(limit="scan_margin_px")
    frozen_phonons: _integer(minimum=0, limit="frozen_phonons")
    frozen_phonon_sigma_angstrom: _number(zero=True)
    parametrization: Any = None
    device: _one_of("cpu", "gpu")
    fftw_planning_effort: _one_of("FFTW_ESTIMATE", "FFTW_MEASURE", "FFTW_PATIENT", say="must be FFTW_ESTIMATE, "
                                  "FFTW_MEASURE or FFTW_PATIENT")

    @model_validator(mode="after")
    def _slicing_needs(self) -> Multislice:
        if self.slicing == "planes":
            if self.slice_thickness_angstrom is not None:
                raise _field("slice_thickness_angstrom", "only used with `slicing: uniform` (`planes` puts one slice "
                             "on each atomic plane); remove it or set multislice.slicing: uniform")
            if self.vacuum_angstrom < 1.0:
                raise _field("vacuum_angstrom", "`slicing: planes` needs >= 1 A of vacuum above the layer (the "
                             f"first plane's slice starts above it), got {self.vacuum_angstrom!r}")
        elif self.slice_thickness_angstrom is None:
            raise _field("slice_thickness_angstrom", "must be a finite number, got None")
        elif self.slice_thickness_angstrom < MIN_SLICE_THICKNESS_ANGSTROM:
            raise _field("slice_thickness_angstrom", f"{self.slice_thickness_angstrom:g} is below the limit "
                         f"{MIN_SLICE_THICKNESS_ANGSTROM} A (thinner slices only multiply the cost: 0.1 A slicing "
                         "already agrees with `planes` to < 1 %)")
        return self


def _field(name: str, message: str) -> PydanticCustomError:
    """A model-level rule blamed on one of its fields."""
    return PydanticCustomError("unknown_key", "{message}", {"key": name, "message": message})


class DisplayExport(_Section):
    """``noise.display_export`` (optional; absent or null: off): ranges of the 8-bit display step."""
    black_clip_fraction: _range(below=0.5)
    white_clip_fraction: _range(below=0.5)
    gamma: _range(zero=False)


class Noise(_Section):
    probe_blur_sigma_angstrom: _range()
    dose_e_per_angstrom2: _range(zero=False, limit="dose_e_per_angstrom2")
    read_noise_counts: _range()
    scan_jitter_px: _range()
    centre_offset_px: _range()
    display_export: DisplayExport | None = None


def _patch_size(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= LIMITS["patch_size_px"][0] and (
            value % 2 == 0 or value < 9):
        raise _refuse(f"must be odd and >= 9 (the column sits on the centre pixel), got {value}")
    return value


class Patches(_Section):
    patch_size_px: Annotated[_integer(limit="patch_size_px", what="a positive integer"), BeforeValidator(_patch_size)]
    patches_per_image: _integer(limit="patches_per_image", what="a positive integer")


def _pair(value: Any) -> Any:
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(x, str) for x in value)):
        raise _refuse(f"must be [host, dopant], got {brief(value)}")
    return [value[0], NO_DOPANT if is_undoped(value[1]) else value[1]]


def _list_of(what: str):
    def check(value: Any) -> Any:
        if not isinstance(value, list):
            raise _refuse(f"must be a list of {what}, got {brief(value)}")
        return value
    return BeforeValidator(check)


def _undoped(value: list) -> list:
    return [NO_DOPANT if isinstance(d, str) and is_undoped(d) else d for d in value]


class Selection(_Section):
    """``{combos: [[host, dopant], ...]}`` or ``{hosts: [...], dopants: [...]}`` (a missing list: all of the
    catalog's). Whether the names are in the catalog is checked against ``materials`` by ``simulate.config``."""
    combos: Annotated[list[Annotated[list[str], BeforeValidator(_pair)]], _list_of("[host, dopant]")] | None = None
    hosts: Annotated[list[Any], _list_of("names")] | None = None
    dopants: Annotated[list[Any], _list_of("names"), AfterValidator(_undoped)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_form(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data:
            raise _refuse("must be `all`, {hosts: [...], dopants: [...]} or {combos: [[host, dopant], ...]}")
        if "combos" in data and set(data) != {"combos"} and set(data) <= {"combos", "hosts", "dopants"}:
            raise _refuse("give either combos or hosts/dopants, not both")
        return data


def _all_or(value: Any) -> Any:
    """``all`` is ``None`` (every catalog combo); an explicit null is no selection."""
    if value is None:
        raise _refuse("must be `all`, {hosts: [...], dopants: [...]} or {combos: [[host, dopant], ...]}")
    return None if value == "all" else value


def _environments(value: Any) -> Any:
    if value == "all":
        return value
    if not isinstance(value, list) or not value:
        raise _refuse(f"must be `all` or a non-empty list of ids 0..{len(ENVIRONMENTS) - 1}")
    for i, env in enumerate(value):
        if isinstance(env, bool) or not isinstance(env, int) or not 0 <= env < len(ENVIRONMENTS):
            raise _refuse(f"[{i}]: must be an id in 0..{len(ENVIRONMENTS) - 1}, got {brief(env)}")
    if len(set(value)) != len(value):
        raise _refuse("lists an id twice")
    return value


def _name(value: Any) -> Any:
    if not isinstance(value, str):
        raise _refuse("missing (a short dataset name)")
    if not 0 < len(value) <= LIMITS["name"][0] or not value.isprintable():
        raise _refuse(f"must be 1-{LIMITS['name'][0]} printable characters, got {brief(value)}")
    return value


def _materials(value: Any) -> Any:
    if isinstance(value, dict):
        check_keys(value, {"catalog": None, **CATALOG_SCHEMA}, "materials")
    catalog_from_mapping(value, field="materials")  # its messages carry their own dotted path
    return value


class DatasetConfig(_Section):
    """A dataset config. After ``simulate.config.resolve``: ``combos`` listed, ``selection`` = ``{combos}``,
    ``environments`` = sorted ids, ``multislice.gpts`` = one grid size per energy, ``materials`` only the hosts
    and dopants in use."""
    name: Annotated[str, BeforeValidator(_name)]
    seed: _integer(minimum=0, limit="seed", what="a non-negative integer")
    materials: Annotated[dict[str, Any], BeforeValidator(_materials)]
    imaging: Imaging
    multislice: Multislice
    noise: Noise
    patches: Patches
    selection: Annotated[Selection | None, BeforeValidator(_all_or)] = None
    environments: Annotated[Literal["all"] | list[int], BeforeValidator(_environments)] = "all"
    combos: list[list[str]] | None = None
    """Set by resolution (the selection expanded); read back from a store it is recomputed."""

    @model_validator(mode="after")
    def _margin_holds_jitter_and_offset(self) -> DatasetConfig:
        margin, noise = self.multislice.scan_margin_px, self.noise
        reach = noise.scan_jitter_px[1] + noise.centre_offset_px[1] + 1  # +1: bilinear support
        if reach > margin:
            raise ConfigError(f"multislice.scan_margin_px: {margin} px cannot hold jitter ({noise.scan_jitter_px[1]})"
                              f" + offset ({noise.centre_offset_px[1]}) + 1 px of interpolation; raise it to "
                              f"{int(reach + 0.999)}")
        return self


# ----------------------------------------------------------------------------------------------- errors
def _dotted(loc: tuple) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif "[" in part or part.startswith("function-"):
            continue  # a union member's or validator's name, not a field
        else:
            text += f".{key_text(part)}" if text else key_text(part)
    return text


def config_error(err: ValidationError) -> ConfigError:
    """The first error of ``err`` as one ``ConfigError``: ``dotted.field: reason``."""
    first = err.errors(include_url=False)[0]
    ctx, kind = first.get("ctx") or {}, first["type"]
    path = _dotted(first["loc"])
    if isinstance(ctx.get("error"), ConfigError):  # a rule that names its own field(s)
        return ConfigError(str(ctx["error"]))
    if kind == "unknown_key":
        path = f"{path}.{ctx['key']}" if path else ctx["key"]
        message = ctx["message"]
    elif kind == "config":
        message = ctx["message"]
        if message.startswith("["):  # an item of the field: `field[i]: ...`
            path, _, message = f"{path}{message}".partition(": ")
    elif kind == "missing":
        message = "missing (a short dataset name)" if path == "name" else "missing"
    elif kind in ("model_type", "dict_type", "model_attributes_type"):
        message = f"must be a mapping, got {type(first.get('input')).__name__} {brief(first.get('input'))}"
    else:
        message = f"{first['msg']}, got {brief(first.get('input'))}"
    return ConfigError(f"{path or 'config'}: {message}")


def validate(raw: Any) -> DatasetConfig:
    """``DatasetConfig.model_validate`` with any failure as a ``ConfigError``."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config: must be a mapping of sections, got {type(raw).__name__}")
    try:
        return DatasetConfig.model_validate(raw)
    except ValidationError as err:
        raise config_error(err) from None
