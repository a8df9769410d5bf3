"""The project database: SQLite (standard library) in WAL mode, one file ``labelling.sqlite`` per project.

Every change is one short write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``) committed before the request
answers, with ``synchronous=FULL``: a killed server or a closed tab loses nothing that was acknowledged.
A label's key is (annotator, site), so two annotators labelling the same image at the same time never
overwrite each other; concurrent writers wait on SQLite's lock (``busy_timeout``), they are not refused.

Tables (``SCHEMA``): ``annotators`` (name, token, and ``password_hash`` for those who signed up on the page:
scrypt, never the password), ``images`` (file, size, context, lattice constant in px),
``sites`` (candidate columns, and the columns an annotator added: ``added_by``), ``labels`` (the current
class of a site for one annotator: 0-4 as ``contract.classes``, or ``NO_COLUMN`` = -1 for "no column here"),
``events`` (every change with its time and the previous value: the audit log and the undo stack),
``finished`` (an annotator declared an image done: from then on they may see the others' labels),
``predictions`` + ``suggestions`` (model outputs registered for an image and matched to its sites) and
``suggestions_seen`` (who switched the model's suggestions on, and when: the consensus reports it).

This is the one module of the stage that writes SQL (``tests/test_labelling_sql_home.py`` checks it): the server,
the project, the consensus, the report and the command line call the named functions below, one per query job.
Whole-table rows (``images``, ``annotators``) come back as ``sqlite3.Row`` (by column name); the joins of the
consensus and the report come back as the named tuples defined beside their functions.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import secrets
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from contract.classes import N_CLASSES

DB_NAME = "labelling.sqlite"
SCHEMA_VERSION = 2  # 2: annotators.password_hash
NO_COLUMN = -1
"""Label of a candidate site an annotator marked as "no column here" (deleted)."""
LABEL_VALUES = (NO_COLUMN, *range(N_CLASSES))

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS annotators (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, token TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL,
    password_hash TEXT);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, source_path TEXT NOT NULL, file TEXT NOT NULL,
    height INTEGER NOT NULL, width INTEGER NOT NULL, pixel_size_angstrom REAL, pixel_size_source TEXT,
    host TEXT, dopant TEXT, beam_energy_kev INTEGER, detector TEXT,
    lattice_constant_px REAL NOT NULL, sites_source TEXT NOT NULL, added_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sites (
    id INTEGER PRIMARY KEY, image_id INTEGER NOT NULL REFERENCES images(id),
    x_px REAL NOT NULL, y_px REAL NOT NULL, sublattice TEXT,
    added_by INTEGER REFERENCES annotators(id), created_at TEXT NOT NULL, deleted_at TEXT);
CREATE INDEX IF NOT EXISTS sites_image ON sites(image_id);
CREATE TABLE IF NOT EXISTS labels (
    annotator_id INTEGER NOT NULL REFERENCES annotators(id), site_id INTEGER NOT NULL REFERENCES sites(id),
    label INTEGER NOT NULL CHECK (label BETWEEN {NO_COLUMN} AND {N_CLASSES - 1}), updated_at TEXT NOT NULL,
    PRIMARY KEY (annotator_id, site_id));
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, annotator_id INTEGER NOT NULL REFERENCES annotators(id),
    image_id INTEGER NOT NULL REFERENCES images(id), site_id INTEGER REFERENCES sites(id),
    action TEXT NOT NULL, label INTEGER, previous INTEGER, at TEXT NOT NULL, undone INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS events_owner ON events(annotator_id, image_id);
CREATE TABLE IF NOT EXISTS finished (
    annotator_id INTEGER NOT NULL REFERENCES annotators(id), image_id INTEGER NOT NULL REFERENCES images(id),
    at TEXT NOT NULL, PRIMARY KEY (annotator_id, image_id));
CREATE TABLE IF NOT EXISTS predictions (
    image_id INTEGER NOT NULL REFERENCES images(id), model TEXT NOT NULL, dir TEXT NOT NULL,
    added_at TEXT NOT NULL, PRIMARY KEY (image_id, model));
CREATE TABLE IF NOT EXISTS suggestions (
    site_id INTEGER NOT NULL REFERENCES sites(id), model TEXT NOT NULL, label INTEGER NOT NULL,
    probs TEXT, entropy_nats REAL, PRIMARY KEY (site_id, model));
CREATE TABLE IF NOT EXISTS suggestions_seen (
    annotator_id INTEGER NOT NULL REFERENCES annotators(id), image_id INTEGER NOT NULL REFERENCES images(id),
    first_at TEXT NOT NULL, finished_before INTEGER NOT NULL, PRIMARY KEY (annotator_id, image_id));
"""


