"""The zarr v3 store of a simulated dataset: array names, dtypes, attributes, and the one typed reader.

Arrays (every array along N is sharded with ``rows_per_shard`` rows: one environment of one simulation task):

======================  ==============  ===================================================================
name                    shape, dtype    meaning
======================  ==============  ===================================================================
``patches``             (N, P, P) f32   noisy patches in detector counts; P odd, the column on the centre.
                                        Optional since layout 2 (``attrs["patches_kept"]``): without it every
                                        patch is made again, bit-identically, from ``clean/scans`` and its seed
``label``               (N,) u8         class of the central column (``contract.classes``)
``case``                (N,) i32        row of ``attrs["cases"]`` (host, dopant, beam energy, detector)
``environment``         (N,) u8         id of the local environment (``attrs["environments"]``)
``task_done``           (n_tasks,) u8   1 once a simulation task wrote all its shards (resume marker)
``clean/<row arrays>``  (M, ...)        the noiseless image per (task, environment, detector), same grid
``clean/scans``         (M, S, S) f32   layout 2: the noiseless scan window each noisy patch is made from
                                        (fraction of the beam; its side varies by case, NaN beyond it)
``features``            (N, 31) f32     written by the feature stage (``contract.features`` layout)
``features_done``       (n_shards,) u8  1 once a shard's features are written (resume marker)
``<name>_digest``       (n_shards,) u64 ``shard_digest`` of each shard of ``patches``/``features``, written with it
======================  ==============  ===================================================================

The digests tie a shard's content to its position: zarr's checksums catch a damaged shard, but a whole shard
moved to other rows (files swapped on disk, a botched copy) still decodes; its digest, which hashes its first row
index with its bytes, then differs. Stores written before the digests have no ``<name>_digest`` arrays.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from .context import Case
from .errors import CorruptDataError, InputError

PATCHES = "patches"
LABEL = "label"
CASE = "case"
ENVIRONMENT = "environment"
TASK_DONE = "task_done"
CLEAN = "clean"
FEATURES = "features"
FEATURES_DONE = "features_done"

PATCH_DTYPE = "float32"
FEATURE_DTYPE = "float32"
MARKER_DTYPE = "uint8"
ROW_ARRAYS = {LABEL: "uint8", CASE: "int32", ENVIRONMENT: "uint8"}
"""Per-row arrays besides ``patches`` (and their dtypes), in the main group and in ``clean/``."""

# group attributes (``root.attrs``)
ATTR_CASES = "cases"
ATTR_ENVIRONMENTS = "environments"
ATTR_DETECTORS = "detectors"
ATTR_PATCH_SIZE = "patch_size_px"
ATTR_ROWS_PER_SHARD = "rows_per_shard"
ATTR_ROWS_PER_TASK = "rows_per_task"
ATTR_CLEAN_ROWS_PER_TASK = "clean_rows_per_task"
ATTR_TASKS = "tasks"
ATTR_CONFIG = "config"
ATTR_CONFIG_HASH = "config_hash"
ATTR_VERSIONS = "versions"
ATTR_LAYOUT = "layout_version"
ATTR_PATCHES_KEPT = "patches_kept"
SCANS = "scans"

LAYOUT_VERSION = 2
"""Layout of a new simulated store. 1 (no ``layout_version`` attribute): ``patches`` always written, no
``clean/scans``, every task's frozen-phonon configurations seeded per task. 2: ``clean/scans`` written, ``patches``
only with ``patches_kept`` (``simulate run --keep-patches``), and the environments without a dopant site seeded
per (host, beam energy), so that one multislice run serves every dopant of a host with frozen phonons too."""
# ``features.attrs``
ATTR_FEATURE_NAMES = "feature_names"
ATTR_SITE_SYMMETRY = "site_symmetry"


def store_layout(attrs) -> tuple[int, bool]:
    """(layout version, whether the noisy ``patches`` are stored) of a store's group attributes."""
    version = int(attrs.get(ATTR_LAYOUT, 1))
    return version, bool(attrs.get(ATTR_PATCHES_KEPT, True)) if version >= 2 else True


