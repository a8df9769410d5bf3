"""The labelling server and database without a browser: projects, images, labels, undo, blind labelling, bad
requests, tokens; and a real server process: two annotators writing at once, SIGKILL and restart."""
from __future__ import annotations

import json
import re
import sqlite3
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient

from labelling import db
from labelling.__main__ import main as labelling_main
from labelling.project import add_image, create_project, display_image
from labelling.server import LOOPBACK_HOSTS, MAX_JSON_BYTES, create_app
from tests.labelling_fixtures import Server, http, password_for, read_truth, render_field


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    return render_field(tmp_path_factory.mktemp("field") / "wse2_cr")


@pytest.fixture
def project(tmp_path, field):
    p = create_project(tmp_path / "proj")
    add_image(p, field / "image.npy", name="field")
    return p


def client_for(project, **kw) -> TestClient:
    return TestClient(create_app(project.root, **kw))


def login(client, name) -> dict:
    r = client.post("/api/login", json={"name": name, "password": password_for(name)})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def table_counts(project) -> dict:
    con = sqlite3.connect(project.db_path)
    try:
        return {t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("labels", "events", "sites", "images", "finished")}
    finally:
        con.close()


def test_add_image_cli_context_from_file_and_clear_errors(tmp_path, field, capsys):
    proj = tmp_path / "p"
    assert labelling_main(["add", "--project", str(proj), str(field / "image.npy"), "--name", "f1"]) == 0
    assert "candidate sites from column finder" in capsys.readouterr().out
    con = db.connect(proj / db.DB_NAME)
    img = dict(con.execute("SELECT * FROM images").fetchone())
    assert (img["host"], img["dopant"], img["beam_energy_kev"], img["detector"]) == ("WSe2", "Cr", 60, "MAADF")
    assert img["lattice_constant_px"] == pytest.approx(13.0, rel=0.02)
    truth_xy, _ = read_truth(field)
    n_sites = con.execute("SELECT COUNT(*) FROM sites").fetchone()[0]
    assert abs(n_sites - len(truth_xy)) <= 3
    from PIL import Image

    png = np.asarray(Image.open(proj / "images" / "f1" / "display.png"))
    assert png.shape == (img["height"], img["width"]) and png.dtype == np.uint8 and png.max() == 255

    def err(args):
        assert labelling_main(["add", "--project", str(proj), *args]) == 2
        return capsys.readouterr().err

    assert "already in" in err([str(field / "image.npy"), "--name", "f1"])
    assert "does not exist" in err([str(tmp_path / "none.npy")])
    assert "not in the catalog" in err([str(field / "image.npy"), "--name", "f2", "--host", "XyZ2"])
    assert "unsupported detector" in err([str(field / "image.npy"), "--name", "f2", "--detector", "BF"])
    assert "use 1-64 letters" in err([str(field / "image.npy"), "--name", "../evil"])
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    assert "missing column(s) ['x_px', 'y_px']" in err([str(field / "image.npy"), "--name", "f2", "--sites", str(bad)])
    bad.write_text("x_px,y_px\n5000,3\n10,10\n20,20\n")
    assert "outside the 112 x 112 image" in err([str(field / "image.npy"), "--name", "f2", "--sites", str(bad)])
    # nothing half-added
    assert con.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 1
    con.close()


