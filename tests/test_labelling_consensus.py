"""Three annotators label a rendered full field that has a known truth, through the server's API; the consensus is
written in the truth format and ``python -m inference score`` scores a real ``inference classify`` output against
it exactly as against the truth; ties and thin votes are listed; the report tables every registered model.

The classifier is a real Lightning model (mlp-simple, 1 epoch on a synthetic feature store of WSe2+V cases): its
classes are poor, which does not matter here: the test is that the consensus gives the same scores as the truth
it reproduces (a copy of its output with known errors is scored as well).
"""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from fastapi.testclient import TestClient
from scipy.spatial import cKDTree
from sklearn.metrics import cohen_kappa_score

from inference.__main__ import main as inference_main
from inference.score import match_sites
from labelling.__main__ import main as labelling_main
from labelling.agreement import counts_table, fleiss_kappa
from labelling.consensus import CATEGORIES, TRUTH_COLUMNS
from labelling.db import NO_COLUMN
from labelling.project import add_image, create_project
from labelling.server import create_app
from tests.labelling_fixtures import login_body, read_truth, render_field

SQRT3 = 3 ** 0.5

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    return render_field(tmp_path_factory.mktemp("field") / "wse2_cr", seed=3)


@pytest.fixture(scope="module")
def classified(field, tmp_path_factory, repo_root):
    """A real ``inference classify`` output of the field (sites.csv + summary.json)."""
    from training.cli import run_cli
    from training.synthetic import write_synthetic_store

    work = tmp_path_factory.mktemp("model")
    store = write_synthetic_store(work / "s.zarr", n_rows=600, hosts=("WSe2",), rows_per_shard=300)
    run_cli(["fit", "--config", str(repo_root / "configs/train/base.yaml"),
             "--config", str(repo_root / "configs/train/mlp-simple.yaml"), "--data.store", str(store),
             "--run_dir", str(work / "run"), "--trainer.accelerator", "cpu", "--trainer.strategy", "auto",
             "--trainer.devices", "1", "--data.batch_size", "128", "--trainer.max_epochs", "1"])
    out = work / "pred"
    ckpt = work / "mlp-synthetic" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    (work / "run/checkpoints/last.ckpt").rename(ckpt)
    rc = inference_main(["classify", str(field / "image.npy"), "--model", str(ckpt),
                         "--host", "WSe2", "--dopant", "V", "--energy-kev", "60", "--detector", "MAADF",
                         "--patch-size-px", "17", "--out", str(out)])
    assert rc == 0
    return out, ckpt


