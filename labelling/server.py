"""The labelling web server: FastAPI over the project database, and the page (plain HTML/CSS/JS in ``static/``,
nothing fetched from elsewhere, so it works offline).

Identity: every API call carries ``Authorization: Bearer <token>``, one token per annotator. On a loopback
address an annotator signs in on the page with their name and a password (``POST /api/login``): a new name is
created with the password given (stored as scrypt), a known name needs its password, and an annotator made on the
command line (``--annotators``, ``annotators --add``) has no password and uses their link; a name alone never
hands out anyone's token (any local account can reach a loopback port). Five wrong passwords lock a name for a
minute (429). On any other interface login is refused and each annotator opens the link with their token that
``serve`` prints (``?token=...``).

Every response carries ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer`` (the token link
must not leak) and a Content-Security-Policy that allows only this server's own script, style, images and API.

Blind labelling: ``/sites`` returns only the caller's own labels; the model's classes come only from
``/suggestions`` (each first use is recorded and reported with the consensus); the other annotators' labels come
from ``/others`` only once the caller has finished the image.

Every failure is a JSON ``{"error": "..."}`` with a 4xx status (5xx only for a bug, still without a traceback
page): unknown or impossible image or site id (outside 1..2^63-1) 404, bad body 422 (e.g. a class outside 0-4),
body over the limit 413 (declared or streamed, chunked included), unknown token or wrong password 401, login off
the loopback or by name for a link-only annotator 403, too many wrong passwords 429, conflicts (a column already
there, nothing to undo) 409. The one exception: on a loopback address a ``Host`` header other than the loopback
names (a DNS-rebinding page) gets Starlette's ``TrustedHostMiddleware`` answer, 400 ``Invalid host header`` in
plain text.
"""
from __future__ import annotations

import json
import logging
import math
import socket
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Optional

import numpy as np
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from contract.classes import CLASS_COLOURS, CLASS_DESCRIPTIONS, CLASS_NAMES, N_CLASSES
from contract.errors import InputError, StemError
from contract.patches import patch_half_width

from . import db
from .project import MIN_NEW_SITE_FRACTION, SQRT3, Project, add_image, open_project

STATIC = Path(__file__).resolve().parent / "static"
MAX_JSON_BYTES = 64 * 1024
DEFAULT_MAX_UPLOAD_MB = 200
UPLOAD_SUFFIXES = (".npy", ".tif", ".tiff", ".dm3", ".dm4", ".emd")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
MAX_ID = 2**63 - 1  # SQLite's INTEGER: a larger id cannot exist (and would overflow the driver)
LOGIN_FAILURES_BEFORE_LOCK = 5
LOGIN_LOCK_S = 60.0
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
                           "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"), (b"content-security-policy", CONTENT_SECURITY_POLICY.encode())]
log = logging.getLogger("labelling")


class LabelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: StrictInt = Field(ge=db.NO_COLUMN, le=N_CLASSES - 1,
                             description=f"0-{N_CLASSES - 1} ({', '.join(CLASS_NAMES)}) or -1: no column here")


class NewSiteBody(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    x_px: float
    y_px: float
    label: Optional[StrictInt] = Field(default=None, ge=db.NO_COLUMN, le=N_CLASSES - 1)


class LoginBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._ -]*$")
    password: str = Field(min_length=db.MIN_PASSWORD_CHARS, max_length=db.MAX_PASSWORD_CHARS)


class FinishBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    force: bool = False


