"""The materials catalog: hosts (1H-MX2) and dopants, validated, from ``catalog.yaml`` (package data) or a file.

``load_catalog()`` reads the shipped catalog; ``load_catalog(path)`` another file; ``catalog_from_mapping`` an
inline ``{hosts: ..., dopants: ...}`` mapping (a dataset config's ``materials`` block). Every check raises
``ConfigError`` whose message starts with the dotted field name, e.g. ``materials.hosts.MoS2.chalcogen: ...``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from . import elements
from .context import NO_DOPANT, is_undoped
from .errors import ConfigError
from .yamlsafe import ANY, Each, brief, check_keys, key_text, read_yaml_mapping

__all__ = ["CATALOG_SCHEMA", "CHALCOGENS", "Catalog", "HOST_KEYS", "Host", "catalog_from_mapping",
           "default_catalog_path", "is_excluded", "load_catalog", "read_yaml_mapping"]

CHALCOGENS = ("S", "Se", "Te")
HOST_KEYS = ("metal", "chalcogen", "lattice_constant_angstrom", "thickness_angstrom")
CATALOG_SCHEMA = {"hosts": Each({**dict.fromkeys(HOST_KEYS, ANY), "source": ANY}), "dopants": ANY}
"""Every key a catalog (or a dataset config's inline ``materials`` block) may hold, at every level."""


@dataclass(frozen=True)
class Host:
    """A 1H-MX2 host: ``lattice_constant_angstrom`` is the in-plane a, ``thickness_angstrom`` the vertical
    chalcogen-chalcogen distance inside the layer; ``source`` says where both come from."""

    name: str
    metal: str
    chalcogen: str
    lattice_constant_angstrom: float
    thickness_angstrom: float
    source: str = ""

    def as_config(self) -> dict:
        """The dict form used in dataset configs and store attributes (no ``name``; ``source`` when known)."""
        d = {k: v for k, v in asdict(self).items() if k != "name"}
        if not d["source"]:
            del d["source"]
        return d


def is_excluded(metal: str, dopant: str) -> bool:
    """A dopant in the same periodic-table row as the host metal is excluded (too little Z contrast); no dopant
    (``"none"``, an undoped host) never is."""
    return not is_undoped(dopant) and elements.period(metal) == elements.period(dopant)


@dataclass(frozen=True)
class Catalog:
    hosts: dict[str, Host]
    dopants: tuple[str, ...]
    raw: dict  # the validated mapping as read (what dataset configs and store attributes hold)

    def host(self, name: str) -> Host:
        if name not in self.hosts:
            raise ConfigError(f"host {brief(name)} is not in the catalog; known hosts: {', '.join(sorted(self.hosts))}")
        return self.hosts[name]

    def combos(self, undoped: bool = False) -> list[tuple[str, str]]:
        """Every allowed (host, dopant) pair, hosts in catalog order; ``undoped``: each host's ``(host, "none")``
        too, after its dopants."""
        extra = (NO_DOPANT,) if undoped else ()
        return [(h, d) for h in self.hosts for d in self.dopants + extra if not is_excluded(self.hosts[h].metal, d)]


MAX_LATTICE_CONSTANT_ANGSTROM = 10.0
"""1H-MX2 lattice constants are 3.0-3.6 A; a larger value is a typo (and would grow every supercell and grid)."""
MAX_THICKNESS_ANGSTROM = 10.0


def _number(value, field: str, maximum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= maximum:
        raise ConfigError(f"{field}: must be a number in (0, {maximum:g}], got {brief(value)}")
    return float(value)


def catalog_from_mapping(raw, field: str = "materials") -> Catalog:
    """Validate ``{hosts: {name: {metal, chalcogen, lattice_constant_angstrom, thickness_angstrom, source}},
    dopants: [symbols]}``."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{field}: must be a mapping with hosts and dopants")
    check_keys(raw, CATALOG_SCHEMA, field)
    hosts_raw = raw.get("hosts")
    if not isinstance(hosts_raw, dict) or not hosts_raw:
        raise ConfigError(f"{field}.hosts: must be a non-empty mapping of host name -> properties")
    hosts = {}
    for name, h in hosts_raw.items():
        f = f"{field}.hosts.{key_text(name)}"
        if not isinstance(h, dict):
            raise ConfigError(f"{f}: must be a mapping with {', '.join(HOST_KEYS)}")
        for key in HOST_KEYS:
            if key not in h:
                raise ConfigError(f"{f}.{key}: missing")
        for key in ("metal", "chalcogen"):
            if not isinstance(h[key], str) or not 0 < len(h[key]) <= 3:
                raise ConfigError(f"{f}.{key}: must be an element symbol, got {brief(h[key])}")
            try:
                elements.atomic_number(h[key])
            except ValueError as err:
                raise ConfigError(f"{f}.{key}: {err}") from None
        if not elements.is_transition_metal(h["metal"]):
            raise ConfigError(f"{f}.metal: {h['metal']} is not a transition metal")
        if h["chalcogen"] not in CHALCOGENS:
            raise ConfigError(f"{f}.chalcogen: must be one of {CHALCOGENS}, got {brief(h['chalcogen'])}")
        hosts[str(name)] = Host(str(name), h["metal"], h["chalcogen"],
                                _number(h["lattice_constant_angstrom"], f"{f}.lattice_constant_angstrom",
                                        MAX_LATTICE_CONSTANT_ANGSTROM),
                                _number(h["thickness_angstrom"], f"{f}.thickness_angstrom", MAX_THICKNESS_ANGSTROM),
                                str(h.get("source", "")))
    dopants = raw.get("dopants")
    if not isinstance(dopants, list) or not dopants:
        raise ConfigError(f"{field}.dopants: must be a non-empty list of element symbols")
    for i, dopant in enumerate(dopants):
        if not isinstance(dopant, str) or not 0 < len(dopant) <= 3:
            raise ConfigError(f"{field}.dopants[{i}]: must be an element symbol, got {brief(dopant)}")
        try:
            elements.atomic_number(dopant)
        except ValueError as err:
            raise ConfigError(f"{field}.dopants[{i}]: {err}") from None
        if not elements.is_transition_metal(dopant):
            raise ConfigError(f"{field}.dopants[{i}]: {dopant} is not a transition metal")
    if len(set(dopants)) != len(dopants):
        raise ConfigError(f"{field}.dopants: lists a dopant twice")
    return Catalog(hosts, tuple(dopants), {"hosts": hosts_raw, "dopants": list(dopants)})


def default_catalog_path() -> Path:
    """The shipped catalog (``contract/catalog.yaml``, package data)."""
    return Path(str(resources.files("contract") / "catalog.yaml"))


def load_catalog(path: str | Path | None = None) -> Catalog:
    """The validated catalog from ``path``, or the shipped one when ``path`` is None."""
    path = default_catalog_path() if path is None else Path(path)
    return catalog_from_mapping(read_yaml_mapping(path, "catalog"), field=f"catalog {path.name}")
