"""The pixel array of an image file for ``python -m features symmetry IMAGE``: the formats ``inference`` reads
(.npy, .tif/.tiff, .dm3/.dm4, .emd), array only (the maps need no pixel size or context).

The stages are layered (``tests/test_architecture.py``): ``features`` may not import ``inference``, whose
``inference.io.read_image`` is the full reader (metadata, checks). This is its array part only; if the reader
moves down to ``contract``, this module goes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from contract.errors import InputError

FORMATS = (".npy", ".tif", ".tiff", ".dm3", ".dm4", ".emd")


def read_array(path) -> np.ndarray:
    """(H, W) float64 of an image file; ``InputError`` naming the file and the reason."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        elif suffix in (".tif", ".tiff"):
            import tifffile

            data = tifffile.imread(path)
        elif suffix in (".dm3", ".dm4", ".emd"):
            if suffix == ".emd":
                from rsciio.emd import file_reader
            else:
                from rsciio.digitalmicrograph import file_reader
            signals = [np.asarray(s["data"]) for s in file_reader(str(path))]
            data = next((s for s in signals if s.ndim == 2), None)
            if data is None:
                raise InputError(f"{path.name}: no 2-D image in the file")
        else:
            raise InputError(f"{path.name}: unsupported format {suffix!r}; use {', '.join(FORMATS)}")
    except InputError:
        raise
    except Exception as err:  # a truncated or foreign file
        raise InputError(f"{path.name}: cannot read it as {suffix}: {type(err).__name__}: {err}") from None
    data = np.asarray(data)
    if data.ndim == 3 and 1 in data.shape:
        data = data.reshape([s for s in data.shape if s != 1])
    if data.ndim != 2 or not np.issubdtype(data.dtype, np.number):
        raise InputError(f"{path.name}: expected a 2-D numeric image, got shape {data.shape} dtype {data.dtype}")
    data = data.astype(np.float64)
    if not np.isfinite(data).all():
        raise InputError(f"{path.name}: the image has NaN or infinite pixels")
    return data
