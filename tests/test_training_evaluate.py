"""Evaluation metrics against scikit-learn/scipy on fixed inputs, and `evaluate` end to end on a real store."""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics as skm
import torch

from training.cli import run_cli
from training.evaluate import evaluate, load_checkpoint
from kernels.metrics import (
    classification_metrics,
    defect_f1,
    posterior_entropy,
    reliability_bins,
)
from training.synthetic import write_synthetic_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def fixed():
    """Fixed probabilities and labels: a noisy classifier, right ~70 % of the time."""
    rng = np.random.default_rng(42)
    labels = rng.integers(0, 5, 2000)
    logits = rng.normal(0, 1, (2000, 5))
    logits[np.arange(2000), labels] += rng.uniform(0, 3, 2000)
    probs = scipy.special.softmax(logits, axis=1)
    return torch.tensor(probs, dtype=torch.float64), torch.tensor(labels)


def numpy_ece(probs: np.ndarray, labels: np.ndarray, n_bins: int) -> float:
    conf, pred = probs.max(1), probs.argmax(1)
    edges = np.linspace(0, 1, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            ece += sel.mean() * abs((pred[sel] == labels[sel]).mean() - conf[sel].mean())
    return ece


def test_metrics_agree_with_sklearn_and_scipy(fixed):
    probs, labels = fixed
    p, y = probs.numpy(), labels.numpy()
    pred = p.argmax(1)
    m = classification_metrics(probs, labels, n_bins=15)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-6)  # torchmetrics: float32
    assert 0.5 < m["accuracy"] < 0.95  # a non-trivial case
    np.testing.assert_array_equal(m["confusion_matrix"], skm.confusion_matrix(y, pred, labels=range(5)))
    assert m["cohen_kappa"] == pytest.approx(skm.cohen_kappa_score(y, pred), abs=1e-6)
    assert m["mean_entropy_nats"] == pytest.approx(scipy.stats.entropy(p, axis=1).mean(), abs=1e-9)
    assert m["ece"] == pytest.approx(numpy_ece(p, y, 15), abs=1e-6)
    rel = m["reliability"]
    n = np.asarray(rel["count"])
    assert n.sum() == 2000
    ece_from_bins = (n / n.sum() * np.abs(np.asarray(rel["accuracy"]) - np.asarray(rel["confidence"]))).sum()
    assert ece_from_bins == pytest.approx(m["ece"], abs=1e-6)
    for name, c in {"single_vacancy": 1, "double_vacancy": 2, "dopant": 4}.items():
        keep = np.isin(y, [c, 0, 3])
        expected = skm.f1_score(y[keep] == c, np.isin(pred[keep], [1, 2, 4]))
        assert m["f1_defect"][name] == pytest.approx(expected, abs=1e-6)


def test_entropy_exact_values():
    uniform = torch.full((3, 5), 0.2, dtype=torch.float64)
    torch.testing.assert_close(posterior_entropy(uniform), torch.full((3,), np.log(5.0), dtype=torch.float64))
    one_hot = torch.eye(5, dtype=torch.float64)
    torch.testing.assert_close(posterior_entropy(one_hot), torch.zeros(5, dtype=torch.float64))


def test_perfect_predictions():
    labels = torch.arange(100) % 5
    probs = torch.nn.functional.one_hot(labels, 5).double()
    m = classification_metrics(probs, labels)
    assert m["accuracy"] == 1.0 and m["cohen_kappa"] == pytest.approx(1.0) and m["ece"] == pytest.approx(0.0)
    assert m["f1_defect"] == {"single_vacancy": 1.0, "double_vacancy": 1.0, "dopant": 1.0}


def test_bad_inputs_are_clear_errors(fixed):
    probs, labels = fixed
    with pytest.raises(ValueError, match="sum to 1"):
        classification_metrics(probs * 2, labels)
    with pytest.raises(ValueError, match="labels must have shape"):
        reliability_bins(probs, labels[:10])
    with pytest.raises(ValueError, match="n_classes"):
        posterior_entropy(probs[:, 0])
    assert np.isnan(defect_f1(torch.zeros(4, dtype=torch.long), torch.tensor([0, 3, 0, 3]))["dopant"])


