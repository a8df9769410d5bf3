"""The model registry: which trained classifier covers a micrograph's context, with a model card per model.

Two places hold models, each model as ``<name>.json`` (its card) beside ``<name>.ckpt`` (its checkpoint):

* shipped inside the package, ``inference/models/`` (package data, read-only): the starter model;
* built by the user (``python -m inference classify ... --build-model``), in the cache directory
  ``$STEM_CONTEXT_MODELS`` or, without it, ``~/.cache/stem-context/models``.

A card (:class:`ModelCard`) says what the model was trained on (the cases: host, dopant, beam energy, detector),
with which patches, noise and schedule, how well it did on its held-out rows, and the sha256 of its checkpoint;
the checkpoint is checked against it before it is used (a mismatch is ``CorruptDataError``, exit 3).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from contract.context import Case, case_key
from contract.errors import CorruptDataError, InputError
from contract.jsonio import json_text

SHIPPED_DIR = Path(__file__).resolve().parent / "models"
MODELS_ENV = "STEM_CONTEXT_MODELS"
DEFAULT_USER_DIR = Path("~/.cache/stem-context/models")
CARD_FORMAT = 1
TRAINING_ONLY_KEYS = ("optimizer_states", "lr_schedulers", "loops", "callbacks")
"""Checkpoint entries that only resuming a fit needs; a registered copy drops them (Adam's two moments alone
would triple the file)."""


def user_dir() -> Path:
    """Where built models go: ``$STEM_CONTEXT_MODELS`` or ``~/.cache/stem-context/models``."""
    env = os.environ.get(MODELS_ENV)
    return Path(env).expanduser() if env else DEFAULT_USER_DIR.expanduser()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()




@dataclass(frozen=True)
class ModelCard:
    """What a registered model is, as stored in ``<name>.json``. Fields with units carry them in the name."""

    name: str
    model: str                      # the training config's Table 1 name, e.g. "attn-4k"
    checkpoint: str                 # file name beside the card
    checkpoint_sha256: str
    checkpoint_size_bytes: int
    created_utc: str
    cases: tuple[dict, ...]         # host, metal, chalcogen, dopant, beam_energy_kev, detector, n_rows
    patch_size_px: int
    patch_geometry: dict            # patch side in lattice units, supercell, scan sampling
    noise: dict                     # the dataset's noise ranges [low, high]
    multislice: dict                # frozen phonons, slicing, supercell
    schedule: dict                  # what the fit ran (training/schedule.py's record)
    metrics: dict                   # held-out: test_accuracy, cohen_kappa, per_class_recall, by_detector, n_test
    dataset: dict                   # name, config_hash, n_rows, the resolved config's file
    versions: dict
    matched_to_frame: dict | None = None   # dataset-config overrides measured on a frame, when built for one
    timings_s: dict = field(default_factory=dict)
    context_encoding: str = "shells"        # contract.physical_context: shells (the paper's) or physical
    format: int = CARD_FORMAT

    def covers(self, context: Case | dict) -> bool:
        """Whether one of the training cases is the context's (host, dopant, beam energy, detector)."""
        key = case_key(context)
        return any(case_key(c) == key for c in self.cases)

    def to_json(self) -> str:
        return json_text(dataclasses.asdict(self), indent=1, sort_keys=False)  # a NaN metric becomes null

    @classmethod
    def from_file(cls, path: str | Path) -> "ModelCard":
        """Read and check a card; ``InputError`` naming the file for anything that is not one."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise InputError(f"model card {path}: not readable JSON ({type(err).__name__})") from None
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        if not isinstance(raw, dict) or required - set(raw):
            missing = sorted(required - set(raw)) if isinstance(raw, dict) else ["(not a mapping)"]
            raise InputError(f"model card {path}: missing {', '.join(missing)}")
        if raw.get("format", CARD_FORMAT) > CARD_FORMAT:
            raise InputError(f"model card {path}: format {raw['format']} is newer than this version reads "
                             f"({CARD_FORMAT}); update the project")
        raw["cases"] = tuple(raw["cases"])
        return cls(**{k: v for k, v in raw.items() if k in names})


@dataclass(frozen=True)
class RegisteredModel:
    card: ModelCard
    card_path: Path
    source: str                     # "shipped" or "built"

    @property
    def checkpoint_path(self) -> Path:
        return self.card_path.parent / self.card.checkpoint

    def verified_checkpoint(self) -> Path:
        """The checkpoint path after checking its size and sha256 against the card (``CorruptDataError``)."""
        path = self.checkpoint_path
        if not path.is_file():
            raise CorruptDataError(f"model {self.card.name}: checkpoint {path} is missing (card {self.card_path})")
        digest = sha256_file(path)
        if digest != self.card.checkpoint_sha256:
            raise CorruptDataError(f"model {self.card.name}: checkpoint {path} has sha256 {digest[:16]}..., the "
                                   f"card says {self.card.checkpoint_sha256[:16]}...: the file was changed or damaged; "
                                   f"remove {self.card_path} and {path} and build the model again")
        return path


def list_models(directories: list[Path] | None = None) -> list[RegisteredModel]:
    """Every card in the shipped and the user directory (or ``directories``), shipped first, by name."""
    places = [(SHIPPED_DIR, "shipped"), (user_dir(), "built")] if directories is None else \
        [(Path(d), "built") for d in directories]
    out = []
    for directory, source in places:
        if not directory.is_dir():
            continue
        for card_path in sorted(directory.glob("*.json")):
            out.append(RegisteredModel(ModelCard.from_file(card_path), card_path, source))
    return out


def choose_model(context: Case | dict, models: list[RegisteredModel] | None = None) -> RegisteredModel | None:
    """The registered model that covers ``context``: among those that do, the most specialised (fewest training
    cases: a model built for this context before a broad one), then the best held-out accuracy, then the newest.
    None when no model covers it."""
    models = list_models() if models is None else models
    covering = [m for m in models if m.card.covers(context)]
    if not covering:
        return None
    return min(covering, key=lambda m: (len(m.card.cases), -float(m.card.metrics.get("test_accuracy", 0.0)),
                                        _negated_time(m.card.created_utc)))


def _negated_time(stamp: str) -> float:
    try:
        return -datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return 0.0


def model_name(context: Case | dict) -> str:
    """The registry name of a model built for one context, e.g. ``WSe2+V-80keV``."""
    host, dopant, energy, _ = case_key(context)
    return f"{host}+{dopant}-{energy}keV"


def build_command(image: str | Path, context: Case | dict, out: str | Path) -> str:
    """The exact command that builds a model for ``context`` and classifies ``image`` with it."""
    host, dopant, energy, detector = case_key(context)
    return (f"python -m inference classify {shlex.quote(str(image))} --host {host} "
            f"--dopant {dopant} --energy-kev {energy} "
            f"--detector {detector} --out {shlex.quote(str(out))} --build-model")


def slim_checkpoint(src: str | Path, dest: str | Path) -> None:
    """Copy a Lightning checkpoint without what only resuming a fit needs (optimizer state, loops, callbacks);
    the weights, hyperparameters and inference metadata are kept as they are."""
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    for key in TRAINING_ONLY_KEYS:
        ckpt.pop(key, None)
    torch.save(ckpt, dest)


def register(checkpoint: str | Path, card_fields: dict, name: str, directory: str | Path | None = None) -> RegisteredModel:
    """Copy ``checkpoint`` (slimmed) into the registry as ``<name>.ckpt`` and write its card ``<name>.json``
    with the checksum, size and date filled in. ``directory``: default :func:`user_dir`. The card is written last,
    through a temporary file, so that a half-registered model is never listed."""
    directory = Path(directory) if directory is not None else user_dir()
    directory.mkdir(parents=True, exist_ok=True)
    ckpt_dest = directory / f"{name}.ckpt"
    with tempfile.NamedTemporaryFile(dir=directory, suffix=".ckpt.partial", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        slim_checkpoint(checkpoint, tmp_path)
        os.replace(tmp_path, ckpt_dest)
    finally:
        tmp_path.unlink(missing_ok=True)
    card = ModelCard(**{**card_fields, "name": name, "checkpoint": ckpt_dest.name,
                        "checkpoint_sha256": sha256_file(ckpt_dest),
                        "checkpoint_size_bytes": ckpt_dest.stat().st_size,
                        "created_utc": card_fields.get("created_utc")
                        or datetime.now(timezone.utc).isoformat(timespec="seconds")})
    card_path = directory / f"{name}.json"
    tmp_card = card_path.with_suffix(".json.partial")
    tmp_card.write_text(card.to_json())
    os.replace(tmp_card, card_path)
    return RegisteredModel(card, card_path, "built")


def copy_model(model: RegisteredModel, directory: str | Path) -> RegisteredModel:
    """Copy a registered model (card and checkpoint) into ``directory``, e.g. a built model into the package."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy2(model.verified_checkpoint(), directory / model.card.checkpoint)
    shutil.copy2(model.card_path, directory / model.card_path.name)
    return RegisteredModel(model.card, directory / model.card_path.name, "shipped")