class BodySizeLimit:
    """ASGI middleware: a request body over the limit (``Content-Length`` or counted while streaming, as a chunked
    body is) is answered 413; uploads have their own, larger limit. A body found too large while streaming is
    answered at once, the app then sees the client gone, and whatever it answers is dropped."""

    def __init__(self, app, max_json_bytes: int, max_upload_bytes: int):
        self.app, self.max_json, self.max_upload = app, max_json_bytes, max_upload_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.max_upload if scope["path"] == "/api/images/upload" else self.max_json
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > limit
            except ValueError:
                return await _json(send, 400, "Content-Length is not a number")
            if too_big:
                return await _json(send, 413, f"request body of {int(length)} bytes is over the limit of {limit} "
                                              "bytes")
        received = 0
        state = {"started": False, "refused": False}

        async def guarded_send(message):
            if state["refused"]:
                return  # the 413 is already out; the app's own answer (to a vanished client) is dropped
            state["started"] = True
            await send(message)

        async def limited_receive():
            nonlocal received
            if state["refused"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if not state["started"]:
                        await _json(send, 413, f"request body is over the limit of {limit} bytes")
                    state["refused"] = True
                    return {"type": "http.disconnect"}
            return message

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not state["refused"]:
                raise
            log.debug("request refused as too large; the app then failed on the vanished body", exc_info=True)


class SecurityHeaders:
    """ASGI middleware: ``SECURITY_HEADERS`` on every response (the page runs under the CSP: no inline script or
    style, nothing from elsewhere)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []),
                                                  *[(k, v) for k, v in SECURITY_HEADERS if k not in names]]}
            await send(message)

        return await self.app(scope, receive, with_headers)


class LoginThrottle:
    """Wrong passwords per name: after ``LOGIN_FAILURES_BEFORE_LOCK`` the name is locked for ``LOGIN_LOCK_S``."""

    def __init__(self):
        self.failures: dict[str, tuple[int, float]] = {}
        self.lock = threading.Lock()

    def locked_for_s(self, name: str) -> float:
        with self.lock:
            count, until = self.failures.get(name, (0, 0.0))
            return max(0.0, until - time.monotonic()) if count >= LOGIN_FAILURES_BEFORE_LOCK else 0.0

    def failed(self, name: str) -> None:
        with self.lock:
            count, _ = self.failures.get(name, (0, 0.0))
            if count >= LOGIN_FAILURES_BEFORE_LOCK:
                count = 0  # the lock ran out: a fresh round
            self.failures[name] = (count + 1, time.monotonic() + LOGIN_LOCK_S)

    def succeeded(self, name: str) -> None:
        with self.lock:
            self.failures.pop(name, None)


async def _json(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def create_app(project_root, *, require_tokens: bool = False, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB << 20,
               allowed_hosts: list[str] | None = None) -> FastAPI:
    """The web app over the project at ``project_root``. ``require_tokens``: refuse login by name (serving
    beyond the loopback). ``allowed_hosts``: accepted ``Host`` headers (default: any; ``serve`` on a loopback
    address passes the loopback names, which stops DNS-rebinding pages from reaching the API). The routes
    (``page_routes``, ``image_routes``, ``site_routes``, ``blinding_routes``) find the project, these settings
    and the login throttle in ``app.state``."""
    project = open_project(project_root)
    app = FastAPI(title="stem-context labelling", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.project = project
    app.state.require_tokens = require_tokens
    app.state.max_upload_bytes = max_upload_bytes
    app.state.throttle = LoginThrottle()
    app.add_middleware(BodySizeLimit, max_json_bytes=MAX_JSON_BYTES, max_upload_bytes=max_upload_bytes)
    if allowed_hosts:  # any other Host header: 400 "Invalid host header" (plain text, from Starlette)
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts, www_redirect=False)
    app.add_middleware(SecurityHeaders)  # added last: outermost, so the middlewares' own answers carry it too
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected_error)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for routes in (page_routes, image_routes, site_routes, blinding_routes):
        app.include_router(routes)
    return app


# ---------------------------------------------------------------- errors: every one a JSON {"error": ...}
async def http_error(request: Request, exc: StarletteHTTPException):
    return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)


async def validation_error(request: Request, exc: RequestValidationError):
    parts = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
    return JSONResponse({"error": "; ".join(parts) or "malformed request"}, status_code=422)


async def unexpected_error(request: Request, exc: Exception):
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server's log"},
                        status_code=500)


# ---------------------------------------------------------------- what the routes depend on
def connection(request: Request):
    """A database connection for one request (``Depends``: shared by the request's dependencies), closed after."""
    con = request.app.state.project.connect()
    try:
        yield con
    finally:
        con.close()


def annotator(authorization: Optional[str] = Header(default=None), con=Depends(connection)):
    """The caller, from ``Authorization: Bearer <token>`` (401 without one or with an unknown one)."""
    token = (authorization or "").removeprefix("Bearer ").strip()
    if not token:
        raise HTTPException(401, "no token: log in (on this computer) or open your annotator link")
    row = db.annotator_by_token(con, token)
    if row is None:
        raise HTTPException(401, "unknown token: open the link printed by `python -m labelling serve`")
    return row


def image_row(image_id: int, con) -> dict:
    if not 0 < image_id <= MAX_ID:
        raise HTTPException(404, f"image {brief_id(image_id)} does not exist")
    row = db.image(con, image_id)
    if row is None:
        raise HTTPException(404, f"image {image_id} does not exist")
    return dict(row)


def visible_site(con, image_id: int, site_id: int, who) -> dict:
    if not 0 < site_id <= MAX_ID:
        raise HTTPException(404, f"site {brief_id(site_id)} does not exist on image {image_id}")
    row = db.visible_site(con, image_id, site_id, who["id"])
    if row is None:
        raise HTTPException(404, f"site {site_id} does not exist on image {image_id}")
    return dict(row)


def progress(con, image_id: int, who) -> dict:
    done, total = db.progress(con, image_id, who["id"])
    return {"labelled": done, "total": total}


# ---------------------------------------------------------------- page and configuration
page_routes = APIRouter()


@page_routes.get("/", include_in_schema=False)
def index():
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})


