"""In-plane geometry of a periodic cell."""
from __future__ import annotations

import numpy as np


def periodic_delta(a: np.ndarray, b: np.ndarray, extent: tuple[float, float]) -> np.ndarray:
    """Minimum-image in-plane vectors b - a, broadcast over leading axes: (..., 2)."""
    extent = np.asarray(extent, dtype=np.float64)
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    return d - extent * np.round(d / extent)
