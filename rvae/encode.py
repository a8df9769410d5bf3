"""Encoding items with a fitted rVAE: posterior means and uncertainties per item, written to zarr shard by shard.

Per item: ``angle`` φ [rad] in (-π/n, π/n] and ``angle_std`` (circular standard deviation), ``z`` (k) and
``z_std``, ``shift`` (2, normalised units: 1 = half the item width; zeros without translation) and
``shift_std``, and ``reconstruction_error``: the mean squared difference between the item and its
reconstruction from the posterior means, in normalised intensity units (an anomaly score per item).
"""
from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import torch
import zarr

from contract.errors import InputError
from training.checkpoint import check_weights, torch_load

from .data import ItemTransform, make_transform, open_items, shard_rows
from .model import encode_batch  # noqa: F401  (defined in .model; rvae.encode.encode_batch kept)
from .module import RVAEModule

OUTPUT_ARRAYS = {"angle": (), "angle_std": (), "z": ("k",), "z_std": ("k",), "shift": (2,), "shift_std": (2,),
                 "reconstruction_error": ()}


def _list(v):
    return list(v) if isinstance(v, tuple) else v


def load_module(checkpoint: str | Path, device: str = "cpu"):
    """(RVAEModule in eval mode, the data transform it was fitted with, data-module hyperparameters) from a
    Lightning checkpoint, loaded with ``weights_only=True``. ``InputError`` when it is not an rVAE checkpoint."""
    path = Path(checkpoint)
    ckpt = torch_load(path, device, use="use a last.ckpt written by `python -m rvae fit`")
    hp = (ckpt.get("hyper_parameters") or {}) if isinstance(ckpt, dict) else {}
    if "n_latent" not in hp or "period" not in hp or not isinstance(ckpt.get("state_dict"), dict):
        raise InputError(f"{path} is not an rVAE checkpoint (no n_latent/period hyperparameters)")
    check_weights(ckpt, path)
    accepted = set(inspect.signature(RVAEModule.__init__).parameters) - {"self"}
    try:
        module = RVAEModule(**{k: v for k, v in hp.items() if k in accepted})  # LightningCLI adds _instantiator
        module.load_state_dict(ckpt["state_dict"])
    except (ValueError, TypeError, RuntimeError) as err:
        raise InputError(f"checkpoint {path.name}: its weights or hyperparameters do not fit an rVAE "
                         f"({' '.join(str(err).split())[:160]})") from None
    module.on_load_checkpoint(ckpt)  # the decoder's coarse-to-fine stage at that step
    module.eval().to(device)
    dm_hp = ckpt.get("datamodule_hyper_parameters", {}) or {}
    state = ckpt.get("ZarrItemsDataModule") or {}
    if "offset" not in state:
        raise InputError(f"{path} holds no data normalisation (offset, scale): was it written by rvae fit?")
    transform = make_transform(dm_hp.get("sqrt", False), dm_hp.get("normalisation", "standard"), state["offset"],
                               state["scale"], dm_hp.get("crop"))
    return module, transform, dm_hp


def encode_store(module, store: str, array: str, transform: ItemTransform, out: str | Path,
                 batch_size: int = 512, device: str = "cpu", attrs: dict | None = None,
                 group_path: str | None = None) -> dict[str, np.ndarray]:
    """Encode every item of ``store``/``array`` and write the outputs to the zarr store ``out`` (in its group
    ``group_path`` when given; arrays along N chunked like the input's shards, written one whole shard at a
    time). Returns the outputs as arrays as well (small: a few floats per item)."""
    model, log_sigma, likelihood = module.model, module.log_sigma, module.hparams.likelihood
    arr = open_items(store, array)
    n, per_shard, k = int(arr.shape[0]), shard_rows(arr), model.n_latent
    if group_path:
        group = zarr.open_group(str(out), mode="a", zarr_format=3).require_group(group_path)
        for name in list(group.array_keys()):
            del group[name]
    else:
        group = zarr.open_group(str(out), mode="w", zarr_format=3)
    shapes = {name: tuple(k if s == "k" else s for s in trailing) for name, trailing in OUTPUT_ARRAYS.items()}
    for name, trailing in shapes.items():
        group.create_array(name, shape=(n, *trailing), dtype="float32", chunks=(per_shard, *trailing),
                           fill_value=np.nan)
    group.attrs.update({"store": str(store), "array": str(array), "period": model.period,
                        "transform": {"sqrt": transform.sqrt, "normalisation": transform.normalisation,
                                      "offset": _list(transform.offset), "scale": _list(transform.scale)},
                        "units": {"angle": "rad, in (-pi/period, pi/period]", "shift": "half item widths",
                                  "reconstruction_error": "normalised intensity squared"}, **(attrs or {})})
    result = {name: np.full((n, *trailing), np.nan, np.float32) for name, trailing in shapes.items()}
    model.eval()
    for start in range(0, n, per_shard):
        x = torch.from_numpy(transform(arr[start:start + per_shard])).to(device)
        parts = [encode_batch(model, x[b:b + batch_size], log_sigma, likelihood) for b in range(0, len(x), batch_size)]
        for name in shapes:
            block = torch.cat([p[name] for p in parts]).cpu().numpy().astype(np.float32)
            group[name][start:start + len(block)] = block
            result[name][start:start + len(block)] = block
    return result
