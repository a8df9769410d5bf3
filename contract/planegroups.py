"""Plane groups and symmetry maps: the names every stage that handles phase images shares.

* ``PLANE_GROUPS``: the 17 plane groups by their full Hermann-Mauguin symbols, in International Tables order;
  the class id of a group is its position in this tuple.
* ``LATTICE_SYSTEMS``: the lattice system of each group (oblique, rectangular, centred rectangular, square,
  hexagonal).
* ``SYMMETRY_MAP_NAMES``: the seven dense symmetry maps of an image (``kernels.symmetry``), in stored order:
  rotation scores for 2-, 3-, 4- and 6-fold axes, the mirror strength, and the mirror axis angle alpha as
  sin 2 alpha, cos 2 alpha.
* The plane-group store (``python -m simulate planegroups``): array and attribute names.

==========================  ==================  ================================================================
array                       shape, dtype        meaning
==========================  ==================  ================================================================
``images``                  (N, S, S) f32       noisy image in detector counts (S = ``image_size_px``)
``maps``                    (N, 7, S, S) f16    the seven symmetry maps (``SYMMETRY_MAP_NAMES``), written by
                                                ``python -m features symmetry --store``
``kernel_px``               (N,) i32            kernel side used for the maps (odd, from the measured cell)
``cell_px``                 (N,) f32            sqrt of the measured primitive cell area (NaN: none found)
``label``                   (N,) u8             plane group of the rendered pattern (computed), index into
                                                ``PLANE_GROUPS``
``drawn_group``             (N,) u8             the group the generator drew (differs from ``label`` when the
                                                drawn structure has a higher symmetry)
``structure``               (N,) i32            row of ``attrs["structures"]``: the structure signature
``signature``               (N, 192) u8         the signature as zero-padded ASCII, e.g. ``p4mm:1(4mm)A+4(m)B``
``description``             (N, 192) u8         the drawn structure (group, Wyckoff positions, species), ASCII
``attempts``                (N,) i32            draws the generator needed for the image (rejections + 1)
``lattice_px``              (N, 2, 2) f32       primitive lattice vectors of the pattern in the image, rows
                                                (x, y) in px
``rotation_deg``            (N,) f32            in-plane rotation of the pattern
``peak_counts``             (N,) f32            mean counts at the brightest atom peak (the dose axis)
``task_done``               (n_tasks,) u8       1 once a task wrote its shard (resume marker)
``maps_done``               (n_tasks,) u8       1 once a shard's maps are written (resume marker of the maps)
==========================  ==================  ================================================================
"""
from __future__ import annotations

import re
from fractions import Fraction

import numpy as np

PLANE_GROUPS = ("p1", "p2", "pm", "pg", "cm", "p2mm", "p2mg", "p2gg", "c2mm",
                "p4", "p4mm", "p4gm", "p3", "p3m1", "p31m", "p6", "p6mm")
PLANE_GROUP_IDS = {name: i for i, name in enumerate(PLANE_GROUPS)}
N_PLANE_GROUPS = len(PLANE_GROUPS)

LATTICE_SYSTEMS = {
    "p1": "oblique", "p2": "oblique",
    "pm": "rectangular", "pg": "rectangular", "p2mm": "rectangular", "p2mg": "rectangular", "p2gg": "rectangular",
    "cm": "centred_rectangular", "c2mm": "centred_rectangular",
    "p4": "square", "p4mm": "square", "p4gm": "square",
    "p3": "hexagonal", "p3m1": "hexagonal", "p31m": "hexagonal", "p6": "hexagonal", "p6mm": "hexagonal",
}

SYMMETRY_MAP_NAMES = ("rot2", "rot3", "rot4", "rot6", "mirror", "sin2a", "cos2a")
ROTATION_FOLDS = (2, 3, 4, 6)
"""n of the rotation maps ``rot2`` .. ``rot6``, in stored order."""
N_SYMMETRY_MAPS = len(SYMMETRY_MAP_NAMES)

# plane-group store
IMAGES = "images"
MAPS = "maps"
KERNEL_PX = "kernel_px"
LABEL = "label"
DRAWN_GROUP = "drawn_group"
STRUCTURE = "structure"
LATTICE_PX = "lattice_px"
ROTATION_DEG = "rotation_deg"
PEAK_COUNTS = "peak_counts"
TASK_DONE = "task_done"
MAPS_DONE = "maps_done"
ROW_ARRAYS = {LABEL: "uint8", DRAWN_GROUP: "uint8", STRUCTURE: "int32", ROTATION_DEG: "float32",
              PEAK_COUNTS: "float32", KERNEL_PX: "int32"}