def now() -> str:
    """UTC time stamp with microseconds (ISO 8601): sorts as text."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit: ``write``), WAL, FULL sync, foreign keys,
    rows as ``sqlite3.Row``. One connection per thread/request; SQLite serialises the writers."""
    con = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)
    con.row_factory = sqlite3.Row
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute("PRAGMA foreign_keys=ON")
    con.execute("PRAGMA busy_timeout=30000")
    return con


def create(path: str | Path) -> None:
    """Create the tables (idempotent) and record the schema version."""
    with contextlib.closing(connect(path)) as con, write(con):
        # statement by statement: executescript() would commit the open transaction first
        for statement in filter(str.strip, SCHEMA.split(";")):
            con.execute(statement)
        columns = {r["name"] for r in con.execute("PRAGMA table_info(annotators)")}
        if "password_hash" not in columns:  # a version-1 project: its annotators keep their link tokens
            con.execute("ALTER TABLE annotators ADD COLUMN password_hash TEXT")
        con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        con.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('created_at', ?)", (now(),))


@contextlib.contextmanager
def write(con: sqlite3.Connection):
    """One write transaction: ``BEGIN IMMEDIATE`` takes the write lock at once (no lock upgrade deadlock
    between two writers that both read first); committed on exit, rolled back on any exception."""
    con.execute("BEGIN IMMEDIATE")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def new_token() -> str:
    """A random URL-safe token of 128 bits (``secrets``)."""
    return secrets.token_urlsafe(16)


SCRYPT = {"n": 2**14, "r": 8, "p": 1}
"""scrypt cost (hashlib): ~16 MiB and some 50 ms per check, so guessing a password through the page is slow."""
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 256


def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt$hash`` (hex) of ``password`` with a fresh 16-byte salt."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **SCRYPT)
    return f"scrypt${SCRYPT['n']}${SCRYPT['r']}${SCRYPT['p']}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored`` (``hash_password``'s form), compared in constant time."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(digest) // 2)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


def annotator_by_name(con: sqlite3.Connection, name: str) -> sqlite3.Row | None:
    """The annotator called ``name`` (a row of ``annotators``), or None."""
    return con.execute("SELECT * FROM annotators WHERE name = ?", (name,)).fetchone()


def add_annotator(con: sqlite3.Connection, name: str) -> sqlite3.Row:
    """The annotator called ``name``, created with a fresh token when new (for ``serve --annotators`` and
    ``annotators --add``: they sign in with the link holding their token, never by name)."""
    row = annotator_by_name(con, name)
    if row is not None:
        return row
    with write(con):
        con.execute("INSERT OR IGNORE INTO annotators(name, token, created_at) VALUES (?, ?, ?)",
                    (name, new_token(), now()))
    return annotator_by_name(con, name)


def sign_up_or_in(con: sqlite3.Connection, name: str, password: str) -> tuple[sqlite3.Row | None, str]:
    """Sign in by name and password on the page: a new name is created with this password (``"created"``); an
    annotator with a password must give it (``"ok"`` or ``"wrong"``); one made on the command line, without a
    password, signs in only with their link (``"link-only"``). Returns (row or None, outcome)."""
    row = annotator_by_name(con, name)
    if row is None:
        hashed = hash_password(password)  # before the write lock: scrypt takes a while
        with write(con):
            cur = con.execute("INSERT OR IGNORE INTO annotators(name, token, created_at, password_hash) "
                              "VALUES (?, ?, ?, ?)", (name, new_token(), now(), hashed))
        row = annotator_by_name(con, name)
        if cur.rowcount == 1:
            return row, "created"
    if row["password_hash"] is None:
        return None, "link-only"
    return (row, "ok") if check_password(password, row["password_hash"]) else (None, "wrong")


