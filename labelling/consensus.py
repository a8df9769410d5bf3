"""Consensus labels by majority vote, with ties and thin votes listed rather than resolved (paper section 6,
Fig. 6a: three experts, majority voting gives the reference).

``majority_vote`` and ``group_added_sites`` are pure; ``image_votes`` reads one image's votes from the
database; ``run_consensus`` writes, per image, the reference in the format ``python -m inference score --truth``
reads (``truth.csv`` + ``truth.json``, as ``simulate fullfield`` writes them), the sites left unresolved, every
vote, and the agreement between annotators.

Rules
-----
* A site's votes are the labels of the annotators who labelled it (0-4, or "no column").
* Fewer than ``min_votes`` votes (default 3): ``too_few_votes``, listed in ``unresolved.csv``.
* ``rule="plurality"`` (default): the class with the most votes wins when it is the only one with that many;
  otherwise ``tie`` (the tied classes are listed). ``rule="absolute"``: the winner needs more than half of the
  votes; a unique plurality without it is listed as ``no_majority``.
* A winning "no column" drops the candidate site from the reference (``no_column``).
* Changes an annotator made after finishing an image (when the others' labels may have been seen) are counted
  per annotator in ``agreement.json`` (``changes_after_finishing``) and printed by the command line.
* Columns that annotators added themselves are seen only by their author (blind labelling), so the ones that
  several annotators added at the same place (within 0.3 a/√3, the tolerance ``inference score`` matches with)
  are grouped into one site whose votes are their authors' labels.
"""
from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from contract.classes import CLASS_NAMES, SUBLATTICES, sublattice_of_class

from . import db
from .agreement import counts_table, fleiss_kappa, pairwise_cohen
from .project import SITE_MATCH_FRACTION, SQRT3, Project

CATEGORIES = db.LABEL_VALUES  # (-1 no column, 0..4)
RULES = ("plurality", "absolute")
RESOLVED = ("consensus", "no_column")
TRUTH_COLUMNS = ("x_px", "y_px", "x_angstrom", "y_angstrom", "sublattice", "label", "class_name")
"""``simulate fullfield``'s truth.csv columns, in its order (``inference score`` reads them)."""


def label_name(label) -> str:
    """``"VacX"`` for 1, ``"none"`` for "no column", ``""`` for no label."""
    if label is None:
        return ""
    return "none" if int(label) == db.NO_COLUMN else CLASS_NAMES[int(label)]