class StoreError(InputError):
    """A store that cannot be used as asked: missing, not a store, of another layout or unfinished."""


def open_group(path: str | Path, mode: str = "r"):
    """Open an existing store (``zarr.Group``); ``StoreError`` naming the path when there is none."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"store {str(path)!r} does not exist")
    try:
        return zarr.open_group(str(path), mode=mode, zarr_format=3)
    except Exception as err:  # not a zarr v3 group, unreadable metadata
        raise StoreError(f"{path} is not a readable zarr v3 store: {type(err).__name__}: {err}") from None


@dataclass(frozen=True)
class StoreMeta:
    """What a store says about itself (read from its group attributes and array shapes; no row data).

    ``cases`` are the full dicts of ``attrs["cases"]``; ``case_contexts`` their ``Case`` views.
    ``feature_names`` is None until the feature stage has run.
    """

    path: str
    n_rows: int
    patch_size_px: int | None
    rows_per_shard: int
    cases: tuple[dict, ...]
    environments: tuple[dict, ...]
    detectors: tuple[str, ...]
    n_tasks: int | None
    config_hash: str | None
    config: dict | None
    feature_names: tuple[str, ...] | None
    arrays: tuple[str, ...] = field(default=())
    attrs: dict = field(default_factory=dict, repr=False)

    @property
    def n_shards(self) -> int:
        return math.ceil(self.n_rows / self.rows_per_shard)

    def shard_rows(self, shard: int) -> tuple[int, int]:
        """(start, stop) rows of shard ``shard``."""
        if not 0 <= shard < self.n_shards:
            raise IndexError(f"shard {shard} outside 0..{self.n_shards - 1}")
        return shard * self.rows_per_shard, min(self.n_rows, (shard + 1) * self.rows_per_shard)

    @property
    def case_contexts(self) -> tuple[Case, ...]:
        return tuple(Case.from_dict(c) for c in self.cases)

    @property
    def has_features(self) -> bool:
        return self.feature_names is not None


def read_meta(path: str | Path, require: tuple[str, ...] = (LABEL, CASE)) -> StoreMeta:
    """The metadata of the store at ``path``; ``StoreError`` naming the array or attribute that is missing or
    inconsistent. ``require``: arrays that must exist (e.g. ``(PATCHES, CASE, ENVIRONMENT)`` for encoding,
    ``(FEATURES, LABEL, CASE)`` for training)."""
    group = open_group(path)
    name = str(path)
    try:  # every member's zarr.json, once
        members = {k: group[k] for k in group.array_keys()}
    except Exception as err:
        raise CorruptDataError(f"store {name!r}: an array's metadata (zarr.json) does not parse "
                               f"({decode_reason(err)}); run `python -m simulate verify {name}`") from err
    arrays = tuple(sorted(members))
    for a in require:
        if a not in arrays:
            hint = {FEATURES: f": run `python -m features encode --store {name}` first",
                    PATCHES: ": is the simulation finished?"}.get(a, "")
            raise StoreError(f"store {name!r} has no array {a!r}{hint}")
    attrs = dict(group.attrs)
    if ATTR_CASES not in attrs or not attrs[ATTR_CASES]:
        raise StoreError(f"store {name!r} has no attrs[{ATTR_CASES!r}] (host, dopant, energy, detector per case)")
    if not isinstance(attrs[ATTR_CASES], list) or not all(isinstance(c, dict) for c in attrs[ATTR_CASES]):
        raise StoreError(f"store {name!r}: attrs[{ATTR_CASES!r}] must be a list of mappings (host, dopant, ...)")
    rows_from = next((a for a in (LABEL, PATCHES, FEATURES, CASE) if a in arrays), None)
    if rows_from is None:
        raise StoreError(f"store {name!r} has none of the row arrays {LABEL!r}, {PATCHES!r}, {FEATURES!r}")
    n_rows = int(members[rows_from].shape[0])
    for a in (LABEL, CASE, ENVIRONMENT, PATCHES, FEATURES):
        if a == FEATURES and a not in require and rows_from != FEATURES:
            continue  # unusable features are the feature stage's to rewrite, not a reason to refuse the store
        if a in arrays and members[a].shape[0] != n_rows:
            raise StoreError(f"store {name!r}: {a!r} has {members[a].shape[0]} rows, {rows_from!r} has {n_rows}")
    for a, dtype in ((PATCHES, PATCH_DTYPE), (FEATURES, FEATURE_DTYPE), *ROW_ARRAYS.items()):
        if a == FEATURES and a not in require:
            continue
        if a in arrays and str(members[a].dtype) != dtype:
            raise StoreError(f"store {name!r}: {a!r} has dtype {members[a].dtype}, expected {dtype}: not written by "
                             f"this software's stages (or rewritten by hand)")
    rows_per_shard = attrs.get(ATTR_ROWS_PER_SHARD)
    if not isinstance(rows_per_shard, int) or rows_per_shard < 1:
        raise StoreError(f"store {name!r}: attrs[{ATTR_ROWS_PER_SHARD!r}] must be a positive integer, "
                         f"got {rows_per_shard!r}")
    patch_size = attrs.get(ATTR_PATCH_SIZE)
    if PATCHES in arrays:
        shape = members[PATCHES].shape
        if len(shape) != 3 or shape[1] != shape[2] or shape[1] % 2 == 0:
            raise StoreError(f"store {name!r}: {PATCHES!r} must be (N, P, P) with P odd, got {shape}")
        patch_size = int(shape[1])
    feature_names = None
    if FEATURES in arrays:
        names = members[FEATURES].attrs.get(ATTR_FEATURE_NAMES)
        shape = members[FEATURES].shape
        if names is None or len(shape) != 2 or len(names) != shape[1]:
            if FEATURES in require:
                raise StoreError(f"store {name!r}: features.attrs[{ATTR_FEATURE_NAMES!r}] must list "
                                 f"{shape[-1]} names, got {names!r}; re-encode it with "
                                 f"`python -m features encode --store {name}`")
        else:  # (None when unusable and not required: `has_features` is then False)
            feature_names = tuple(str(n) for n in names)
    cases = tuple(dict(c) for c in attrs[ATTR_CASES])
    detectors = attrs.get(ATTR_DETECTORS) or sorted({str(c.get("detector")) for c in cases})
    tasks = attrs.get(ATTR_TASKS)
    return StoreMeta(path=name, n_rows=n_rows, patch_size_px=None if patch_size is None else int(patch_size),
                     rows_per_shard=int(rows_per_shard), cases=cases,
                     environments=tuple(dict(e) for e in attrs.get(ATTR_ENVIRONMENTS, ())),
                     detectors=tuple(detectors), n_tasks=None if tasks is None else len(tasks),
                     config_hash=attrs.get(ATTR_CONFIG_HASH), config=attrs.get(ATTR_CONFIG),
                     feature_names=feature_names, arrays=arrays, attrs=attrs)


# ------------------------------------------------------------------------------------------ integrity
FEATURE_STAGE_ARRAYS = (FEATURES, FEATURES_DONE, FEATURES + "_digest")
"""Arrays the feature stage writes (and ``python -m features verify`` checks); the others are the simulation's."""


