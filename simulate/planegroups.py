"""Plane-group image datasets: config, plan, sharded zarr store, Dask tasks, resume (orchestration and I/O).

``python -m simulate planegroups --config configs/dataset/planegroups-demo.yaml --out data/planegroups-demo.zarr
[--cluster local|slurm] [--cluster-config C] [--workers N] [--resume]``

Images are numbered 0..N-1 (N = ``images_per_group`` x number of groups); image i draws group
``groups[i mod n_groups]`` from its own generator ``SeedSequence([seed, config hash], spawn_key=(i,))``, so its
bytes depend on nothing but the config and i. One task renders ``images_per_task`` consecutive images and
writes them as one whole shard of every array, then its ``task_done`` marker; a rerun with ``--resume`` skips
finished tasks and ends byte-identical to an uninterrupted run. When every task is done the driver writes the
structure table: ``attrs["structures"]`` (one entry per distinct signature: plane group, count) and the
``structure`` column (index into it), the grouping key for splits by structure.

The seven symmetry maps are computed by the feature stage from the stored images, as for any micrograph
(``python -m features symmetry --store STORE``), into ``maps`` with their own resume markers.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import TextIO

import numpy as np

from contract import planegroups as pg
from contract.errors import ConfigError
from contract.store import StoreError, open_group
from contract.yamlsafe import ANY, bounded_message, brief, check_keys, load_with_bases

from .planegroups_render import draw_image, group_for_image

TEXT_BYTES, SIGNATURE, DESCRIPTION, ATTEMPTS = pg.TEXT_BYTES, pg.SIGNATURE, pg.DESCRIPTION, pg.ATTEMPTS

RANGES = {
    "structure": ("orbits", "species", "min_distance_px", "cell_size_px", "aspect_ratio", "oblique_angle_deg",
                  "near_special_aspect", "near_special_deg"),
    "rendering": ("peak_sigma_px", "moffat_beta", "species_brightness"),
    "noise": ("probe_blur_sigma_px", "peak_counts", "background_fraction", "background_gradient_fraction",
              "scan_jitter_px", "read_noise_counts"),
}
SCALARS = {
    "structure": ("max_atoms_per_cell", "near_special_fraction", "other_group_keep_fraction"),
    "symmetry": ("tight_tolerance_px", "loose_tolerance_px"),
    "rendering": ("width_spread", "peak_radius_sigmas", "min_brightness_ratio"),
}
PEAK_SHAPES = ("gaussian", "moffat")


# --------------------------------------------------------------------------------------------- config
PLANEGROUPS_SCHEMA = {
    **dict.fromkeys(("kind", "name", "seed", "groups", "images_per_group", "images_per_task", "image_size_px"), ANY),
    **{block: dict.fromkeys((*RANGES.get(block, ()), *SCALARS.get(block, ())), ANY)
       for block in ("structure", "symmetry", "rendering", "noise")},
}
PLANEGROUPS_SCHEMA["rendering"]["peak_shapes"] = ANY
PLANEGROUPS_LIMITS = {  # key: (limit, why)
    "image_size_px": (1024, "symmetry maps cost image^2 x kernels; the demo uses 112 px"),
    "images_per_task": (10_000, "one task renders and writes its shard in memory"),
    "total_images": (10_000_000, "196x the full config's 51 000 images"),
    "max_atoms_per_cell": (1000, "atoms of one conventional cell are placed and checked pairwise"),
}
"""Upper bounds that refuse a plane-group config too large for any machine before anything is created."""


def load_config(path: str | Path) -> dict:
    """Read, merge (``base: other.yaml``) and validate a plane-group dataset config; ``ConfigError`` names the
    field. Unknown keys are refused at every level, sizes are bounded (``PLANEGROUPS_LIMITS``)."""
    raw = load_with_bases(path, "config")
    for block in PLANEGROUPS_SCHEMA:
        if isinstance(PLANEGROUPS_SCHEMA[block], dict) and block in raw and not isinstance(raw[block], dict):
            raise ConfigError(f"{block}: must be a mapping, got {type(raw[block]).__name__} {brief(raw[block])}")
    check_keys(raw, PLANEGROUPS_SCHEMA)
    cfg = bounded_message(validate, raw)
    sizes = {"image_size_px": cfg["image_size_px"], "images_per_task": cfg["images_per_task"],
             "total_images": cfg["images_per_group"] * len(cfg["groups"]),
             "max_atoms_per_cell": cfg["structure"]["max_atoms_per_cell"]}
    for key, value in sizes.items():
        limit, why = PLANEGROUPS_LIMITS[key]
        if value > limit:
            field = "images_per_group" if key == "total_images" else ("structure." + key if key.startswith("max_")
                                                                       else key)
            what = f" images in all ({len(cfg['groups'])} groups)" if key == "total_images" else ""
            raise ConfigError(f"{field}: {brief(value)}{what} is over the limit {limit:,} ({why})")
    return cfg


def validate(cfg: dict) -> dict:
    cfg = copy.deepcopy(cfg)
    if cfg.get("kind") != pg.KIND:
        raise ConfigError(f"kind: must be {pg.KIND!r} for `python -m simulate planegroups`, got {cfg.get('kind')!r}")
    for key in ("name", "seed", "groups", "images_per_group", "images_per_task", "image_size_px",
                "structure", "symmetry", "rendering", "noise"):
        if key not in cfg:
            raise ConfigError(f"{key}: missing")
    if isinstance(cfg["seed"], bool) or not isinstance(cfg["seed"], int) or cfg["seed"] < 0:
        raise ConfigError(f"seed: must be a non-negative integer, got {cfg['seed']!r}")
    groups = cfg["groups"]
    if groups == "all":
        groups = list(pg.PLANE_GROUPS)
    if not isinstance(groups, list) or not groups:
        raise ConfigError("groups: must be `all` or a list of plane-group symbols")
    for i, g in enumerate(groups):
        if not isinstance(g, str) or g not in pg.PLANE_GROUP_IDS:
            raise ConfigError(f"groups[{i}]: unknown plane group {g!r}; the 17 are {', '.join(pg.PLANE_GROUPS)}")
    cfg["groups"] = groups
    for key in ("images_per_group", "images_per_task", "image_size_px"):
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{key}: must be a positive integer, got {v!r}")
    if cfg["image_size_px"] < 32:
        raise ConfigError(f"image_size_px: must be >= 32 (a few cells and a symmetry kernel), got {cfg['image_size_px']}")
    for block, keys in RANGES.items():
        for key in keys:
            _range(cfg, block, key)
    for block, keys in SCALARS.items():
        for key in keys:
            v = _get(cfg, block, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ConfigError(f"{block}.{key}: must be a number >= 0, got {v!r}")
    for frac in ("near_special_fraction", "other_group_keep_fraction"):
        if cfg["structure"][frac] > 1:
            raise ConfigError(f"structure.{frac}: must be in [0, 1], got {cfg['structure'][frac]}")
    lo, hi = cfg["structure"]["orbits"]
    if int(lo) != lo or int(hi) != hi or lo < 1:
        raise ConfigError(f"structure.orbits: must be integers >= 1, got {[lo, hi]}")
    lo, hi = cfg["structure"]["species"]
    if int(lo) != lo or int(hi) != hi or lo < 1 or hi > 3:
        raise ConfigError(f"structure.species: must be integers in [1, 3], got {[lo, hi]}")
    if cfg["symmetry"]["tight_tolerance_px"] >= cfg["symmetry"]["loose_tolerance_px"]:
        raise ConfigError("symmetry.tight_tolerance_px: must be smaller than symmetry.loose_tolerance_px")
    if cfg["structure"]["cell_size_px"][1] * 3 > cfg["image_size_px"]:
        raise ConfigError(f"structure.cell_size_px: the largest cell ({cfg['structure']['cell_size_px'][1]} px) must "
                          f"fit 3 times into image_size_px ({cfg['image_size_px']})")
    shapes = cfg["rendering"].get("peak_shapes")
    if not isinstance(shapes, list) or not shapes or any(s not in PEAK_SHAPES for s in shapes):
        raise ConfigError(f"rendering.peak_shapes: must be a non-empty list of {PEAK_SHAPES}, got {shapes!r}")
    if cfg["noise"]["peak_counts"][0] <= 0:
        raise ConfigError("noise.peak_counts: low must be > 0 (it is drawn log-uniformly)")
    return cfg


def _get(cfg, block, key):
    if not isinstance(cfg.get(block), dict) or key not in cfg[block]:
        raise ConfigError(f"{block}.{key}: missing")
    return cfg[block][key]


def _range(cfg, block, key):
    v = _get(cfg, block, key)
    ok = (isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                       for x in v) and 0 <= v[0] <= v[1])
    if not ok:
        raise ConfigError(f"{block}.{key}: must be [low, high] with 0 <= low <= high, got {v!r}")


def config_hash(cfg: dict) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------------------------- plan
def n_images(cfg: dict) -> int:
    return cfg["images_per_group"] * len(cfg["groups"])


def task_rows(cfg: dict) -> list[tuple[int, int]]:
    """(start, stop) image rows of each task (= one shard)."""
    n, per = n_images(cfg), cfg["images_per_task"]
    return [(s, min(n, s + per)) for s in range(0, n, per)]


def image_rng(cfg: dict, cfg_hash: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(cfg["seed"]), int(cfg_hash[:16], 16)],
                                                        spawn_key=(int(index),)))


def encode_text(text: str) -> np.ndarray:
    raw = text.encode("ascii")
    if len(raw) > TEXT_BYTES:
        raise ValueError(f"text longer than {TEXT_BYTES} bytes: {text!r}")
    out = np.zeros(TEXT_BYTES, np.uint8)
    out[:len(raw)] = np.frombuffer(raw, np.uint8)
    return out


def decode_text(rows: np.ndarray) -> list[str]:
    """ASCII text of (N, TEXT_BYTES) uint8 rows."""
    return [bytes(r).rstrip(b"\0").decode("ascii") for r in np.asarray(rows, np.uint8)]


# ---------------------------------------------------------------------------------------------- store
def create_store(path: Path, cfg: dict, cfg_hash: str, versions: dict) -> None:
    import zarr

    n, s, per = n_images(cfg), cfg["image_size_px"], cfg["images_per_task"]
    root = zarr.open_group(str(path), mode="w-", zarr_format=3)
    root.create_array(pg.IMAGES, shape=(n, s, s), dtype=pg.IMAGE_DTYPE, chunks=(1, s, s), shards=(per, s, s),
                      fill_value=np.nan)
    for name in (pg.LABEL, pg.DRAWN_GROUP, pg.ROTATION_DEG, pg.PEAK_COUNTS):
        root.create_array(name, shape=(n,), dtype=pg.ROW_ARRAYS[name], chunks=(per,), shards=(per,), fill_value=0)
    root.create_array(ATTEMPTS, shape=(n,), dtype="int32", chunks=(per,), shards=(per,), fill_value=0)
    root.create_array(pg.LATTICE_PX, shape=(n, 2, 2), dtype="float32", chunks=(per, 2, 2), shards=(per, 2, 2),
                      fill_value=np.nan)
    for name in (SIGNATURE, DESCRIPTION):
        root.create_array(name, shape=(n, TEXT_BYTES), dtype="uint8", chunks=(per, TEXT_BYTES),
                          shards=(per, TEXT_BYTES), fill_value=0)
    root.create_array(pg.TASK_DONE, shape=(len(task_rows(cfg)),), dtype="uint8", chunks=(1,), fill_value=0)
    root.attrs.update({
        pg.ATTR_KIND: pg.KIND, "dataset": cfg["name"], "config": cfg, "config_hash": cfg_hash, "versions": versions,
        pg.ATTR_IMAGE_SIZE: s, pg.ATTR_IMAGES_PER_TASK: per, "rows_per_shard": per, "plane_groups": list(pg.PLANE_GROUPS),
        "units": {pg.IMAGES: "detector counts", pg.LATTICE_PX: "px, rows = primitive vectors (x along columns, y down)",
                  pg.ROTATION_DEG: "degrees", pg.PEAK_COUNTS: "mean counts at the brightest atom peak"},
        "texts": {SIGNATURE: "structure signature of the rendered pattern (computed group, orbits as "
                             "size-per-primitive-cell(site symmetry)species, species relabelled canonically)",
                  DESCRIPTION: "the drawn structure: group, Wyckoff positions (multiplicity + letter), species"},
    })


def render_rows(cfg: dict, cfg_hash: str, start: int, stop: int) -> dict[str, np.ndarray]:
    """Images [start, stop) and their per-image arrays. Pure and deterministic."""
    out = {k: [] for k in (pg.IMAGES, pg.LABEL, pg.DRAWN_GROUP, pg.ROTATION_DEG, pg.PEAK_COUNTS, ATTEMPTS,
                           pg.LATTICE_PX, SIGNATURE, DESCRIPTION)}
    groups = tuple(cfg["groups"])
    for i in range(start, stop):
        drawn = group_for_image(i, groups)
        r = draw_image(image_rng(cfg, cfg_hash, i), drawn, cfg)
        out[pg.IMAGES].append(r.image)
        out[pg.LABEL].append(pg.plane_group_id(r.symmetry.plane_group))
        out[pg.DRAWN_GROUP].append(pg.plane_group_id(drawn))
        out[pg.ROTATION_DEG].append(r.rotation_deg)
        out[pg.PEAK_COUNTS].append(r.peak_counts)
        out[ATTEMPTS].append(r.attempts)
        out[pg.LATTICE_PX].append(r.lattice_px)
        out[SIGNATURE].append(encode_text(r.symmetry.signature()))
        out[DESCRIPTION].append(encode_text(r.structure.description()))
    dtypes = {pg.IMAGES: pg.IMAGE_DTYPE, ATTEMPTS: "int32", pg.LATTICE_PX: "float32", SIGNATURE: "uint8",
              DESCRIPTION: "uint8", **pg.ROW_ARRAYS}
    return {k: np.asarray(v, dtype=dtypes[k]) for k, v in out.items()}


def run_task(task: int, cfg: dict, cfg_hash: str, store_path: str) -> dict:
    """Render task ``task``'s images, write them as one whole shard per array, then the done marker."""
    started = time.perf_counter()
    start, stop = task_rows(cfg)[task]
    rows = render_rows(cfg, cfg_hash, start, stop)
    root = open_group(store_path, mode="r+")
    for name, data in rows.items():
        root[name][start:stop] = data
    root[pg.TASK_DONE][task] = 1  # after the rows: a marker never points at unwritten data
    return {"task": task, "rows": stop - start, "seconds": time.perf_counter() - started}


