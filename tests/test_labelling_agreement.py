"""Pure parts of the labelling stage: Fleiss' kappa against a textbook example, pairwise Cohen's kappa, the
majority vote against hand-computed votes (ties and thin votes listed), grouping of added columns."""
from __future__ import annotations

import math

import numpy as np
import pytest

from labelling.agreement import counts_table, fleiss_kappa, pairwise_cohen
from labelling.consensus import group_added_sites, majority_vote
from labelling.db import NO_COLUMN

# Wikipedia, "Fleiss' kappa", worked example: 10 subjects, 14 raters, 5 categories.
# Published: p_j = 0.143 0.200 0.279 0.150 0.229, P = 0.378, P_e = 0.213, kappa = 0.210.
WIKIPEDIA_TABLE = np.array([
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
])


def test_fleiss_kappa_textbook_example():
    assert round(fleiss_kappa(WIKIPEDIA_TABLE), 3) == 0.210
    assert fleiss_kappa(WIKIPEDIA_TABLE) == pytest.approx(0.2099307, abs=1e-6)


def test_fleiss_kappa_equals_scott_pi_for_two_raters():
    # two raters, 3 categories; Scott's pi by hand: observed agreement 7/10; pooled marginals
    a = [0, 0, 1, 1, 2, 2, 0, 1, 2, 0]
    b = [0, 0, 1, 2, 2, 2, 1, 1, 0, 0]
    table = counts_table([{"a": x, "b": y} for x, y in zip(a, b)], (0, 1, 2))
    pooled = np.bincount(a + b, minlength=3) / 20  # 0.4, 0.3, 0.3
    p_e = float((pooled ** 2).sum())
    assert fleiss_kappa(table) == pytest.approx((0.7 - p_e) / (1 - p_e))


def test_fleiss_kappa_properties():
    assert fleiss_kappa([[3, 0], [0, 3], [3, 0]]) == pytest.approx(1.0)
    assert math.isnan(fleiss_kappa([[3, 0], [3, 0]]))  # one category only: agreement is undefined
    assert math.isnan(fleiss_kappa(np.zeros((0, 5))))
    # a subject rated once carries no agreement information and is ignored
    with_single = np.vstack([WIKIPEDIA_TABLE, [[0, 1, 0, 0, 0]]])
    p_j_changes = fleiss_kappa(with_single)
    assert p_j_changes == pytest.approx(fleiss_kappa(WIKIPEDIA_TABLE))
    # unequal numbers of raters: repeating the table leaves kappa unchanged
    assert fleiss_kappa(np.vstack([WIKIPEDIA_TABLE, WIKIPEDIA_TABLE[:, ::-1] // 2])) == pytest.approx(
        fleiss_kappa(np.vstack([WIKIPEDIA_TABLE, WIKIPEDIA_TABLE[:, ::-1] // 2] * 2)))
    # worse than chance is negative
    assert fleiss_kappa([[1, 1], [1, 1], [1, 1]]) < 0


def test_fleiss_kappa_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        fleiss_kappa([1, 2, 3])
    with pytest.raises(ValueError, match="non-negative integers"):
        fleiss_kappa([[1.5, 2]])
    with pytest.raises(ValueError, match="non-negative integers"):
        fleiss_kappa([[-1, 2]])


def test_pairwise_cohen_matches_sklearn_on_shared_sites():
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(7)
    truth = rng.integers(0, 5, 60)
    votes = []
    for i, t in enumerate(truth):
        v = {}
        for name, err in (("alice", 0.1), ("bob", 0.3), ("carol", 0.5)):
            if name == "carol" and i % 4 == 0:
                continue  # carol skipped a quarter of the sites
            v[name] = int(t) if rng.random() > err else int(rng.integers(-1, 5))
        votes.append(v)
    pairs = {(p["a"], p["b"]): p for p in pairwise_cohen(votes, (-1, 0, 1, 2, 3, 4))}
    assert set(pairs) == {("alice", "bob"), ("alice", "carol"), ("bob", "carol")}
    shared = [v for v in votes if "carol" in v]
    assert pairs[("alice", "carol")]["n"] == len(shared) == 45
    expected = cohen_kappa_score([v["alice"] for v in shared], [v["carol"] for v in shared])
    assert pairs[("alice", "carol")]["kappa"] == pytest.approx(expected)
    assert pairs[("alice", "bob")]["kappa"] > pairs[("bob", "carol")]["kappa"]  # fewer errors, more agreement
    same = pairwise_cohen([{"a": 1, "b": 1}] * 5, (0, 1))
    assert math.isnan(same[0]["kappa"])  # both always said the same class: kappa is undefined


# Hand-computed votes (three annotators unless stated) and the expected outcome.
HAND_VOTES = [
    ({"a": 0, "b": 0, "c": 0}, "consensus", 0, []),
    ({"a": 1, "b": 1, "c": 0}, "consensus", 1, []),
    ({"a": 4, "b": 3, "c": 4}, "consensus", 4, []),
    ({"a": 0, "b": 1, "c": 2}, "tie", None, [0, 1, 2]),                   # three different classes
    ({"a": 3, "b": 4}, "too_few_votes", None, []),                        # only two votes
    ({"a": NO_COLUMN, "b": NO_COLUMN, "c": 0}, "no_column", NO_COLUMN, []),
    ({"a": 2, "b": NO_COLUMN, "c": 2, "d": NO_COLUMN}, "tie", None, [NO_COLUMN, 2]),  # 2 against 2
    ({"a": 2, "b": 2, "c": 1, "d": 0}, "consensus", 2, []),               # plurality, not absolute majority
    ({}, "too_few_votes", None, []),
]


@pytest.mark.parametrize("votes,status,label,tied", HAND_VOTES)
def test_majority_vote_hand_computed(votes, status, label, tied):
    out = majority_vote(votes, min_votes=3)
    assert (out["status"], out["label"], out["tied"]) == (status, label, tied)
    assert out["n_votes"] == len(votes)


def test_majority_vote_absolute_rule_and_min_votes():
    assert majority_vote({"a": 2, "b": 2, "c": 1, "d": 0}, rule="absolute")["status"] == "no_majority"
    assert majority_vote({"a": 2, "b": 2, "c": 1}, rule="absolute")["label"] == 2
    assert majority_vote({"a": 3, "b": 4}, min_votes=2)["status"] == "tie"
    assert majority_vote({"a": 3}, min_votes=1)["label"] == 3
    with pytest.raises(ValueError, match="rule"):
        majority_vote({"a": 1}, rule="mode")
    with pytest.raises(ValueError, match="min_votes"):
        majority_vote({"a": 1}, min_votes=0)


def test_group_added_sites_joins_different_authors_only():
    xy = np.array([[10.0, 10.0], [10.5, 10.2], [10.3, 9.9], [40.0, 40.0], [40.2, 40.1]])
    author = np.array(["alice", "bob", "carol", "alice", "alice"])
    g = group_added_sites(xy, author, tolerance_px=1.5)
    assert g[0] == g[1] == g[2]
    assert g[3] != g[4]  # the same author twice is two columns
    assert len(set(g)) == 3
    assert group_added_sites(np.zeros((0, 2)), np.array([]), 1.0).shape == (0,)
