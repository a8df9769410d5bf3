"""The findings of a store verification and the checks every stage's ``verify`` shares (no stage logic).

``python -m simulate verify STORE`` and ``python -m features verify --store STORE`` read every shard of the
arrays their stage writes and report each problem as a ``Finding``: the array, the shard (or chunk) and its
rows, the task that owns it, and what is wrong. ``--repair`` reruns exactly what owns the bad shards.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import CorruptDataError
from .store import decode_reason, rows_per_stored_block


@dataclass(frozen=True)
class Finding:
    """One problem in a store.

    ``shard``: index along N of the array's shards (``unit`` "shard"), chunks (an unsharded array, "chunk") or
    entries (a done-marker array, "marker"); None for the whole array or its attributes; ``rows``: [start, stop) of that shard; ``owner``: what reruns it (e.g. ``task 3
    (WSe2+Cr 60 keV)``); ``repairable``: whether ``--repair`` can restore it by rerunning its owner.
    """

    array: str
    problem: str
    shard: int | None = None
    rows: tuple[int, int] | None = None
    owner: str | None = None
    repairable: bool = True
    unit: str = "shard"

    def describe(self) -> str:
        """``<array> shard k (rows a-b) of <owner>: <problem>``."""
        where = self.array
        if self.unit == "marker" and self.shard is not None:
            where += f"[{self.shard}]"
        elif self.shard is not None:
            where += f" {self.unit} {self.shard}"
            if self.rows is not None:
                where += f" (rows {self.rows[0]}-{self.rows[1] - 1})"
        if self.owner is not None:
            where += f" of {self.owner}"
        return f"{where}: {self.problem}"

    def line(self) -> str:
        """The report line: ``bad  <array> shard k (rows a-b) of <owner>: <problem>``."""
        return f"bad  {self.describe()}" + ("" if self.repairable else " [not repairable in place]")


@dataclass
class Report:
    """What a verification checked (``checked``, one line) and found."""

    store: str
    checked: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def repairable(self) -> bool:
        return all(f.repairable for f in self.findings)

    def lines(self) -> list[str]:
        return [f"verify: {self.store}: {self.checked}", *(f.line() for f in self.findings)]

    def print_with(self, ok_line: str) -> bool:
        """Print the report (and ``ok_line`` when nothing was found); returns ``ok``. The command-line form that
        every stage's ``verify`` shares."""
        for line in self.lines():
            print(line)
        if self.ok:
            print(ok_line)
        return self.ok

    def check_repaired(self) -> None:
        """After a repair (``self`` the report made afterwards): print its findings, ``CorruptDataError`` if
        any remain."""
        for line in self.lines()[1:]:
            print(line)
        if not self.ok:
            raise CorruptDataError(f"store {self.store!r}: {len(self.findings)} problem(s) remain after the repair "
                                   f"(first: {self.findings[0].describe()})")


def open_checked(group, name: str, shape: tuple, dtype: str, block_rows: int, findings: list[Finding],
                 repairable: bool = False):
    """``group[name]`` when it exists with ``shape``, ``dtype`` and ``block_rows`` rows per shard; otherwise
    append a finding and return None (its shards are then not read)."""
    try:
        array = group[name]
    except KeyError:
        findings.append(Finding(name, "missing", repairable=repairable))
        return None
    except Exception as err:  # a damaged zarr.json
        findings.append(Finding(name, f"metadata unreadable ({decode_reason(err)})", repairable=repairable))
        return None
    wrong = []
    if tuple(array.shape) != tuple(shape):
        wrong.append(f"shape {tuple(array.shape)}, expected {tuple(shape)}")
    if array.dtype != np.dtype(dtype):
        wrong.append(f"dtype {array.dtype}, expected {np.dtype(dtype)}")
    if not wrong and rows_per_stored_block(array) != block_rows:
        wrong.append(f"{rows_per_stored_block(array)} rows per shard, expected {block_rows}")
    if wrong:
        findings.append(Finding(name, "; ".join(wrong), repairable=repairable))
        return None
    return array


def block_unit(array) -> str:
    """What one block along N of ``array`` is called in findings: "shard", "chunk" or "marker" (1 row)."""
    if getattr(array, "shards", None):
        return "shard"
    return "marker" if rows_per_stored_block(array) == 1 else "chunk"


def read_shard(array, name: str, start: int, stop: int, shard: int, owner: str | None,
               findings: list[Finding]):
    """``array[start:stop]`` as NumPy, or None after appending a finding when it does not decode."""
    try:
        return np.asarray(array[start:stop])
    except Exception as err:
        findings.append(Finding(name, f"does not decode ({decode_reason(err)})", shard, (start, stop), owner,
                                unit=block_unit(array)))
        return None


def first_difference(found: np.ndarray, expected: np.ndarray) -> str:
    """``"3 of 16 rows differ (row 5: 7, expected 3)"`` for two 1-D arrays of one length."""
    diff = np.flatnonzero(found != expected)
    i = int(diff[0])
    return f"{len(diff)} of {len(found)} rows differ from the plan (row +{i}: {found[i]}, expected {expected[i]})"


def non_finite_rows(data: np.ndarray) -> str | None:
    """``"5 of 16 rows hold NaN or inf"`` or None when every value is finite."""
    bad = ~np.isfinite(data.reshape(len(data), -1)).all(axis=1)
    if not bad.any():
        return None
    return f"{int(bad.sum())} of {len(data)} rows hold NaN or inf (never written, or damaged)"


def marker_problem(value) -> str | None:
    """Problem of a done-marker value (None for 1)."""
    if value is None:
        return None
    value = int(np.asarray(value).reshape(-1)[0])
    if value == 1:
        return None
    if value == 0:
        return "marker 0: not done (an interrupted run, or a damaged marker)"
    return f"marker {value}: not 0 or 1 (damaged)"


def remove_blocks(store, name: str, array, blocks) -> int:
    """Delete the stored shards (or chunks) ``blocks`` along N of ``group[name]`` in a local store, so that the
    rerun that owns them writes them afresh: zarr reads a shard's index before writing into it, and a damaged
    index would fail the write. Returns how many files were removed."""
    removed = 0
    for k in blocks:
        key = array.metadata.encode_chunk_key((int(k),) + (0,) * (array.ndim - 1))
        path = Path(store) / name / key
        if path.is_file():
            path.unlink()
            removed += 1
    return removed
