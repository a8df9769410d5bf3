"""The labelling server under a hostile local user (issue 21, finding 6): per-annotator secrets on the loopback,
404 for impossible ids, 413 for every oversized body (chunked too, on a real uvicorn), security headers, the
catalog check of `add --dopant`, and a seeded HTTP fuzz whose every answer is a clean JSON 4xx (never a 500)."""
from __future__ import annotations

import http.client
import json
import random
import sqlite3

import pytest
from fastapi.testclient import TestClient

from labelling import db
from labelling.__main__ import main as labelling_main
from labelling.project import add_image, create_project, open_project
from labelling.server import CONTENT_SECURITY_POLICY, LOGIN_FAILURES_BEFORE_LOCK, MAX_JSON_BYTES, create_app
from tests.labelling_fixtures import Server, login_body, password_for, render_field

HUGE_IDS = (2**63, 2**64 + 5, 10**30, -1, 0, -(2**70))


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    return render_field(tmp_path_factory.mktemp("field") / "wse2_cr", size_px=64)


@pytest.fixture(scope="module")
def project(tmp_path_factory, field):
    p = create_project(tmp_path_factory.mktemp("proj") / "proj")
    add_image(p, field / "image.npy", name="field")
    return p


@pytest.fixture(scope="module")
def client(project):
    return TestClient(create_app(project.root))


def auth(client, name) -> dict:
    r = client.post("/api/login", json=login_body(name))
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


# ----------------------------------------------------------------------------------------------- identity
def test_a_name_alone_never_hands_out_an_existing_annotators_token(client, project):
    first = client.post("/api/login", json=login_body("alice"))
    assert first.status_code == 200 and first.json()["created"] is True
    token = first.json()["token"]
    # what the issue found: anyone typing "alice" got alice's token
    r = client.post("/api/login", json={"name": "alice"})
    assert r.status_code == 422 and "password" in r.json()["error"]
    r = client.post("/api/login", json={"name": "alice", "password": "not-alices-password"})
    assert r.status_code == 401 and "wrong password for alice" in r.json()["error"] and "token" not in r.json()
    again = client.post("/api/login", json=login_body("alice"))
    assert again.status_code == 200 and again.json() == {"name": "alice", "token": token, "created": False}
    # the password is stored as scrypt, never as given
    con = sqlite3.connect(project.db_path)
    stored = con.execute("SELECT password_hash FROM annotators WHERE name = 'alice'").fetchone()[0]
    con.close()
    assert stored.startswith("scrypt$") and password_for("alice") not in stored


def test_command_line_annotators_sign_in_only_with_their_link(client, project):
    con = db.connect(project.db_path)
    token = db.add_annotator(con, "bob")["token"]
    con.close()
    r = client.post("/api/login", json=login_body("bob"))
    assert r.status_code == 403 and "personal link" in r.json()["error"] and "token" not in r.json()
    assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).json() == {"name": "bob"}


def test_wrong_passwords_lock_the_name_for_a_while(client):
    assert client.post("/api/login", json=login_body("carol")).status_code == 200
    for _ in range(LOGIN_FAILURES_BEFORE_LOCK):
        assert client.post("/api/login", json={"name": "carol", "password": "guess-guess"}).status_code == 401
    r = client.post("/api/login", json=login_body("carol"))  # even the right password waits now
    assert r.status_code == 429 and "too many wrong passwords" in r.json()["error"]
    assert client.post("/api/login", json=login_body("dave")).status_code == 200  # other names are not locked


def test_a_version_1_project_gets_the_password_column(tmp_path):
    root = tmp_path / "old"
    root.mkdir()
    con = sqlite3.connect(root / db.DB_NAME)
    con.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                      "INSERT INTO meta VALUES ('schema_version', '1');"
                      "CREATE TABLE annotators (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, "
                      "token TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL);"
                      "INSERT INTO annotators(name, token, created_at) VALUES ('erin', 'tok-erin', 'then');")
    con.commit()
    con.close()
    project = open_project(root)
    client = TestClient(create_app(project.root))
    assert client.post("/api/login", json=login_body("erin")).status_code == 403  # a link-only annotator now
    assert client.get("/api/me", headers={"Authorization": "Bearer tok-erin"}).json() == {"name": "erin"}
    con = sqlite3.connect(root / db.DB_NAME)
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(db.SCHEMA_VERSION)
    con.close()


# ----------------------------------------------------------------------------------------------- ids, bodies, headers
@pytest.mark.parametrize("bad_id", HUGE_IDS)
def test_impossible_ids_are_404(client, bad_id):
    h = auth(client, "frank")
    for method, path, kw in [
        ("GET", f"/api/images/{bad_id}", {}), ("GET", f"/api/images/{bad_id}/sites", {}),
        ("GET", f"/api/images/{bad_id}/display.png", {}), ("POST", f"/api/images/{bad_id}/undo", {}),
        ("PUT", f"/api/images/1/sites/{bad_id}/label", {"json": {"label": 1}}),
        ("DELETE", f"/api/images/1/sites/{bad_id}/label", {}),
        ("PUT", f"/api/images/{bad_id}/sites/1/label", {"json": {"label": 1}}),
        ("POST", f"/api/images/{bad_id}/finish", {"json": {}}), ("GET", f"/api/images/{bad_id}/others", {}),
    ]:
        r = client.request(method, path, headers=h, **kw)
        assert r.status_code == 404, (method, path, r.status_code, r.text)
        assert "does not exist" in r.json()["error"] and len(r.json()["error"]) < 200