def chunk_compressors() -> tuple:
    """Codecs after ``bytes`` for every array of a new store: zstd, then a crc32c checksum of each stored chunk,
    so a flipped byte anywhere in a chunk fails to decode instead of reading as wrong numbers (zarr's shard
    index already carries its own crc32c)."""
    return (ZstdCodec(), Crc32cCodec())


DIGEST_SUFFIX = "_digest"
DIGEST_DTYPE = "uint64"
DIGESTED_ARRAYS = (PATCHES, FEATURES)
"""Arrays whose shards carry a ``shard_digest`` (label, case and environment are checked against the plan)."""


def digest_name(name: str) -> str:
    return name + DIGEST_SUFFIX


def shard_digest(start: int, data) -> int:
    """64-bit BLAKE2b of a shard's first row index, shape, dtype and bytes (never 0: 0 is "not written")."""
    data = np.ascontiguousarray(data)
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{int(start)}:{data.shape}:{data.dtype.str}".encode())
    h.update(memoryview(data).cast("B"))
    return int.from_bytes(h.digest(), "little") or 1


def has_array(group, name: str) -> bool:
    """Whether ``group`` holds an array ``name``, without reading the metadata of its other arrays (one of which
    may be damaged: ``verify`` names that one); a present but unreadable ``name`` counts as present."""
    try:
        group[name]
    except KeyError:
        return False
    except Exception:  # damaged metadata: the caller's checked open reports it
        return True
    return True


