"""Helpers for the labelling tests: a rendered full field with its truth (no abTEM), a real server in a
subprocess, and a small HTTP client.

The field is rendered with numpy, not simulated: Gaussian columns weighted Z^1.7 on a rotated WSe2 honeycomb
with random dopants (Cr) and single/double Se vacancies, then a DC offset, probe blur, row-wise scan jitter,
Poisson noise and read noise. It is written exactly as ``simulate fullfield`` writes a field (``image.npy`` +
``image.json``, ``truth.csv`` + ``truth.json``), so every reader of real fields reads it.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from scipy import ndimage

from contract.classes import CLASS_IDS, CLASS_NAMES, SUBLATTICES

REPO_ROOT = Path(__file__).resolve().parents[1]
SQRT3 = 3 ** 0.5
FIELD_CONTEXT = {"host": "WSe2", "metal": "W", "chalcogen": "Se", "dopant": "Cr", "beam_energy_kev": 60,
                 "detector": "MAADF"}


def render_field(out_dir, size_px: int = 112, a_px: float = 13.0, angle_deg: float = 17.0, seed: int = 0,
                 fractions=(("D", 0.12), ("VacX", 0.10), ("VacX2", 0.06)), dc_offset: float = 2000.0) -> Path:
    """Write a rendered doped-WSe2 field and its truth into ``out_dir`` (the ``simulate fullfield`` layout)."""
    rng = np.random.default_rng(seed)
    frac = dict(fractions)
    t = np.radians(angle_deg)
    basis = a_px * np.array([[np.sin(t), np.sin(t + np.pi / 3)], [np.cos(t), np.cos(t + np.pi / 3)]])
    n = int(size_px * 1.5 / a_px) + 2
    i, j = np.meshgrid(np.arange(-n, n), np.arange(-n, n), indexing="ij")
    ij = np.c_[i.ravel(), j.ravel()].astype(float)
    centre = np.array([size_px / 2 + 0.37, size_px / 2 - 0.21])
    metal = centre + ij @ basis.T
    chal = centre + (ij + 1 / 3) @ basis.T
    pos = np.concatenate([metal, chal])
    is_metal = np.r_[np.ones(len(metal), bool), np.zeros(len(chal), bool)]
    inside = (pos >= 0).all(axis=1) & (pos <= size_px - 1).all(axis=1)
    pos, is_metal = pos[inside], is_metal[inside]
    u = rng.random(len(pos))
    label = np.where(is_metal, CLASS_IDS["M"], CLASS_IDS["X2"])
    label[is_metal & (u < frac["D"])] = CLASS_IDS["D"]
    label[~is_metal & (u < frac["VacX2"])] = CLASS_IDS["VacX2"]
    label[~is_metal & (u >= frac["VacX2"]) & (u < frac["VacX2"] + frac["VacX"])] = CLASS_IDS["VacX"]
    weight = {CLASS_IDS["M"]: 74.0**1.7, CLASS_IDS["D"]: 24.0**1.7, CLASS_IDS["X2"]: 2 * 34.0**1.7,
              CLASS_IDS["VacX"]: 34.0**1.7, CLASS_IDS["VacX2"]: 0.0}
    w = np.array([weight[c] for c in label])
    img = np.zeros((size_px, size_px))
    r0, c0 = np.floor(pos).astype(int).T
    fr, fc = (pos - np.floor(pos)).T
    for dr, dc, wt in ((0, 0, (1 - fr) * (1 - fc)), (1, 0, fr * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 1, fr * fc)):
        np.add.at(img, (np.minimum(r0 + dr, size_px - 1), np.minimum(c0 + dc, size_px - 1)), w * wt)
    img = ndimage.gaussian_filter(img, a_px / 9) / w.max() * 3000 + 40
    # row-wise scan jitter (up to ~0.3 px), then counting and read noise, then a detector offset
    shifts = rng.normal(0, 0.15, size_px)
    img = np.stack([ndimage.shift(row, s, mode="nearest", order=1) for row, s in zip(img, shifts)])
    img = rng.poisson(img).astype(np.float64) + rng.normal(0, 2.0, img.shape) + dc_offset
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pixel = 3.282 / a_px
    np.save(out / "image.npy", img.astype(np.float32))
    meta = {**FIELD_CONTEXT, "lattice_constant_angstrom": 3.282, "rendered": "tests/labelling_fixtures.py",
            "seed": seed}
    (out / "image.json").write_text(json.dumps({"pixel_size_angstrom": pixel, **meta}, indent=2))
    rows = [{"x_px": float(c), "y_px": float(r), "x_angstrom": float(c) * pixel, "y_angstrom": float(r) * pixel,
             "sublattice": SUBLATTICES[0 if m else 1], "label": int(k), "class_name": CLASS_NAMES[int(k)]}
            for (r, c), m, k in zip(pos, is_metal, label)]
    with open(out / "truth.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    (out / "truth.json").write_text(json.dumps({"pixel_size_angstrom": pixel, **meta, "sites": rows}, indent=1))
    return out


def read_truth(field) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) (row, col) px and (N,) labels of a field's truth.csv."""
    rows = list(csv.DictReader(open(Path(field) / "truth.csv")))
    return (np.array([[float(r["y_px"]), float(r["x_px"])] for r in rows]).reshape(-1, 2),
            np.array([int(r["label"]) for r in rows]))


def password_for(name: str) -> str:
    """The password a test annotator signs up and in with (the page asks for one; a name alone is not enough)."""
    return f"pw-of-{name}-0123"


def login_body(name: str) -> dict:
    return {"name": name, "password": password_for(name)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m labelling serve`` in a subprocess on a free port; ``kill()`` sends SIGKILL."""

    def __init__(self, project, *extra: str):
        self.project, self.extra = Path(project), extra
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self, timeout_s: float = 60.0) -> "Server":
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.log = open(self.project.parent / f"server-{self.port}.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "labelling", "serve", "--project", str(self.project),
                                      "--port", str(self.port), *self.extra], cwd=REPO_ROOT, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: "
                                   + (self.project.parent / f"server-{self.port}.log").read_text())
            try:
                if http("GET", self.url + "/api/health")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not start in time")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        if getattr(self, "log", None):
            self.log.close()


def http(method: str, url: str, body=None, token: str | None = None, raw: bytes | None = None,
         timeout: float = 30.0) -> tuple[int, dict]:
    """One request with the standard library: (status, JSON body)."""
    headers = {}
    data = None
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if raw is not None:
        data, headers["Content-Type"] = raw, "application/octet-stream"
    elif body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as err:
        payload = err.read()
        try:
            return err.code, json.loads(payload)
        except ValueError:
            return err.code, {"raw": payload.decode("latin-1")}
