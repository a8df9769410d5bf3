"""Agreement between annotators: Fleiss' kappa (all annotators) and Cohen's kappa (each pair). Pure functions.

Categories are the 5 classes plus "no column" (``labelling.db.NO_COLUMN``): an annotator who deletes a
candidate site disagrees with one who gives it a class.
"""
from __future__ import annotations

from itertools import combinations

import numpy as np


def fleiss_kappa(counts) -> float:
    """Fleiss' kappa of an (N subjects, k categories) table of rating counts.

    ``counts[i, j]``: how many raters put subject i in category j. With the same number of raters n for every
    subject this is Fleiss (1971): P_i = (sum_j n_ij^2 - n) / (n (n - 1)), P = mean P_i,
    p_j = sum_i n_ij / (N n), P_e = sum_j p_j^2, kappa = (P - P_e) / (1 - P_e). Subjects with different numbers
    of raters n_i >= 2 use their own n_i in P_i and p_j = sum_i n_ij / sum_i n_i (the usual generalisation;
    it reduces to Fleiss' formula for constant n). Subjects with fewer than 2 ratings are ignored. NaN when
    there are no subjects or when every rating falls in one category (P_e = 1: agreement is undefined).
    """
    table = np.asarray(counts, dtype=float)
    if table.ndim != 2:
        raise ValueError(f"counts must be a 2-D (subjects, categories) table, got shape {table.shape}")
    if (table < 0).any() or not np.allclose(table, np.round(table)):
        raise ValueError("counts must be non-negative integers")
    n_i = table.sum(axis=1)
    table, n_i = table[n_i >= 2], n_i[n_i >= 2]
    if len(table) == 0:
        return float("nan")
    p_i = ((table ** 2).sum(axis=1) - n_i) / (n_i * (n_i - 1))
    p_j = table.sum(axis=0) / n_i.sum()
    p_e = float((p_j ** 2).sum())
    if p_e >= 1 - 1e-12:
        return float("nan")
    return float((p_i.mean() - p_e) / (1 - p_e))


def counts_table(votes: list[dict], categories) -> np.ndarray:
    """One row per subject: ``votes[i]`` maps rater -> category; returns (N, len(categories)) counts."""
    index = {c: j for j, c in enumerate(categories)}
    table = np.zeros((len(votes), len(categories)), dtype=int)
    for i, v in enumerate(votes):
        for c in v.values():
            table[i, index[c]] += 1
    return table


def pairwise_cohen(votes: list[dict], categories) -> list[dict]:
    """Cohen's kappa (unweighted, ``sklearn.metrics.cohen_kappa_score``) of every pair of raters over the
    subjects both rated. Returns ``[{"a", "b", "n", "kappa"}]`` (kappa NaN when fewer than 2 shared subjects
    or when both gave one and the same category throughout)."""
    from sklearn.metrics import cohen_kappa_score  # deferred: sklearn takes seconds to import (every CLI command)

    raters = sorted({r for v in votes for r in v})
    out = []
    for a, b in combinations(raters, 2):
        pairs = [(v[a], v[b]) for v in votes if a in v and b in v]
        kappa = float("nan")
        if len(pairs) >= 2:
            ya, yb = (np.array(x) for x in zip(*pairs))
            if len(set(ya) | set(yb)) > 1:
                kappa = float(cohen_kappa_score(ya, yb, labels=list(categories)))
        out.append({"a": a, "b": b, "n": len(pairs), "kappa": kappa})
    return out