"""Per-image arrays of shape (N,) and their dtypes."""
IMAGE_DTYPE = "float32"
MAP_DTYPE = "float16"
CELL_PX = "cell_px"
SIGNATURE = "signature"
DESCRIPTION = "description"
ATTEMPTS = "attempts"
TEXT_BYTES = 192
"""Width of the ASCII text columns ``signature`` and ``description`` (zero-padded uint8)."""

ATTR_KIND = "kind"
KIND = "planegroups"
"""``attrs["kind"]`` of a plane-group store (patch stores have none)."""
ATTR_STRUCTURES = "structures"
"""List of dicts, one per structure signature: ``signature`` (str), ``plane_group``, ``orbits``."""
ATTR_IMAGES_PER_TASK = "images_per_task"
ATTR_IMAGE_SIZE = "image_size_px"


def plane_group_id(name: str) -> int:
    """Class id of a plane group given by its full symbol (``p3m1``, ``c2mm``); ``ValueError`` otherwise."""
    try:
        return PLANE_GROUP_IDS[name]
    except KeyError:
        raise ValueError(f"unknown plane group {name!r}; the 17 are {', '.join(PLANE_GROUPS)}") from None


def reduce_basis(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Lagrange-Gauss reduction of a 2-D lattice basis: (2, 2) rows with |a| <= |b| <= |b +- a|."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    for _ in range(100):
        if a @ a > b @ b:
            a, b = b, a
        mu = round(float(a @ b) / float(a @ a))
        if mu == 0:
            break
        b = b - mu * a
    return np.stack([a, b])


# The operations of the 17 plane groups (International Tables, standard settings): the simulator's tables
# (simulate.planegroups_tables) and the measured classification (kernels.planegroup_deviation) share them.
_P3 = ["x,y", "-y,x-y", "-x+y,-x"]
_P6 = _P3 + ["-x,-y", "y,-x+y", "x-y,x"]
_P4 = ["x,y", "-x,-y", "-y,x", "y,-x"]
_MM = ["x,y", "-x,-y", "-x,y", "x,-y"]

OPERATIONS = {
    "p1": ["x,y"],
    "p2": ["x,y", "-x,-y"],
    "pm": ["x,y", "-x,y"],
    "pg": ["x,y", "-x,y+1/2"],
    "cm": ["x,y", "-x,y"],
    "p2mm": _MM,
    "p2mg": ["x,y", "-x,-y", "-x+1/2,y", "x+1/2,-y"],
    "p2gg": ["x,y", "-x,-y", "-x+1/2,y+1/2", "x+1/2,-y+1/2"],
    "c2mm": _MM,
    "p4": _P4,
    "p4mm": _P4 + ["-x,y", "x,-y", "y,x", "-y,-x"],
    "p4gm": _P4 + ["-x+1/2,y+1/2", "x+1/2,-y+1/2", "y+1/2,x+1/2", "-y+1/2,-x+1/2"],
    "p3": _P3,
    "p3m1": _P3 + ["-y,-x", "-x+y,y", "x,x-y"],
    "p31m": _P3 + ["y,x", "x-y,-y", "-x,-x+y"],
    "p6": _P6,
    "p6mm": _P6 + ["-y,-x", "-x+y,y", "x,x-y", "y,x", "x-y,-y", "-x,-x+y"],
}
"""General-position coordinate triplets (the group's coset representatives)."""

CENTRING = {"cm": ["1/2,1/2"], "c2mm": ["1/2,1/2"]}

_TERM = re.compile(r"([+-]?)(\d+/\d+|\d+|x|y)")


def parse_triplet(text: str) -> tuple[np.ndarray, np.ndarray]:
    """``"-x+1/2,y"`` -> ``(W (2, 2) float, w (2,) float)`` with f' = W f + w."""
    rows, consts = [], []
    parts = text.replace(" ", "").split(",")
    if len(parts) != 2:
        raise ValueError(f"a plane-group triplet has two coordinates, got {text!r}")
    for part in parts:
        coeff = {"x": Fraction(0), "y": Fraction(0)}
        const = Fraction(0)
        pos = 0
        for m in _TERM.finditer(part):
            if m.start() != pos:
                raise ValueError(f"cannot parse {part!r} in {text!r}")
            pos = m.end()
            sign = -1 if m.group(1) == "-" else 1
            token = m.group(2)
            if token in coeff:
                coeff[token] += sign
            else:
                const += sign * Fraction(token)
        if pos != len(part) or not part:
            raise ValueError(f"cannot parse {part!r} in {text!r}")
        rows.append([float(coeff["x"]), float(coeff["y"])])
        consts.append(float(const))
    return np.array(rows), np.array(consts)
