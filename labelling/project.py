"""A labelling project on disk, and adding micrographs, candidate sites and model predictions to it.

Layout of a project directory::

    DIR/labelling.sqlite                  the database (``labelling.db``)
    DIR/images/<name>/<original file>     a copy of the micrograph as given (and its .json beside an .npy)
    DIR/images/<name>/display.png         8-bit greyscale for the page (0.5-99.5 percentile stretch)
    DIR/predictions/<model>/<name>/       a copy of ``inference classify``'s sites.csv + summary.json

Candidate sites come from ``inference classify``'s ``sites.csv`` (the model's classes become suggestions,
shown only on request) or from the column finder alone (``inference.classify.locate_sites``).
"""
from __future__ import annotations

import contextlib
import csv
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.spatial import cKDTree

from contract.catalog import load_catalog
from contract.classes import CLASS_NAMES, SUBLATTICES
from contract.context import CONTEXT_FIELDS, FrameContext
from contract.errors import InputError
from contract.images import load_image
from inference.score import match_sites

from . import db

SQRT3 = 3 ** 0.5
DISPLAY_PERCENTILES = (0.5, 99.5)
SITE_MATCH_FRACTION = 0.3
"""Two positions are the same column when closer than this fraction of the nearest-column distance a/√3 (the
tolerance ``inference score`` matches with)."""
MIN_NEW_SITE_FRACTION = 0.5
"""A new column may not be added closer than this fraction of a/√3 to a site the annotator already sees."""
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Project:
    """A project directory (``root``) and its database file."""

    root: Path

    @property
    def db_path(self) -> Path:
        return self.root / db.DB_NAME

    def exists(self) -> bool:
        return self.db_path.is_file()

    def connect(self):
        return db.connect(self.db_path)

    @contextlib.contextmanager
    def session(self):
        """A connection closed on exit."""
        con = self.connect()
        try:
            yield con
        finally:
            con.close()


def create_project(root) -> Project:
    """Create (or open) the project at ``root``: directory and tables."""
    project = Project(Path(root))
    project.root.mkdir(parents=True, exist_ok=True)
    db.create(project.db_path)
    return project


def open_project(root) -> Project:
    """An existing project, or ``InputError`` saying how to make one."""
    project = Project(Path(root))
    if not project.exists():
        raise InputError(f"--project {root}: no labelling project there (no {db.DB_NAME}); create one with "
                         f"`python -m labelling add --project {root} IMAGE`")
    db.create(project.db_path)  # brings an older project's tables up to date (CREATE ... IF NOT EXISTS)
    return project


def check_name(name: str, what: str = "name") -> str:
    """A short name usable in a path and a URL (letters, digits, ``._-``), or ``InputError``."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InputError(f"{what} {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter "
                         "or digit")
    return name


def default_name(path: Path) -> str:
    """An image name from a file name: characters other than letters, digits and ``._-`` become ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(path).stem).strip("._-")[:64] or "image"


