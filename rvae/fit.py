"""``fit-image`` and ``fit-4dstem``: from an ADF frame or a 4-D array to per-item angles and latents, maps and
figures. Orchestration and I/O only; the numerical parts are in ``columns``, ``model``, ``com``, ``maps``.

Both fit an rVAE to the data's own items (unsupervised, as in seeds 002 and 004) through the same LightningCLI
as ``python -m rvae fit`` (logs, ``last.ckpt``, resume), then encode every item with the posterior means.
"""
from __future__ import annotations

import csv
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import zarr

from contract import fourdstem as schema
from contract.errors import InputError
from contract.fourdstem import read_scan_meta
from contract.images import load_image
from contract.jsonio import json_text
from contract.yamlsafe import read_yaml
from kernels import com
from kernels.optics import wavelength_angstrom

from .cli import newest_checkpoint, run_cli
from .columns import FINDERS, cut_subimages, find_columns
from .data import bright_field_window, dataset_statistics, item_size, open_items, shard_rows
from .encode import encode_store, load_module
from .figures import atom_overlays, latent_traversal, scan_maps
from .maps import anomaly_score, circular_channels
from .store import write_items

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ADF_CONFIG = REPO / "configs" / "rvae" / "adf.yaml"
DEFAULT_4D_CONFIG = REPO / "configs" / "rvae" / "fourdstem.yaml"
WINDOWS = ("bright_field", "whole")
# out to 1.5 x the disc radius: the disc's edge, where a deflection moves the most intensity, and the inner dark
# field it spills into, without the outer Bragg structure
BRIGHT_FIELD_RADIUS_FACTOR = 1.5


def _log(msg: str, stream=None) -> None:
    print(f"rvae: {msg}", file=stream or sys.stderr, flush=True)


def read_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--config {path} does not exist (see configs/rvae/)")
    cfg = read_yaml(path, "--config") or {}  # no aliases, duplicate keys or NaN (docs/config-safety.md)
    if not isinstance(cfg, dict) or "model" not in cfg:
        raise InputError(f"--config {path}: not an rVAE config (no model: section)")
    return cfg


