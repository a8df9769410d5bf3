"""Rotationally invariant variational autoencoder (rVAE) for atom-centred ADF sub-images (seed 002) and 4D-STEM
diffraction patterns (seed 004), on the project's machinery (pure torch cores, Lightning, zarr, Dask).

=================  ==========================================================================================
module             what it holds
=================  ==========================================================================================
``model``          the rVAE in pure torch: encoder, circular (von Mises) angle latent with an n-fold period,
                   shift and content latents, spatial (coordinate-MLP) and canonical decoders, loss terms,
                   ``encode_batch`` (posterior means and uncertainties of a batch)
``schedules``      β and capacity schedules of the KL term
``module``         the LightningModule (ELBO, Adam, logging)
``data``           the zarr dataset that streams shard by shard, √I and per-dataset normalisation
``encode``         a fitted module from its checkpoint; posterior means and uncertainties per item, written
                   to zarr
``cli``            LightningCLI (``python -m rvae fit ...``), the classifiers' runner
``submit``         Slurm through submitit
``columns``        columns of an ADF frame (any lattice, the project's peak finder in Å), sub-images
``com``            the centre-of-mass family of 4D-STEM maps (the classical baseline) in NumPy
``maps``           periodic residual and anomaly score of per-position outputs
``metrics``        circular agreement, label leak, correlation, defect localisation (AUC)
``synthetic``      rendered test data with known truth (two-grain ADF field, rotated motifs)
``fit``            ``fit-image`` and ``fit-4dstem`` orchestration
``figures``        overlays, scan maps, latent traversal
=================  ==========================================================================================
"""