def majority_vote(votes: dict, min_votes: int = 3, rule: str = "plurality") -> dict:
    """Consensus of one site. ``votes``: annotator -> label (0-4 or ``NO_COLUMN``).

    Returns ``{"status", "label", "n_votes", "n_agree", "tied"}``: status ``consensus`` (label 0-4),
    ``no_column`` (label ``NO_COLUMN``), ``tie`` (``tied``: the classes with the most votes, sorted),
    ``no_majority`` (absolute rule only) or ``too_few_votes``; label None unless resolved.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if int(min_votes) < 1:
        raise ValueError(f"min_votes must be >= 1, got {min_votes!r}")
    n = len(votes)
    out = {"status": "too_few_votes", "label": None, "n_votes": n, "n_agree": 0, "tied": []}
    if n == 0:
        return out
    count = Counter(int(v) for v in votes.values())
    top = max(count.values())
    winners = sorted(c for c, k in count.items() if k == top)
    out["n_agree"] = top
    if n < min_votes:
        return out
    if len(winners) > 1:
        return {**out, "status": "tie", "tied": winners}
    if rule == "absolute" and not top > n / 2:
        return {**out, "status": "no_majority"}
    label = winners[0]
    return {**out, "status": "no_column" if label == db.NO_COLUMN else "consensus", "label": label}


def group_added_sites(xy: np.ndarray, author: np.ndarray, tolerance_px: float) -> np.ndarray:
    """(M, 2) positions of added columns and their (M,) authors -> (M,) group index: columns of different
    authors closer than ``tolerance_px`` (transitively) form one group."""
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    if len(xy) == 0:
        return np.zeros(0, dtype=int)
    pairs = np.array(sorted(cKDTree(xy).query_pairs(tolerance_px)), dtype=int).reshape(-1, 2)
    author = np.asarray(author)
    pairs = pairs[author[pairs[:, 0]] != author[pairs[:, 1]]]
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(xy), len(xy)))
    return connected_components(graph, directed=False)[1]


def image_votes(con, image_id: int) -> list[dict]:
    """Every site of one image with its votes: ``[{"site", "x_px", "y_px", "origin", "votes": {name: label}}]``.
    Candidate sites keep their id; added columns are grouped (``group_added_sites``) and named ``a<id>`` after
    their first member."""
    img = db.image(con, image_id)
    sites: dict[int, dict] = {}
    for v in db.site_votes(con, image_id):
        s = sites.setdefault(v.site_id, {"site": str(v.site_id), "x_px": v.x_px, "y_px": v.y_px, "author": v.author,
                                         "votes": {}})
        if v.annotator is not None and (v.added_by is None or v.annotator == v.author):
            s["votes"][v.annotator] = v.label
    out = [{**s, "origin": "candidate"} for s in sites.values() if s["author"] is None]
    added = [s for s in sites.values() if s["author"] is not None]
    if added:
        tol = SITE_MATCH_FRACTION * float(img["lattice_constant_px"]) / SQRT3
        group = group_added_sites([[s["y_px"], s["x_px"]] for s in added], [s["author"] for s in added], tol)
        for g in np.unique(group):
            members = [s for s, k in zip(added, group) if k == g]
            votes = {}
            for m in members:
                votes.update(m["votes"])
            out.append({"site": "a" + members[0]["site"], "x_px": float(np.mean([m["x_px"] for m in members])),
                        "y_px": float(np.mean([m["y_px"] for m in members])),
                        "origin": "added by " + "+".join(sorted({m["author"] for m in members})), "votes": votes})
    return out


def agreement(site_votes: list[dict]) -> dict:
    """Fleiss' kappa over the sites with >= 2 votes and pairwise Cohen's kappa, with the counts behind them."""
    votes = [s["votes"] for s in site_votes if s["votes"]]
    table = counts_table(votes, CATEGORIES)
    multi = table.sum(axis=1) >= 2
    return {"annotators": sorted({a for v in votes for a in v}), "n_sites_voted": len(votes),
            "n_sites_fleiss": int(multi.sum()), "fleiss_kappa": fleiss_kappa(table),
            "cohen_kappa_pairwise": pairwise_cohen(votes, CATEGORIES)}


def run_consensus(project: Project, out_dir, min_votes: int = 3, rule: str = "plurality") -> dict:
    """Consensus of every image of the project into ``out_dir/<image name>/``: ``truth.csv`` + ``truth.json``
    (the resolved columns, the format ``inference score --truth`` reads), ``unresolved.csv`` (ties, thin
    votes), ``votes.csv`` (every site, every annotator), ``agreement.json``; and ``out_dir/agreement.json``
    over all images. Returns that overall summary."""
    majority_vote({}, min_votes, rule)  # checks the arguments before anything is written
    out_dir = Path(out_dir)
    images_summary, all_votes = [], []
    with project.session() as con:
        images = db.images(con)
        seen = db.suggestions_seen(con)
        finished = db.finished(con)
        late = db.changes_after_finishing(con)  # made when the others' labels may have been seen: not blind
        per_image = [(img, image_votes(con, img["id"])) for img in images]
    for img, site_votes in per_image:
        folder = out_dir / img["name"]
        folder.mkdir(parents=True, exist_ok=True)
        decided = [{**s, **majority_vote(s["votes"], min_votes, rule)} for s in site_votes]
        annotators = sorted({a for s in site_votes for a in s["votes"]})
        _write_truth(folder, img, [d for d in decided if d["status"] == "consensus"], min_votes, rule, annotators)
        _write_unresolved(folder / "unresolved.csv", [d for d in decided if d["status"] not in RESOLVED])
        _write_votes(folder / "votes.csv", decided, annotators)
        status = Counter(d["status"] for d in decided)
        agree = agreement(site_votes)
        summary = {"image": img["name"], "detector": img["detector"], "n_sites": len(decided),
                   "status_counts": {k: status.get(k, 0) for k in ("consensus", "no_column", "tie", "no_majority",
                                                                   "too_few_votes")},
                   "class_counts": {CLASS_NAMES[c]: sum(1 for d in decided if d["label"] == c)
                                    for c in range(len(CLASS_NAMES))},
                   "finished_by": sorted(f.name for f in finished if f.image_id == img["id"]),
                   "changes_after_finishing": {n: k for (i, n), k in sorted(late.items()) if i == img["id"]},
                   "suggestions_seen": [{"annotator": v.name, "first_at": v.first_at,
                                         "before_finishing": not v.finished_before}
                                        for v in seen if v.image_id == img["id"]],
                   **agree}
        (folder / "agreement.json").write_text(json.dumps(summary, indent=2))
        images_summary.append(summary)
        all_votes += site_votes
    overall = {"min_votes": int(min_votes), "rule": rule, "images": images_summary, "overall": agreement(all_votes)}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "agreement.json").write_text(json.dumps(overall, indent=2))
    return overall


def _write_truth(folder: Path, img, rows: list[dict], min_votes: int, rule: str, annotators: list[str]) -> None:
    px = img["pixel_size_angstrom"]
    out = []
    for d in rows:
        x, y, c = d["x_px"], d["y_px"], int(d["label"])
        out.append({"x_px": x, "y_px": y, "x_angstrom": None if px is None else x * px,
                    "y_angstrom": None if px is None else y * px, "sublattice": SUBLATTICES[sublattice_of_class(c)],
                    "label": c, "class_name": CLASS_NAMES[c], "site": d["site"], "n_votes": d["n_votes"],
                    "n_agree": d["n_agree"]})
    with open(folder / "truth.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*TRUTH_COLUMNS, "site", "n_votes", "n_agree"])
        w.writeheader()
        w.writerows(out)
    meta = {"pixel_size_angstrom": px, "host": img["host"], "dopant": img["dopant"],
            "beam_energy_kev": img["beam_energy_kev"], "detector": img["detector"],
            "source": "labelling consensus", "image": img["name"], "annotators": annotators,
            "min_votes": int(min_votes), "rule": rule}
    (folder / "truth.json").write_text(json.dumps({**meta, "sites": out}, indent=1))


def _write_unresolved(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["site", "x_px", "y_px", "origin", "status", "n_votes", "tied", "votes"])
        for d in rows:
            w.writerow([d["site"], f"{d['x_px']:.3f}", f"{d['y_px']:.3f}", d["origin"], d["status"], d["n_votes"],
                        " ".join(label_name(c) for c in d["tied"]),
                        " ".join(f"{a}={label_name(v)}" for a, v in sorted(d["votes"].items()))])


def _write_votes(path: Path, rows: list[dict], annotators: list[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["site", "x_px", "y_px", "origin", *annotators, "status", "consensus"])
        for d in rows:
            w.writerow([d["site"], f"{d['x_px']:.3f}", f"{d['y_px']:.3f}", d["origin"],
                        *[label_name(d["votes"].get(a)) for a in annotators], d["status"], label_name(d["label"])])
