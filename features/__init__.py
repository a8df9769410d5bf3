"""Feature stage: Zernike contrast moments, site symmetry and the context vector -> 31 float32 per patch.

The array kernels are in ``kernels`` (``zernike``, ``normalise``, ``site_symmetry``, ``context``, ``symmetry``,
``cell``); this stage runs them over stores: ``encode`` (store -> features with Dask; ``python -m features``),
``symmetry_store`` (symmetry maps of images and plane-group stores), ``verify``, ``synthetic`` (toy MX2 patches
for tests and benchmarks). The names below are re-exported from ``kernels`` for convenience.
"""
from kernels.context import context_vector, feature_names
from kernels.normalise import standardise_patches, standardised_contrast_features
from kernels.site_symmetry import central_intensity, site_symmetry
from kernels.zernike import (
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