def test_add_with_classify_sites_registers_the_model_as_suggestions(tmp_path, field):
    # a classify-style output written from the truth (the model "knows" every class): sites.csv + summary.json
    xy, label = read_truth(field)
    out = tmp_path / "classify"
    out.mkdir()
    probs = np.full((len(label), 5), 0.01)
    probs[np.arange(len(label)), label] = 0.96
    lines = ["x_px,y_px,sublattice,label,class_name," + ",".join(f"p_{n}" for n in ("X2", "VacX", "VacX2", "M", "D"))
             + ",entropy_nats,has_peak,on_border"]
    for (r, c), k, p in zip(xy, label, probs):
        lines.append(f"{c},{r},metal,{k},X,{','.join(map(str, p))},0.2,1,0")
    (out / "sites.csv").write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(json.dumps({"image_shape": [112, 112], "lattice_constant_px": 13.0,
                                                  "model": "runs/x/attn-4k/checkpoints/last.ckpt",
                                                  "pixel_size_angstrom": 0.25}))
    p = create_project(tmp_path / "p")
    res = add_image(p, field / "image.npy", sites_csv=out / "sites.csv", name="f")
    assert res["n_sites"] == len(xy) and res["prediction"]["model"] == "attn-4k"
    assert res["prediction"]["n_matched"] == len(xy)
    client = client_for(p)
    h = login(client, "alice")
    img = client.get("/api/images", headers=h).json()["images"][0]
    assert img["models"] == ["attn-4k"]
    sug = client.get(f"/api/images/{img['id']}/suggestions", headers=h).json()["suggestions"]
    sites = client.get(f"/api/images/{img['id']}/sites", headers=h).json()["sites"]
    by_pos = {(round(s["x"], 3), round(s["y"], 3)): s["id"] for s in sites}
    for (r, c), k in zip(xy, label):
        assert sug[str(by_pos[(round(c, 3), round(r, 3))])]["label"] == k
    assert (p.root / "predictions" / "attn-4k" / "f" / "sites.csv").is_file()
    # a wrong-shape classify output is refused
    (out / "summary.json").write_text(json.dumps({"image_shape": [50, 50], "model": "m.ckpt"}))
    from contract.errors import InputError

    with pytest.raises(InputError, match="made for an image of shape"):
        add_image(p, field / "image.npy", sites_csv=out / "sites.csv", name="g")


def test_label_relabel_clear_undo_add_and_progress(project):
    client = client_for(project)
    h = login(client, "alice")
    img = client.get("/api/images", headers=h).json()["images"][0]
    iid, total = img["id"], img["progress"]["total"]
    assert img["progress"] == {"labelled": 0, "total": total} and total > 100
    assert img["patch_half_width_px"] == pytest.approx(3 ** 0.5 * img["lattice_constant_px"] / 2)
    sites = client.get(f"/api/images/{iid}/sites", headers=h).json()["sites"]
    s1, s2 = sites[0]["id"], sites[1]["id"]
    r = client.put(f"/api/images/{iid}/sites/{s1}/label", json={"label": 3}, headers=h).json()
    assert r["previous"] is None and r["progress"]["labelled"] == 1
    r = client.put(f"/api/images/{iid}/sites/{s1}/label", json={"label": 4}, headers=h).json()
    assert r["previous"] == 3
    client.put(f"/api/images/{iid}/sites/{s2}/label", json={"label": db.NO_COLUMN}, headers=h)
    # a missing column, far from every site (a hollow of the honeycomb)
    xy = np.array([[s["x"], s["y"]] for s in sites])
    grid = np.stack(np.meshgrid(np.arange(20, 90, 0.5), np.arange(20, 90, 0.5)), -1).reshape(-1, 2)
    far = grid[np.argmax(np.min(np.hypot(*(grid[:, None] - xy[None]).transpose(2, 0, 1)), axis=1))]
    r = client.post(f"/api/images/{iid}/sites", json={"x_px": far[0], "y_px": far[1], "label": 0}, headers=h)
    assert r.status_code == 200, r.text
    new = r.json()["site"]["id"]
    assert r.json()["progress"] == {"labelled": 3, "total": total + 1}
    # undo, newest first: the added column, then 'no column', then 3 -> 4 back to 3
    u = client.post(f"/api/images/{iid}/undo", headers=h).json()
    assert (u["site_id"], u["undone"], u["progress"]["total"]) == (new, "add", total)
    u = client.post(f"/api/images/{iid}/undo", headers=h).json()
    assert (u["site_id"], u["label"]) == (s2, None)
    u = client.post(f"/api/images/{iid}/undo", headers=h).json()
    assert (u["site_id"], u["label"]) == (s1, 3)
    u = client.post(f"/api/images/{iid}/undo", headers=h).json()
    assert (u["site_id"], u["label"]) == (s1, None)
    r = client.post(f"/api/images/{iid}/undo", headers=h)
    assert r.status_code == 409 and "nothing to undo" in r.json()["error"]
    # clearing is logged too; the log keeps every change with its time
    client.put(f"/api/images/{iid}/sites/{s1}/label", json={"label": 0}, headers=h)
    assert client.delete(f"/api/images/{iid}/sites/{s1}/label", headers=h).json()["previous"] == 0
    con = db.connect(project.db_path)
    actions = [r["action"] for r in con.execute("SELECT action FROM events ORDER BY id")]
    assert actions == ["label", "label", "label", "add", "undo", "undo", "undo", "undo", "label", "label"]
    assert all(re.match(r"\d{4}-\d\d-\d\dT", r["at"]) for r in con.execute("SELECT at FROM events"))
    assert con.execute("SELECT COUNT(*) FROM labels").fetchone()[0] == 0
    con.close()
    # the patch order is a permutation, the same on every call
    o1 = client.get(f"/api/images/{iid}/patch-order", headers=h).json()["order"]
    assert sorted(o1) == sorted(s["id"] for s in sites) and o1 != sorted(o1)
    assert client.get(f"/api/images/{iid}/patch-order", headers=h).json()["order"] == o1