def test_chunked_bodies_over_the_limit_are_413(client):
    h = auth(client, "grace")

    def chunks(total: int, size: int = 8192):
        for _ in range(total // size + 1):
            yield b"{" * size

    r = client.put("/api/images/1/sites/1/label", content=chunks(MAX_JSON_BYTES * 2),
                   headers={**h, "Content-Type": "application/json"})
    assert r.status_code == 413 and "over the limit" in r.json()["error"]
    small = TestClient(create_app(client.app.state.project.root, max_upload_bytes=10_000))
    r = small.post("/api/images/upload?filename=a.npy", content=chunks(50_000), headers=auth(small, "grace"))
    assert r.status_code == 413 and "over the limit of 10000" in r.json()["error"]


def test_chunked_body_over_the_limit_is_413_on_a_real_server(project):
    server = Server(project.root).start()
    try:
        token = json.loads(_raw(server.port, "POST", "/api/login", json.dumps(login_body("heidi")).encode(),
                                chunked=False)[1])["token"]
        status, body, headers = _raw(server.port, "PUT", "/api/images/1/sites/1/label", b"{" * (MAX_JSON_BYTES * 2),
                                     chunked=True, token=token, with_headers=True)
        assert status == 413 and "over the limit" in json.loads(body)["error"]
        assert headers.get("x-content-type-options") == "nosniff"
    finally:
        server.stop()


def _raw(port: int, method: str, path: str, body: bytes, chunked: bool, token: str | None = None,
         with_headers: bool = False):
    """One request with http.client: chunked transfer encoding when asked (no Content-Length)."""
    con = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if chunked:
        con.request(method, path, body=iter([body[i:i + 4096] for i in range(0, len(body), 4096)]),
                    headers=headers, encode_chunked=True)
    else:
        con.request(method, path, body=body, headers=headers)
    r = con.getresponse()
    out = (r.status, r.read(), {k.lower(): v for k, v in r.getheaders()})
    con.close()
    return out if with_headers else out[:2]


def test_every_answer_carries_the_security_headers(client):
    h = auth(client, "ivan")
    for method, path, kw in [("GET", "/", {}), ("GET", "/static/app.js", {}), ("GET", "/api/config", {}),
                             ("GET", "/api/images", {"headers": h}), ("GET", "/api/images/99", {"headers": h}),
                             ("GET", "/api/images", {}), ("POST", "/api/login", {"content": b"x" * 100_000})]:
        r = client.request(method, path, **kw)
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
        assert r.headers["referrer-policy"] == "no-referrer" and r.headers["x-frame-options"] == "DENY", path
    # the policy admits what the page needs: its own script and style, blob: images, nothing inline
    page = client.get("/").text
    assert "<script>" not in page and "style=" not in page and "script-src 'self'" in CONTENT_SECURITY_POLICY


def test_add_checks_the_dopant_against_the_catalog(tmp_path, field, capsys):
    assert labelling_main(["add", "--project", str(tmp_path / "p"), str(field / "image.npy"), "--dopant", "Xx"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --dopant 'Xx' is not in the catalog; known dopants: Ti, V,") and err.count("\n") == 1
    assert labelling_main(["add", "--project", str(tmp_path / "p"), str(field / "image.npy"), "--dopant", "W"]) == 2
    assert "not in the catalog" in capsys.readouterr().err
    con = sqlite3.connect(tmp_path / "p" / db.DB_NAME)
    assert con.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 0
    con.close()


# ----------------------------------------------------------------------------------------------- fuzz
def test_http_fuzz_every_answer_is_a_clean_4xx_or_success(client, project):
    """400 seeded random requests: methods, paths with odd ids and segments, junk bodies and headers."""
    rng = random.Random(2026)
    h = auth(client, "judy")
    ids = ["1", "2", "0", "-1", "9" * 30, str(2**63), "1.5", "abc", "%00", "1e3", "", "..", "%2e%2e", " 1"]
    tails = ["", "/sites", "/sites/{s}/label", "/undo", "/finish", "/others", "/suggestions", "/patch-order",
             "/display.png", "/sites/{s}", "/x"]
    bodies = [None, b"", b"{", b"null", b"[]", b'{"label": 1}', b'{"label": 99}', b'{"label": "1"}',
              b'{"x_px": 1e400, "y_px": 1}', b'{"x_px": 3, "y_px": 3, "label": -1}', b'{"force": "yes"}',
              b'{"name": "a", "password": "' + b"p" * 300 + b'"}', b"\xff\xfe", b"{" * 70_000,
              json.dumps({"label": 1, "extra": [1] * 1000}).encode(), b'{"label": 1e308}']
    statuses = set()
    for _ in range(400):
        method = rng.choice(["GET", "PUT", "POST", "DELETE", "PATCH"])
        path = "/api/images/" + rng.choice(ids) + rng.choice(tails).format(s=rng.choice(ids))
        if rng.random() < 0.1:
            path = rng.choice(["/api/login", "/api/me", "/api/config", "/api/images/upload?filename=x.npy",
                               "/api/images/upload?filename=" + "a" * 300, "/static/../db.py", "/%ff"])
        headers = dict(h) if rng.random() < 0.85 else rng.choice([{}, {"Authorization": "Bearer x"},
                                                                   {"Authorization": "Basic " + "A" * 5000}])
        body = rng.choice(bodies)
        if body is not None:
            headers["Content-Type"] = rng.choice(["application/json", "text/plain", "application/octet-stream"])
        r = client.request(method, path, headers=headers, content=body)
        statuses.add(r.status_code)
        assert r.status_code < 500, (method, path, body[:80] if body else body, r.status_code, r.text[:300])
        if r.status_code >= 400 and "application/json" in r.headers.get("content-type", ""):
            assert isinstance(r.json().get("error"), str) and len(r.json()["error"]) < 1000
        assert r.headers["x-content-type-options"] == "nosniff"
    assert {404, 422}.issubset(statuses) and any(s < 300 for s in statuses)