def set_label(con: sqlite3.Connection, annotator_id: int, image_id: int, site_id: int, label: int | None,
              action: str = "label") -> int | None:
    """Set (``label`` 0-4 or ``NO_COLUMN``) or clear (``None``) one annotator's label of one site, and log the
    event with the previous value, in one transaction. Returns the previous label (None: unlabelled)."""
    if label is not None and label not in LABEL_VALUES:
        raise ValueError(f"label must be one of {LABEL_VALUES} or None, got {label!r}")
    with write(con):
        prev = con.execute("SELECT label FROM labels WHERE annotator_id = ? AND site_id = ?",
                           (annotator_id, site_id)).fetchone()
        previous = None if prev is None else int(prev["label"])
        t = now()
        _put_label(con, annotator_id, site_id, label, t)
        _log_event(con, annotator_id, image_id, site_id, action, label, previous, t)
    return previous


def _put_label(con: sqlite3.Connection, annotator_id: int, site_id: int, label: int | None, t: str) -> None:
    """Inside a ``write``: set (insert or replace) or, with ``label`` None, clear one annotator's label of a site."""
    if label is None:
        con.execute("DELETE FROM labels WHERE annotator_id = ? AND site_id = ?", (annotator_id, site_id))
    else:
        con.execute("INSERT INTO labels(annotator_id, site_id, label, updated_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(annotator_id, site_id) DO UPDATE SET label = excluded.label, "
                    "updated_at = excluded.updated_at", (annotator_id, site_id, label, t))


def _log_event(con: sqlite3.Connection, annotator_id: int, image_id: int, site_id: int, action: str,
               label: int | None, previous: int | None, t: str) -> None:
    """Inside a ``write``: one row of the audit log (``events``)."""
    con.execute("INSERT INTO events(annotator_id, image_id, site_id, action, label, previous, at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", (annotator_id, image_id, site_id, action, label, previous, t))


def add_site(con: sqlite3.Connection, annotator_id: int, image_id: int, x_px: float, y_px: float,
             label: int | None = None) -> int:
    """A column the annotator found missing (shift-click), with an optional first label; logged. Returns
    the new site id."""
    with write(con):
        t = now()
        cur = con.execute("INSERT INTO sites(image_id, x_px, y_px, sublattice, added_by, created_at) "
                          "VALUES (?, ?, ?, NULL, ?, ?)", (image_id, x_px, y_px, annotator_id, t))
        site_id = int(cur.lastrowid)
        if label is not None:
            _put_label(con, annotator_id, site_id, label, t)
        _log_event(con, annotator_id, image_id, site_id, "add", label, None, t)
    return site_id


def undo(con: sqlite3.Connection, annotator_id: int, image_id: int) -> dict | None:
    """Revert the annotator's latest change on the image that is not yet undone: a label goes back to its
    previous value, an added site is withdrawn (``deleted_at``). Logged as an ``undo`` event. Returns
    ``{"site_id", "label"}`` (the label now in force, None: unlabelled or withdrawn) or None when there is
    nothing to undo."""
    with write(con):
        ev = con.execute("SELECT * FROM events WHERE annotator_id = ? AND image_id = ? AND undone = 0 "
                         "AND action IN ('label', 'add') ORDER BY id DESC LIMIT 1",
                         (annotator_id, image_id)).fetchone()
        if ev is None:
            return None
        t = now()
        site_id, restored = int(ev["site_id"]), ev["previous"]
        if ev["action"] == "add":
            con.execute("UPDATE sites SET deleted_at = ? WHERE id = ?", (t, site_id))
            con.execute("DELETE FROM labels WHERE site_id = ?", (site_id,))
            restored = None
        else:
            _put_label(con, annotator_id, site_id, restored, t)
        con.execute("UPDATE events SET undone = 1 WHERE id = ?", (ev["id"],))
        _log_event(con, annotator_id, image_id, site_id, "undo", restored, ev["label"], t)
    return {"site_id": site_id, "label": restored, "undone": ev["action"]}


def visible_sites(con: sqlite3.Connection, image_id: int, annotator_id: int) -> list[sqlite3.Row]:
    """Sites an annotator labels on an image: every candidate site and the columns they added themselves
    (not withdrawn), with their own label (None: not yet)."""
    return con.execute(
        "SELECT s.id, s.x_px, s.y_px, s.sublattice, s.added_by, l.label FROM sites s "
        "LEFT JOIN labels l ON l.site_id = s.id AND l.annotator_id = ? "
        "WHERE s.image_id = ? AND s.deleted_at IS NULL AND (s.added_by IS NULL OR s.added_by = ?) ORDER BY s.id",
        (annotator_id, image_id, annotator_id)).fetchall()