def test_blind_labelling_suggestions_and_finishing(project, tmp_path, field):
    client = client_for(project)
    ha, hb = login(client, "alice"), login(client, "bob")
    iid = client.get("/api/images", headers=ha).json()["images"][0]["id"]
    sites = client.get(f"/api/images/{iid}/sites", headers=ha).json()["sites"]
    for s in sites:
        assert client.put(f"/api/images/{iid}/sites/{s['id']}/label", json={"label": 0}, headers=ha).status_code == 200
    # bob sees none of alice's labels, nor her added columns, and cannot ask for them
    client.post(f"/api/images/{iid}/sites", json={"x_px": 1.0, "y_px": 1.0}, headers=ha)
    bob_sites = client.get(f"/api/images/{iid}/sites", headers=hb).json()
    assert all(s["label"] is None for s in bob_sites["sites"]) and len(bob_sites["sites"]) == len(sites)
    assert client.get(f"/api/images/{iid}/others", headers=hb).status_code == 403
    assert client.get(f"/api/images/{iid}/suggestions", headers=hb).status_code == 404  # no model yet
    # finishing needs every site labelled unless forced
    r = client.post(f"/api/images/{iid}/finish", headers=ha)
    assert r.status_code == 409 and "not labelled yet" in r.json()["error"]  # her added column is unlabelled
    assert client.post(f"/api/images/{iid}/finish", json={"force": True}, headers=ha).json()["finished"]
    assert client.post(f"/api/images/{iid}/finish", headers=hb).status_code == 409
    client.put(f"/api/images/{iid}/sites/{sites[0]['id']}/label", json={"label": 2}, headers=hb)
    client.post(f"/api/images/{iid}/finish", json={"force": True}, headers=hb)
    others = client.get(f"/api/images/{iid}/others", headers=hb).json()
    assert others["annotators"] == ["alice"] and len(others["votes"]) == len(sites)
    assert others["votes"][str(sites[0]["id"])] == {"alice": 0}
    assert others["added"] == [{"x": 1.0, "y": 1.0, "author": "alice", "label": None}]
    # suggestions: shown on request and recorded (before or after finishing)
    from labelling.project import register_prediction

    pred = tmp_path / "pred"
    pred.mkdir()
    xy, label = read_truth(field)
    (pred / "sites.csv").write_text("x_px,y_px,label\n" + "".join(f"{c},{r},{k}\n" for (r, c), k in zip(xy, label)))
    (pred / "summary.json").write_text(json.dumps({"image_shape": [112, 112]}))
    register_prediction(project, "field", "m1", pred)
    hc = login(client, "carol")
    sug = client.get(f"/api/images/{iid}/suggestions", headers=hc).json()
    assert sug["model"] == "m1" and len(sug["suggestions"]) >= len(sites) - 3
    assert client.get(f"/api/images/{iid}/suggestions?model=zz", headers=hc).status_code == 404
    client.get(f"/api/images/{iid}/suggestions", headers=hb)
    con = db.connect(project.db_path)
    seen = {r["name"]: r["finished_before"] for r in con.execute(
        "SELECT an.name, ss.finished_before FROM suggestions_seen ss JOIN annotators an ON an.id = ss.annotator_id")}
    assert seen == {"carol": 0, "bob": 1}
    con.close()


