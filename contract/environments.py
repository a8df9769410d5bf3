"""The 34 local environments of a substitutionally doped 1H-MX2 layer (paper section 4, Fig. S7).

In projection along c every metal column has 3 nearest chalcogen columns and vice versa. An environment is the
identity of a central column plus those of its 3 nearest neighbours, counted up to the 3-fold rotation of the
site (the site symmetry is D3h for metal, C3v for chalcogen sites):

* chalcogen-site centres X2 / VacX / VacX2 (labels 0, 1, 2), each neighbour metal M or dopant D:
  4 necklaces (MMM, MMD, MDD, DDD) per class, 12 in all;
* metal-site centres M / D (labels 3, 4), each neighbour chalcogen column X2, VacX or VacX2:
  11 necklaces per class, 22 in all.

Environment ids run 0..33 in class order, then in the order of ``itertools.product`` over neighbour symbols.
Neighbour tuples are stored in their canonical rotation (the lexicographically smallest under the symbol order
below); the structure builder places them counter-clockwise in that order.

An undoped sample (dopant ``"none"``) has only the 14 environments with no dopant site: the 3 chalcogen-site
centres whose three metal neighbours are all host metal (``M, M, M``) and the 11 host-metal centres
(``environments_for_dopant``). For a given host and beam energy they are the same structures for every dopant.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

from contract.classes import (
    CHALCOGEN_SYMBOLS,
    CLASS_IDS,
    CLASS_NAMES,
    METAL_SYMBOLS,
    SUBLATTICES,
    sublattice_of_class,
)
from contract.context import is_undoped

DOPANT_SYMBOL = CLASS_NAMES[CLASS_IDS["D"]]


@dataclass(frozen=True)
class Environment:
    """One local environment: the central column and its three nearest neighbour columns."""

    id: int
    label: int
    centre: str
    neighbours: tuple[str, str, str]

    @property
    def sublattice(self) -> str:
        """``"metal"`` or ``"chalcogen"``: the sublattice the central column sits on."""
        return SUBLATTICES[sublattice_of_class(self.label)]

    @property
    def has_dopant_site(self) -> bool:
        """Whether the centre or a neighbour is a dopant column (not simulated for an undoped sample)."""
        return DOPANT_SYMBOL in (self.centre, *self.neighbours)

    @property
    def class_name(self) -> str:
        return CLASS_NAMES[self.label]

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "label": self.label,
            "class_name": self.class_name,
            "sublattice": self.sublattice,
            "centre": self.centre,
            "neighbours": list(self.neighbours),
        }


def canonical_rotation(neighbours: tuple[str, ...], order: tuple[str, ...]) -> tuple[str, ...]:
    """Smallest cyclic rotation of ``neighbours`` under the symbol ``order`` (representative of the C3 orbit)."""
    rank = {s: i for i, s in enumerate(order)}
    rotations = [neighbours[i:] + neighbours[:i] for i in range(len(neighbours))]
    return min(rotations, key=lambda r: [rank[s] for s in r])


def _necklaces(symbols: tuple[str, ...]) -> list[tuple[str, str, str]]:
    seen: list[tuple[str, str, str]] = []
    for combo in itertools.product(symbols, repeat=3):
        canon = canonical_rotation(combo, symbols)
        if canon not in seen:
            seen.append(canon)
    return seen


def local_environments() -> tuple[Environment, ...]:
    """All 34 environments, ids 0..33, labels 0..4."""
    envs: list[Environment] = []
    for label, centre in enumerate(CLASS_NAMES):
        symbols = METAL_SYMBOLS if centre in CHALCOGEN_SYMBOLS else CHALCOGEN_SYMBOLS
        for neighbours in _necklaces(symbols):
            envs.append(Environment(id=len(envs), label=label, centre=centre, neighbours=neighbours))
    return tuple(envs)


ENVIRONMENTS = local_environments()

UNDOPED_ENVIRONMENT_IDS = tuple(e.id for e in ENVIRONMENTS if not e.has_dopant_site)
"""The 14 environments without a dopant site (ids in class order)."""


def environments_for_dopant(dopant: str, environment_ids) -> tuple[int, ...]:
    """The ids of ``environment_ids`` a (host, ``dopant``) combo simulates: all of them for a dopant element,
    only those without a dopant site for ``"none"``."""
    if is_undoped(dopant):
        return tuple(i for i in environment_ids if not ENVIRONMENTS[i].has_dopant_site)
    return tuple(environment_ids)