def progress(con: sqlite3.Connection, image_id: int, annotator_id: int) -> tuple[int, int]:
    """(labelled, total) over the sites the annotator sees on the image."""
    row = con.execute(
        "SELECT COUNT(*) AS total, COUNT(l.label) AS done FROM sites s "
        "LEFT JOIN labels l ON l.site_id = s.id AND l.annotator_id = ? "
        "WHERE s.image_id = ? AND s.deleted_at IS NULL AND (s.added_by IS NULL OR s.added_by = ?)",
        (annotator_id, image_id, annotator_id)).fetchone()
    return int(row["done"]), int(row["total"])


def is_finished(con: sqlite3.Connection, image_id: int, annotator_id: int) -> bool:
    return con.execute("SELECT 1 FROM finished WHERE annotator_id = ? AND image_id = ?",
                       (annotator_id, image_id)).fetchone() is not None


def mark_finished(con: sqlite3.Connection, annotator_id: int, image_id: int) -> None:
    """The annotator declares the image done (idempotent): from then on they may see the others' labels."""
    with write(con):
        con.execute("INSERT OR IGNORE INTO finished(annotator_id, image_id, at) VALUES (?, ?, ?)",
                    (annotator_id, image_id, now()))


def annotator_by_token(con: sqlite3.Connection, token: str) -> sqlite3.Row | None:
    """The annotator holding ``token``, or None."""
    return con.execute("SELECT * FROM annotators WHERE token = ?", (token,)).fetchone()


def annotator_links(con: sqlite3.Connection) -> list[sqlite3.Row]:
    """(name, token) of every annotator, by name: what ``serve`` prints as their links."""
    return con.execute("SELECT name, token FROM annotators ORDER BY name").fetchall()


def image(con: sqlite3.Connection, image_id: int) -> sqlite3.Row | None:
    """The image with this id, or None."""
    return con.execute("SELECT * FROM images WHERE id = ?", (image_id,)).fetchone()


def images(con: sqlite3.Connection) -> list[sqlite3.Row]:
    """Every image of the project, by id."""
    return con.execute("SELECT * FROM images ORDER BY id").fetchall()


def count_images(con: sqlite3.Connection) -> int:
    return con.execute("SELECT COUNT(*) FROM images").fetchone()[0]


def visible_site(con: sqlite3.Connection, image_id: int, site_id: int, annotator_id: int) -> sqlite3.Row | None:
    """One site of the image as the annotator sees it (``visible_sites``: a candidate site or one they added,
    not withdrawn), or None."""
    return con.execute("SELECT * FROM sites WHERE id = ? AND image_id = ? AND deleted_at IS NULL "
                       "AND (added_by IS NULL OR added_by = ?)", (site_id, image_id, annotator_id)).fetchone()


def prediction_models(con: sqlite3.Connection, image_id: int) -> list[str]:
    """Names of the models with predictions registered for the image, sorted."""
    return [r["model"] for r in con.execute("SELECT model FROM predictions WHERE image_id = ? ORDER BY model",
                                            (image_id,))]


def record_suggestions_seen(con: sqlite3.Connection, annotator_id: int, image_id: int) -> None:
    """Record the first time the annotator switched on the model's suggestions for the image, and whether they
    had finished it by then (later uses are not recorded)."""
    with write(con):
        con.execute("INSERT OR IGNORE INTO suggestions_seen(annotator_id, image_id, first_at, finished_before) "
                    "VALUES (?, ?, ?, ?)", (annotator_id, image_id, now(),
                                            int(is_finished(con, image_id, annotator_id))))


def suggestions(con: sqlite3.Connection, image_id: int, model: str) -> list[sqlite3.Row]:
    """The model's suggestions (site_id, model, label, probs as JSON text, entropy_nats) for the image's sites."""
    return con.execute("SELECT g.* FROM suggestions g JOIN sites s ON s.id = g.site_id WHERE s.image_id = ? "
                       "AND g.model = ?", (image_id, model)).fetchall()


