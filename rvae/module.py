"""LightningModule of the rotationally invariant VAE: the ELBO with β and capacity schedules, Adam.

Hyperparameters are plain values, so checkpoints load with ``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import math

import pytorch_lightning as pl
import torch

from training.checkpoint import stamp_weights

from .model import LIKELIHOODS, RVAE, angular_moment, encode_batch, reconstruction_nll
from .schedules import check_schedule, linear_ramp


class RVAEModule(pl.LightningModule):
    """rVAE training (see :mod:`rvae.model` for the model).

    Parameters
    ----------
    image_size : odd P of the items (after the data module's odd crop); must match the data.
    n_latent, decoder, period, translation, shift_prior_std, encoder, encoder_channels, encoder_hidden,
    decoder_hidden, decoder_layers, canvas_extent, kappa_init, fourier_features, fourier_scale : the model
        (:class:`rvae.model.RVAE`).
    fourier_warmup_steps : steps over which the spatial decoder's Fourier features are switched on, lowest
        frequencies first (coarse to fine; 0: all from the start).
    likelihood : "gaussian" (normalised intensities) or "bernoulli" (intensities in [0, 1]).
    likelihood_sigma : the Gaussian noise level in normalised units; None: learned (one scalar).
    lr : Adam learning rate.
    beta_start, beta_end, beta_warmup_steps : β of the KL term, ramped linearly over the first steps.
    capacity_start, capacity_end, capacity_steps : KL capacity C [nats per item]; with capacity_end > 0 the
        loss is recon + β |KL - C| (Burgess et al. 2018).
    """

    def __init__(self, image_size: int = 33, n_latent: int = 2, decoder: str = "spatial", period: int = 1,
                 translation: bool = True, shift_prior_std: float = 0.1, encoder: str = "conv",
                 encoder_channels: list[int] | None = None, encoder_hidden: int = 128, decoder_hidden: int = 128,
                 decoder_layers: int = 3, canvas_extent: float | None = None, kappa_init: float = 20.0,
                 fourier_features: int = 0, fourier_scale: float = 2.0, fourier_warmup_steps: int = 0,
                 likelihood: str = "gaussian",
                 likelihood_sigma: float | None = None, lr: float = 1e-3, beta_start: float = 1.0,
                 beta_end: float = 1.0, beta_warmup_steps: int = 0, capacity_start: float = 0.0,
                 capacity_end: float = 0.0, capacity_steps: int = 0, angle_anchor: float = 0.0,
                 angle_anchor_steps: int = 0, angle_anchor_end: float = 0.0):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"model.likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        if likelihood_sigma is not None and not likelihood_sigma > 0:
            raise ValueError(f"model.likelihood_sigma must be > 0 or null (learned), got {likelihood_sigma!r}")
        if not lr > 0:
            raise ValueError(f"model.lr must be > 0, got {lr}")
        check_schedule(beta_start, beta_end, beta_warmup_steps, capacity_start, capacity_end, capacity_steps)
        if not angle_anchor >= 0:
            raise ValueError(f"model.angle_anchor must be >= 0, got {angle_anchor!r}")
        if not angle_anchor_end >= 0:
            raise ValueError(f"model.angle_anchor_end must be >= 0, got {angle_anchor_end!r}")
        if int(angle_anchor_steps) != angle_anchor_steps or angle_anchor_steps < 0:
            raise ValueError(f"model.angle_anchor_steps must be an integer >= 0, got {angle_anchor_steps!r}")
        encoder_channels = [int(c) for c in encoder_channels] if encoder_channels is not None else [32, 64, 64]
        self.save_hyperparameters()  # reads the locals: the resolved channel list is what is saved
        try:
            self.model = RVAE(image_size, n_latent, decoder, period, translation, shift_prior_std, encoder,
                              encoder_channels, encoder_hidden, decoder_hidden, decoder_layers, canvas_extent,
                              kappa_init, fourier_features, fourier_scale)
        except ValueError as err:
            raise ValueError(f"model: {err}") from None
        init = 0.0 if likelihood_sigma is None else math.log(likelihood_sigma)
        self.log_sigma = torch.nn.Parameter(torch.tensor(init), requires_grad=likelihood_sigma is None)

    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule if self.trainer is not None else None
        size = getattr(dm, "item_size", None)
        if size is not None and size != self.hparams.image_size:
            raise ValueError(f"model.image_size={self.hparams.image_size} but the items of {dm.array!r} are "
                             f"{size} x {size} (after the odd crop): set model.image_size: {size}")

    def schedule(self, step: int) -> tuple[float, float]:
        """(β, capacity C) at optimizer step ``step``."""
        h = self.hparams
        return (linear_ramp(step, h.beta_start, h.beta_end, h.beta_warmup_steps),
                linear_ramp(step, h.capacity_start, h.capacity_end, h.capacity_steps))

    def anchor_weight(self, step: int) -> float:
        """Weight of the angle anchor at optimizer step ``step`` (see ``angle_anchor``)."""
        h = self.hparams
        if h.angle_anchor_steps <= 0:
            return float(h.angle_anchor_end)
        return linear_ramp(step, h.angle_anchor, h.angle_anchor_end, h.angle_anchor_steps)

    def elbo_terms(self, images: torch.Tensor, anchor: float = 0.0) -> dict[str, torch.Tensor]:
        """Batch means of the negative log-likelihood and of each KL group, from one posterior draw; with
        ``anchor`` > 0 also ``anchor``, the mean 1 − cos(ψ − ψ_m) (unweighted)."""
        post, output = self.model(images)
        sigma = self.log_sigma if self.hparams.likelihood == "gaussian" else None
        out = {"nll": reconstruction_nll(images, output, self.hparams.likelihood, sigma).mean()}
        if anchor > 0:
            psi_m, _ = angular_moment(images, self.model.period, self.model.grid)
            out["anchor"] = (1.0 - torch.cos(post.psi_mean - psi_m)).mean()
        for name, kl in self.model.kl_terms(post).items():
            out[f"kl_{name}"] = kl.mean()
        out["kl"] = sum(v for k, v in out.items() if k.startswith("kl_"))
        return out

    def _set_progress(self) -> None:
        decoder = self.model.decoder
        if hasattr(decoder, "progress"):
            steps = self.hparams.fourier_warmup_steps
            decoder.progress = 1.0 if steps <= 0 else min(1.0, self.global_step / steps)

    def on_train_batch_start(self, batch, batch_idx) -> None:
        self._set_progress()

    def on_validation_start(self) -> None:
        self._set_progress()

    def on_save_checkpoint(self, checkpoint) -> None:
        stamp_weights(checkpoint)  # the weights' sha256, checked by rvae.encode.load_module

    def on_load_checkpoint(self, checkpoint) -> None:
        steps = self.hparams.fourier_warmup_steps
        if hasattr(self.model.decoder, "progress"):
            self.model.decoder.progress = 1.0 if steps <= 0 else min(1.0, checkpoint.get("global_step", 0) / steps)

    def training_step(self, batch, batch_idx):
        images, _ = batch
        anchor = self.anchor_weight(self.global_step)
        terms = self.elbo_terms(images, anchor)
        beta, capacity = self.schedule(self.global_step)
        kl = terms["kl"]
        loss = terms["nll"] + beta * (torch.abs(kl - capacity) if self.hparams.capacity_end > 0 else kl)
        if "anchor" in terms:
            loss = loss + anchor * terms["anchor"]
        n = len(images)
        self.log("train_loss_step", loss, on_step=True, on_epoch=False, batch_size=n)
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=n)
        for name, value in terms.items():
            self.log(f"train_{name}", value, on_step=False, on_epoch=True, sync_dist=True, batch_size=n)
        self.log_dict({"beta": beta, "capacity": capacity,
                       "likelihood_sigma": float(torch.exp(self.log_sigma.detach()))},
                      on_step=True, on_epoch=False, batch_size=n)
        return loss

    def validation_step(self, batch, batch_idx):
        images, _ = batch
        terms = self.elbo_terms(images)
        n = len(images)
        self.log("val_elbo", terms["nll"] + terms["kl"], sync_dist=True, batch_size=n)
        self.log("val_nll", terms["nll"], sync_dist=True, batch_size=n)

    def predict_step(self, batch, batch_idx):
        images, rows = batch
        return {"rows": rows, **encode_batch(self.model, images, self.log_sigma, self.hparams.likelihood)}

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
