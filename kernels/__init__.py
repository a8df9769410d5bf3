"""The numerical kernels every stage may use: pure array-in/array-out functions, one floor above ``contract``.

No file I/O, no Dask, no command line, no state beyond memoised constants (``zernike.device_constant``,
``context``'s per-element cache); each module imports third-party libraries, ``contract`` and other kernels
only (``tests/test_architecture.py`` holds it to that; docs/architecture.md).

=================  ==========================================================================================
module             what it computes
=================  ==========================================================================================
``zernike``        real Zernike moments of patches (NumPy/CuPy), their grid, normalisation and constant cache
``normalise``      per-patch standardisation on the unit disk, the standardised contrast features
``site_symmetry``  the site-symmetry flags (which sublattice is brighter) and a column's central intensity
``context``        the 23-value context vector of a (host, dopant, beam energy, detector) case
``symmetry``       dense Zernike symmetry maps of an image (rotation scores, mirror strength and axis)
``cell``           the primitive cell of a periodic image from its autocorrelation
``lattice``        peaks, lattice constant and the local honeycomb of columns of an image
``patches``        patches and the 31 features of every site of an image
``noise``          the detector-noise and scan-jitter model of a simulated image or patch
``optics``         the closed-form electron wavelength and 2,3,5-smooth FFT sizes
``com``            the centre-of-mass family of 4D-STEM maps
``geometry``       minimum-image vectors in a periodic cell
``metrics``        the classification metrics (torchmetrics) of predicted probabilities
=================  ==========================================================================================
"""
