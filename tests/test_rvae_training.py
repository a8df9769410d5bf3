"""Real Lightning training of the rVAE on CPU: fast_dev_run through the LightningCLI, weights_only checkpoints,
resume, a size mismatch, and the exact properties after training on a tiny synthetic set."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rvae.cli import run_cli
from rvae.encode import encode_batch, load_module
from rvae.store import write_items
from rvae.synthetic import rotated_shapes

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SIZE = 15


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    data = rotated_shapes(512, SIZE, np.random.default_rng(0), period=1)
    path = tmp_path_factory.mktemp("shapes") / "shapes.zarr"
    write_items(path, data["images"], 128)
    return str(path), data


def fit_args(repo_root, store, run_dir, *extra):
    return ["fit", "--config", str(repo_root / "configs" / "rvae" / "adf.yaml"), "--data.store", store,
            "--data.array", "patches", "--run_dir", str(run_dir), "--model.image_size", str(SIZE),
            "--trainer.accelerator", "cpu", "--model.encoder_channels", "[8, 16]", "--model.encoder_hidden", "32",
            "--model.decoder_hidden", "32", "--data.batch_size", "64", *extra]


@pytest.mark.parametrize("decoder", ["spatial", "canonical"])
def test_fast_dev_run_through_the_cli(repo_root, shapes, tmp_path, decoder):
    cli = run_cli(fit_args(repo_root, shapes[0], tmp_path / decoder, "--model.decoder", decoder,
                           "--trainer.fast_dev_run", "true"))
    assert cli.trainer.global_step == 1 and cli.model.model.decoder.__class__.__name__.lower().startswith(decoder)


def test_checkpoints_load_weights_only_and_resume(repo_root, shapes, tmp_path):
    run = tmp_path / "run"
    common = ("--model.decoder", "canonical", "--data.val_shards", "1")
    run_cli(fit_args(repo_root, shapes[0], run, *common, "--trainer.max_epochs", "1"))
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 8 and ckpt["hyper_parameters"]["image_size"] == SIZE
    assert ckpt["ZarrItemsDataModule"]["scale"] > 0  # the normalisation travels with the weights
    assert (run / "csv" / "version_0" / "metrics.csv").read_text().count("val_elbo") == 1
    run_cli(fit_args(repo_root, shapes[0], run, *common, "--trainer.max_epochs", "2"))  # ckpt_path: last
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 16
    module, transform, _ = load_module(run / "checkpoints" / "last.ckpt")
    assert module.model.image_size == SIZE and transform.scale == pytest.approx(ckpt["ZarrItemsDataModule"]["scale"])


def test_size_mismatch_names_the_field(repo_root, shapes, tmp_path):
    args = fit_args(repo_root, shapes[0], tmp_path / "bad", "--trainer.fast_dev_run", "true")
    args[args.index("--model.image_size") + 1] = "17"
    with pytest.raises(ValueError, match="model.image_size: 15"):
        run_cli(args)


@pytest.mark.slow
def test_rotated_input_gives_the_same_latents_and_a_shifted_angle(repo_root, shapes, tmp_path):
    """After training on rotated motifs: turning an input by 90° (exact on the grid) moves φ by 90° and leaves
    z unchanged, within tolerance."""
    store, data = shapes
    run = tmp_path / "rot"
    run_cli(fit_args(repo_root, store, run, "--model.decoder", "spatial", "--model.translation", "false",
                     "--trainer.max_epochs", "40", "--model.lr", "0.002", "--model.beta_warmup_steps", "100",
                     "--model.encoder_hidden", "64", "--model.decoder_hidden", "64"))
    module, transform, _ = load_module(run / "checkpoints" / "last.ckpt")
    x = torch.from_numpy(transform(data["images"][:200]))
    turned = torch.rot90(x, k=-1, dims=(1, 2))  # content from +x towards +y: φ + 90°
    a = encode_batch(module.model, x)
    b = encode_batch(module.model, turned)
    dphi = np.degrees(np.angle(np.exp(1j * (b["angle"] - a["angle"]).numpy())))
    assert np.median(np.abs(dphi - 90.0)) < 12.0
    # z moves by much less than its own posterior uncertainty (an unused latent has std ~1 and z ~0)
    assert ((b["z"] - a["z"]).abs() / a["z_std"]).median(dim=0).values.max() < 0.5
    # and the angle follows the drawn motif angle (up to the global offset), a latent the core width
    from rvae.metrics import aligned_angle_agreement, best_correlation

    assert best_correlation(a["z"].numpy(), data["width"][:200])["abs_r"] > 0.9

    agreement = aligned_angle_agreement(a["angle"].numpy(), data["angle"][:200])
    assert agreement["sign"] == 1 and agreement["median_abs_error_deg"] < 12.0


@pytest.mark.slow
def test_ddp_two_cpu_processes_split_the_shards(repo_root, shapes, tmp_path):
    """2 ranks x 2 of the 4 shards each: half the steps per epoch of one process, one shared checkpoint."""
    import os
    import subprocess
    import sys

    run = tmp_path / "ddp"
    args = fit_args(repo_root, shapes[0], run, "--model.decoder", "canonical", "--trainer.max_epochs", "2",
                    "--trainer.strategy", "ddp", "--trainer.devices", "2")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, "-m", "rvae", *args], cwd=repo_root, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2 * 4  # 256 rows per rank / 64 per batch, 2 epochs


@pytest.mark.gpu
def test_fit_on_a_gpu_and_encode_on_the_cpu(repo_root, shapes, tmp_path):
    run = tmp_path / "gpu"
    args = fit_args(repo_root, shapes[0], run, "--trainer.max_epochs", "1")
    args[args.index("--trainer.accelerator") + 1] = "gpu"
    run_cli(args)
    module, transform, _ = load_module(run / "checkpoints" / "last.ckpt", device="cpu")
    out = encode_batch(module.model, torch.from_numpy(transform(shapes[1]["images"][:8])))
    assert out["z"].shape == (8, 2) and torch.isfinite(out["angle"]).all()