def finalise(store_path: str | Path) -> dict:
    """Structure table from the signatures (driver only, after every task): ``attrs["structures"]`` and the
    ``structure`` column. Idempotent."""
    root = open_group(store_path, mode="r+")
    sig = decode_text(root[SIGNATURE][:])
    label = np.asarray(root[pg.LABEL][:])
    names = sorted(set(sig))
    index = {s: i for i, s in enumerate(names)}
    column = np.array([index[s] for s in sig], dtype=np.int32)
    counts = np.bincount(column, minlength=len(names))
    table = [{"signature": s, "plane_group": s.split(":", 1)[0], "images": int(c)} for s, c in zip(names, counts)]
    n, per = len(sig), int(root.attrs[pg.ATTR_IMAGES_PER_TASK])
    if pg.STRUCTURE not in root or root[pg.STRUCTURE].shape != (n,):
        root.create_array(pg.STRUCTURE, shape=(n,), dtype="int32", chunks=(per,), shards=(per,), fill_value=-1,
                          overwrite=True)
    root[pg.STRUCTURE][:] = column
    root.attrs[pg.ATTR_STRUCTURES] = table
    per_group = {g: int((label == i).sum()) for i, g in enumerate(pg.PLANE_GROUPS)}
    root.attrs["images_per_label"] = per_group
    return {"structures": len(names), "images_per_label": per_group}


