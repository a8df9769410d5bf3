"""Every JSON file the project writes is valid JSON: a value that is not known (NaN, ±inf) is written as ``null``,
never as the bare ``NaN``/``Infinity`` that Python's ``json`` emits by default and strict readers refuse."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np


def finite_or_none(value):
    """``value`` with every NaN/±inf float (Python or numpy, at any depth of dicts, lists and tuples) replaced by
    None, numpy scalars and arrays turned into plain Python values, and dict keys made strings."""
    if isinstance(value, dict):
        return {str(k): finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    if isinstance(value, np.ndarray):
        return finite_or_none(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_text(value, **kwargs) -> str:
    """``json.dumps`` of ``finite_or_none(value)`` with ``allow_nan=False`` (kwargs: indent, default, ...)."""
    return json.dumps(finite_or_none(value), allow_nan=False, **kwargs)


def write_json(path: str | Path, value, indent: int | None = 2, **kwargs) -> Path:
    """Write ``json_text(value)`` to ``path``; returns the path."""
    path = Path(path)
    path.write_text(json_text(value, indent=indent, **kwargs))
    return path