@pytest.mark.slow  # ~30 s on 2 busy cores: a Lightning fit, classify, 500 labels through the API, the report
def test_three_annotators_consensus_scores_like_the_truth(tmp_path, field, classified, capsys):
    classified, ckpt = classified
    project = create_project(tmp_path / "proj")
    # the synthetic model knows WSe2+V only: the image's context says so (labelling does not depend on it)
    add_image(project, field / "image.npy", name="field", dopant="V")
    client = TestClient(create_app(project.root))
    tokens = {n: client.post("/api/login", json=login_body(n)).json()["token"] for n in ("alice", "bob", "carol")}
    head = {n: {"Authorization": f"Bearer {t}"} for n, t in tokens.items()}
    iid = client.get("/api/images", headers=head["alice"]).json()["images"][0]["id"]
    sites = client.get(f"/api/images/{iid}/sites", headers=head["alice"]).json()["sites"]
    txy, tlabel = read_truth(field)
    cxy = np.array([[s["y"], s["x"]] for s in sites])
    match, _ = match_sites(txy, cxy, 0.3 * 13.0 / SQRT3)  # for each candidate: its true column
    assert (match >= 0).all()
    truth_of = {s["id"]: int(tlabel[m]) for s, m in zip(sites, match)}
    summary = json.loads((classified / "summary.json").read_text())
    margin, (h, w) = summary["border_margin_px"], summary["image_shape"]
    on_border = [s for s in sites if min(s["x"], s["y"]) < margin or s["x"] > w - 1 - margin or s["y"] > h - 1 - margin]
    tie_site = on_border[0]["id"]  # outside the counted area, so that the scores stay comparable
    # each annotator errs on a different seventh of the sites: two of three are always right
    votes = {}
    for k, s in enumerate(sites):
        t = truth_of[s["id"]]
        v = {"alice": t, "bob": t, "carol": t}
        v[{0: "alice", 3: "bob", 5: "carol"}.get(k % 7, "nobody")] = (t + 1) % 5
        if s["id"] == tie_site:
            v = {"alice": t, "bob": (t + 1) % 5, "carol": (t + 2) % 5}
        v.pop("nobody", None)
        votes[s["id"]] = v
    for name in ("alice", "bob", "carol"):
        for sid, v in votes.items():
            r = client.put(f"/api/images/{iid}/sites/{sid}/label", json={"label": v[name]}, headers=head[name])
            assert r.status_code == 200
    # carol adds a column nobody else sees: one vote, listed
    r = client.post(f"/api/images/{iid}/sites", json={"x_px": 1.0, "y_px": 1.0, "label": 0}, headers=head["carol"])
    assert r.status_code == 200

    out = tmp_path / "consensus"
    assert labelling_main(["consensus", "--project", str(project.root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 ties" in printed and "1 with too few votes" in printed and "Fleiss kappa" in printed
    rows = list(csv.DictReader(open(out / "field" / "truth.csv")))
    assert tuple(rows[0])[:len(TRUTH_COLUMNS)] == TRUTH_COLUMNS
    assert len(rows) == len(sites) - 1
    got = {int(r["site"]): int(r["label"]) for r in rows}
    assert got == {sid: t for sid, t in truth_of.items() if sid != tie_site}
    assert all(r["sublattice"] == ("metal" if int(r["label"]) in (3, 4) else "chalcogen") for r in rows)
    unresolved = list(csv.DictReader(open(out / "field" / "unresolved.csv")))
    assert [(u["status"], u["n_votes"]) for u in unresolved] == [("tie", "3"), ("too_few_votes", "1")]
    t = truth_of[tie_site]
    assert unresolved[0]["site"] == str(tie_site)
    assert unresolved[0]["tied"].split() == [["X2", "VacX", "VacX2", "M", "D"][c] for c in sorted({t, (t + 1) % 5, (t + 2) % 5})]
    assert unresolved[1]["origin"] == "added by carol" and unresolved[1]["votes"] == "carol=X2"
    agreement = json.loads((out / "field" / "agreement.json").read_text())
    table = counts_table(list(votes.values()) + [{"carol": 0}], CATEGORIES)
    assert agreement["fleiss_kappa"] == pytest.approx(fleiss_kappa(table))
    assert 0.5 < agreement["fleiss_kappa"] < 1
    assert [(p["a"], p["b"], p["n"]) for p in agreement["cohen_kappa_pairwise"]] == \
        [("alice", "bob", len(sites)), ("alice", "carol", len(sites)), ("bob", "carol", len(sites))]
    truth_meta = json.loads((out / "field" / "truth.json").read_text())
    assert truth_meta["pixel_size_angstrom"] == pytest.approx(3.282 / 13.0)
    assert truth_meta["detector"] == "MAADF" and truth_meta["annotators"] == ["alice", "bob", "carol"]

    # inference score, unchanged, against the consensus: the numbers that the consensus labels give by hand
    # (the candidates are classify's own sites, so every counted consensus site pairs with the prediction there)
    sharp = _with_labels(classified, tmp_path / "sharp", txy, tlabel)  # a prediction with known errors
    inside = lambda r, c: margin <= r <= h - 1 - margin and margin <= c <= w - 1 - margin  # noqa: E731
    for pred_dir in (classified, sharp):
        prows = list(csv.DictReader(open(pred_dir / "sites.csv")))
        d, k = cKDTree([[float(r["y_px"]), float(r["x_px"])] for r in prows]).query(cxy)
        assert d.max() < 0.01  # the same sites
        pred = {s["id"]: int(prows[j]["label"]) for s, j in zip(sites, k)}
        pairs = [(truth_of[s["id"]], pred[s["id"]]) for s in sites if s["id"] != tie_site and inside(s["y"], s["x"])]
        assert inference_main(["score", "--pred", str(pred_dir), "--truth", str(out / "field")]) == 0
        vs_consensus = json.loads((pred_dir / "score.json").read_text())
        assert vs_consensus["n_true"] == vs_consensus["n_matched"] == len(pairs) > 50
        expected_cm = np.zeros((5, 5), int)
        np.add.at(expected_cm, tuple(np.array(pairs).T), 1)
        assert vs_consensus["confusion_matrix"] == expected_cm.tolist()
        assert vs_consensus["cohen_kappa"] == pytest.approx(cohen_kappa_score(*zip(*pairs)), abs=1e-6)
        # against the simulated truth itself: the same, up to the columns that straddle the counted area's edge
        assert inference_main(["score", "--pred", str(pred_dir), "--truth", str(field)]) == 0
        vs_truth = json.loads((pred_dir / "score.json").read_text())
        straddle = sum(inside(*txy[m]) != inside(s["y"], s["x"]) for s, m in zip(sites, match))
        assert abs(vs_truth["n_true"] - vs_consensus["n_true"]) <= straddle <= 3
        assert vs_truth["cohen_kappa"] == pytest.approx(vs_consensus["cohen_kappa"], abs=0.05)
    assert vs_consensus["cohen_kappa"] > 0.5  # the sharp prediction: 1 error in 4

    # the report: the model run on the project's images by `labelling predict`, scored against the consensus
    assert labelling_main(["predict", "--project", str(project.root), "--model", str(ckpt),
                           "--patch-size-px", "17"]) == 0
    assert "mlp-synthetic on field" in capsys.readouterr().out
    assert labelling_main(["report", "--project", str(project.root)]) == 0
    printed = capsys.readouterr().out
    assert "mlp-synthetic" in printed and "MAADF" in printed and "Fleiss κ" in printed
    report_dir = project.root / "report"
    models = list(csv.DictReader(open(report_dir / "models.csv")))
    assert [(m["model"], m["detector"], m["n_images"]) for m in models] == [("mlp-synthetic", "MAADF", "1")]
    direct = json.loads((project.root / "predictions" / "mlp-synthetic" / "field" / "score.json").read_text())
    assert direct["n_matched"] > 50
    assert float(models[0]["kappa_mean_over_images"]) == pytest.approx(direct["cohen_kappa"], abs=1e-6)
    assert float(models[0]["kappa_pooled"]) == pytest.approx(direct["cohen_kappa"], abs=1e-6)
    for cls, f1 in direct["f1_defect"].items():
        assert float(models[0][f"f1_{cls}"]) == pytest.approx(f1, abs=1e-6, nan_ok=True)
    assert int(models[0]["n_sites"]) == direct["n_matched"]
    scores = list(csv.DictReader(open(report_dir / "scores.csv")))
    assert [(r["model"], r["image"]) for r in scores] == [("mlp-synthetic", "field")]
    assert (report_dir / "models.png").stat().st_size > 10_000


def _with_labels(classify_dir, out, txy, tlabel):
    """A copy of a classify output whose labels are the true class of the nearest true column, wrong (the next
    class) for every fourth site: a prediction whose errors are known."""
    import shutil

    out.mkdir()
    shutil.copy2(classify_dir / "summary.json", out / "summary.json")
    rows = list(csv.DictReader(open(classify_dir / "sites.csv")))
    pxy = np.array([[float(r["y_px"]), float(r["x_px"])] for r in rows])
    m, _ = match_sites(pxy, txy, 0.3 * 13.0 / SQRT3)
    nearest = np.full(len(rows), -1)
    nearest[m[m >= 0]] = np.flatnonzero(m >= 0)
    for k, r in enumerate(rows):
        t = int(tlabel[nearest[k]]) if nearest[k] >= 0 else 0
        r["label"] = str((t + 1) % 5 if k % 4 == 0 else t)
    with open(out / "sites.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    return out


def test_pooled_metrics_from_a_confusion_matrix():
    from labelling.report import pooled_metrics

    cm = np.zeros((5, 5), dtype=int)
    cm[0, 0], cm[3, 3], cm[4, 4], cm[4, 3], cm[1, 1], cm[1, 0] = 50, 40, 6, 2, 3, 1
    out = pooled_metrics(cm)
    assert out["n"] == 102 and out["accuracy"] == pytest.approx(99 / 102)
    # dopant F1 by hand: truth D 8 (6 found), no false alarms among X2/M -> precision 1, recall 0.75
    assert out["f1_defect"]["dopant"] == pytest.approx(2 * 0.75 / 1.75)
    assert math.isnan(out["f1_defect"]["double_vacancy"])
    assert math.isnan(pooled_metrics(np.zeros((5, 5)))["cohen_kappa"])


def test_consensus_and_report_cli_errors(tmp_path, field, capsys):
    assert labelling_main(["consensus", "--project", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "no labelling project there" in capsys.readouterr().err
    project = create_project(tmp_path / "p")
    add_image(project, field / "image.npy", name="f")
    assert labelling_main(["consensus", "--project", str(project.root), "--out", str(tmp_path / "o"),
                           "--min-votes", "0"]) == 2
    assert "--min-votes must be >= 1" in capsys.readouterr().err
    assert labelling_main(["report", "--project", str(project.root)]) == 2
    assert "no model predictions to score" in capsys.readouterr().err
    # no votes at all: every site is listed as having too few, nothing is invented
    assert labelling_main(["consensus", "--project", str(project.root), "--out", str(tmp_path / "o")]) == 0
    assert list(csv.DictReader(open(tmp_path / "o" / "f" / "truth.csv"))) == []
    unresolved = list(csv.DictReader(open(tmp_path / "o" / "f" / "unresolved.csv")))
    assert unresolved and {u["status"] for u in unresolved} == {"too_few_votes"}


def test_consensus_of_deleted_sites_and_absolute_rule(tmp_path, field):
    project = create_project(tmp_path / "p")
    add_image(project, field / "image.npy", name="f")
    client = TestClient(create_app(project.root))
    head = {n: {"Authorization": "Bearer " + client.post("/api/login", json=login_body(n)).json()["token"]}
            for n in ("a", "b", "c", "d")}
    sites = client.get("/api/images/1/sites", headers=head["a"]).json()["sites"]
    s0, s1 = sites[0]["id"], sites[1]["id"]
    for name, (v0, v1) in {"a": (NO_COLUMN, 2), "b": (NO_COLUMN, 2), "c": (0, 1), "d": (0, 0)}.items():
        client.put(f"/api/images/1/sites/{s0}/label", json={"label": v0}, headers=head[name])
        client.put(f"/api/images/1/sites/{s1}/label", json={"label": v1}, headers=head[name])
    from labelling.consensus import run_consensus

    out = run_consensus(project, tmp_path / "plural", min_votes=3)
    votes = {r["site"]: r for r in csv.DictReader(open(tmp_path / "plural" / "f" / "votes.csv"))}
    assert (votes[str(s0)]["status"], votes[str(s0)]["a"], votes[str(s0)]["c"]) == ("tie", "none", "X2")
    assert (votes[str(s1)]["status"], votes[str(s1)]["consensus"]) == ("consensus", "VacX2")
    assert out["images"][0]["status_counts"]["tie"] == 1
    run_consensus(project, tmp_path / "abs", min_votes=3, rule="absolute")
    votes = {r["site"]: r for r in csv.DictReader(open(tmp_path / "abs" / "f" / "votes.csv"))}
    assert votes[str(s1)]["status"] == "no_majority"  # 2 of 4 is not more than half
    # one vote changed after finishing: 'no column' wins, the candidate leaves the reference, the change is noted
    assert client.post("/api/images/1/finish", json={"force": True}, headers=head["c"]).status_code == 200
    client.put(f"/api/images/1/sites/{s0}/label", json={"label": NO_COLUMN}, headers=head["c"])
    out = run_consensus(project, tmp_path / "del", min_votes=3)
    assert out["images"][0]["changes_after_finishing"] == {"c": 1}
    assert out["images"][0]["finished_by"] == ["c"]
    votes = {r["site"]: r for r in csv.DictReader(open(tmp_path / "del" / "f" / "votes.csv"))}
    assert votes[str(s0)]["status"] == "no_column"
    assert str(s0) not in {r["site"] for r in csv.DictReader(open(tmp_path / "del" / "f" / "truth.csv"))}