def test_evaluate_attention_checkpoint_end_to_end(repo_root, tmp_path):
    store = write_synthetic_store(tmp_path / "s.zarr", n_rows=2500)
    run_dir = tmp_path / "run"
    run_cli([
        "fit", "--config", str(repo_root / "configs" / "train" / "base.yaml"),
        "--config", str(repo_root / "configs" / "train" / "attn-4k.yaml"), "--data.store", store,
        "--run_dir", str(run_dir), "--trainer.accelerator", "cpu", "--trainer.strategy", "auto",
        "--trainer.max_epochs", "4", "--data.batch_size", "128", "--schedule.kind", "paper",
    ])
    out = tmp_path / "eval"
    metrics = evaluate(run_dir / "checkpoints" / "last.ckpt", store, out, umap_samples=300)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test"]["n"] == 500 and saved["train"]["n"] == 2000
    assert saved["test"]["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert saved["test"]["accuracy"] > 0.5  # the synthetic classes are learnable with context
    assert set(saved["test"]["by_detector"]) == {"HAADF", "MAADF"}
    n_by_det = sum(v["n"] for v in saved["test"]["by_detector"].values())
    assert n_by_det == 500
    for fig in ("confusion_matrix.png", "reliability_diagram.png", "umap_inputs.png", "umap_logits.png",
                "attention_maps.png"):
        assert (out / fig).stat().st_size > 1000, fig
    maps = np.load(out / "attention_maps.npy")
    assert maps.shape == (3, 31, 31)
    np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-5)
    module, data_hparams = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert data_hparams["store"] == store and not module.training
    # the command line gives the same numbers
    from training.__main__ import main

    main(["evaluate", "--ckpt", str(run_dir / "checkpoints" / "last.ckpt"), "--data.store", store,
          "--out", str(tmp_path / "eval_cli"), "--umap-samples", "0", "--no-train-accuracy"])
    cli = json.loads((tmp_path / "eval_cli" / "metrics.json").read_text())
    assert cli["test"]["accuracy"] == saved["test"]["accuracy"] and "train" not in cli
    assert not (tmp_path / "eval_cli" / "umap_inputs.png").exists()


def test_demo_trains_evaluates_and_writes_table(tmp_path, capsys):
    from training.demo import run_demo, table_main

    store = write_synthetic_store(tmp_path / "s.zarr", n_rows=2000)
    out = run_demo(store, tmp_path / "demo", max_epochs=2, models=["MLP-NoContext", "attn-4k"], umap_samples=0,
                   jobs=2)  # two processes, each model's output in its train.log
    assert "Trainer.fit" in (out / "attn-4k" / "train.log").read_text()
    table_main(["--runs", str(out)])
    text = (out / "table1.md").read_text()
    assert text.startswith("| Model | Train Acc. (%) | Test Acc. (%) | κ HAADF | κ MAADF |")
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert set(rows) == {"Model", "MLP-NoContext", "attn-4k"}
    for name, config in (("MLP-NoContext", "mlp-nocontext"), ("attn-4k", "attn-4k")):
        m = json.loads((out / config / "eval" / "metrics.json").read_text())
        cells = [c.strip() for c in rows[name].split("|")[2:-1]]
        assert cells[1] == f"{100 * m['test']['accuracy']:.1f}"
        assert cells[-3] == f"{m['test']['mean_entropy_nats']:.4f}"
        assert cells[-1].startswith("paper: 2 epochs × batch 4096")  # explicit epochs: the epoch schedule
    assert m["model"]["architecture"] == "attention"
    saved = json.loads((out / "table1.json").read_text())
    assert saved["MLP-NoContext"]["n_test"] == 400
    assert "MLP-NoContext: test accuracy" in capsys.readouterr().out
    run_demo(store, out, max_epochs=2, models=["attn-4k"], umap_samples=0)  # finished with the same arguments
    assert "reused a finished run" in capsys.readouterr().out