@page_routes.get("/api/health")
def health(request: Request):
    return {"ok": True, "project": request.app.state.project.root.name}


@page_routes.get("/api/config")
def config(request: Request):
    state = request.app.state
    return {"classes": [{"label": c, "name": CLASS_NAMES[c], "description": CLASS_DESCRIPTIONS[c],
                         "colour": CLASS_COLOURS[c], "key": str(c)} for c in range(N_CLASSES)],
            "no_column": db.NO_COLUMN, "login_by_name": not state.require_tokens,
            "max_upload_bytes": state.max_upload_bytes, "upload_suffixes": list(UPLOAD_SUFFIXES)}


@page_routes.post("/api/login")
def login(body: LoginBody, request: Request, con=Depends(connection)):
    if request.app.state.require_tokens:
        raise HTTPException(403, "login by name is off on this server (it serves beyond this computer): "
                                 "open the link with your token that `serve` printed")
    throttle: LoginThrottle = request.app.state.throttle
    name = body.name.strip()
    wait_s = throttle.locked_for_s(name)
    if wait_s > 0:
        raise HTTPException(429, f"too many wrong passwords for {name}: try again in {math.ceil(wait_s)} s")
    row, outcome = db.sign_up_or_in(con, name, body.password)
    if outcome == "link-only":
        raise HTTPException(403, f"{name} was added on the command line and signs in with their personal link "
                                 "(`python -m labelling annotators --project DIR` prints it)")
    if outcome == "wrong":
        throttle.failed(name)
        raise HTTPException(401, f"wrong password for {name} (a new name signs up with the password given)")
    throttle.succeeded(name)
    return {"name": row["name"], "token": row["token"], "created": outcome == "created"}


@page_routes.get("/api/me")
def me(who=Depends(annotator)):
    return {"name": who["name"]}


# ---------------------------------------------------------------- images
image_routes = APIRouter()


def image_summary(con, img: dict, who) -> dict:
    models = db.prediction_models(con, img["id"])
    a = float(img["lattice_constant_px"])
    return {"id": img["id"], "name": img["name"], "height": img["height"], "width": img["width"],
            "pixel_size_angstrom": img["pixel_size_angstrom"],
            "context": {k: img[k] for k in ("host", "dopant", "beam_energy_kev", "detector")},
            "lattice_constant_px": a, "nearest_column_px": a / SQRT3,
            "patch_half_width_px": patch_half_width(a), "models": models,
            "finished": db.is_finished(con, img["id"], who["id"]), "progress": progress(con, img["id"], who)}


@image_routes.get("/api/images")
def images(who=Depends(annotator), con=Depends(connection)):
    return {"images": [image_summary(con, dict(r), who) for r in db.images(con)]}


@image_routes.get("/api/images/{image_id}")
def image(image_id: int, who=Depends(annotator), con=Depends(connection)):
    return image_summary(con, image_row(image_id, con), who)


@image_routes.get("/api/images/{image_id}/display.png")
def display(image_id: int, request: Request, who=Depends(annotator), con=Depends(connection)):
    img = image_row(image_id, con)
    path = request.app.state.project.root / "images" / img["name"] / "display.png"
    if not path.is_file():
        raise HTTPException(404, f"display image of {img['name']!r} is missing from the project")
    return FileResponse(path, media_type="image/png")