def create_digest_array(group, name: str, n_shards: int, overwrite: bool = False) -> None:
    """``<name>_digest`` (one uint64 per shard, one chunk per entry so each task writes its own)."""
    group.create_array(digest_name(name), shape=(n_shards,), dtype=DIGEST_DTYPE, chunks=(1,), fill_value=0,
                       overwrite=overwrite, compressors=chunk_compressors())


def write_shard_digest(group, name: str, start: int, data) -> None:
    """Record ``shard_digest`` of the whole shard ``data`` written at row ``start`` of ``group[name]`` (after its
    rows, before its done-marker); nothing in a store created before digests."""
    key = digest_name(name)
    if has_array(group, key):
        data = np.asarray(data, dtype=group[name].dtype)  # the bytes as they will be read back
        group[key][start // len(data)] = shard_digest(start, data)


def digest_problem(stored, start: int, data) -> str | None:
    """Why a shard's ``data`` read at row ``start`` does not match its stored digest (None when it does)."""
    stored = int(stored)
    if stored == 0:
        return "no digest recorded for this shard (written by an interrupted or older run)"
    if stored != shard_digest(start, data):
        return ("content does not match the digest recorded when it was written: rows moved from another shard "
                "(files swapped or copied over), or rewritten by hand")
    return None


def repair_command(store: str | Path, array: str) -> str:
    """The command that verifies and repairs ``array`` of ``store``."""
    if array in FEATURE_STAGE_ARRAYS:
        return f"python -m features verify --store {store} --repair"
    return f"python -m simulate verify {store} --repair"


def decode_reason(err: BaseException) -> str:
    """``Type: message`` of a decoding error, short (zarr's checksum message carries raw bytes)."""
    text = " ".join(str(err).split()).split(". Stored:")[0]
    return f"{type(err).__name__}: {text[:160]}"


def rows_per_stored_block(array) -> int:
    """Rows along axis 0 of one shard (one chunk for an array that is not sharded)."""
    blocks = getattr(array, "shards", None) or array.chunks
    return int(blocks[0])


def read_checked(array, start: int, stop: int, *, store: str | Path, name: str):
    """``array[start:stop]`` as a NumPy array, or ``CorruptDataError`` naming the store, the array, the first
    shard of the range that does not decode and its rows, and the repair command.

    A decoding failure (checksum mismatch, truncated or garbled shard or chunk) is corruption; an ``OSError``
    (permissions, a vanished file system) is not, and is raised as ``StoreError``.
    """
    try:
        return np.asarray(array[start:stop])
    except OSError as err:
        raise StoreError(f"store {str(store)!r}: cannot read array {name!r} rows {start}-{stop - 1}: {err}") from err
    except Exception as err:  # a decoding failure: find the shard that holds it
        step = rows_per_stored_block(array)
        shard, reason = start // step, decode_reason(err)
        for first in range(start - start % step, stop, step):
            try:
                array[max(first, start):min(first + step, stop)]
            except Exception as shard_err:
                shard, reason = first // step, decode_reason(shard_err)
                break
        lo, hi = shard * step, min(int(array.shape[0]), (shard + 1) * step)
        unit = "shard" if getattr(array, "shards", None) else "chunk"
        raise CorruptDataError(f"store {str(store)!r}: array {name!r} {unit} {shard} (rows {lo}-{hi - 1}) is "
                               f"damaged ({reason}); run `{repair_command(store, name)}`") from err