def labels_of_others(con: sqlite3.Connection, image_id: int, annotator_id: int) -> list[sqlite3.Row]:
    """(site_id, label, name) of every other annotator's label of the image's candidate sites (not withdrawn)."""
    return con.execute(
        "SELECT l.site_id, l.label, an.name FROM labels l JOIN annotators an ON an.id = l.annotator_id "
        "JOIN sites s ON s.id = l.site_id WHERE s.image_id = ? AND s.deleted_at IS NULL AND s.added_by IS NULL "
        "AND l.annotator_id != ?", (image_id, annotator_id)).fetchall()


def sites_added_by_others(con: sqlite3.Connection, image_id: int, annotator_id: int) -> list[sqlite3.Row]:
    """(x_px, y_px, name, label) of the columns other annotators added to the image (not withdrawn), with their
    author's own label (None: unlabelled), by site id."""
    return con.execute(
        "SELECT s.x_px, s.y_px, an.name, l.label FROM sites s JOIN annotators an ON an.id = s.added_by "
        "LEFT JOIN labels l ON l.site_id = s.id AND l.annotator_id = s.added_by "
        "WHERE s.image_id = ? AND s.deleted_at IS NULL AND s.added_by != ? ORDER BY s.id",
        (image_id, annotator_id)).fetchall()


# ---------------------------------------------------------------- adding images and model predictions
@dataclass(frozen=True)
class NewImage:
    """One micrograph as ``images`` stores it (``project.add_image`` fills it in; its ``id`` comes from SQLite)."""

    name: str
    source_path: str
    file: str
    height: int
    width: int
    pixel_size_angstrom: float | None
    pixel_size_source: str | None
    host: str | None
    dopant: str | None
    beam_energy_kev: int | None
    detector: str | None
    lattice_constant_px: float
    sites_source: str


class NewSite(NamedTuple):
    """A candidate site of a new image: position (px) and sublattice (None: unknown)."""

    x_px: float
    y_px: float
    sublattice: str | None


class SitePosition(NamedTuple):
    id: int
    x_px: float
    y_px: float


class NewSuggestion(NamedTuple):
    """A model's class for one candidate site, with its probabilities (JSON text) and entropy, None if not given."""

    site_id: int
    label: int
    probs_json: str | None
    entropy_nats: float | None


def image_by_name(con: sqlite3.Connection, name: str) -> sqlite3.Row | None:
    """The image called ``name`` (a row of ``images``), or None."""
    return con.execute("SELECT * FROM images WHERE name = ?", (name,)).fetchone()


def add_image(con: sqlite3.Connection, image: NewImage, sites: Iterable[NewSite]) -> int:
    """Insert the image and its candidate sites in one transaction; returns the new image id."""
    with write(con):
        t = now()
        cur = con.execute(
            "INSERT INTO images(name, source_path, file, height, width, pixel_size_angstrom, pixel_size_source, "
            "host, dopant, beam_energy_kev, detector, lattice_constant_px, sites_source, added_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (image.name, image.source_path, image.file, image.height, image.width, image.pixel_size_angstrom,
             image.pixel_size_source, image.host, image.dopant, image.beam_energy_kev, image.detector,
             image.lattice_constant_px, image.sites_source, t))
        image_id = int(cur.lastrowid)
        con.executemany("INSERT INTO sites(image_id, x_px, y_px, sublattice, added_by, created_at) "
                        "VALUES (?, ?, ?, ?, NULL, ?)",
                        [(image_id, float(s.x_px), float(s.y_px), s.sublattice, t) for s in sites])
    return image_id


def candidate_sites(con: sqlite3.Connection, image_id: int) -> list[SitePosition]:
    """The image's candidate sites (not added by an annotator, not withdrawn), by id."""
    return [SitePosition(int(r["id"]), float(r["x_px"]), float(r["y_px"])) for r in con.execute(
        "SELECT id, x_px, y_px FROM sites WHERE image_id = ? AND added_by IS NULL AND deleted_at IS NULL "
        "ORDER BY id", (image_id,))]


def register_prediction(con: sqlite3.Connection, image_id: int, model: str, directory: str,
                        rows: Iterable[NewSuggestion]) -> None:
    """In one transaction: replace the model's suggestions for the image's sites by ``rows`` and record the
    prediction (``directory``: its folder relative to the project), replacing an earlier one of the model."""
    with write(con):
        con.execute("DELETE FROM suggestions WHERE model = ? AND site_id IN (SELECT id FROM sites WHERE "
                    "image_id = ?)", (model, image_id))
        con.executemany("INSERT INTO suggestions(site_id, model, label, probs, entropy_nats) VALUES (?, ?, ?, ?, ?)",
                        [(r.site_id, model, r.label, r.probs_json, r.entropy_nats) for r in rows])
        con.execute("INSERT INTO predictions(image_id, model, dir, added_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(image_id, model) DO UPDATE SET dir = excluded.dir, added_at = excluded.added_at",
                    (image_id, model, directory, now()))