def make_out(out: str | Path) -> Path:
    """The output directory, created; ``InputError`` when it cannot be (read-only, no permission, a file)."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"--out {str(out)!r}: cannot create the output directory: {err.strerror or err}") from err
    return out


def check_fingerprint(out: Path, **inputs) -> None:
    """Resume only what was started from the same inputs: ``out/inputs.json`` records them; an existing run
    directory made from other inputs is an ``InputError`` (its checkpoint would be resumed on the wrong data)."""
    record = out / "inputs.json"
    current = json.loads(json.dumps(inputs, default=str))
    if (out / "run").exists() and record.is_file():
        previous = json.loads(record.read_text())
        if previous != current:
            changed = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
            raise InputError(f"{out} holds a fit of other inputs ({', '.join(changed)} differ): choose another "
                             "--out, or delete it to start again")
    record.write_text(json_text(current, indent=2))


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def fit_items(config: str | Path, store: str | Path, array: str, run_dir: str | Path, image_size: int,
              overrides: list[str] | tuple = ()) -> Path:
    """Fit (or resume fitting) an rVAE to ``store``/``array`` through the LightningCLI; returns ``last.ckpt``."""
    run_cli(["fit", "--config", str(config), "--data.store", str(store), "--data.array", array,
             "--run_dir", str(run_dir), "--model.image_size", str(image_size), *overrides])
    ckpt = Path(run_dir) / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        found = newest_checkpoint(run_dir)
        if found is None:
            raise RuntimeError(f"training wrote no checkpoint under {run_dir}")
        ckpt = Path(found)
    return ckpt


# ------------------------------------------------------------------------------------------------ ADF
def fit_image(image_path: str | Path, out: str | Path, *, window_angstrom: float,
              pixel_size_angstrom: float | None = None, config: str | Path = DEFAULT_ADF_CONFIG,
              size_px: int | None = None, min_distance_angstrom: float = 1.2, smooth_sigma_angstrom: float = 0.2,
              overrides: list[str] | tuple = (), rows_per_shard: int = 2048, finder: str = "new",
              stream=None) -> dict:
    """Columns (``rvae.columns.find_columns``, its ``finder``) -> sub-images -> rVAE -> ``atoms.csv``,
    ``encoded.zarr``, figures, ``summary.json`` in ``out``. Returns the summary (with the per-atom outputs under ``atoms``, not written to the JSON)."""
    started = time.perf_counter()
    cfg = read_config(config)
    image, meta = load_image(image_path)
    px = pixel_size_angstrom if pixel_size_angstrom is not None else meta.get("pixel_size_angstrom")
    if px is None:
        raise InputError(f"{Path(image_path).name}: no pixel size in the file's metadata: pass "
                         "--pixel-size-angstrom")
    px = float(px)
    if not (np.isfinite(px) and px > 0):
        raise InputError(f"--pixel-size-angstrom must be > 0, got {px}")
    if not window_angstrom > 0 or window_angstrom / px > min(image.shape):  # inf, or wider than the image
        raise InputError(f"--window-angstrom must be > 0 and fit the image ({min(image.shape) * px:.4g} A), got "
                         f"{window_angstrom}")
    if window_angstrom / px < 5:
        raise InputError(f"--window-angstrom {window_angstrom} is only {window_angstrom / px:.1f} pixels at "
                         f"{px} A/px: use a window of several atomic spacings")
    size = int(size_px or cfg["model"].get("image_size", 25))
    if size < 5 or size % 2 == 0:
        raise InputError(f"sub-image size must be odd and >= 5 pixels, got {size}")
    out = make_out(out)
    if finder not in FINDERS:
        raise InputError(f"--finder must be one of {', '.join(FINDERS)}, got {finder!r}")
    positions = find_columns(image, px, min_distance_angstrom, smooth_sigma_angstrom, finder)
    _log(f"{len(positions)} columns in {Path(image_path).name} ({image.shape[1]} x {image.shape[0]} px, "
         f"{px:.4g} A/px)", stream)
    items, border = cut_subimages(image, positions, window_angstrom, px, size)
    if (~border).sum() < 16:
        raise InputError(f"only {(~border).sum()} columns lie a half window ({window_angstrom / 2} A) inside the "
                         "image: too few to fit (smaller window, larger image, or check the pixel size)")
    check_fingerprint(out, image=str(Path(image_path).resolve()), items=_digest(items, positions),
                      window_angstrom=window_angstrom, pixel_size_angstrom=px, size_px=size,
                      config=Path(config).read_text(), overrides=list(overrides),
                      **({"finder": finder} if finder != "new" else {}))
    store = out / "items.zarr"
    write_items(store, items[~border], rows_per_shard, {"position_px": positions[~border]},
                {"image": str(image_path), "window_angstrom": window_angstrom, "pixel_size_angstrom": px,
                 "size_px": size})
    if border.any():
        write_items(out / "border_items.zarr", items[border], rows_per_shard, {"position_px": positions[border]})
    _log(f"fitting the rVAE to {(~border).sum()} sub-images of {size} x {size} px "
         f"({window_angstrom} A; {int(border.sum())} border columns are encoded, not trained on)", stream)
    ckpt = fit_items(config, store, "patches", out / "run", size, overrides)
    module, transform, _ = load_module(ckpt)
    enc = encode_store(module, str(store), "patches", transform, out / "encoded.zarr", group_path="interior")
    if border.any():
        enc_b = encode_store(module, str(out / "border_items.zarr"), "patches", transform, out / "encoded.zarr",
                             group_path="border")
        enc = {k: np.concatenate([enc[k], enc_b[k]]) for k in enc}
    pos = np.concatenate([positions[~border], positions[border]])
    flag = np.r_[np.zeros((~border).sum(), bool), np.ones(border.sum(), bool)]
    half_px = window_angstrom / 2 / px
    atoms = {"x": pos[:, 1], "y": pos[:, 0], "border": flag.astype(int), "angle": enc["angle"],
             "angle_std": enc["angle_std"]}
    k = enc["z"].shape[1]
    for j in range(k):
        atoms[f"z{j + 1}"] = enc["z"][:, j]
    for j in range(k):
        atoms[f"z{j + 1}_std"] = enc["z_std"][:, j]
    atoms["shift_x_px"], atoms["shift_y_px"] = enc["shift"][:, 0] * half_px, enc["shift"][:, 1] * half_px
    atoms["reconstruction_error"] = enc["reconstruction_error"]
    write_atoms_csv(out / "atoms.csv", atoms)
    maps = {"angle": enc["angle"] * module.model.period, **{f"z{j + 1}": enc["z"][:, j] for j in range(k)}}
    atom_overlays(image, pos, maps, out / "maps.png",
                  title=f"rVAE angle (x period {module.model.period}) and latents per column")
    latent_traversal(module, enc["z"][~flag], out / "latent_traversal.png")
    summary = {"image": str(image_path), "pixel_size_angstrom": px, "window_angstrom": window_angstrom,
               "size_px": size, "n_columns": int(len(pos)), "n_border": int(flag.sum()), "checkpoint": str(ckpt),
               "period": module.model.period, "n_latent": k, "seconds": time.perf_counter() - started,
               "files": ["atoms.csv", "maps.png", "latent_traversal.png", "encoded.zarr", "items.zarr", "run/"]}
    (out / "summary.json").write_text(json_text(summary, indent=2))
    _log(f"wrote {out}/atoms.csv, maps.png, latent_traversal.png, summary.json "
         f"({summary['seconds']:.0f} s)", stream)
    return {**summary, "atoms": atoms}


def write_atoms_csv(path: Path, atoms: dict[str, np.ndarray]) -> None:
    names = list(atoms)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        for row in zip(*(np.asarray(atoms[n]) for n in names)):
            w.writerow([f"{v:.6g}" if isinstance(v, (float, np.floating)) else int(v) for v in row])


# ------------------------------------------------------------------------------------------------ 4D-STEM
def open_4d_source(data: str | Path, array: str | None):
    """What ``fit-4dstem DATA`` points at: ("store", scan meta, array path) for a 4D-STEM store written by
    ``simulate fourdstem``, or ("array", 4-D array-like in abTEM order (scan x, scan y, kx, ky), None)."""
    data = Path(data)
    if not data.exists():
        raise InputError(f"{data} does not exist")
    if data.suffix == ".npy":
        arr = np.load(data, mmap_mode="r")
        return "array", _check_4d(arr, data.name), None
    try:
        node = zarr.open(str(data), mode="r")
    except Exception as err:
        raise InputError(f"{data}: neither .npy nor a readable zarr array or store ({type(err).__name__})") from None
    if isinstance(node, zarr.Array):
        return "array", _check_4d(node, data.name), None
    if node.attrs.get(schema.ATTR_KIND) == schema.KIND:
        if not array:
            scans = list(node.attrs.get(schema.ATTR_SCANS, []))
            raise InputError(f"{data} is a 4D-STEM store: pass --array SCAN/patterns/dose_D or SCAN/patterns/clean "
                             f"(scans: {', '.join(scans)})")
        scan = array.split("/")[0]
        return "store", read_scan_meta(data, scan), array
    if not array:
        raise InputError(f"{data} is a zarr group: pass --array PATH of a 4-D array (scan x, scan y, kx, ky)")
    try:
        return "array", _check_4d(node[array], f"{data.name}/{array}"), None
    except KeyError:
        raise InputError(f"{data} has no array {array!r}") from None


def _check_4d(arr, name: str):
    if len(arr.shape) != 4 or arr.shape[2] < 5 or arr.shape[3] != arr.shape[2]:
        raise InputError(f"{name}: expected a 4-D array (scan x, scan y, kx, ky) with square patterns, got shape "
                         f"{tuple(arr.shape)}")
    return arr


def _items_from_4d(arr, store: Path, lines_per_shard: int = 8) -> tuple[int, int]:
    """Write (sx, sy, kx, ky) as items (sy·sx, ky, kx), rows (scan y, scan x) row-major, a few scan lines per
    shard, reading one block of lines at a time. Returns the scan shape (sy, sx)."""
    sx, sy, k, _ = (int(s) for s in arr.shape)
    per = lines_per_shard * sx
    root = zarr.open_group(str(store), mode="w", zarr_format=3)
    out = root.create_array("patterns", shape=(sy * sx, k, k), dtype="float32", chunks=(sx, k, k), shards=(per, k, k))
    for y0 in range(0, sy, lines_per_shard):
        block = np.asarray(arr[:, y0:y0 + lines_per_shard], dtype=np.float32)  # (sx, lines, kx, ky)
        out[y0 * sx:(y0 + block.shape[1]) * sx] = block.transpose(1, 0, 3, 2).reshape(-1, k, k)
    root.attrs.update({"scan_shape": [sy, sx], "rows_per_shard": per, "pattern_axes": "[ky, kx]"})
    return sy, sx


def com_maps_streaming(store: str, array: str, scan_shape: tuple[int, int], angular_sampling_mrad: float,
                       scan_sampling_angstrom: tuple[float, float], wavelength_angstrom: float | None,
                       periodic: bool) -> dict[str, np.ndarray]:
    """The COM family (``kernels.com``) of a pattern array, reading one shard at a time."""
    arr = open_items(store, array)
    per = shard_rows(arr)
    cx, cy = np.empty(arr.shape[0]), np.empty(arr.shape[0])
    for start in range(0, arr.shape[0], per):
        block = np.asarray(arr[start:start + per], dtype=np.float64)
        bx, by = com.center_of_mass(block[None], angular_sampling_mrad)
        cx[start:start + len(block)], cy[start:start + len(block)] = bx[0], by[0]
    cx, cy = cx.reshape(scan_shape), cy.reshape(scan_shape)
    out = {"com_x": cx, "com_y": cy, "com_magnitude": np.hypot(cx, cy), "com_direction": np.arctan2(cy, cx),
           "com_divergence": com.divergence(cx, cy, scan_sampling_angstrom, periodic)}
    if wavelength_angstrom is not None:
        f = 1e-3 / wavelength_angstrom
        out["icom"] = com.integrated_com(cx * f, cy * f, scan_sampling_angstrom)
    else:  # angles in detector pixels: integrate as given
        out["icom"] = com.integrated_com(cx, cy, scan_sampling_angstrom)
    return out


def fit_4dstem(data: str | Path, out: str | Path, *, array: str | None = None,
               config: str | Path = DEFAULT_4D_CONFIG, fold_period_px: tuple[int, int] | None = None,
               angular_sampling_mrad: float | None = None, scan_sampling_angstrom: tuple[float, float] | None = None,
               window: str = "bright_field", bright_field_radius_factor: float = BRIGHT_FIELD_RADIUS_FACTOR,
               overrides: list[str] | tuple = (), stream=None) -> dict:
    """4-D data -> rVAE -> ``latents.npy`` (scan x, scan y, k), ``angle.npy`` and ``angle_std.npy`` (scan x,
    scan y), ``reconstruction_error.npy``, ``anomaly.npy`` (with a fold period), ``com.npz`` (the COM family,
    same axes), ``maps.png``, ``summary.json``. Returns the summary with the (scan y, scan x) maps under
    ``maps``.

    ``window``: "bright_field" (the rVAE sees the bright-field disc and its inner dark field out to
    ``bright_field_radius_factor`` x the disc radius, centred on the undeflected beam as the scan's mean pattern
    shows it: where the probe's position relative to the columns redistributes the intensity) or "whole" (the
    whole pattern). The COM family is always of the whole pattern."""
    if window not in WINDOWS:
        raise InputError(f"window must be one of {WINDOWS}, got {window!r}")
    if not bright_field_radius_factor > 0:
        raise InputError(f"--bright-field-radius-factor must be > 0, got {bright_field_radius_factor}")
    started = time.perf_counter()
    read_config(config)
    out = make_out(out)
    kind, source, array_path = open_4d_source(data, array)
    check_fingerprint(out, data=str(Path(data).resolve()), array=array, shape=list(source.shape)
                      if kind == "array" else list(source.scan_shape), config=Path(config).read_text(),
                      overrides=list(overrides), fold_period_px=fold_period_px, window=window,
                      bright_field_radius_factor=bright_field_radius_factor)
    wavelength, defects_px = None, None
    if kind == "store":
        meta = source
        store, items_array = str(data), array_path
        scan_shape = meta.scan_shape
        fold = tuple(fold_period_px) if fold_period_px else meta.fold_period_px
        dtheta = angular_sampling_mrad or meta.angular_sampling_mrad
        dxy = tuple(scan_sampling_angstrom) if scan_sampling_angstrom else meta.scan_sampling_angstrom
        wavelength = wavelength_angstrom(meta.beam_energy_kev)
        periodic = True
        defects_px = np.array([[d["y_angstrom"] / dxy[1], d["x_angstrom"] / dxy[0]] for d in meta.defects]) \
            if meta.defects else None
        open_items(store, items_array)
    else:
        store, items_array = str(out / "items.zarr"), "patterns"
        _log(f"reading {Path(data).name} {tuple(source.shape)} (scan x, scan y, kx, ky)", stream)
        scan_shape = _items_from_4d(source, Path(store))
        fold = tuple(fold_period_px) if fold_period_px else None
        dtheta = angular_sampling_mrad or 1.0
        dxy = tuple(scan_sampling_angstrom) if scan_sampling_angstrom else (1.0, 1.0)
        periodic = fold is not None
    items = open_items(store, items_array)
    k_raw = int(items.shape[1])
    n_items = scan_shape[0] * scan_shape[1]
    crop = None
    if window == "bright_field":
        mean_pattern = np.asarray(dataset_statistics(items, sqrt=False)["pixel_mean"]).reshape(item_size(k_raw),
                                                                                              item_size(k_raw))
        crop = bright_field_window(mean_pattern, bright_field_radius_factor)
        overrides = ["--data.crop", f"[{crop[0]},{crop[1]},{crop[2]}]", *overrides]
        _log(f"bright-field window: {crop[2]} x {crop[2]} px about pixel ({crop[0] + crop[2] // 2}, "
             f"{crop[1] + crop[2] // 2}) of the mean pattern", stream)
    size = crop[2] if crop else item_size(k_raw)
    _log(f"fitting the rVAE to {n_items} patterns of {size} x {size} px "
         f"(scan {scan_shape[1]} x {scan_shape[0]})", stream)
    ckpt = fit_items(config, store, items_array, out / "run", size, overrides)
    module, transform, _ = load_module(ckpt)
    enc = encode_store(module, store, items_array, transform, out / "encoded.zarr")
    sy, sx = scan_shape
    k = enc["z"].shape[1]
    z = enc["z"].reshape(sy, sx, k)
    angle = enc["angle"].reshape(sy, sx)
    angle_std = enc["angle_std"].reshape(sy, sx)
    maps = {"angle": angle * module.model.period, **{f"z{j + 1}": z[..., j] for j in range(k)},
            "reconstruction_error": enc["reconstruction_error"].reshape(sy, sx)}
    np.save(out / "latents.npy", z.transpose(1, 0, 2))
    np.save(out / "angle.npy", angle.T)
    np.save(out / "angle_std.npy", angle_std.T)
    np.save(out / "reconstruction_error.npy", maps["reconstruction_error"].T)
    if fold is not None:
        channels = np.concatenate([z, circular_channels(angle, module.model.period, angle_std)], axis=-1)
        maps["anomaly"] = anomaly_score(channels, fold)
        np.save(out / "anomaly.npy", maps["anomaly"].T)
    else:
        _log("no --fold-period-px: no periodic-residual anomaly map", stream)
    com = com_maps_streaming(store, items_array, scan_shape, dtheta, dxy, wavelength, periodic)
    np.savez(out / "com.npz", **{name: m.T for name, m in com.items()})
    scan_maps({**maps, "com_magnitude": com["com_magnitude"], "icom": com["icom"]}, out / "maps.png",
              title=f"{Path(data).name} {array or ''}: rVAE maps and COM (scan y down, x across)",
              markers=defects_px)
    latent_traversal(module, enc["z"], out / "latent_traversal.png")
    summary = {"data": str(data), "array": array, "scan_shape_yx": [sy, sx], "pattern_size_px": k_raw,
               "item_size_px": size, "window": window, "crop_row_col_size": list(crop) if crop else None,
               "fold_period_px": list(fold) if fold else None,
               "angular_sampling_mrad": dtheta, "checkpoint": str(ckpt), "period": module.model.period,
               "n_latent": k, "seconds": time.perf_counter() - started,
               "axes": "npy maps are (scan x, scan y[, k]) as abTEM orders scans"}
    (out / "summary.json").write_text(json_text(summary, indent=2))
    _log(f"wrote {out}/latents.npy, angle.npy, com.npz, maps.png, summary.json ({summary['seconds']:.0f} s)", stream)
    return {**summary, "maps": {**maps, "angle_std": angle_std}, "com": com, "encoded": enc}