def display_image(image: np.ndarray) -> np.ndarray:
    """(H, W) float image -> (H, W) uint8 for the page: the 0.5-99.5 percentile range stretched onto 0-255
    (the page's contrast controls work on these levels)."""
    lo, hi = np.percentile(image, DISPLAY_PERCENTILES)
    if not hi > lo:
        lo, hi = float(image.min()), float(image.max())
    scaled = (np.asarray(image, dtype=np.float64) - lo) / max(hi - lo, 1e-30)
    return np.round(np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def lattice_constant_from_sites(xy: np.ndarray) -> float:
    """Lattice constant (px) from (N, 2) site positions of both sublattices: √3 x the median nearest-column
    distance a/√3. ``InputError`` with fewer than 3 sites."""
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    if len(xy) < 3:
        raise InputError(f"only {len(xy)} site(s): need at least 3 to measure the lattice")
    d, _ = cKDTree(xy).query(xy, k=2)
    return float(SQRT3 * np.median(d[:, 1]))


def _check_context(meta: dict) -> dict:
    """Host, dopant, beam energy and detector as given (file or command line), each checked when present by the
    one set of rules (``FrameContext.from_mapping``; the dopant one of the catalog's, or none); missing ones stay
    None (the report groups them under 'unknown'). The dict is what the project's database records."""
    ctx = FrameContext.from_mapping({k: meta.get(k) for k in CONTEXT_FIELDS}, load_catalog(), partial=True,
                                    known_dopants=True)
    return {k: getattr(ctx, k) for k in CONTEXT_FIELDS}


def read_sites_csv(path) -> dict:
    """``inference classify``'s ``sites.csv`` (or any CSV with ``x_px``, ``y_px`` columns) -> dict of arrays:
    ``xy`` (N, 2) (row, col) px, ``sublattice`` (N,) str or None, ``label`` (N,) int or None, ``probs`` (N, 5)
    or None, ``entropy`` (N,) or None. ``InputError`` naming the file and the row for anything unusable."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--sites {path}: file not found")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        missing = [c for c in ("x_px", "y_px") if c not in fields]
        if missing:
            raise InputError(f"--sites {path}: missing column(s) {missing}; expected the sites.csv that "
                             "`python -m inference classify` writes (x_px, y_px, ...)")
        rows = list(reader)
    try:
        xy = np.array([[float(r["y_px"]), float(r["x_px"])] for r in rows], dtype=float).reshape(-1, 2)
    except (TypeError, ValueError) as err:
        raise InputError(f"--sites {path}: a position is not a number ({err})") from None
    if not np.isfinite(xy).all():
        raise InputError(f"--sites {path}: row {int(np.argwhere(~np.isfinite(xy))[0, 0]) + 2} has a non-finite "
                         "position")
    out = {"xy": xy, "sublattice": None, "label": None, "probs": None, "entropy": None}
    if "sublattice" in fields:
        out["sublattice"] = [r["sublattice"] if r["sublattice"] in SUBLATTICES else None for r in rows]
    prob_cols = [f"p_{n}" for n in CLASS_NAMES]
    try:
        if "label" in fields:
            out["label"] = np.array([int(r["label"]) for r in rows], dtype=int)
            if len(rows) and not np.isin(out["label"], range(len(CLASS_NAMES))).all():
                raise InputError(f"--sites {path}: a label outside 0-{len(CLASS_NAMES) - 1}")
        if all(c in fields for c in prob_cols):
            out["probs"] = np.array([[float(r[c]) for c in prob_cols] for r in rows]).reshape(-1, len(CLASS_NAMES))
        if "entropy_nats" in fields:
            out["entropy"] = np.array([float(r["entropy_nats"]) for r in rows])
    except (TypeError, ValueError) as err:
        raise InputError(f"--sites {path}: a label or probability is not a number ({err})") from None
    return out


def find_sites(image: np.ndarray, label: str) -> tuple[dict, float, str]:
    """Candidate sites of an image from the column finder alone (``inference.classify.locate_sites``): the sites
    dict of ``read_sites_csv`` (positions only), the lattice constant (px) and the source's description.
    ``InputError`` naming ``label`` when no lattice is found."""
    from inference.classify import locate_sites  # deferred: inference.classify loads torch (seconds)

    try:
        found = locate_sites(image)
    except ValueError as err:
        raise InputError(f"{label}: the column finder found no lattice ({err}); pass --sites") from None
    sites = {"xy": np.asarray(found.positions, dtype=float).reshape(-1, 2), "label": None, "probs": None,
             "entropy": None, "sublattice": None}
    lattice_px = float(getattr(found, "lattice_constant_px", None) or lattice_constant_from_sites(sites["xy"]))
    return sites, lattice_px, "column finder (inference.classify.locate_sites)"


def add_image(project: Project, image_path, *, sites_csv=None, name: str | None = None, host=None, dopant=None,
              beam_energy_kev=None, detector=None, pixel_size_angstrom=None, model_name: str | None = None) -> dict:
    """Add one micrograph and its candidate sites to the project; returns a summary dict.

    The image is read with ``contract.images.load_image`` (any format inference reads; context and pixel size
    from the file, the keyword arguments override). Candidate sites: ``sites_csv`` (with the model's classes
    as suggestions and the classify output registered as a prediction of ``model_name``, default: from
    ``summary.json``'s checkpoint path) or the column finder. Everything is checked before anything is
    written; the image goes in one transaction with its sites.
    """
    image_path = Path(image_path)
    image, meta = load_image(image_path)
    name = check_name(name or default_name(image_path), "--name")
    overrides = {"host": host, "dopant": dopant, "beam_energy_kev": beam_energy_kev, "detector": detector,
                 "pixel_size_angstrom": pixel_size_angstrom}
    meta = {**meta, **{k: v for k, v in overrides.items() if v is not None}}
    context = _check_context(meta)
    h, w = image.shape
    notes = []
    prediction = None
    if sites_csv is not None:
        sites = read_sites_csv(sites_csv)
        summary_path = Path(sites_csv).with_name("summary.json")
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        if summary.get("image_shape") and list(summary["image_shape"]) != [h, w]:
            raise InputError(f"--sites {sites_csv}: made for an image of shape {summary['image_shape']}, but "
                             f"{image_path.name} is {h} x {w}")
        lattice_px = summary.get("lattice_constant_px") or lattice_constant_from_sites(sites["xy"])
        source = f"sites.csv {Path(sites_csv).resolve()}"
        if sites["label"] is not None:
            model = model_name or model_name_from_checkpoint(summary.get("model")) or "model"
            prediction = (check_name(model, "model name"), Path(sites_csv).parent)
        if meta.get("pixel_size_angstrom") is None and summary.get("pixel_size_angstrom"):
            meta["pixel_size_angstrom"] = summary["pixel_size_angstrom"]
            notes.append(f"pixel size {summary['pixel_size_angstrom']:.5f} Å from {summary_path.name} "
                         f"({summary.get('pixel_size_source', 'classify')})")
    else:
        sites, lattice_px, source = find_sites(image, image_path.name)
    xy = sites["xy"]
    outside = (xy[:, 0] < -0.5) | (xy[:, 0] > h - 0.5) | (xy[:, 1] < -0.5) | (xy[:, 1] > w - 0.5)
    if outside.any():
        raise InputError(f"--sites: {int(outside.sum())} site(s) lie outside the {h} x {w} image, first at "
                         f"x={xy[outside][0, 1]:.1f}, y={xy[outside][0, 0]:.1f} px: is it the right sites.csv?")
    if len(xy) == 0:
        raise InputError(f"{image_path.name}: no candidate sites")
    pixel = meta.get("pixel_size_angstrom")
    pixel_source = "file or option" if pixel is not None else None
    if pixel is None and context["host"] is not None:
        pixel = load_catalog().hosts[context["host"]].lattice_constant_angstrom / lattice_px
        pixel_source = "inferred from the catalog lattice constant"
        notes.append(f"pixel size inferred from the catalog lattice constant: {pixel:.5f} Å")
    missing = [k for k in ("host", "dopant", "beam_energy_kev", "detector") if context[k] is None]
    if missing:
        notes.append(f"unknown {', '.join(missing)} (not in the file, no option): the report groups this image "
                     "under 'unknown'")

    with project.session() as con:
        if db.image_by_name(con, name) is not None:
            raise InputError(f"an image called {name!r} is already in {project.root}; pass --name")
    folder = project.root / "images" / name
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(image_path, folder / image_path.name)
    side = image_path.with_suffix(".json")
    if image_path.suffix.lower() == ".npy" and side.is_file():
        shutil.copy2(side, folder / side.name)
    Image.fromarray(display_image(image)).save(folder / "display.png", optimize=True)
    record = db.NewImage(name=name, source_path=str(image_path.resolve()), file=f"images/{name}/{image_path.name}",
                         height=h, width=w, pixel_size_angstrom=pixel, pixel_size_source=pixel_source,
                         host=context["host"], dopant=context["dopant"], beam_energy_kev=context["beam_energy_kev"],
                         detector=context["detector"], lattice_constant_px=lattice_px, sites_source=source)
    sub = sites["sublattice"] or [None] * len(xy)
    with project.session() as con:
        image_id = db.add_image(con, record, [db.NewSite(float(c), float(r), s) for (r, c), s in zip(xy, sub)])
    out = {"image_id": image_id, "name": name, "n_sites": int(len(xy)), "shape": [h, w],
           "lattice_constant_px": lattice_px, "pixel_size_angstrom": pixel, "context": context,
           "sites_source": source, "notes": notes}
    if prediction is not None:
        out["prediction"] = register_prediction(project, name, prediction[0], prediction[1])
    return out


def model_name_from_checkpoint(ckpt) -> str | None:
    """``runs/demo/mlp-deep/checkpoints/last.ckpt`` -> ``mlp-deep``; other paths -> the file stem."""
    if not ckpt:
        return None
    p = Path(str(ckpt))
    name = p.parent.parent.name if p.parent.name == "checkpoints" and p.parent.parent.name else p.stem
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:64] or None


def register_prediction(project: Project, image_name: str, model: str, classify_dir) -> dict:
    """Copy a classify output (``sites.csv`` + ``summary.json``) into ``predictions/<model>/<image>/``, match its
    sites to the image's candidate sites (within ``SITE_MATCH_FRACTION`` x a/√3) and store the model's classes
    as suggestions. Replaces an earlier prediction of the same model."""
    model = check_name(model, "model name")
    classify_dir = Path(classify_dir)
    for f in ("sites.csv", "summary.json"):
        if not (classify_dir / f).is_file():
            raise InputError(f"{classify_dir}: no {f}; expected an `inference classify --out` directory")
    pred = read_sites_csv(classify_dir / "sites.csv")
    if pred["label"] is None:
        raise InputError(f"{classify_dir / 'sites.csv'}: no label column")
    with project.session() as con:
        img = db.image_by_name(con, image_name)
        if img is None:
            raise InputError(f"no image called {image_name!r} in {project.root}")
        cand = db.candidate_sites(con, img["id"])
    summary = json.loads((classify_dir / "summary.json").read_text())
    if summary.get("image_shape") and list(summary["image_shape"]) != [img["height"], img["width"]]:
        raise InputError(f"{classify_dir}: classified an image of shape {summary['image_shape']}, not "
                         f"{image_name!r} ({img['height']} x {img['width']})")
    dest = project.root / "predictions" / model / image_name
    dest.mkdir(parents=True, exist_ok=True)
    if dest.resolve() != classify_dir.resolve():
        for f in ("sites.csv", "summary.json", "overlay.png"):
            if (classify_dir / f).is_file():
                shutil.copy2(classify_dir / f, dest / f)
    cxy = np.array([[r.y_px, r.x_px] for r in cand], dtype=float).reshape(-1, 2)
    tol = SITE_MATCH_FRACTION * float(img["lattice_constant_px"]) / SQRT3
    match, _ = match_sites(pred["xy"], cxy, tol)  # for each candidate: the prediction at its place
    rows = []
    for i, j in enumerate(match):
        if j >= 0:
            probs = None if pred["probs"] is None else json.dumps([round(float(p), 6) for p in pred["probs"][j]])
            ent = None if pred["entropy"] is None else float(pred["entropy"][j])
            rows.append(db.NewSuggestion(cand[i].id, int(pred["label"][j]), probs, ent))
    with project.session() as con:
        db.register_prediction(con, img["id"], model, str(dest.relative_to(project.root)), rows)
    return {"model": model, "dir": str(dest), "n_matched": len(rows), "n_candidates": len(cand)}


def predict(project: Project, checkpoint, model_name: str | None = None, **classify_options) -> list[dict]:
    """Run ``inference classify`` with ``checkpoint`` on every image of the project (context from the
    project) and register each output as a prediction. Returns one registration dict per image."""
    from inference.classify import run_classify  # deferred: inference.classify loads torch (seconds)

    checkpoint = Path(checkpoint)
    model = check_name(model_name or model_name_from_checkpoint(checkpoint) or "model", "model name")
    with project.session() as con:
        images = db.images(con)
    if not images:
        raise InputError(f"{project.root}: no images yet; add one with `python -m labelling add`")
    out = []
    for img in images:
        dest = project.root / "predictions" / model / img["name"]
        run_classify(project.root / img["file"], checkpoint, dest, host=img["host"], dopant=img["dopant"],
                     beam_energy_kev=img["beam_energy_kev"], detector=img["detector"],
                     pixel_size_angstrom=img["pixel_size_angstrom"], **classify_options)
        out.append({"image": img["name"], **register_prediction(project, img["name"], model, dest)})
    return out