# ---------------------------------------------------------------- consensus and report
class Vote(NamedTuple):
    """One row of ``site_votes``: a site (not withdrawn) with one annotator's label of it, or with None, None when
    nobody labelled it. ``added_by``/``author``: id and name of the annotator who added the site (None: candidate)."""

    site_id: int
    x_px: float
    y_px: float
    added_by: int | None
    author: str | None
    annotator: str | None
    label: int | None


class SuggestionsSeen(NamedTuple):
    annotator_id: int
    image_id: int
    name: str
    first_at: str
    finished_before: bool


class Finished(NamedTuple):
    annotator_id: int
    image_id: int
    name: str
    at: str


class Prediction(NamedTuple):
    """A registered model prediction with what the report needs of its image."""

    model: str
    dir: str
    image_name: str
    detector: str | None
    pixel_size_angstrom: float | None


def site_votes(con: sqlite3.Connection, image_id: int) -> list[Vote]:
    """Every label of every site of the image (sites not withdrawn; unlabelled sites once with no annotator),
    by site id."""
    rows = con.execute(
        "SELECT s.id, s.x_px, s.y_px, s.added_by, ad.name AS author, an.name AS annotator, l.label "
        "FROM sites s LEFT JOIN labels l ON l.site_id = s.id LEFT JOIN annotators an ON an.id = l.annotator_id "
        "LEFT JOIN annotators ad ON ad.id = s.added_by "
        "WHERE s.image_id = ? AND s.deleted_at IS NULL ORDER BY s.id", (image_id,))
    return [Vote(int(r["id"]), float(r["x_px"]), float(r["y_px"]), r["added_by"], r["author"], r["annotator"],
                 None if r["label"] is None else int(r["label"])) for r in rows]


def suggestions_seen(con: sqlite3.Connection) -> list[SuggestionsSeen]:
    """Every first use of the model's suggestions (annotator, image), with the annotator's name."""
    return [SuggestionsSeen(r["annotator_id"], r["image_id"], r["name"], r["first_at"], bool(r["finished_before"]))
            for r in con.execute("SELECT ss.annotator_id, ss.image_id, an.name, ss.first_at, ss.finished_before "
                                 "FROM suggestions_seen ss JOIN annotators an ON an.id = ss.annotator_id "
                                 "ORDER BY ss.annotator_id, ss.image_id")]


def finished(con: sqlite3.Connection) -> list[Finished]:
    """Every (annotator, image) declared done, with the annotator's name."""
    return [Finished(r["annotator_id"], r["image_id"], r["name"], r["at"])
            for r in con.execute("SELECT f.annotator_id, f.image_id, an.name, f.at FROM finished f "
                                 "JOIN annotators an ON an.id = f.annotator_id ORDER BY f.annotator_id, f.image_id")]


def changes_after_finishing(con: sqlite3.Connection) -> dict[tuple[int, str], int]:
    """(image id, annotator name) -> number of changes the annotator made to the image after finishing it (when
    the others' labels may have been seen: no longer blind); pairs without such changes are absent."""
    return {(int(r["image_id"]), r["name"]): int(r["n"]) for r in con.execute(
        "SELECT e.image_id, an.name, COUNT(*) AS n FROM events e JOIN finished f ON f.annotator_id = "
        "e.annotator_id AND f.image_id = e.image_id JOIN annotators an ON an.id = e.annotator_id "
        "WHERE e.at > f.at GROUP BY e.image_id, an.name")}


def predictions(con: sqlite3.Connection) -> list[Prediction]:
    """Every registered prediction, by model and image id."""
    return [Prediction(*r) for r in con.execute(
        "SELECT p.model, p.dir, i.name, i.detector, i.pixel_size_angstrom FROM predictions p "
        "JOIN images i ON i.id = p.image_id ORDER BY p.model, i.id")]


def count_predictions(con: sqlite3.Connection) -> int:
    return con.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