def versions() -> dict:
    from .run import versions as stage_versions

    out = stage_versions()
    try:
        import spglib

        out["spglib"] = spglib.__version__
    except ImportError:  # pragma: no cover - a dependency
        out["spglib"] = "not installed"
    return out


def simulate_planegroups(config_path: str | Path, out: str | Path, *, cluster: str = "local",
                         cluster_config: str | None = None, n_workers: int | None = None, resume: bool = False,
                         stream: TextIO | None = None, client=None) -> dict:
    """Render (or finish) the plane-group dataset of ``config_path`` into the store ``out``; returns a summary."""
    from cluster import open_client, track

    stream = sys.stderr if stream is None else stream
    cfg = load_config(config_path)  # ConfigError before anything is created or submitted
    h = config_hash(cfg)
    out = Path(out)
    tasks = task_rows(cfg)
    if out.exists():
        if not resume:
            raise StoreError(f"{out} exists: pass --resume to finish it, or choose another --out")
        root = open_group(out)
        if root.attrs.get(pg.ATTR_KIND) != pg.KIND:
            raise StoreError(f"{out} is not a plane-group store (attrs['kind'] != {pg.KIND!r}); choose another --out")
        if root.attrs.get("config_hash") != h:
            raise StoreError(f"{out} was written from a different config (hash {str(root.attrs.get('config_hash'))[:12]}"
                             f" != {h[:12]}); choose another --out")
        done = np.asarray(root[pg.TASK_DONE][:]).astype(bool)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        create_store(out, cfg, h, versions())
        done = np.zeros(len(tasks), bool)
    todo = [t for t in range(len(tasks)) if not done[t]]
    print(f"simulate planegroups: {cfg['name']}: {n_images(cfg)} images of {len(cfg['groups'])} groups, "
          f"{len(tasks)} tasks -> {out}", file=stream)
    started = time.perf_counter()
    if todo:
        if len(todo) < len(tasks):
            print(f"simulate planegroups: resuming: {len(tasks) - len(todo)} of {len(tasks)} tasks already done",
                  file=stream)
        workers = n_workers if n_workers is not None else (min(len(todo), _local_workers()) if cluster == "local" else None)
        with contextlib.nullcontext(client) if client is not None else \
                open_client(cluster, n_workers=workers, config_path=cluster_config) as active:
            futures = [active.submit(run_task, t, cfg, h, str(out.resolve()), key=f"planegroups-{t:05d}",
                                     pure=False, retries=2) for t in todo]
            for _ in track(futures, label="planegroups", unit="task", stream=stream):
                pass
    else:
        print(f"simulate planegroups: all {len(tasks)} tasks already done", file=stream)
    summary = finalise(out)
    elapsed = time.perf_counter() - started
    print(f"simulate planegroups: done: {len(todo)} tasks in {elapsed:.1f} s; {summary['structures']} distinct "
          f"structure signatures", file=stream)
    return {"tasks_run": len(todo), "tasks_total": len(tasks), "seconds": elapsed, **summary}


def _local_workers() -> int:
    from .run import _default_local_workers

    return _default_local_workers()
