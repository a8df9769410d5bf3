"""The five classes of the central atomic column of a 1H-MX2 patch (paper section 3) and their groupings.

=====  ========  ===============================  ==========
label  name      column                           sublattice
=====  ========  ===============================  ==========
0      X2        two chalcogen atoms (pristine)   chalcogen
1      VacX      single chalcogen vacancy         chalcogen
2      VacX2     double chalcogen vacancy (empty) chalcogen
3      M         host metal atom                  metal
4      D         dopant atom (on a metal site)    metal
=====  ========  ===============================  ==========

``CLASS_NAMES`` are the short names written in files (``class_name`` columns, store attributes) and typed by
users; ``CLASS_DESCRIPTIONS`` are for figures and reports.
"""
from __future__ import annotations

CLASS_NAMES = ("X2", "VacX", "VacX2", "M", "D")
CLASS_IDS = {name: label for label, name in enumerate(CLASS_NAMES)}
N_CLASSES = len(CLASS_NAMES)
CLASS_DESCRIPTIONS = ("X2", "single vacancy", "double vacancy", "metal", "dopant")

SUBLATTICES = ("metal", "chalcogen")
"""Sublattice names; their index (0 metal, 1 chalcogen) is the sublattice id used in arrays."""
METAL, CHALCOGEN = 0, 1
SUBLATTICE_IDS = {name: i for i, name in enumerate(SUBLATTICES)}

METAL_SITE_CLASSES = (CLASS_IDS["M"], CLASS_IDS["D"])
CHALCOGEN_SITE_CLASSES = (CLASS_IDS["X2"], CLASS_IDS["VacX"], CLASS_IDS["VacX2"])
METAL_SYMBOLS = tuple(CLASS_NAMES[c] for c in METAL_SITE_CLASSES)
CHALCOGEN_SYMBOLS = tuple(CLASS_NAMES[c] for c in CHALCOGEN_SITE_CLASSES)

DEFECT_CLASSES = {"single_vacancy": CLASS_IDS["VacX"], "double_vacancy": CLASS_IDS["VacX2"],
                  "dopant": CLASS_IDS["D"]}
"""Defect classes by the metric key under which their defect/non-defect F1 is reported (paper Table 1)."""
DEFECT_CLASS_IDS = tuple(DEFECT_CLASSES.values())
NON_DEFECT_CLASSES = (CLASS_IDS["X2"], CLASS_IDS["M"])

CLASS_COLOURS = ("#1f77b4", "#ff7f0e", "#d62728", "#7f7f7f", "#2ca02c")
"""Marker colours of the classes in overlays and in the labelling page (matplotlib tab10 subset)."""


def sublattice_of_class(label: int) -> int:
    """Sublattice id (0 metal, 1 chalcogen) on which a column of class ``label`` sits."""
    if label not in range(N_CLASSES):
        raise ValueError(f"class label must be 0..{N_CLASSES - 1}, got {label!r}")
    return METAL if label in METAL_SITE_CLASSES else CHALCOGEN


def class_id(name_or_label) -> int:
    """A class label from its short name (``"VacX"``) or its number (``1``, ``"1"``); ``ValueError`` otherwise."""
    if isinstance(name_or_label, str) and name_or_label in CLASS_IDS:
        return CLASS_IDS[name_or_label]
    try:
        label = int(name_or_label)
    except (TypeError, ValueError):
        raise ValueError(f"unknown class {name_or_label!r}; classes: "
                         + ", ".join(f"{i} {n}" for i, n in enumerate(CLASS_NAMES))) from None
    if label != name_or_label and str(label) != str(name_or_label).strip():
        raise ValueError(f"unknown class {name_or_label!r}")
    if not 0 <= label < N_CLASSES:
        raise ValueError(f"class label must be 0..{N_CLASSES - 1}, got {label}")
    return label
