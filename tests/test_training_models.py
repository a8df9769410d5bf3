"""Contract of the six classifiers: shapes, parameter counts, bad input, batch independence, overfitting."""
from __future__ import annotations

import pytest
import torch

from training.models import (
    MLP_DEEP_HIDDEN,
    MLP_SIMPLE_HIDDEN,
    AttentionClassifier,
    FeatureAttention,
    build_model,
)
from training.module import DefectClassifier
from training.submit import merged_config

CONFIGS = ["attn-4k", "attn-200k", "attn-400k", "mlp-nocontext", "mlp-simple", "mlp-deep"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def linear_params(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def expected_mlp_params(in_features: int, hidden, n_classes: int = 5) -> int:
    widths = [in_features, *hidden]
    return sum(linear_params(a, b) for a, b in zip(widths[:-1], widths[1:])) + linear_params(widths[-1], n_classes)


def expected_attention_params(d: int, n_layers: int, d_ff: int, n_classes: int = 5) -> int:
    batch_norm = 2 * d  # weight and bias; running statistics are buffers
    attention = 4 * linear_params(d, d)  # query, key, value, output projections
    feed_forward = linear_params(d, d_ff) + linear_params(d_ff, d)
    layer = attention + feed_forward + 2 * batch_norm
    return batch_norm + n_layers * layer + linear_params(d, n_classes)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", CONFIGS)
def test_six_models_shapes_and_parameter_counts(repo_root, name):
    cfg = merged_config([repo_root / "configs" / "train" / "base.yaml", repo_root / "configs" / "train" / f"{name}.yaml"])
    module = DefectClassifier(**cfg["model"])
    d = cfg["model"]["in_features"]
    expected = {
        "attention": lambda: expected_attention_params(d, module.hparams.n_layers, module.hparams.d_ff),
        "mlp_nocontext": lambda: expected_mlp_params(d, MLP_SIMPLE_HIDDEN),
        "mlp_simple": lambda: expected_mlp_params(d, MLP_SIMPLE_HIDDEN),
        "mlp_deep": lambda: expected_mlp_params(d, MLP_DEEP_HIDDEN),
    }[cfg["model"]["architecture"]]()
    assert n_params(module.model) == expected
    module.eval()
    for n in (1, 7, 64):
        out = module(torch.randn(n, d))
        assert out.shape == (n, 5) and out.dtype == torch.float32


def test_paper_settings_in_configs(repo_root):
    """Section 5 / 8.4: batch sizes, epochs, Adam 1e-3, input 6 for MLP-NoContext, 31 otherwise."""
    batch = {"attn-4k": 4096, "attn-200k": 204800, "attn-400k": 409600}
    for name in CONFIGS:
        cfg = merged_config([repo_root / "configs" / "train" / "base.yaml",
                             repo_root / "configs" / "train" / f"{name}.yaml"])
        assert cfg["model"]["lr"] == 1e-3 and cfg["model"]["dropout"] == 0.1
        assert cfg["data"]["batch_size"] == batch.get(name, 4096)
        assert cfg["trainer"]["max_epochs"] == (10 if name.startswith("attn") else 20)
        assert cfg["model"]["in_features"] == (6 if name == "mlp-nocontext" else 31)
        assert cfg["data"]["feature_set"] == ("zernike" if name == "mlp-nocontext" else "all")
        assert cfg["data"]["test_fraction"] == 0.2
    assert len(MLP_DEEP_HIDDEN) == 12 and tuple(MLP_SIMPLE_HIDDEN) == (64, 32, 16, 8)


@pytest.mark.parametrize("architecture", ["mlp_simple", "mlp_deep", "attention"])
def test_bad_input_shape_is_a_clear_error(architecture):
    model = build_model(architecture, 31)
    with pytest.raises(ValueError, match=r"shape \(n, 31\)"):
        model(torch.randn(4, 30))
    with pytest.raises(ValueError, match=r"shape \(n, 31\)"):
        model(torch.randn(31))


def test_bad_hyperparameters_are_clear_errors():
    with pytest.raises(ValueError, match="architecture"):
        build_model("transformer", 31)
    with pytest.raises(ValueError, match="dropout"):
        build_model("mlp_simple", 31, dropout=1.0)
    with pytest.raises(ValueError, match="in_features"):
        build_model("attention", 0)
    with pytest.raises(ValueError, match="model.architecture"):
        DefectClassifier(architecture="cnn")


def _train_a_little(model: torch.nn.Module, d: int, steps: int = 20, batch: int = 256) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    model.train()
    for _ in range(steps):
        x = torch.randn(batch, d, generator=g) * 2 + 1
        y = torch.randint(0, 5, (batch,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_attention_eval_is_batch_independent():
    torch.manual_seed(0)
    d = 31
    model = AttentionClassifier(d)
    _train_a_little(model, d)
    model.eval()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(300, d, generator=g) * 2 + 1
    with torch.no_grad():
        p_batch = torch.softmax(model(x), dim=1)
        p_alone = torch.cat([torch.softmax(model(x[i : i + 1]), dim=1) for i in range(0, 300, 37)])
        perm = torch.randperm(300, generator=g)
        p_perm = torch.softmax(model(x[perm]), dim=1)
        other = torch.randn(1000, d, generator=g) * 5  # very different batch mates
        p_mixed = torch.softmax(model(torch.cat([other[:500], x, other[500:]]))[500:800], dim=1)
    torch.testing.assert_close(p_alone, p_batch[::37], rtol=0, atol=1e-6)
    torch.testing.assert_close(p_perm, p_batch[perm], rtol=0, atol=1e-6)
    torch.testing.assert_close(p_mixed, p_batch, rtol=0, atol=1e-6)


def test_attention_train_mode_depends_on_batch_and_running_estimate_tracks_it():
    """The property the running estimate exists for: in training mode the batch changes a sample's output."""
    torch.manual_seed(0)
    att = FeatureAttention(8, momentum=0.25)
    x = torch.randn(64, 8)
    y = torch.randn(64, 8) * 3 + 2
    out_a = att(x)[:1]
    torch.testing.assert_close(att.running_scores, att.scores(x).detach())  # first batch initialises it
    out_b = att(torch.cat([x[:1], y]))[:1]
    assert not torch.allclose(out_a, out_b, atol=1e-4)
    expected = 0.75 * att.scores(x) + 0.25 * att.scores(torch.cat([x[:1], y]))
    torch.testing.assert_close(att.running_scores, expected.detach())
    assert int(att.num_batches_tracked) == 2
    maps = att.attention_map()
    assert maps.shape == (8, 8)
    torch.testing.assert_close(maps.sum(dim=1), torch.ones(8))


def test_attention_maps_shape_and_rows_sum_to_one():
    model = AttentionClassifier(31, n_layers=3)
    _train_a_little(model, 31, steps=3)
    maps = model.attention_maps()
    assert maps.shape == (3, 31, 31)
    torch.testing.assert_close(maps.sum(-1), torch.ones(3, 31))


@pytest.mark.parametrize("architecture", ["mlp_simple", "attention"])
def test_small_model_overfits_tiny_set(architecture):
    torch.manual_seed(0)
    x = torch.randn(64, 31)
    y = torch.arange(64) % 5  # random labels: only memorisation can fit them
    model = build_model(architecture, 31, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        model.train()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc == 1.0, f"{architecture} reached only {acc:.2f} on 64 samples"