def test_bad_requests_are_clear_4xx_and_change_nothing(project, tmp_path):
    client = client_for(project, max_upload_bytes=4096)
    h = login(client, "alice")
    iid = client.get("/api/images", headers=h).json()["images"][0]["id"]
    sid = client.get(f"/api/images/{iid}/sites", headers=h).json()["sites"][0]["id"]
    hb = login(client, "bob")
    bob_site = client.post(f"/api/images/{iid}/sites", json={"x_px": 2.0, "y_px": 2.0}, headers=hb).json()["site"]["id"]
    before = table_counts(project)
    url = f"/api/images/{iid}/sites/{sid}/label"
    cases = [
        ("PUT", f"/api/images/999/sites/{sid}/label", {"json": {"label": 1}}, 404, "image 999 does not exist"),
        ("PUT", f"/api/images/{iid}/sites/99999/label", {"json": {"label": 1}}, 404, "site 99999 does not exist"),
        ("PUT", f"/api/images/{iid}/sites/{bob_site}/label", {"json": {"label": 1}}, 404, "does not exist"),
        ("PUT", url, {"json": {"label": 5}}, 422, "label: Input should be less than or equal to 4"),
        ("PUT", url, {"json": {"label": -2}}, 422, "greater than or equal to -1"),
        ("PUT", url, {"json": {"label": "3"}}, 422, "valid integer"),
        ("PUT", url, {"json": {"label": True}}, 422, "valid integer"),
        ("PUT", url, {"json": {"label": 1, "extra": 2}}, 422, "extra"),
        ("PUT", url, {"json": {}}, 422, "label: Field required"),
        ("PUT", url, {"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 422, "JSON"),
        ("PUT", url, {"content": b"x" * (MAX_JSON_BYTES + 1), "headers": {"Content-Type": "application/json"}},
         413, "over the limit"),
        ("PUT", "/api/images/abc/sites/1/label", {"json": {"label": 1}}, 422, "image_id"),
        ("POST", f"/api/images/{iid}/sites", {"json": {"x_px": 500, "y_px": 3}}, 422, "outside the 112 x 112"),
        ("POST", f"/api/images/{iid}/sites", {"json": {"x_px": "nan", "y_px": 3}}, 422, "x_px"),
        ("POST", "/api/images/upload?filename=a.npy", {"content": b"\0" * 5000}, 413, "over the limit of 4096"),
        ("POST", "/api/images/upload?filename=a.exe", {"content": b"MZ"}, 415, "unsupported format"),
        ("POST", "/api/images/upload?filename=a.npy", {"content": b"garbage"}, 422, "a.npy"),
        ("POST", "/api/images/upload?filename=a.npy", {"content": b""}, 400, "empty upload"),
        ("GET", f"/api/images/{iid}/nothing", {}, 404, "Not Found"),
    ]
    for method, path, kw, status, message in cases:
        headers = {**h, **kw.pop("headers", {})}
        r = client.request(method, path, headers=headers, **kw)
        assert r.status_code == status, (path, kw, r.text)
        assert r.headers["content-type"].startswith("application/json")
        assert message in r.json()["error"], (path, r.json())
    # a site too close to an existing one, and the tokens
    site = client.get(f"/api/images/{iid}/sites", headers=h).json()["sites"][0]
    r = client.post(f"/api/images/{iid}/sites", json={"x_px": site["x"] + 0.5, "y_px": site["y"]}, headers=h)
    assert r.status_code == 409 and "already there" in r.json()["error"]
    assert client.get("/api/images").status_code == 401
    assert client.get("/api/images", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.post("/api/login", json={"name": "../x", "password": password_for("x")}).status_code == 422
    assert table_counts(project) == before


def test_remote_serving_needs_tokens_and_host_check(project, capsys):
    client = client_for(project, require_tokens=True)
    r = client.post("/api/login", json={"name": "mallory", "password": password_for("mallory")})
    assert r.status_code == 403 and "open the link" in r.json()["error"]
    assert client.get("/api/config").json()["login_by_name"] is False
    con = db.connect(project.db_path)
    token = db.add_annotator(con, "alice")["token"]
    con.close()
    assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).json() == {"name": "alice"}
    # off the loopback without any annotator: refused before anything listens
    other = project.root.parent / "other"
    create_project(other)
    assert labelling_main(["serve", "--project", str(other), "--host", "0.0.0.0", "--port", "1"]) == 2
    assert "needs per-annotator tokens" in capsys.readouterr().err
    # a Host header other than the loopback names is refused on a loopback server (Starlette's
    # TrustedHostMiddleware: 400 "Invalid host header"), still with the security headers; the loopback names,
    # with or without a port, IPv6 in brackets included, are served
    guarded = TestClient(create_app(project.root, allowed_hosts=list(LOOPBACK_HOSTS)))
    for foreign in ("testserver", "evil.example", "evil.example:8000", "127.0.0.1.evil.example", "[::2]:8000"):
        r = guarded.get("/api/config", headers={"Host": foreign})
        assert r.status_code == 400 and r.text == "Invalid host header", foreign
        assert r.headers["x-frame-options"] == "DENY", foreign
    for local in ("127.0.0.1:8000", "localhost:8000", "localhost", "[::1]:8000"):
        r = guarded.get("/api/config", headers={"Host": local})
        assert r.status_code == 200 and r.json()["no_column"] == db.NO_COLUMN, local
        assert guarded.get("/", headers={"Host": local}).status_code == 200, local
    assert TestClient(create_app(project.root, allowed_hosts=["testserver"])).get("/api/config").status_code == 200
    # the page itself loads nothing from elsewhere
    for name in ("/", "/static/app.js", "/static/app.css"):
        text = client.get(name).text
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), name
    assert labelling_main(["serve", "--project", str(project.root.parent / "missing")]) == 2
    assert "no labelling project there" in capsys.readouterr().err


def test_upload_adds_an_image_with_context(project, field):
    client = client_for(project)
    h = login(client, "alice")
    raw = (field / "image.npy").read_bytes()
    r = client.post("/api/images/upload?filename=up.npy&name=uploaded&host=WSe2&dopant=Cr&energy_kev=80"
                    "&detector=HAADF", content=raw, headers=h)
    assert r.status_code == 200, r.text
    img = r.json()
    assert img["name"] == "uploaded" and img["context"]["beam_energy_kev"] == 80 and img["n_sites"] > 100
    assert [i["name"] for i in client.get("/api/images", headers=h).json()["images"]] == ["field", "uploaded"]


def test_display_image_stretch():
    img = np.linspace(0, 1, 10000).reshape(100, 100)
    d = display_image(img)
    assert d.dtype == np.uint8 and d.min() == 0 and d.max() == 255
    assert display_image(np.ones((20, 20))).max() == 0  # constant: no division by zero


# ------------------------------------------------------------------ a real server process
@pytest.fixture
def server(project):
    srv = Server(project.root).start()
    yield srv
    srv.stop()


def test_two_annotators_writing_at_once_do_not_overwrite_each_other(server, project):
    tokens = {name: http("POST", server.url + "/api/login", {"name": name, "password": password_for(name)})[1]["token"] for name in ("alice", "bob")}
    iid = http("GET", server.url + "/api/images", token=tokens["alice"])[1]["images"][0]["id"]
    sites = [s["id"] for s in http("GET", f"{server.url}/api/images/{iid}/sites", token=tokens["alice"])[1]["sites"]]
    want = {"alice": {s: int(s % 5) for s in sites}, "bob": {s: int((s * 3 + 1) % 5) for s in sites}}
    errors = []

    def worker(name, order):
        for s in order:
            status, body = http("PUT", f"{server.url}/api/images/{iid}/sites/{s}/label",
                                {"label": want[name][s]}, token=tokens[name])
            if status != 200:
                errors.append((name, s, status, body))

    rng = np.random.default_rng(0)
    threads = [threading.Thread(target=worker, args=(name, rng.permutation(sites).tolist()))
               for name in ("alice", "bob") for _ in range(2)]  # two tabs each: the same sites twice, at once
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    con = db.connect(project.db_path)
    got = {}
    for r in con.execute("SELECT an.name, l.site_id, l.label FROM labels l JOIN annotators an ON an.id = l.annotator_id"):
        got.setdefault(r["name"], {})[r["site_id"]] = r["label"]
    assert got == want
    assert con.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 4 * len(sites)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_killed_server_loses_nothing(server, project):
    token = http("POST", server.url + "/api/login", {"name": "alice", "password": password_for("alice")})[1]["token"]
    iid = http("GET", server.url + "/api/images", token=token)[1]["images"][0]["id"]
    sites = http("GET", f"{server.url}/api/images/{iid}/sites", token=token)[1]["sites"]
    for s in sites[:40]:
        assert http("PUT", f"{server.url}/api/images/{iid}/sites/{s['id']}/label", {"label": s["id"] % 5},
                    token=token)[0] == 200
    server.kill()  # SIGKILL right after the last answer: no shutdown, no checkpoint
    again = Server(project.root).start()
    try:
        status, body = http("GET", f"{again.url}/api/images/{iid}/sites", token=token)
        assert status == 200 and body["progress"]["labelled"] == 40
        assert {s["id"]: s["label"] for s in body["sites"] if s["label"] is not None} == \
            {s["id"]: s["id"] % 5 for s in sites[:40]}
        # the undo stack survived as well
        status, u = http("POST", f"{again.url}/api/images/{iid}/undo", token=token)
        assert status == 200 and u["site_id"] == sites[39]["id"] and u["label"] is None
    finally:
        again.stop()


def test_demo_project_uses_the_cached_field_and_is_idempotent(tmp_path, field, capsys):
    # a cached field of the requested size is used as it is (no abTEM here); the second call adds nothing
    import shutil

    cache = tmp_path / "field"
    shutil.copytree(field, cache)
    meta = json.loads((cache / "image.json").read_text())
    (cache / "image.json").write_text(json.dumps({**meta, "size_angstrom": 28.0}))
    args = ["demo", "--project", str(tmp_path / "demo"), "--field", str(cache), "--size-angstrom", "28"]
    assert labelling_main(args) == 0
    first = capsys.readouterr().out
    assert "added with" in first and "cached in" in first
    assert labelling_main(args) == 0
    assert "already there" in capsys.readouterr().out
    con = db.connect(tmp_path / "demo" / db.DB_NAME)
    assert con.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 1
    assert con.execute("SELECT detector FROM images").fetchone()[0] == "MAADF"
    con.close()
