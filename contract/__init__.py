"""The data contract between the stages: every fact that more than one stage needs, defined once.

Ground floor: every stage (``simulate``, ``features``, ``training``, ``inference`` and the newer ones) may import
this package; it imports none of them.

=================  ==========================================================================================
module             what it defines
=================  ==========================================================================================
``classes``        the 5 classes of the central column, their names, groupings (sublattice, defect) and colours
``context``        the context axes: detectors with their collection angles, beam energies, electron shells,
                   and the ``Case`` (host, dopant, beam energy, detector) a patch or an image was recorded in
``environments``   the 34 local environments (central column + 3 nearest neighbours) and their labels
``features``       the 31-column feature layout (names, column groups, feature sets) and ``assemble_features``,
                   the one function that builds a feature row
``store``          the zarr store schema (array names, dtypes, attributes), ``open_group`` and ``read_meta``,
                   the one typed reader of a store's metadata; ``chunk_compressors`` (crc32c on every chunk) and
                   ``read_checked`` (a read that names the damaged shard: ``CorruptDataError``)
``verify``         the findings of a store verification and the shard checks ``simulate verify`` and
                   ``features verify`` share
``fourdstem``      the 4D-STEM store schema (``python -m simulate fourdstem``: patterns per scan and dose,
                   per-position truth) and ``read_scan_meta``, read by the ``rvae`` stage
``catalog``        the host/dopant catalog (``catalog.yaml``, shipped as package data) and its validated loader
``patches``        the patch geometry shared by simulation and micrographs: √3·a window, odd size, bilinear
                   resampling
``images``         the micrograph reader (.npy, .tif, .dm3/.dm4, .emd) with the metadata a file holds (pixel
                   size, beam energy, detector, each with its tag) and ``check_image``
``elements``       periodic-table facts (row, transition metal) used to validate the catalog
``errors``         the error kinds every command reports in one line and their exit codes
``cli``            ``run_command`` (one line on stderr, exit code, ``--debug``) and the default-subcommand rule
``planegroups``    the 17 plane groups (full symbols, class ids), the seven symmetry-map names, the plane-group
                   store's array and attribute names, ``reduce_basis`` (the shortest 2-D lattice basis)
=================  ==========================================================================================
"""
