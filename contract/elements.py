"""Periodic-table facts the catalog needs: element validity, period (row) and transition-metal membership.

Pure functions over ASE's element table; no I/O.
"""
from __future__ import annotations

from ase.data import atomic_numbers

# Last atomic number of each period (row) of the periodic table.
_PERIOD_ENDS = (2, 10, 18, 36, 54, 86, 118)

# Transition metals: groups 3-12 (lanthanides/actinides other than La/Ac excluded).
_TRANSITION_METAL_Z = set(range(21, 31)) | set(range(39, 49)) | {57} | set(range(72, 81)) | {89} | set(range(104, 113))


def atomic_number(symbol: str) -> int:
    """Atomic number Z of an element symbol; ``ValueError`` naming the symbol if it is not an element."""
    if symbol not in atomic_numbers or symbol == "X":
        raise ValueError(f"unknown element {symbol!r}")
    return atomic_numbers[symbol]


def period(symbol: str) -> int:
    """Row of the periodic table (1-7) of an element."""
    z = atomic_number(symbol)
    for row, last in enumerate(_PERIOD_ENDS, start=1):
        if z <= last:
            return row
    raise ValueError(f"no period for {symbol!r}")  # unreachable for valid symbols


def is_transition_metal(symbol: str) -> bool:
    return atomic_number(symbol) in _TRANSITION_METAL_Z