@image_routes.post("/api/images/upload")
async def upload(request: Request, filename: str = Query(..., max_length=200),
                 name: Optional[str] = Query(None, max_length=64), host: Optional[str] = Query(None, max_length=16),
                 dopant: Optional[str] = Query(None, max_length=4),
                 energy_kev: Optional[float] = Query(None), detector: Optional[str] = Query(None, max_length=16),
                 who=Depends(annotator)):
    suffix = Path(filename).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise HTTPException(415, f"{filename}: unsupported format {suffix!r}; use {', '.join(UPLOAD_SUFFIXES)}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / (Path(filename).stem[:64] + suffix)
        with open(path, "wb") as f:
            async for chunk in request.stream():  # the size limit is enforced by BodySizeLimit
                f.write(chunk)
        if path.stat().st_size == 0:
            raise HTTPException(400, f"{filename}: empty upload")
        try:
            out = await run_in_threadpool(add_image, request.app.state.project, path, name=name, host=host,
                                          dopant=dopant, beam_energy_kev=energy_kev, detector=detector)
        except StemError as err:  # bad or corrupt file, no lattice: the reader's one-line reason
            raise HTTPException(422, str(err)) from None
        except (ValueError, OSError, EOFError) as err:  # a file the readers cannot parse
            raise HTTPException(422, f"cannot read {filename}: {type(err).__name__}: {err}") from None
    return out


# ---------------------------------------------------------------- sites and labels
site_routes = APIRouter()


@site_routes.get("/api/images/{image_id}/sites")
def sites(image_id: int, who=Depends(annotator), con=Depends(connection)):
    image_row(image_id, con)
    rows = db.visible_sites(con, image_id, who["id"])
    return {"sites": [{"id": r["id"], "x": r["x_px"], "y": r["y_px"], "label": r["label"],
                       "added": r["added_by"] is not None} for r in rows],
            "progress": progress(con, image_id, who)}


@site_routes.put("/api/images/{image_id}/sites/{site_id}/label")
def put_label(image_id: int, site_id: int, body: LabelBody, who=Depends(annotator), con=Depends(connection)):
    image_row(image_id, con)
    visible_site(con, image_id, site_id, who)
    previous = db.set_label(con, who["id"], image_id, site_id, body.label)
    return {"site_id": site_id, "label": body.label, "previous": previous, "progress": progress(con, image_id, who)}


@site_routes.delete("/api/images/{image_id}/sites/{site_id}/label")
def clear_label(image_id: int, site_id: int, who=Depends(annotator), con=Depends(connection)):
    image_row(image_id, con)
    visible_site(con, image_id, site_id, who)
    previous = db.set_label(con, who["id"], image_id, site_id, None, action="label")
    return {"site_id": site_id, "label": None, "previous": previous, "progress": progress(con, image_id, who)}


@site_routes.post("/api/images/{image_id}/sites")
def new_site(image_id: int, body: NewSiteBody, who=Depends(annotator), con=Depends(connection)):
    img = image_row(image_id, con)
    if not (-0.5 <= body.x_px <= img["width"] - 0.5 and -0.5 <= body.y_px <= img["height"] - 0.5):
        raise HTTPException(422, f"x_px={body.x_px:g}, y_px={body.y_px:g} lies outside the "
                                 f"{img['width']} x {img['height']} image")
    rows = db.visible_sites(con, image_id, who["id"])
    if rows:
        xy = np.array([[r["x_px"], r["y_px"]] for r in rows])
        d = np.hypot(xy[:, 0] - body.x_px, xy[:, 1] - body.y_px)
        k = int(np.argmin(d))
        if d[k] < MIN_NEW_SITE_FRACTION * img["lattice_constant_px"] / SQRT3:
            raise HTTPException(409, f"site {rows[k]['id']} is already there ({d[k]:.1f} px away): label it "
                                     "instead")
    site_id = db.add_site(con, who["id"], image_id, body.x_px, body.y_px, body.label)
    return {"site": {"id": site_id, "x": body.x_px, "y": body.y_px, "label": body.label, "added": True},
            "progress": progress(con, image_id, who)}


@site_routes.post("/api/images/{image_id}/undo")
def undo(image_id: int, who=Depends(annotator), con=Depends(connection)):
    image_row(image_id, con)
    out = db.undo(con, who["id"], image_id)
    if out is None:
        raise HTTPException(409, "nothing to undo on this image")
    return {**out, "progress": progress(con, image_id, who)}


@site_routes.get("/api/images/{image_id}/patch-order")
def patch_order(image_id: int, who=Depends(annotator), con=Depends(connection)):
    """The caller's sites in a random order that is the same on every reload (seeded by image and
    annotator): the patch-by-patch mode walks it."""
    img = image_row(image_id, con)
    ids = np.array([r["id"] for r in db.visible_sites(con, image_id, who["id"])], dtype=np.int64)
    seed = np.random.SeedSequence([int(img["id"]), zlib.crc32(who["name"].encode()), zlib.crc32(b"patch-order")])
    return {"order": np.random.default_rng(seed).permutation(ids).tolist()}


# ---------------------------------------------------------------- blinding
blinding_routes = APIRouter()


@blinding_routes.get("/api/images/{image_id}/suggestions")
def suggestions(image_id: int, model: Optional[str] = Query(None, max_length=64), who=Depends(annotator),
                con=Depends(connection)):
    image_row(image_id, con)
    models = db.prediction_models(con, image_id)
    if not models:
        raise HTTPException(404, "no model predictions for this image (add one with `python -m labelling "
                                 "predict` or `add --sites`)")
    model = model or models[0]
    if model not in models:
        raise HTTPException(404, f"no predictions of model {model!r} for this image; known: {', '.join(models)}")
    db.record_suggestions_seen(con, who["id"], image_id)
    rows = db.suggestions(con, image_id, model)
    return {"model": model, "models": models,
            "suggestions": {str(r["site_id"]): {"label": r["label"], "entropy_nats": r["entropy_nats"],
                                                "probs": json.loads(r["probs"]) if r["probs"] else None}
                            for r in rows}}


@blinding_routes.post("/api/images/{image_id}/finish")
def finish(image_id: int, body: FinishBody = FinishBody(), who=Depends(annotator), con=Depends(connection)):
    image_row(image_id, con)
    p = progress(con, image_id, who)
    if p["labelled"] < p["total"] and not body.force:
        raise HTTPException(409, f"{p['total'] - p['labelled']} of {p['total']} sites are not labelled yet "
                                 "(finish anyway with force)")
    db.mark_finished(con, who["id"], image_id)
    return {"finished": True, "progress": p}


@blinding_routes.get("/api/images/{image_id}/others")
def others(image_id: int, who=Depends(annotator), con=Depends(connection)):
    image_row(image_id, con)
    if not db.is_finished(con, image_id, who["id"]):
        raise HTTPException(403, "the other annotators' labels are shown once you have finished this image "
                                 "(blind labelling)")
    rows = db.labels_of_others(con, image_id, who["id"])
    added = db.sites_added_by_others(con, image_id, who["id"])
    votes: dict[str, dict] = {}
    for r in rows:
        votes.setdefault(str(r["site_id"]), {})[r["name"]] = r["label"]
    return {"annotators": sorted({r["name"] for r in rows} | {r["name"] for r in added}), "votes": votes,
            "added": [{"x": r["x_px"], "y": r["y_px"], "author": r["name"], "label": r["label"]} for r in added]}


def brief_id(value: int) -> str:
    """An id as a message shows it: a huge one cut to its first digits."""
    text = str(value)
    return text if len(text) <= 20 else text[:20] + "..."


def check_bind(host: str, port: int) -> None:
    """``InputError`` when ``host:port`` cannot be bound (in use, no such address), before uvicorn starts."""
    if not 0 < int(port) < 65536:
        raise InputError(f"--port {port}: must be 1-65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host.strip("[]"), int(port)))
        except OSError as err:
            raise InputError(f"cannot listen on {host}:{port} ({err.strerror}): pick another --port or --host") from None


def serve(project_root, host: str = "127.0.0.1", port: int = 8000, annotators: list[str] = (),
          max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, stream=None) -> None:
    """Check, print the address and the per-annotator links, and run uvicorn until interrupted."""
    stream = stream or sys.stdout
    project: Project = open_project(project_root)
    loopback = is_loopback(host)
    with project.session() as con:
        for name in annotators:
            db.add_annotator(con, name)
        people = db.annotator_links(con)
        n_images = db.count_images(con)
    if not loopback and not people:
        raise InputError(f"serving on {host} (beyond this computer) needs per-annotator tokens: pass "
                         "--annotators NAME,NAME,... (their links are printed here)")
    if not math.isfinite(max_upload_mb) or max_upload_mb <= 0:
        raise InputError(f"--max-upload-mb must be > 0, got {max_upload_mb}")
    check_bind(host, port)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    base = f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}/"
    print(f"labelling {project.root} ({n_images} image(s)) at {base}", file=stream)
    if loopback:
        print("  open it in a browser on this computer and sign in with your name and a password (a new name "
              "chooses its password there); or use a personal link:", file=stream)
    else:
        print(f"  listening on {host}: login by name is off; each annotator opens their own link "
              f"(replace {shown} by this machine's address):", file=stream)
    for p in people:
        print(f"  {p['name']}: {base}?token={p['token']}", file=stream)
    print("  Ctrl-C stops the server (every label is already saved).", file=stream, flush=True)
    app = create_app(project.root, require_tokens=not loopback, max_upload_bytes=int(max_upload_mb * (1 << 20)),
                     allowed_hosts=[*LOOPBACK_HOSTS, host] if loopback else None)
    uvicorn.run(app, host=host.strip("[]"), port=int(port), log_level="warning")
