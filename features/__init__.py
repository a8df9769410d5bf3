"""Feature stage: Zernike contrast moments, site symmetry and the context vector -> 31 float32 per patch.

Modules: ``zernike`` (the NumPy/CuPy kernel and its convention), ``normalise`` (per-patch standardisation),
``site_symmetry``, ``context`` (23-value context vector, the 31 column names), ``encode`` (store -> features
with Dask; ``python -m features``), ``synthetic`` (toy MX2 patches for tests and benchmarks).
"""
from .context import context_vector, feature_names
from .normalise import standardise_patches, standardised_contrast_features
from .site_symmetry import central_intensity, site_symmetry
from .zernike import (
                      contrast_features,
                      magnitude_indices,
                      zernike_indices,
                      zernike_magnitudes,
                      zernike_moments,
)

__all__ = [
    "central_intensity",
    "context_vector",
    "contrast_features",
    "feature_names",
    "magnitude_indices",
    "site_symmetry",
    "standardise_patches",
    "standardised_contrast_features",
    "zernike_indices",
    "zernike_magnitudes",
    "zernike_moments",
]
