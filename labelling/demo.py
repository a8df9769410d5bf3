"""The demo project of ``make label``: a small simulated full field (``simulate fullfield``, WSe2 + Cr, 60 keV
MAADF, about 20 s on 2 cores at 20 Å) with its candidate sites from the column finder. The field is cached, so a
second call only checks that the project is there."""
from __future__ import annotations

import json
from pathlib import Path

from . import db
from .project import add_image, create_project, model_name_from_checkpoint, register_prediction

DEMO_FIELD = {"host": "WSe2", "dopant": "Cr", "beam_energy_kev": 60, "detector": "MAADF",
              "fractions": {"D": 0.06, "VacX": 0.06, "VacX2": 0.04}, "rotation_deg": 17.0, "seed": 0}
DEMO_IMAGE_NAME = "wse2-cr-maadf"


def prepare_demo(project_dir="data/label-demo", field_dir="data/label-demo-field", size_angstrom: float = 20.0,
                 model=None) -> dict:
    """Simulate the field unless cached (same size), create the project and add the field unless there.
    ``model``: an optional checkpoint; its classes become the suggestions (``inference classify``)."""
    field = Path(field_dir)
    meta_path = field / "image.json"
    cached = meta_path.is_file() and (field / "image.npy").is_file() and \
        abs(json.loads(meta_path.read_text()).get("size_angstrom", -1) - size_angstrom) < 1e-9
    if not cached:
        from simulate.fullfield import run_fullfield  # deferred: the simulation stack, only when not cached

        print(f"simulating a {size_angstrom:g} Å {DEMO_FIELD['host']}+{DEMO_FIELD['dopant']} "
              f"{DEMO_FIELD['detector']} field into {field} (once; about 20 s at 20 Å on 2 cores)...", flush=True)
        run_fullfield(host=DEMO_FIELD["host"], dopant=DEMO_FIELD["dopant"],
                      beam_energy_kev=DEMO_FIELD["beam_energy_kev"], detector=DEMO_FIELD["detector"],
                      fractions=DEMO_FIELD["fractions"], size_angstrom=size_angstrom,
                      rotation_deg=DEMO_FIELD["rotation_deg"], seed=DEMO_FIELD["seed"], out_dir=field)
    project = create_project(project_dir)
    with project.session() as con:
        present = db.image_by_name(con, DEMO_IMAGE_NAME) is not None
    out = {"project": str(project.root), "field": str(field), "image": DEMO_IMAGE_NAME, "simulated": not cached,
           "added": not present}
    if not present:
        added = add_image(project, field / "image.npy", name=DEMO_IMAGE_NAME)
        out["n_sites"] = added["n_sites"]
    if model:
        from inference.classify import run_classify  # deferred: loads torch (seconds), only with a model

        dest = field / "classify"
        run_classify(field / "image.npy", model, dest)
        out["prediction"] = register_prediction(project, DEMO_IMAGE_NAME, _model_name(model), dest)
    return out


def _model_name(ckpt) -> str:
    return model_name_from_checkpoint(ckpt) or "model"
